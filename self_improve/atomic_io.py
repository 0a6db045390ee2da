"""Small file helpers: an atomic text write and a streamed sha256."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

CHUNK_BYTES: int = 1 << 22
"""Read size for hashing: 4 MiB keeps memory flat on the 1.1 GB model file."""


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with ``text`` so a reader sees the old file or the new one, never a part.

    Writes a temporary file in the same folder, fsyncs it and renames it over
    ``path``; the temporary file is removed when anything fails (Ctrl-C too).
    The parent folder is created when missing. The file gets the usual
    permissions (0o666 less the umask), as a plain ``open(path, "w")`` would.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file's bytes, read in :data:`CHUNK_BYTES` chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
