"""One ExIt curriculum shared by many env workers: the task buffer in Redis.

``RedisBuffer`` keeps exactly the semantics of ``exit_buffer.ExitBuffer``
(see ``buffer.store``) in a Redis server, so any number of env worker
processes, on any number of machines, draw from and feed one buffer. Each
group's update is one Lua script (``redis_scripts``), which Redis runs
atomically: concurrent groups never exceed the capacity, never lose a
parent's score and never leave half a group behind, even when a worker is
killed mid-call. Ids come from a counter on the server. Sampling is one
script too, a walk down a sum tree of the weights (O(log N)); its uniform
number comes from this client's seeded generator, which ``state_dict``
checkpoints, so a single-worker run is reproducible.

The configuration (capacity, kappa, store_responses) lives in the store; a
worker configured differently is refused with a ``ValueError`` naming the
argument. A key prefix lets several runs share one server. The password
comes from the environment variable named by ``password_var``, never from
the URL (``redis_auth``). ``state_dict`` has the layout of
``ExitBuffer.state_dict``, so a checkpoint moves between the two stores in
either direction. See docs/redis.md.

Usage (needs a server, e.g. ``redis-server --port 6379 --requirepass "$REDIS_PASSWORD"``)::

    buffer = RedisBuffer("redis://127.0.0.1:6379/0", capacity=512, kappa=10.0, seed=0,
                         store_responses=True, prefix="run-7", password_var="REDIS_PASSWORD")
    buffer.observe(group)
    instance = buffer.sample()
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from self_improve.buffer import redis_scripts
from self_improve.buffer.redis_auth import check_buffer_url, read_password, redact  # noqa: F401 (redact: re-exported)
from self_improve.buffer.redis_scripts import dedupe_key
from self_improve.buffer.state import STATE_VERSION, check_state
from self_improve.buffer.store import StoreOutOfMemory, StoreUnavailable, buffer_metrics, check_sizes
from self_improve.grouping import Group, Instance, Task

logger = logging.getLogger(__name__)

_Result = TypeVar("_Result")


def _member(instance_id: int) -> str:
    """An id as the store writes it: zero-padded, so ids sort by age among equal scores."""
    return f"{instance_id:016d}"


def _body_tail(task: Task, iterates: Sequence[str], iterate_correct: Sequence[bool], parent_id: int | None) -> str:
    """An instance's fixed JSON without its opening brace; the store prefixes id and creation step."""
    return json.dumps({"task": asdict(task), "iterates": list(iterates),
                       "iterate_correct": list(iterate_correct), "parent_id": parent_id})[1:]


def _body(instance_id: int, created_step: int, tail: str) -> str:
    """The stored JSON of an instance (``redis_scripts.OBSERVE`` writes the same)."""
    return f'{{"instance_id": {instance_id}, "created_step": {created_step}, {tail}'


