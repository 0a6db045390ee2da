"""The Redis store under many processes and faults: concurrent workers, SIGKILL, server restarts."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from redis_fixture import FAST_RETRIES, fresh_prefix, group_for, own_server, redis_server, redis_store  # noqa: F401 (fixtures)
from self_improve.buffer.redis_buffer import RedisBuffer
from self_improve.buffer.store import StoreUnavailable
from self_improve.grouping import Task

pytestmark = pytest.mark.redis  # the real parts this file's tests start (pyproject's markers)

REPO = Path(__file__).resolve().parents[2]
WORKERS = 4
GROUPS_PER_WORKER = 100
CAPACITY = 24


def hammer(url: str, prefix: str, worker: int, groups: int, workers: int = 1) -> tuple[list, float, float]:
    """One env worker: draw a parent (or a shared base task), observe a group of overlapping
    responses, and record (parent_id, S, task_id) of each group. S is unique per group
    (returns (0, x, 0, x) with x unique), so a held score names the group that set it.
    Starts once ``workers`` workers are ready; returns the records and when it ran."""
    store = RedisBuffer(url, capacity=CAPACITY, kappa=10.0, seed=worker, store_responses=True, prefix=prefix)
    gate = redis.Redis.from_url(url)
    gate.incr(f"{prefix}:ready")
    while int(gate.get(f"{prefix}:ready")) < workers:
        time.sleep(0.001)
    rng = np.random.default_rng(worker)
    records = []
    started = time.monotonic()
    for n in range(groups):
        parent = store.sample() if len(store) and rng.random() < 0.7 else None
        x = (worker * groups + n + 1) / (WORKERS * groups + 1)
        responses = tuple(f"answer {int(k)}" for k in rng.integers(0, 20, size=3))  # duplicates across workers
        group = group_for(Task(f"t{int(rng.integers(0, 3))}", "q", "1"), parent, responses + ("right",),
                          (False, False, False, True), (0.0, x, 0.0, x))
        store.observe(group)
        records.append((group.parent_id, group.learnability, group.task.task_id))
    return records, started, time.monotonic()


def test_concurrent_workers_keep_every_invariant_and_count_every_group(redis_server) -> None:
    prefix = fresh_prefix()
    with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
        results = pool.starmap(hammer, [(redis_server.url, prefix, w, GROUPS_PER_WORKER, WORKERS)
                                        for w in range(WORKERS)])
    assert max(start for _, start, _ in results) < min(end for _, _, end in results)  # all ran at once
    store = redis_store(redis_server.url, capacity=CAPACITY, prefix=prefix)
    store.check_invariants()
    assert store.step == WORKERS * GROUPS_PER_WORKER and len(store) == CAPACITY
    groups_by_score = {score: (parent, task) for records, _, _ in results for parent, score, task in records}
    for instance in store.instances():
        if instance.scored_step > instance.created_step:  # rescored as a parent: by one of its own groups
            assert groups_by_score[instance.score] == (instance.instance_id, instance.task.task_id)
        elif not instance.iterate_correct[-1]:  # an unsolved child carries the S of the group that made it
            assert groups_by_score[instance.score] == (instance.parent_id, instance.task.task_id)
        else:
            assert instance.score == 0.0


def test_a_worker_killed_mid_update_leaves_a_consistent_store(redis_server) -> None:
    prefix = fresh_prefix()
    code = ("import sys; from test_redis_concurrency import hammer; print('ready', flush=True); "
            f"hammer({redis_server.url!r}, {prefix!r}, 0, 10 ** 9)")
    here = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "integration")]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([*here, *sys.path])}
    worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=environment)
    try:
        assert worker.stdout.readline().strip() == "ready"
        store = redis_store(redis_server.url, capacity=CAPACITY, prefix=prefix)
        deadline = time.monotonic() + 30
        while store.step < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait()
    assert worker.returncode == -signal.SIGKILL
    steps = store.step
    assert steps >= 50
    store.check_invariants()
    store.observe(group_for(Task("after", "q", "1"), store.sample(), ("z",), (False,)))
    assert store.step == steps + 1
    store.check_invariants()


def test_a_stopped_server_raises_store_unavailable_and_a_restarted_one_serves_again(own_server) -> None:
    own_server.appendonly = True
    own_server.start()
    store = redis_store(own_server.url)
    store.observe(group_for(Task("t", "q", "1"), None, ("a", "b"), (False, True)))
    before = {key: value for key, value in store.state_dict().items() if key != "rng"}
    own_server.stop()
    for call in (store.sample, lambda: store.observe(group_for(Task("t", "q", "1"), None, ("c",), (False,))),
                 store.metrics, store.state_dict, lambda: len(store)):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=f"unreachable after {len(FAST_RETRIES) + 1} tries"):
            call()
        assert time.monotonic() - started < 2.0
    own_server.start()
    assert {key: value for key, value in store.state_dict().items() if key != "rng"} == before  # kept by the AOF
    store.observe(group_for(Task("t", "q", "1"), store.sample(), ("d",), (False,)))
    assert store.step == 2
    store.check_invariants()


def test_a_server_restarted_empty_starts_the_curriculum_again_without_rescoring_strangers(own_server,
                                                                                          caplog) -> None:
    own_server.start()
    store = redis_store(own_server.url)
    store.observe(group_for(Task("old", "q", "1"), None, ("a",), (False,), (0.0,)))
    (old_parent,) = list(store.instances())
    own_server.stop()
    own_server.start()  # no persistence: the data is gone and ids start again at 0
    with caplog.at_level(logging.WARNING, logger="self_improve"):
        store.observe(group_for(Task("new", "q", "1"), None, ("b",), (False,), (0.0,)))
    assert "had lost its contents" in caplog.text
    (stranger,) = list(store.instances())
    assert stranger.instance_id == old_parent.instance_id
    store.observe(group_for(Task("old", "q", "1"), old_parent, ("c", "d"), (True, False)))
    assert {i.task.task_id: i.score for i in store.instances() if i.instance_id == stranger.instance_id} == {"new": 0.0}
    assert store.step == 2
    store.check_invariants()
