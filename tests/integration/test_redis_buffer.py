"""The Redis store against a real redis-server: ExitBuffer's semantics, checkpoints, configuration, URLs."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from redis_fixture import (  # noqa: F401 (fixtures)
    PASSWORD_VAR,
    fresh_prefix,
    group_for,
    own_server,
    redis_server,
    redis_store,
)
from self_improve.buffer.exit_buffer import ExitBuffer
from self_improve.buffer.redis_buffer import RedisBuffer, redact
from self_improve.buffer.store import BufferStore, StoreUnavailable
from self_improve.exit_config import ExitConfig
from self_improve.exit_loop import ExitLoop
from self_improve.grouping import Group, Task
from unit.test_exit_buffer import operations, replay

pytestmark = pytest.mark.redis  # the real parts this file's tests start (pyproject's markers)

TASK = Task("train-1", "What is 2+3?", "5")
STORES = ("file", "redis")


def make(kind: str, server, capacity: int = 8, kappa: float = 10.0, seed: int = 0,
         store_responses: bool = True) -> ExitBuffer | RedisBuffer:
    if kind == "file":
        return ExitBuffer(capacity=capacity, kappa=kappa, seed=seed, store_responses=store_responses)
    return redis_store(server.url, capacity, kappa, seed, store_responses)


def base(task: Task = TASK, responses=("5", "6", "7", "5 again"), correct=(True, False, False, True),
         returns=None) -> Group:
    return group_for(task, None, responses, correct, returns)


def by_latest(store) -> dict:
    return {instance.latest: instance for instance in store.instances()}


@pytest.mark.parametrize("kind", STORES)
def test_base_group_inserts_one_child_per_response_scored_s_or_zero_when_solved(kind, redis_server) -> None:
    store = make(kind, redis_server)
    store.observe(base())
    held = by_latest(store)
    assert {latest: i.score for latest, i in held.items()} == {"5": 0.0, "6": 0.25, "7": 0.25, "5 again": 0.0}
    assert {(i.depth, i.parent_id, i.created_step) for i in held.values()} == {(0, None, 1)}
    assert sorted(i.instance_id for i in held.values()) == [0, 1, 2, 3] and store.step == 1


@pytest.mark.parametrize("kind", STORES)
def test_parent_takes_the_new_learnability_and_children_extend_its_history(kind, redis_server) -> None:
    store = make(kind, redis_server, capacity=16)
    store.observe(base())
    parent = by_latest(store)["6"]
    store.observe(group_for(TASK, parent, ("a", "b", "c", "d"), (True, False, False, False)))
    held = by_latest(store)
    assert held["6"].score == pytest.approx(0.1875) and held["6"].scored_step == 2
    child = held["b"]
    assert (child.iterates, child.iterate_correct, child.depth) == (("6", "b"), (False, False), 1)
    assert (child.parent_id, child.score, child.created_step) == (parent.instance_id, pytest.approx(0.1875), 2)
    assert held["a"].score == 0.0


@pytest.mark.parametrize("kind", STORES)
def test_an_evicted_parent_is_ignored_when_its_group_returns(kind, redis_server) -> None:
    store = make(kind, redis_server, capacity=4)
    store.observe(base())
    parent = by_latest(store)["6"]
    store.observe(base(Task("train-2", "q", "1"), ("w", "x", "y", "z"), (False,) * 4, (0.0, 1.0, 0.0, 1.0)))
    assert parent.instance_id not in {i.instance_id for i in store.instances()}
    store.observe(group_for(TASK, parent, ("a", "b", "c", "d"), (False,) * 4))
    assert len(store) == 4 and store.step == 3


@pytest.mark.parametrize("kind", STORES)
def test_identical_task_and_normalised_response_is_stored_once(kind, redis_server) -> None:
    store = make(kind, redis_server)
    store.observe(base(responses=("same  answer", "same answer", " same answer\n", "other"),
                       correct=(False, False, False, True)))
    store.observe(base(Task("train-2", "q", "1"), ("same answer",), (False,)))
    assert sorted((i.task.task_id, i.latest) for i in store.instances()) == [
        ("train-1", "other"), ("train-1", "same  answer"), ("train-2", "same answer")]


@pytest.mark.parametrize("kind", STORES)
def test_a_full_store_replaces_the_oldest_of_the_tied_lowest(kind, redis_server) -> None:
    store = make(kind, redis_server, capacity=2)
    store.observe(base(responses=("a", "b"), correct=(True, False)))  # scores 0, 0.25
    store.observe(base(responses=("c", "d"), correct=(True, True)))  # 0, 0: "c" replaces "a", then "d" replaces "c"
    assert sorted(by_latest(store)) == ["b", "d"]
    store.observe(base(Task("t3", "q", "1"), ("e",), (False,), (0.0,)))  # S = 0 >= lowest 0: replaces "d"
    assert sorted(by_latest(store)) == ["b", "e"]


@pytest.mark.parametrize("kind", STORES)
def test_a_curriculum_store_keeps_questions_and_rescores_them(kind, redis_server) -> None:
    store = make(kind, redis_server, store_responses=False)
    store.observe(base())
    store.observe(base())  # the same question again is a duplicate
    (question,) = list(store.instances())
    assert (question.iterates, question.score, question.depth) == ((), 0.25, 0)
    store.observe(group_for(TASK, question, ("1", "2"), (False, False)))
    (rescored,) = list(store.instances())
    assert (rescored.instance_id, rescored.score, rescored.scored_step, store.step) == (question.instance_id, 0.0, 3, 3)


@pytest.mark.parametrize("kind", STORES)
def test_sampling_an_empty_store_raises(kind, redis_server) -> None:
    with pytest.raises(ValueError, match="empty"):
        make(kind, redis_server).sample()


@pytest.mark.parametrize("kind", STORES)
def test_sampling_frequencies_follow_exp_kappa_score(kind, redis_server) -> None:
    store = make(kind, redis_server, seed=123)
    for n, returns in enumerate([(0.0, 0.0), (0.0, 0.5), (0.0, 1.0), (0.2, 0.6)]):
        store.observe(base(Task(f"t{n}", "q", "1"), ("x", "y"), (False, False), returns))
    held = list(store.instances())
    scores = np.array([i.score for i in held])
    expected = np.exp(10.0 * scores) / np.exp(10.0 * scores).sum()
    draws = 10_000
    index = {i.instance_id: n for n, i in enumerate(held)}
    counts = np.bincount([index[store.sample().instance_id] for _ in range(draws)], minlength=len(held))
    chi_square = float((((counts - draws * expected) ** 2) / (draws * expected)).sum())
    assert chi_square < 24.3  # 99.9% quantile of chi-square with 7 degrees of freedom
    assert np.abs(counts / draws - expected).max() < 0.02
    assert sorted(i.times_sampled for i in store.instances()) == sorted(counts.tolist())


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(STORES), st.integers(1, 6), operations)
def test_a_store_never_exceeds_capacity_and_ids_stay_unique(redis_server, kind, capacity, ops) -> None:
    store = make(kind, redis_server, capacity=capacity, seed=1)
    replay(store, ops)
    assert len(store) <= capacity
    assert len({i.instance_id for i in store.instances()}) == len(store)
    if kind == "redis":
        store.check_invariants()


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(STORES), st.integers(1, 6), operations, st.lists(st.floats(0, 0.25), min_size=1, max_size=5))
def test_a_full_store_admits_exactly_scores_at_or_above_the_lowest(redis_server, kind, capacity, ops,
                                                                   new_scores) -> None:
    store = make(kind, redis_server, capacity=capacity, seed=2)
    replay(store, ops)
    for n, score in enumerate(new_scores):
        lowest = min((i.score for i in store.instances()), default=math.inf)
        full = len(store) == capacity
        # Two identical wrong responses: one child with S = x^2 / 4 (the twin is a duplicate).
        group = base(Task(f"new{n}", "q", "1"), ("a", "a"), (False, False), (0.0, 2 * math.sqrt(score)))
        store.observe(group)
        admitted = any(i.task.task_id == f"new{n}" for i in store.instances())
        assert admitted == (not full or group.learnability >= lowest)
        if full:
            assert len(store) == capacity


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(STORES), st.integers(1, 6), operations)
def test_state_dict_round_trips_exactly_including_the_sampler(redis_server, kind, capacity, ops) -> None:
    store = make(kind, redis_server, capacity=capacity, seed=7)
    replay(store, ops)
    restored = make(kind, redis_server, capacity=capacity, seed=999)
    restored.load_state_dict(json.loads(json.dumps(store.state_dict())))
    assert restored.state_dict() == store.state_dict()
    if len(store):
        assert [store.sample().instance_id for _ in range(5)] == [restored.sample().instance_id for _ in range(5)]


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(STORES), st.integers(1, 6), operations)
def test_metrics_agree_with_the_held_instances(redis_server, kind, capacity, ops) -> None:
    store = make(kind, redis_server, capacity=capacity, seed=3)
    replay(store, ops)
    held = list(store.instances())
    metrics = store.metrics()
    assert metrics["buffer_size"] == len(held)
    assert metrics["buffer_score_mean"] == pytest.approx(np.mean([i.score for i in held]))
    assert metrics["buffer_score_max"] == max(i.score for i in held)
    assert metrics["buffer_depth_mean"] == pytest.approx(np.mean([i.depth for i in held]))
    assert metrics["buffer_distinct_tasks"] == len({i.task.task_id for i in held})


@pytest.mark.parametrize("kind", STORES)
def test_an_empty_store_reports_zero_metrics_under_the_same_keys(kind, redis_server) -> None:
    assert make(kind, redis_server).metrics() == ExitBuffer().metrics()


def test_the_redis_store_is_a_remote_buffer_store(redis_server) -> None:
    store = make("redis", redis_server)
    assert isinstance(store, BufferStore) and store.remote and not ExitBuffer.remote


VOCABULARY = ("a", "a ", "b", " b\n", "c", "d  e", "d e", "f")
groups = st.lists(st.tuples(st.integers(0, 3), st.one_of(st.none(), st.just("sample"), st.integers(0, 10 ** 6)),
                            st.lists(st.tuples(st.sampled_from(VOCABULARY), st.booleans(), st.floats(0, 1)),
                                     min_size=1, max_size=8)),
                  min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.booleans(), st.floats(0, 50), groups)
def test_the_redis_store_and_exit_buffer_agree_on_every_draw_and_every_instance(redis_server, capacity,
                                                                                store_responses, kappa, ops) -> None:
    """Same seed, same groups: the same parents drawn, and the same ids, scores, iterates, lineage,
    steps and slots (parents also taken from every instance ever held, so evicted parents and
    duplicate responses come up)."""
    reference = ExitBuffer(capacity=capacity, kappa=kappa, seed=4, store_responses=store_responses)
    store = make("redis", redis_server, capacity=capacity, kappa=kappa, store_responses=store_responses)
    store.load_state_dict(reference.state_dict())  # the same generator state
    seen: dict = {}
    for task_index, choice, rollouts in ops:
        parent = None
        if choice == "sample" and len(reference):
            parent = reference.sample()
            assert store.sample() == parent
        elif isinstance(choice, int) and seen:
            parent = list(seen.values())[choice % len(seen)]
        responses, correct, returns = zip(*rollouts, strict=True)
        group = group_for(Task(f"t{task_index}", "q", "1"), parent, responses, correct, returns)
        reference.observe(group)
        store.observe(group)
        seen |= {i.instance_id: i for i in reference.instances() if i.instance_id not in seen}
    assert store.state_dict() == reference.state_dict()
    assert store.metrics() == pytest.approx(reference.metrics())
    store.check_invariants()


def fill(store, groups_count: int = 6) -> None:
    for n in range(groups_count):
        store.observe(base(Task(f"t{n % 4}", "q", "1"), (f"x{n}", f"y{n}", "z"), (False, n % 2 == 0, False),
                           (0.0, 1.0, n / 10)))


def test_a_file_checkpoint_restores_into_redis_and_both_then_evolve_identically(redis_server) -> None:
    reference = ExitBuffer(capacity=6, seed=5)
    fill(reference)
    reference.sample()
    store = make("redis", redis_server, capacity=6, seed=0)
    store.load_state_dict(json.loads(json.dumps(reference.state_dict())))
    parent = max(reference.instances(), key=lambda i: (i.score, i.instance_id))
    for target in (reference, store):
        target.observe(group_for(TASK, parent, ("p", "q"), (False, True)))
    assert store.state_dict() == reference.state_dict()
    assert [store.sample() for _ in range(10)] == [reference.sample() for _ in range(10)]
    store.check_invariants()


def test_a_redis_checkpoint_restores_into_a_file_buffer(redis_server) -> None:
    store = make("redis", redis_server, capacity=6, seed=5)
    fill(store)
    store.sample()
    reference = ExitBuffer(capacity=6, seed=0)
    reference.load_state_dict(json.loads(json.dumps(store.state_dict())))
    assert reference.state_dict() == store.state_dict()


def test_one_seed_draws_the_same_sequence_from_the_same_contents(redis_server) -> None:
    first, second = (make("redis", redis_server, seed=11) for _ in range(2))
    for store in (first, second):
        fill(store)
    assert [first.sample().instance_id for _ in range(20)] == [second.sample().instance_id for _ in range(20)]


@pytest.mark.parametrize(("name", "change"), [("capacity", {"capacity": 9}), ("kappa", {"kappa": 1.0}),
                                              ("store_responses", {"store_responses": False})])
def test_a_worker_configured_differently_from_the_store_is_refused_naming_the_argument(redis_server, name,
                                                                                      change) -> None:
    prefix = fresh_prefix()
    settings_ = {"capacity": 8, "kappa": 10.0, "store_responses": True} | change
    RedisBuffer(redis_server.url, capacity=8, kappa=10.0, seed=0, store_responses=True, prefix=prefix)
    with pytest.raises(ValueError, match=f"^{name}: the store '{prefix}'"):
        RedisBuffer(redis_server.url, seed=1, prefix=prefix, **settings_)
    RedisBuffer(redis_server.url, seed=1, prefix=fresh_prefix(), **settings_)  # another prefix: another run


def test_loading_a_checkpoint_that_does_not_fit_raises_naming_the_key(redis_server) -> None:
    store = make("redis", redis_server, capacity=4)
    with pytest.raises(ValueError, match="^capacity"):
        store.load_state_dict(ExitBuffer(capacity=8).state_dict())
    state = ExitBuffer(capacity=4).state_dict()
    del state["rng"]
    with pytest.raises(ValueError, match="^rng"):
        store.load_state_dict(state)
    fill(reference := ExitBuffer(capacity=4))
    state = reference.state_dict()
    state["instances"][1] = state["instances"][0] | {"instance_id": state["instances"][1]["instance_id"]}
    with pytest.raises(ValueError, match="^instances: .*repeats the response"):
        store.load_state_dict(state)


@pytest.mark.parametrize(("damage", "problem"), [
    (lambda client, prefix: client.hdel(f"{prefix}:keys", client.hkeys(f"{prefix}:keys")[0]), "keys"),
    (lambda client, prefix: client.hset(f"{prefix}:tree", "1", "0.5"), "tree: node 1"),
    (lambda client, prefix: client.zadd(f"{prefix}:scores", {"0000000000000000": 0.3}), "scores"),
    (lambda client, prefix: client.hset(f"{prefix}:leaves", "0", "0000000000000099"), "leaves")])
def test_the_invariant_check_reports_a_damaged_index(redis_server, damage, problem) -> None:
    store = make("redis", redis_server)
    fill(store)
    store.check_invariants()
    damage(redis.Redis.from_url(redis_server.url), store.prefix)
    with pytest.raises(ValueError, match=f"^store: .*{problem}"):
        store.check_invariants()


def test_draws_whose_weights_underflow_scan_the_slots_and_match_the_file_buffer(redis_server) -> None:
    """kappa = 5000 with every S far below 0.25: exp(kappa (S - 0.25)) is 0 in floating point, so
    the tree is bypassed; the draws still follow exp(kappa S) exactly as ExitBuffer's do."""
    reference = ExitBuffer(capacity=8, kappa=5000.0, seed=9)
    for n, score in enumerate((0.0, 0.0001, 0.0002, 0.0003)):
        reference.observe(base(Task(f"t{n}", "q", "1"), ("x", "x"), (False, False), (0.0, 2 * math.sqrt(score))))
    store = make("redis", redis_server, kappa=5000.0)
    store.load_state_dict(reference.state_dict())
    draws = [store.sample() for _ in range(300)]
    assert draws == [reference.sample() for _ in range(300)]
    assert len({i.instance_id for i in draws}) == 4


