"""The in-process buffer's JSON checkpoint at ``buffer_path``: lock, read, write.

One process writes a buffer file: ``claim`` takes an exclusive lock on
``<path>.lock`` when the environment loads, so a second writer is refused
before it generates anything. The OS releases the lock when the process
dies (even by SIGKILL), so a restart can claim it again. Writes are atomic
(temporary file in the same folder, fsync, rename); temporary files that a
killed writer left behind are removed when the file is claimed.

A Redis store needs none of this: it is its own shared state, and exports
the same ``state_dict`` layout for prime-rl checkpoints.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from self_improve.atomic_io import write_text_atomic
from self_improve.buffer.store import BufferStore

logger = logging.getLogger(__name__)

_CLAIMED: dict[str, int] = {}
"""Lock file descriptors of the buffer files this process writes, by real path."""
_CLAIMING = threading.Lock()
"""Serialises claims: two threads of one process must not both open and flock one file."""


class BufferFile:
    """The checkpoint of one buffer: resumed at load, rewritten after each observed group.

    Writes are serialised and coalesced: a burst of finished groups costs one
    write of the newest state.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._saved_step: int | None = None

    def claim(self) -> None:
        """Lock the file for this process and clean stale temporary files; ``ValueError`` if taken."""
        with _CLAIMING:
            self._claim(os.path.realpath(self.path))

    def _claim(self, key: str) -> None:
        if key in _CLAIMED:
            return
        lock_path = Path(f"{key}.lock")
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise ValueError(f"buffer_path: cannot create {lock_path} ({error.strerror})") from error
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise ValueError(
                f"buffer_path: {self.path} is being written by another process; the in-process buffer has "
                "one writer, so run one env worker, give each its own buffer_path, or share one buffer "
                "through buffer_url (Redis)"
            ) from None
        _CLAIMED[key] = descriptor
        for stale in lock_path.parent.glob(f".{Path(key).name}.*.tmp"):
            stale.unlink(missing_ok=True)

    def resume(self, store: BufferStore | Any) -> bool:
        """Load the saved state into ``store`` (a store, or an ``ExitLoop``, which also restores its
        generators) if the file exists; ``ValueError`` naming the file if it is bad."""
        if not os.path.exists(self.path):
            return False
        state = read_state(self.path)
        try:
            store.load_state_dict(state)
        except ValueError as error:
            raise ValueError(f"buffer_path: {self.path} cannot be resumed: {error}") from error
        self._saved_step = state["step"]
        logger.info("resumed buffer from %s at step %d with %d instances", self.path, state["step"],
                    len(state["instances"]))
        return True

    def save(self, state: dict[str, Any]) -> None:
        """Write a ``state_dict`` unless a newer one is already on disk (blocking: call it off the event loop)."""
        with self._lock:
            if self._saved_step is not None and self._saved_step >= state["step"]:
                return
            write_state(state, self.path)
            self._saved_step = state["step"]


def write_state(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Atomically write a buffer ``state_dict`` as JSON."""
    write_text_atomic(Path(path), json.dumps(state))


def read_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a saved buffer state; ``ValueError`` naming the file when it is not one."""
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"buffer_path: {path} is not a valid buffer file ({error}); "
                         "delete it to start a new buffer") from error
    except OSError as error:
        raise ValueError(f"buffer_path: cannot read {path} ({error.strerror})") from error
    if not isinstance(state, dict):
        raise ValueError(f"buffer_path: {path} does not hold a buffer state object; delete it to start anew")
    return state