class RedisBuffer:
    """A ``buffer.store.BufferStore`` in Redis, shared by every worker that names the same URL and prefix.

    Args:
        url: ``redis://[user@]host:port/db`` (or ``rediss://``, ``unix://``), without a
            password (``ValueError``); a ``rediss://`` URL may name its CA as ``?ssl_ca_certs=PATH``.
        capacity: N, the most instances held (as ``ExitBuffer``).
        kappa: inverse temperature of exp(kappa * S) sampling (as ``ExitBuffer``).
        seed: seed of the sampling generators: the i-th client to connect to a store draws
            from ``default_rng([seed, i])``, so workers started with one seed do not pick the
            same parents, and a single-worker run is reproducible. Checkpointed in ``state_dict``.
        store_responses: True for ExIt, False for the plain learnability curriculum.
        prefix: start of every key, so several runs share one server.
        retry_delays: seconds to wait before each retry of a call that cannot reach the
            server; after the last, ``StoreUnavailable`` (default 3 retries, 2.1 s in all).
        timeout_s: socket connect and read timeout of one try.
        password_var: name of the environment variable holding the server's password (for the
            URL's user, else the default user), read here; None: no password. The password
            never appears in logs, errors or ``repr``.

    Raises ``ValueError`` when the server cannot be reached at construction, or when the
    store under ``prefix`` was created with another capacity, kappa or store_responses.
    """

    remote: bool = True
    """Calls do network I/O; the loop runs them off the event loop."""

    def __init__(
        self,
        url: str,
        capacity: int,
        kappa: float,
        seed: int,
        store_responses: bool,
        prefix: str = "self-improve",
        retry_delays: Sequence[float] = (0.1, 0.4, 1.6),
        timeout_s: float = 5.0,
        password_var: str | None = None,
    ) -> None:
        check_sizes(capacity, kappa)
        if not isinstance(prefix, str) or not prefix or any(c.isspace() for c in prefix):
            raise ValueError(f"prefix: must be a non-empty string without spaces, got {prefix!r}")
        if not all(math.isfinite(delay) and delay >= 0 for delay in retry_delays):
            raise ValueError(f"retry_delays: must be finite numbers >= 0, got {retry_delays!r}")
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s: must be a finite number > 0, got {timeout_s!r}")
        check_buffer_url(url)
        self._password = read_password(password_var) if password_var is not None else None
        self.url = redact(url)
        self.prefix = prefix
        self.capacity = capacity
        self.kappa = float(kappa)
        self.store_responses = store_responses
        self.retry_delays = tuple(retry_delays)
        self._rng_lock = threading.Lock()
        self._keys = [f"{prefix}:{name}" for name in redis_scripts.KEY_NAMES]
        self._config = (str(STATE_VERSION), str(capacity), repr(self.kappa), "1" if store_responses else "0")
        try:
            self._client = redis.Redis.from_url(url, password=self._password, decode_responses=True,
                                                socket_timeout=timeout_s,
                                                socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
        except ValueError:
            raise ValueError(f"buffer_url: must be a redis://, rediss:// or unix:// URL, got {self.url}") from None
        self._configure = self._client.register_script(redis_scripts.CONFIGURE)
        self._observe = self._client.register_script(redis_scripts.OBSERVE)
        self._sample = self._client.register_script(redis_scripts.SAMPLE)
        self._metrics = self._client.register_script(redis_scripts.METRICS)
        try:
            reply = self._configure(keys=self._keys, args=self._config)
        except redis.OutOfMemoryError as error:
            raise ValueError(self._out_of_memory(error)) from None
        except redis.RedisError as error:
            raise ValueError(f"buffer_url: cannot reach {self.url} ({self._scrub(error)})") from None
        self._check_config(reply)
        self.stream = int(reply[1])
        """This client's index among every client the store has had (``BufferStore.stream``)."""
        self._rng = np.random.default_rng([seed, self.stream])

    def __repr__(self) -> str:
        return (f"RedisBuffer(url={self.url!r}, prefix={self.prefix!r}, capacity={self.capacity}, "
                f"kappa={self.kappa}, store_responses={self.store_responses})")

    def _scrub(self, error: BaseException) -> str:
        text = str(error)
        return text.replace(self._password, "***") if self._password else text

    def _out_of_memory(self, error: redis.OutOfMemoryError) -> str:
        """What to do about a server whose memory is full (the text of ``StoreOutOfMemory``)."""
        return (f"buffer_url: {self.url} is out of memory (used memory above 'maxmemory' under "
                f"maxmemory-policy noeviction), so it refuses every buffer update whole; raise the server's "
                f"maxmemory (CONFIG SET maxmemory ...) or free memory on it ({self._scrub(error)})")

    def _call(self, operation: Callable[..., _Result], *args: Any, **kwargs: Any) -> _Result:
        """Run one server call, retrying after ``retry_delays`` while the server is unreachable;
        ``StoreOutOfMemory`` at once when its memory is full (a retry seconds later would not help)."""
        delays = iter(self.retry_delays)
        tries = 0
        while True:
            tries += 1
            try:
                return operation(*args, **kwargs)
            except redis.OutOfMemoryError as error:
                raise StoreOutOfMemory(self._out_of_memory(error)) from None
            except (redis.ConnectionError, redis.TimeoutError) as error:
                delay = next(delays, None)
                if delay is None:
                    raise StoreUnavailable(f"buffer_url: {self.url} unreachable after {tries} tries "
                                           f"({self._scrub(error)})") from None
                time.sleep(delay)

    def _check_config(self, reply: list[str]) -> None:
        """Raise the ``ValueError`` of a script's ``mismatch`` verdict, naming the argument."""
        if reply[0] == "mismatch":
            field, stored = reply[1], reply[2]
            if field == "version":
                raise ValueError(f"prefix: {self.prefix!r} on {self.url} holds a store of layout version "
                                 f"{stored}, this code writes version {STATE_VERSION}")
            mine = {"capacity": self.capacity, "kappa": self.kappa, "store_responses": self.store_responses}[field]
            theirs = {"capacity": int, "kappa": float, "store_responses": lambda flag: flag == "1"}[field](stored)
            env_arg = {"capacity": "buffer_size", "kappa": "kappa", "store_responses": "strategy"}[field]
            raise ValueError(f"{field}: the store {self.prefix!r} on {self.url} was created with {theirs!r}, "
                             f"this worker is configured with {mine!r}; set {env_arg} as the store's, or use "
                             "another buffer_prefix")

    @property
    def step(self) -> int:
        """Groups observed by every worker of this store."""
        return int(self._call(self._client.hget, self._keys[1], "step") or 0)

    def __len__(self) -> int:
        return int(self._call(self._client.zcard, self._keys[2]))

    def sample(self) -> Instance:
        """Draw one instance with probability proportional to exp(kappa * S), counting the draw once:
        a retry after a lost reply carries the draw's id and gets the same instance, uncounted."""
        with self._rng_lock:
            uniform = float(self._rng.random())
        draw = f"{self.prefix}:draw:{uuid.uuid4().hex}"
        reply = self._call(self._sample, keys=[*self._keys, draw],
                           args=(str(self.capacity), repr(self.kappa), repr(uniform)))
        if reply is None:
            raise ValueError("buffer: cannot sample from an empty buffer")
        body, score, scored, times = reply
        return self._instance(body, float(score), scored, times)

    def observe(self, group: Group) -> None:
        """Score the group's parent and insert its children, in one atomic script.

        The parent is matched by id and by its (task, latest iterate) key, so
        an id that a wiped server handed out again never rescores a stranger.
        A retry after a lost reply is recognised by the group's token and not
        applied twice.
        """
        task_id = group.task.task_id
        parent = "" if group.parent_id is None else _member(group.parent_id)
        token = uuid.uuid4().hex
        args = [*self._config, token, parent, dedupe_key(task_id, group.previous), repr(group.learnability)]
        for child in group.children(self.store_responses):
            args += [dedupe_key(task_id, child.latest), repr(float(child.score)), task_id, str(child.depth),
                     _body_tail(group.task, child.iterates, child.iterate_correct, group.parent_id)]
        reply = self._call(self._observe, keys=[*self._keys, f"{self.prefix}:group:{token}"], args=args)
        self._check_config(reply)
        if reply[0] == "created":
            logger.warning("buffer_url: the store %r on %s had lost its contents (a restart without "
                           "persistence?); the curriculum starts again from this group", self.prefix, self.url)

    def _read(self, *names: str) -> dict[str, dict[str, Any]]:
        """One consistent snapshot of the named keys, each as a dict (``redis_scripts.read_snapshot``:
        it answers while the server's memory is full)."""
        return self._call(redis_scripts.read_snapshot, self._client, self.prefix, names)

    @staticmethod
    def _instance(body: str, score: float, scored: str, times: str | int) -> Instance:
        """An instance from its stored body and the columns kept beside it."""
        return Instance.from_dict({**json.loads(body), "score": float(score), "scored_step": int(scored),
                                   "times_sampled": int(times)})

    def _held(self, snapshot: dict[str, dict[str, Any]]) -> list[Instance]:
        """The snapshot's instances in slot order."""
        return [self._instance(snapshot["body"][member], snapshot["scores"][member], snapshot["scored"][member],
                               snapshot["sampled"][member])
                for _, member in sorted((int(slot), member) for slot, member in snapshot["leaves"].items())]

    def instances(self) -> Iterator[Instance]:
        """The held instances in slot order (as ``ExitBuffer``), from one snapshot."""
        return iter(self._held(self._read("leaves", "scores", "body", "scored", "sampled")))

    def metrics(self) -> dict[str, float]:
        """``ExitBuffer.metrics()``'s keys, from counters the scripts maintain (O(log N))."""
        size, total, top, depth_sum, distinct = self._call(self._metrics, keys=self._keys)
        return buffer_metrics(size, float(total), float(top), depth_sum, distinct, self.step)

    def state_dict(self) -> dict[str, Any]:
        """``ExitBuffer.state_dict``'s layout (instances in slot order) with this client's generator state."""
        snapshot = self._read("state", "leaves", "scores", "body", "scored", "sampled")
        with self._rng_lock:
            rng = self._rng.bit_generator.state
        return {"version": STATE_VERSION, "capacity": self.capacity, "kappa": self.kappa,
                "store_responses": self.store_responses, "step": int(snapshot["state"].get("step", 0)),
                "next_id": int(snapshot["state"].get("next_id", 0)), "rng": rng,
                "instances": [instance.to_dict() for instance in self._held(snapshot)]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the whole store with a snapshot (of either store), atomically for every worker;
        ``buffer.state.check_state``'s ``ValueError`` when it does not fit."""
        restored = check_state(state, self.capacity, self.kappa, self.store_responses)
        rng = restored.rng
        held = restored.instances
        columns = {
            "scores": {_member(i.instance_id): i.score for i in held},
            "body": {_member(i.instance_id): _body(i.instance_id, i.created_step,
                                                   _body_tail(i.task, i.iterates, i.iterate_correct, i.parent_id))
                     for i in held},
            "scored": {_member(i.instance_id): i.scored_step for i in held},
            "sampled": {_member(i.instance_id): i.times_sampled for i in held},
            "info": {_member(i.instance_id): json.dumps([dedupe_key(i.task.task_id, i.latest), i.task.task_id,
                                                         i.depth, slot], ensure_ascii=False)
                     for slot, i in enumerate(held)},
            "keys": {dedupe_key(i.task.task_id, i.latest): _member(i.instance_id) for i in held},
            "tasks": dict(Counter(i.task.task_id for i in held)),
            "leaves": {slot: _member(i.instance_id) for slot, i in enumerate(held)},
        }
        meta = dict(zip(("version", "capacity", "kappa", "store_responses"), self._config, strict=True))
        counters = {"step": restored.step, "next_id": restored.next_id, "depth_sum": sum(i.depth for i in held),
                    "score_sum": repr(math.fsum(i.score for i in held))}

        def write() -> None:
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(*self._keys)
            pipe.hset(self._keys[0], mapping=meta)
            pipe.hset(self._keys[1], mapping=counters)
            for name, mapping in columns.items():
                if mapping:
                    key = f"{self.prefix}:{name}"
                    pipe.zadd(key, mapping) if name == "scores" else pipe.hset(key, mapping=mapping)
            pipe.eval(redis_scripts.REBUILD_TREE, len(self._keys), *self._keys, str(self.capacity), repr(self.kappa))
            pipe.execute()
        self._call(write)
        with self._rng_lock:
            self._rng = rng

    def check_invariants(self) -> None:
        """``ValueError`` listing every broken invariant of the stored structures (for tests and
        operators; ``redis_scripts.layout_problems`` says what is checked)."""
        problems = redis_scripts.layout_problems(self._read(*redis_scripts.KEY_NAMES), self.capacity, self.kappa)
        if problems:
            raise ValueError("store: " + "; ".join(problems))