def test_a_retried_group_whose_reply_was_lost_is_applied_once(redis_server, monkeypatch) -> None:
    store = make("redis", redis_server)
    script = store._observe
    calls = []

    def reply_lost_once(*args, **kwargs):
        result = script(*args, **kwargs)
        calls.append(result)
        if len(calls) == 1:
            raise redis.ConnectionError("connection reset after the script ran")
        return result

    monkeypatch.setattr(store, "_observe", reply_lost_once)
    store.observe(base())
    assert [reply[0] for reply in calls] == ["ok", "duplicate"]
    assert (store.step, len(store)) == (1, 4)


def test_an_unreachable_server_at_construction_raises_naming_the_url() -> None:
    with pytest.raises(ValueError, match=r"^buffer_url: cannot reach redis://127\.0\.0\.1:1/0 "):
        RedisBuffer("redis://127.0.0.1:1/0", capacity=8, kappa=10.0, seed=0, store_responses=True)


@pytest.mark.parametrize(("name", "kwargs"), [
    ("capacity", {"capacity": 0}), ("kappa", {"kappa": math.nan}), ("prefix", {"prefix": ""}),
    ("prefix", {"prefix": "two words"}), ("retry_delays", {"retry_delays": (-1.0,)}), ("timeout_s", {"timeout_s": 0}),
    ("buffer_url", {"url": "http://127.0.0.1:1"})])
