"""A buffer as the viewer sees it: one consistent, read-only ``BufferSnapshot`` of a checkpoint file or a
live Redis store.

A checkpoint (``buffer_path``) is checked with ``buffer.state.check_state`` against the configuration it
was saved with. A Redis store (``buffer_url`` + ``buffer_prefix``) is read in one MULTI/EXEC
transaction, or by one read-only script while the server's memory is full
(``buffer.redis_scripts.read_snapshot``): Redis runs either between two of the workers' update
scripts, never inside one, so the snapshot is one state of the store even while workers keep writing.
Nothing here writes: no configuration script runs, no counter moves.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from self_improve.buffer.state import check_state
from self_improve.grouping import Instance, Task
from self_improve.viewer.config import ViewerError

SNAPSHOT_KEYS: tuple[str, ...] = ("meta", "state", "leaves", "scores", "body", "scored", "sampled")
"""The store's keys the viewer reads (``redis_scripts.KEY_NAMES`` describes each)."""

TIMEOUT_S: float = 5.0
"""Seconds to connect to, and to wait for an answer from, a Redis server."""

MAX_PREFIXES_LISTED: int = 10
"""Prefixes named in the error for a prefix that holds no buffer."""


@dataclass(frozen=True)
class BufferSnapshot:
    """The instances of one buffer at one moment, in slot order, with the configuration they were made with."""

    source: str
    """Where it was read: a path, or a Redis URL (password removed) and prefix."""
    step: int
    """Groups observed when the snapshot was taken."""
    next_id: int
    capacity: int
    kappa: float
    store_responses: bool
    instances: tuple[Instance, ...]

    def get(self, instance_id: int) -> Instance | None:
        """The held instance with this id, if any."""
        return next((instance for instance in self.instances if instance.instance_id == instance_id), None)


def read_file(path: str) -> BufferSnapshot:
    """The checkpoint at ``path``; ``ViewerError`` naming the file when it is missing or not a valid checkpoint."""
    file = Path(path)
    if not file.exists():
        raise ViewerError(f"source: {path} does not exist")
    if file.is_dir():
        raise ViewerError(f"source: {path} is a folder; give the buffer's JSON file (buffer_path)")
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ViewerError(f"source: {path} is not a buffer checkpoint: not JSON ({error})") from None
    except OSError as error:
        raise ViewerError(f"source: cannot read {path} ({error.strerror})") from None
    try:
        return _checked(path, state)
    except ValueError as error:
        raise ViewerError(f"source: {path} is not a valid buffer checkpoint: {error}") from None


def _checked(source: str, state: Any) -> BufferSnapshot:
    """``check_state`` against the configuration the state carries (so any buffer_size and kappa load)."""
    if not isinstance(state, dict):
        raise ValueError(f"state: must be a JSON object, got {type(state).__name__}")
    capacity, kappa, store_responses = state.get("capacity"), state.get("kappa"), state.get("store_responses")
    if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1):
        raise ValueError(f"capacity: must be an integer >= 1, got {capacity!r}")
    if kappa is not None and (isinstance(kappa, bool) or not isinstance(kappa, (int, float))
                              or not math.isfinite(kappa)):
        raise ValueError(f"kappa: must be a finite number, got {kappa!r}")
    checked = check_state(state, capacity, kappa, store_responses)  # type: ignore[arg-type]
    return BufferSnapshot(source=source, step=checked.step, next_id=checked.next_id, capacity=int(capacity),
                          kappa=float(kappa), store_responses=bool(store_responses), instances=checked.instances)


def read_redis(url: str, prefix: str, password_var: str | None = None) -> BufferSnapshot:
    """One consistent snapshot of the store under ``prefix`` at ``url``, read-only.

    Raises ``ViewerError`` naming the URL (password never shown) when the server cannot be reached or
    refuses the password, the password variable is unset, or ``prefix`` holds no buffer (the message
    lists the prefixes that do).
    """
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        raise ViewerError("source: reading a Redis buffer needs the redis client: pip install "
                          "'self-improve[redis]'") from None
    from self_improve.buffer.redis_auth import redact
    from self_improve.buffer.redis_scripts import read_snapshot

    password = None
    if password_var is not None:
        password = os.environ.get(password_var)
        if password is None:
            raise ViewerError(f"password_var: the variable {password_var} is not set")
    shown = redact(url)
    try:
        client = redis.Redis.from_url(url, password=password, decode_responses=True, socket_timeout=TIMEOUT_S,
                                      socket_connect_timeout=TIMEOUT_S, retry=Retry(NoBackoff(), 0))
    except ValueError:
        raise ViewerError(f"source: {shown} is not a redis://, rediss:// or unix:// URL") from None
    try:
        replies = read_snapshot(client, prefix, SNAPSHOT_KEYS)
        if not replies["meta"]:
            found = sorted({key[: -len(":meta")] for key in client.scan_iter(match="*:meta", count=1000)})
            listed = ", ".join(repr(name) for name in found[:MAX_PREFIXES_LISTED]) or "none"
            raise ViewerError(f"prefix: no buffer under {prefix!r} on {shown}; prefixes holding one: {listed}")
    except redis.AuthenticationError as error:
        raise ViewerError(f"source: {shown} refused the password ({error}); name the variable that holds "
                          "it with --password-var") from None
    except redis.ResponseError as error:
        raise ViewerError(f"prefix: the keys under {prefix!r} on {shown} are not a buffer ({error})") from None
    except redis.RedisError as error:
        text = str(error).replace(password, "***") if password else str(error)
        raise ViewerError(f"source: cannot reach {shown} ({text})") from None
    finally:
        client.close()
    try:
        return _from_replies(f"{shown} prefix {prefix!r}", replies)
    except (KeyError, ValueError, TypeError) as error:
        raise ViewerError(f"prefix: the store {prefix!r} on {shown} is not a readable buffer ({error!r})") from None


def _from_replies(source: str, replies: dict[str, dict[str, Any]]) -> BufferSnapshot:
    """The snapshot of one transaction's replies, instances in slot order (as ``RedisBuffer.state_dict``)."""
    meta, state = replies["meta"], replies["state"]
    instances = []
    for _, member in sorted((int(slot), member) for slot, member in replies["leaves"].items()):
        raw = json.loads(replies["body"][member])
        instances.append(Instance(
            instance_id=raw["instance_id"], task=Task(**raw["task"]), iterates=tuple(raw["iterates"]),
            iterate_correct=tuple(raw["iterate_correct"]), score=float(replies["scores"][member]),
            parent_id=raw["parent_id"], created_step=raw["created_step"],
            scored_step=int(replies["scored"][member]), times_sampled=int(replies["sampled"][member])))
    return BufferSnapshot(source=source, step=int(state.get("step", 0)), next_id=int(state.get("next_id", 0)),
                          capacity=int(meta["capacity"]), kappa=float(meta["kappa"]),
                          store_responses=meta["store_responses"] == "1", instances=tuple(instances))
