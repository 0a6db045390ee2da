"""Settings of one ``self-improve-buffer`` call: one flag per field, checked on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from self_improve.buffer.redis_auth import is_redis_url
from self_improve.cli_args import option
from self_improve.exit_config import ExitConfig


class ViewerError(Exception):
    """Bad input to the viewer: a message that names the source or flag, shown without a traceback."""


def is_results(source: str) -> bool:
    """Whether ``source`` is a vf-eval ``results.jsonl`` (any ``.jsonl`` file) rather than a buffer checkpoint."""
    return not is_redis_url(source) and source.endswith(".jsonl")


@dataclass(frozen=True)
class ViewerConfig:
    """What to read and what to show. ``sources`` and ``show`` come from positional words
    (``SOURCE... [show ID]``); every other field is one flag of ``self-improve-buffer``."""

    sources: tuple[str, ...] = field(default=())
    show: int | None = None
    prefix: str = option(ExitConfig.buffer_prefix, "key prefix of a Redis buffer (the run's buffer_prefix)")
    password_var: str | None = option(None, "env var holding the Redis password (never the password itself)")
    kappa: float | None = option(None, "inverse temperature of the sampling probabilities exp(kappa S) / sum; "
                                       f"default: the buffer's own, else {ExitConfig.kappa}")
    top: int = option(10, "instances listed, highest score first", "-k")
    width: int = option(160, "characters shown of each question and iterate (show ID)")
    plot: Path | None = option(None, "write PNG figures into this folder (needs matplotlib: the viewer extra)")
    title: str | None = option(None, "what was run, for the figure titles (default: the source's name)")
    json: bool = option(False, "print the summary (or the chain, with show ID) as JSON on stdout")
    csv: Path | None = option(None, "write one row per instance (buffer) or per group (results.jsonl) to this file")

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("source: give a buffer file, a redis:// URL or results.jsonl files")
        redis_sources = [source for source in self.sources if is_redis_url(source)]
        results = [source for source in self.sources if is_results(source)]
        if len(self.sources) > 1 and len(results) != len(self.sources):
            raise ValueError(f"source: several sources must all be results.jsonl files, got {list(self.sources)}")
        if self.show is not None and results:
            raise ValueError(f"show ID: needs a buffer source (a buffer file or a redis:// URL), got {results[0]}")
        if self.show is not None and self.show < 0:
            raise ValueError(f"show ID: must be an instance id >= 0, got {self.show}")
        for source in redis_sources:
            parts = urlsplit(source)
            if parts.password is not None or "password" in dict(parse_qsl(parts.query)):
                raise ValueError("source: a Redis password may not be written in the URL; put it in an env var "
                                 "and name the variable with --password-var")
        if not self.prefix or any(character.isspace() for character in self.prefix):
            raise ValueError(f"prefix: must be a non-empty string without spaces, got {self.prefix!r}")
        if self.kappa is not None and not (math.isfinite(self.kappa) and self.kappa >= 0):
            raise ValueError(f"kappa: must be a finite number >= 0, got {self.kappa}")
        for name in ("top", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.json and self.csv is not None:
            raise ValueError("json: give --json or --csv FILE, not both")
        if self.plot is not None and self.plot.exists() and not self.plot.is_dir():
            raise ValueError(f"plot: {self.plot} is a file, not a folder")