def test_invalid_settings_raise_naming_the_setting(name: str, kwargs: dict) -> None:
    arguments = {"url": "redis://127.0.0.1:1/0", "capacity": 8, "kappa": 10.0, "seed": 0,
                 "store_responses": True} | kwargs
    with pytest.raises(ValueError, match=f"^{name}"):
        RedisBuffer(**arguments)


@pytest.mark.parametrize(("url", "safe"), [
    ("redis://:secret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("redis://alice:secret@host:1/2", "redis://alice:***@host:1/2"),
    ("rediss://host:1/0?password=secret&ssl_cert_reqs=none", "rediss://host:1/0?password=***&ssl_cert_reqs=none"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://[::1:secret@x", "<unparseable URL>")])
def test_redact_hides_the_password_and_keeps_the_rest(url: str, safe: str) -> None:
    assert redact(url) == safe


def test_a_password_by_variable_name_works_and_never_appears_in_repr_errors_or_logs(
        own_server, caplog, monkeypatch) -> None:
    own_server.password = "s3cr3t-pw"
    own_server.start()
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(PASSWORD_VAR, "s3cr3t-pw")
    store = redis_store(own_server.url, password_var=PASSWORD_VAR)
    store.observe(base())
    assert len(store) == 4 and "s3cr3t-pw" not in repr(store)
    monkeypatch.setenv(PASSWORD_VAR, "wrong-pw")
    with pytest.raises(ValueError, match=r"^buffer_url: cannot reach redis://127.0.0.1:\d+/0 \(") as refused:
        redis_store(own_server.url, password_var=PASSWORD_VAR)
    own_server.stop()
    with pytest.raises(StoreUnavailable) as unavailable:
        store.observe(base())
    for text in (str(refused.value), str(unavailable.value), caplog.text):
        assert "s3cr3t-pw" not in text and "wrong-pw" not in text
    assert f"buffer_url: {own_server.url} unreachable" in str(unavailable.value)


def test_workers_sharing_a_store_and_a_seed_draw_different_streams(redis_server) -> None:
    first = make("redis", redis_server, seed=11)
    second = redis_store(redis_server.url, seed=11, prefix=first.prefix)
    fill(first)
    assert [first.sample().instance_id for _ in range(20)] != [second.sample().instance_id for _ in range(20)]


def test_workers_on_one_store_draw_their_own_coins_and_request_seeds_and_the_first_matches_one_process(
        redis_server) -> None:
    config = ExitConfig(min_buffer_size=1, select_prob=0.5, divergence_prob=0.5).resolved()
    prefix = fresh_prefix()
    workers = [ExitLoop(config, redis_store(redis_server.url, prefix=prefix)) for _ in range(3)]
    alone = ExitLoop(config, ExitBuffer(config.buffer_size, config.kappa, config.seed))
    assert [loop.store.stream for loop in workers] == [0, 1, 2] and alone.store.stream == 0
    workers[0].store.observe(base())
    alone.store.observe(base())

    def decisions(loop: ExitLoop) -> list[tuple[str, int]]:
        return [(loop.plan(TASK).kind, loop.request_seed()) for _ in range(40)]

    first, second, third = (decisions(loop) for loop in workers)
    assert first == decisions(alone)
    assert len({tuple(first), tuple(second), tuple(third)}) == 3
    assert {kind for kind, _ in second} == {"base", "improve", "diverge"}


def test_both_stores_draw_the_same_instances_when_every_weight_underflows(redis_server) -> None:
    """kappa (0.25 - S) > 745 for every S: the sum tree's leaves are all 0 in both stores, and
    both fall back to the exact draw relative to the top score, from the same uniform numbers."""
    kappa = 5_000.0
    reference = ExitBuffer(capacity=8, kappa=kappa, seed=9)
    for n, returns in enumerate([(0.0, 0.02), (0.0, 0.03), (0.0, 0.025), (0.0, 0.0)]):
        reference.observe(base(Task(f"t{n}", "q", "1"), ("x", "x"), (False, False), returns))
    assert max(i.score for i in reference.instances()) < 0.25 - 745 / kappa
    store = make("redis", redis_server, capacity=8, kappa=kappa)
    store.load_state_dict(reference.state_dict())
    draws = [reference.sample() for _ in range(40)]
    assert [store.sample() for _ in range(40)] == draws
    assert len({draw.instance_id for draw in draws}) > 1  # close scores: more than the top one comes up
