"""The diversity bonus of Section 4.2: Eq. 6 by hand, its degenerate cases, both
deliveries (advantages and shaped rewards), buffer diversity, and the bonus
reaching the saved results of the real ``vf-eval`` with the real embedding
model against the real scripted OpenAI server."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from test_classic_host import client_for, group_inputs, small_env

from conftest import REPO, run_vf_eval
from scripted_server import ScriptedServer, cycle_policy
from self_improve.exit_config import DEFAULT_EMBEDDING_MODEL
from self_improve.scoring import diversity
from self_improve.scoring.diversity import (
    BufferEmbeddings,
    bonus_advantages,
    diversity_bonus,
    embed_texts,
    instance_text,
    mean_pairwise_cosine_distance,
    shaped_returns,
)

pytestmark = pytest.mark.vf_eval  # the real parts this file's tests start (pyproject's markers)

G = 4
FORMAT_WEIGHT = 0.1  # load_environment's default format_weight
LINE = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [5.0, 0.0]])
"""Centroid (2, 0); distances 2, 1, 0, 3; range 3 - 0 = 3."""


def step_return(row: dict) -> float:
    """The unshaped return of a saved rollout, rebuilt from its rubric metrics."""
    return row["metrics"]["correct_answer"] + FORMAT_WEIGHT * row["metrics"]["format_reward"]


def run_one_group(env, server: ScriptedServer, index: int) -> list[dict]:
    client = client_for(server)
    return asyncio.run(env.run_group(group_inputs(env, index), client, "scripted", {"max_tokens": 64},
                                     state_columns=["advantage", "trajectory"]))


# --- Eq. 6 -------------------------------------------------------------------------------------


def test_bonus_matches_a_hand_computation_on_fixed_vectors() -> None:
    assert diversity_bonus(LINE, min_range=0.0) == pytest.approx([2 / 3, 1 / 3, 0.0, 1.0])


def test_bonus_of_a_two_dimensional_group_matches_a_hand_computation() -> None:
    vectors = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0], [2.0, 2.0]])
    # centroid (2, 2): four corners at sqrt(8), the middle at 0; range sqrt(8)
    assert diversity_bonus(vectors, min_range=0.0) == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.0])


def test_eq6_is_scale_free_but_the_floor_shrinks_near_duplicates() -> None:
    tiny = LINE * 0.01  # distances 0.02, 0.01, 0, 0.03: range 0.03 < floor 0.1
    assert diversity_bonus(tiny, min_range=0.0) == pytest.approx([2 / 3, 1 / 3, 0.0, 1.0])
    assert diversity_bonus(tiny, min_range=0.1) == pytest.approx([0.2, 0.1, 0.0, 0.3])


def test_floor_below_the_range_leaves_eq6_unchanged() -> None:
    assert diversity_bonus(LINE, min_range=0.1) == pytest.approx(diversity_bonus(LINE, min_range=0.0))


# --- degenerate cases ---------------------------------------------------------------------------


def test_identical_responses_get_zero_bonus_with_the_floor() -> None:
    assert diversity_bonus(np.ones((4, 3)), min_range=0.1).tolist() == [0.0] * 4


def test_identical_responses_are_neutral_without_the_floor() -> None:
    assert diversity_bonus(np.ones((4, 3)), min_range=0.0).tolist() == [1.0] * 4


def test_single_response_gets_bonus_one() -> None:
    assert diversity_bonus(np.array([[0.3, 0.4]]), min_range=0.0).tolist() == [1.0]
    assert diversity_bonus(np.array([[0.3, 0.4]]), min_range=0.1).tolist() == [1.0]


def test_two_responses_have_equal_distances_and_stay_finite_without_the_floor() -> None:
    vectors = np.array([[0.0, 0.0], [1.0, 0.0]])
    assert diversity_bonus(vectors, min_range=0.0).tolist() == [1.0, 1.0]
    assert diversity_bonus(vectors, min_range=0.1) == pytest.approx([5.0, 5.0])


def test_empty_responses_are_neutral_and_do_not_move_the_others() -> None:
    far_away = np.array([[100.0, -50.0]])
    vectors = np.vstack([LINE[:2], far_away, LINE[2:]])
    bonus = diversity_bonus(vectors, min_range=0.0, present=[True, True, False, True, True])
    assert bonus == pytest.approx([2 / 3, 1 / 3, 1.0, 0.0, 1.0])


def test_fewer_than_two_non_empty_responses_are_all_neutral() -> None:
    assert diversity_bonus(LINE, min_range=0.1, present=[False, True, False, False]).tolist() == [1.0] * 4


@settings(max_examples=200, deadline=None)
@given(
    vectors=st.integers(1, 9).flatmap(lambda g: arrays(np.float64, (g, 3), elements=st.floats(-1e3, 1e3))),
    min_range=st.sampled_from([0.0, 1e-9, 0.1, 5.0]),
    data=st.data(),
)
def test_bonus_is_finite_and_non_negative_for_any_group(vectors: np.ndarray, min_range: float, data) -> None:
    present = data.draw(st.lists(st.booleans(), min_size=len(vectors), max_size=len(vectors)))
    bonus = diversity_bonus(vectors, min_range=min_range, present=present)
    assert np.isfinite(bonus).all() and (bonus >= 0).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"embeddings": np.zeros(3)}, "embeddings: expected shape"),
        ({"embeddings": np.zeros((0, 3))}, "embeddings: expected shape"),
        ({"embeddings": np.array([[np.nan, 0.0]])}, "embeddings: contain NaN"),
        ({"embeddings": LINE, "min_range": -0.1}, "min_range: must be a finite number"),
        ({"embeddings": LINE, "min_range": math.inf}, "min_range: must be a finite number"),
        ({"embeddings": LINE, "present": [True]}, "present: expected 4 flags"),
    ],
)
def test_bad_bonus_input_raises_a_value_error_naming_it(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        diversity_bonus(**kwargs)


# --- deliveries --------------------------------------------------------------------------------


def test_advantage_delivery_multiplies_each_advantage_by_its_bonus() -> None:
    assert bonus_advantages((0.5, 0.5, -0.5, -0.5), np.array([2.0, 1.0, 0.0, 3.0])) == pytest.approx(
        (1.0, 0.5, 0.0, -1.5))


def test_shaped_returns_match_a_hand_computation() -> None:
    # A = (.5, .5, -.5, -.5); d*A = (1, .1, -.5, -.5); c = mean(d*A) = 0.025
    shaped = shaped_returns((1.0, 1.0, 0.0, 0.0), np.array([2.0, 0.2, 1.0, 1.0]))
    assert shaped == pytest.approx((0.5 + 1.0 - 0.025, 0.5 + 0.1 - 0.025, 0.5 - 0.5 - 0.025, 0.5 - 0.5 - 0.025))


@settings(max_examples=200, deadline=None)
@given(
    returns=st.lists(st.floats(0.0, 1.1), min_size=1, max_size=9),
    data=st.data(),
)
def test_centred_shaped_returns_are_bonus_advantages_minus_one_constant(returns: list[float], data) -> None:
    bonus = np.array(data.draw(st.lists(st.floats(0.0, 20.0), min_size=len(returns), max_size=len(returns))))
    shaped = np.array(shaped_returns(tuple(returns), bonus))
    advantages = np.array(returns) - np.mean(returns)
    target = np.array(bonus_advantages(tuple(advantages), bonus))
    assert shaped - shaped.mean() == pytest.approx(target - target.mean(), abs=1e-9)
    assert shaped.mean() == pytest.approx(np.mean(returns), abs=1e-9)


def test_shaped_returns_leave_a_group_of_equal_returns_unchanged() -> None:
    assert shaped_returns((1.0, 1.0, 1.0), np.array([0.0, 2.0, 9.0])) == pytest.approx((1.0, 1.0, 1.0))


def test_deliveries_reject_a_bonus_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="bonus: expected 2 values"):
        bonus_advantages((0.5, -0.5), np.ones(3))
    with pytest.raises(ValueError, match="bonus: expected 2 values"):
        shaped_returns((1.0, 0.0), np.ones(1))


# --- embeddings (the real default model) -------------------------------------------------------


def test_default_model_embeds_a_batch_into_unit_rows() -> None:
    vectors = embed_texts(DEFAULT_EMBEDDING_MODEL, ["Janet has 3 apples.", "3 + 4 = 7, so \\boxed{7}.", ""])
    assert vectors.shape == (3, 384)
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)


def test_similar_answers_embed_closer_than_different_ones() -> None:
    same, rephrased, other = embed_texts(DEFAULT_EMBEDDING_MODEL, [
        "She sells 16 - 3 - 4 = 9 eggs a day, earning 9 * 2 = 18 dollars. \\boxed{18}",
        "She has 16 - 3 - 4 = 9 eggs left and sells them for 9 * 2 = 18 dollars. \\boxed{18}",
        "The train covers 60 miles per hour for 3 hours: 180 miles. \\boxed{180}",
    ])
    assert np.linalg.norm(same - rephrased) < np.linalg.norm(same - other)


def test_model_is_loaded_once_even_when_many_threads_ask_at_once() -> None:
    name = diversity.resolve_model_path(DEFAULT_EMBEDDING_MODEL)  # a second cache key: the folder itself
    loaded: list[object] = []
    threads = [threading.Thread(target=lambda: loaded.append(diversity.load_model(name).model)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loaded) == 4 and all(model is loaded[0] for model in loaded)


def test_uncached_hub_model_id_is_a_clear_error_not_a_download() -> None:
    with pytest.raises(ValueError, match="embedding_model: cannot load 'no-such-org/no-such-model' offline"):
        embed_texts("no-such-org/no-such-model", ["text"])


def test_missing_sentence_transformers_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # what an absent package raises
    with pytest.raises(ImportError, match=r"pip install 'self-improve\[diversity\]'"):
        embed_texts(str(REPO / "not-loaded-yet"), ["text"])


def test_embedding_nothing_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="texts: need at least one text"):
        embed_texts(DEFAULT_EMBEDDING_MODEL, [])


def test_load_environment_imports_no_model_until_a_group_needs_it() -> None:
    code = ("import sys, self_improve; self_improve.load_environment(strategy='exit', num_train_examples=1, "
            "num_eval_examples=1); print('sentence_transformers' in sys.modules, 'torch' in sys.modules)")
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split()[-2:] == ["False", "False"]


# --- buffer diversity --------------------------------------------------------------------------


def test_mean_pairwise_cosine_distance_matches_a_hand_computation() -> None:
    # pairs: (x, y) cos 0, (x, -x) cos -1, (y, -x) cos 0 -> distances 1, 2, 1
    vectors = np.array([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0]])
    assert mean_pairwise_cosine_distance(vectors) == pytest.approx(4 / 3)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 8), st.integers(1, 4)), elements=st.floats(0.1, 10.0)))
def test_pairwise_distance_equals_the_mean_over_every_pair(vectors: np.ndarray) -> None:
    unit = vectors / np.linalg.norm(vectors, axis=1)[:, None]
    pairs = [1 - unit[i] @ unit[j] for i in range(len(unit)) for j in range(i + 1, len(unit))]
    assert mean_pairwise_cosine_distance(vectors) == pytest.approx(np.mean(pairs), abs=1e-9)


def test_pairwise_distance_of_fewer_than_two_vectors_is_zero() -> None:
    assert mean_pairwise_cosine_distance(np.array([[1.0, 2.0]])) == 0.0


def test_pairwise_distance_of_a_zero_vector_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="vectors: every vector must be finite and non-zero"):
        mean_pairwise_cosine_distance(np.array([[1.0, 0.0], [0.0, 0.0]]))


def test_claimed_texts_are_not_claimed_again_until_added_or_released() -> None:
    cache = BufferEmbeddings()
    cache.add(["known"], np.ones((1, 2)))
    assert cache.claim_missing(["known", "a", "b", "a", "c"], limit=2) == ["a", "b"]
    assert cache.claim_missing(["a", "b", "c"]) == ["c"]
    cache.release(["a"])
    assert cache.claim_missing(["a", "b"]) == ["a"]


def test_the_cache_keeps_its_invariants_under_many_threads() -> None:
    """The loop takes no lock with a remote store, so groups finishing in worker threads call the
    cache at once: no text is claimed twice while pending, no call raises (a dict resized while
    ``retain`` iterates it), and every vector left is one that was added."""
    texts = [f"text {i}" for i in range(4000)]
    claimed: list[list[str]] = []
    errors: list[BaseException] = []
    cache = BufferEmbeddings()
    start = threading.Barrier(8)

    def worker(index: int) -> None:
        try:
            start.wait()
            for round_ in range(20):
                mine = cache.claim_missing(texts, limit=len(texts))
                claimed.append(mine)
                extra = [f"group {index}.{round_}.{k}" for k in range(300)]
                cache.add(extra, np.ones((len(extra), 2)))
                cache.retain(texts[index * 500:] + extra)
                cache.diversity(extra[:3])
        except Exception as error:  # a thread's exception would otherwise only be printed
            errors.append(error)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter allows
    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    every_claim = [text for claim in claimed for text in claim]
    assert sorted(every_claim) == sorted(texts)  # each text claimed once: no add or release came for them
    assert all(np.array_equal(vector, np.ones(2)) for vector in cache._vectors.values())


def test_buffer_diversity_leaves_out_texts_without_a_vector() -> None:
    cache = BufferEmbeddings()
    cache.add(["x", "y", "-x"], np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    assert cache.diversity(["x", "y", "-x", "never embedded"]) == pytest.approx(4 / 3)
    assert cache.diversity(["x", "never embedded"]) == 0.0


def test_retain_drops_vectors_of_texts_that_left_the_buffer() -> None:
    cache = BufferEmbeddings()
    cache.add(["kept", "evicted"], np.ones((2, 2)))
    cache.retain(["kept", "never embedded"])
    assert len(cache) == 1 and cache.diversity(["kept", "evicted"]) == 0.0


# --- the environment, in-process, with the real model ------------------------------------------


def test_advantage_mode_writes_bonus_times_advantage_into_the_output_and_trajectory(
        scripted_server: ScriptedServer) -> None:
    env = small_env(strategy="exit", diversity_mode="advantage")
    outputs = run_one_group(env, scripted_server, 0)
    rewards = np.array([o["reward"] for o in outputs])
    expected = [o["metrics"]["diversity"] * a for o, a in zip(outputs, rewards - rewards.mean(), strict=True)]
    assert [o["advantage"] for o in outputs] == pytest.approx(expected)
    assert [step["advantage"] for o in outputs for step in o["trajectory"]] == pytest.approx(expected)
    assert len({round(o["metrics"]["diversity"], 9) for o in outputs}) > 1


def test_reward_mode_rewards_centre_to_bonus_advantages_minus_one_constant(scripted_server: ScriptedServer) -> None:
    env = small_env(strategy="exit", diversity_mode="reward")
    outputs = run_one_group(env, scripted_server, 0)
    returns = np.array([step_return(o) for o in outputs])
    target = np.array([o["metrics"]["diversity"] for o in outputs]) * (returns - returns.mean())
    shaped = np.array([o["reward"] for o in outputs])
    assert shaped - shaped.mean() == pytest.approx(target - target.mean())
    assert [o["advantage"] for o in outputs] == pytest.approx(shaped - shaped.mean())
    assert shaped.mean() == pytest.approx(returns.mean())
    assert not np.allclose(shaped, returns)


def test_buffer_learns_from_the_unshaped_returns_in_reward_mode(scripted_server: ScriptedServer) -> None:
    env = small_env(strategy="exit", diversity_mode="reward")
    outputs = run_one_group(env, scripted_server, 0)
    returns = np.array([step_return(o) for o in outputs])
    assert outputs[0]["metrics"]["learnability"] == pytest.approx(float(np.var(returns / (1 + FORMAT_WEIGHT))))


def test_buffer_diversity_is_the_mean_pairwise_distance_of_the_buffer_texts(scripted_server: ScriptedServer) -> None:
    env = small_env(strategy="exit", row_metrics="all")
    run_one_group(env, scripted_server, 0)
    outputs = run_one_group(env, scripted_server, 1)
    texts = [instance_text(instance) for instance in env.buffer.instances()]
    expected = mean_pairwise_cosine_distance(embed_texts(DEFAULT_EMBEDDING_MODEL, texts))
    assert len(texts) == 2 * G
    assert all(o["metrics"]["buffer_diversity"] == pytest.approx(expected, abs=1e-6) for o in outputs)


def test_a_resumed_buffer_is_embedded_for_buffer_diversity(scripted_server: ScriptedServer, tmp_path: Path) -> None:
    buffer_path = str(tmp_path / "buffer.json")
    run_one_group(small_env(strategy="exit", buffer_path=buffer_path), scripted_server, 0)
    resumed = small_env(strategy="exit", buffer_path=buffer_path, select_prob=0.0, row_metrics="all")
    outputs = run_one_group(resumed, scripted_server, 1)
    texts = [instance_text(instance) for instance in resumed.buffer.instances()]
    expected = mean_pairwise_cosine_distance(embed_texts(DEFAULT_EMBEDDING_MODEL, texts))
    assert outputs[0]["metrics"]["buffer_diversity"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("strategy", ["grpo", "curriculum", "improve", "diverge"])
def test_presets_other_than_exit_leave_the_bonus_off(strategy: str, scripted_server: ScriptedServer) -> None:
    env = small_env(strategy=strategy)
    outputs = run_one_group(env, scripted_server, 0)
    rewards = np.array([o["reward"] for o in outputs])
    assert not {"diversity", "buffer_diversity"} & set(outputs[0]["metrics"])
    # verifiers' own advantages, untouched (its RubricGroup leaves state["advantage"] at the
    # monitor rubric's 0.0 in 0.3.0; the trajectory keeps the reward rubric's values)
    assert [step["advantage"] for o in outputs for step in o["trajectory"]] == pytest.approx(rewards - rewards.mean())


# --- end to end: the real vf-eval command ------------------------------------------------------


@pytest.fixture(scope="module")
def exit_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict]]:
    """One real ``vf-eval self-improve -n 6 -r 4 -C advantage`` run with ``strategy="exit"`` (every metric)."""
    server = ScriptedServer(policy=cycle_policy(("correct", "wrong", "unboxed", "correct"))).start()
    out = tmp_path_factory.mktemp("exit_run")
    rows = run_vf_eval(server.url, out, "-n", "6", "-r", str(G), "-t", "64", "-C", "advantage",
                       env_args={"strategy": "exit", "diversity_mode": "advantage", "min_buffer_size": 1,
                                 "row_metrics": "all"})
    yield rows
    server.stop()


def test_vf_eval_saves_a_finite_diversity_metric_for_every_rollout(exit_run: list[dict]) -> None:
    assert len(exit_run) == 6 * G
    assert all(math.isfinite(row["metrics"]["diversity"]) for row in exit_run)


def test_vf_eval_logs_buffer_diversity_with_the_buffer_metrics(exit_run: list[dict]) -> None:
    assert all(0.0 < row["metrics"]["buffer_diversity"] <= 2.0 for row in exit_run if row["metrics"]["buffer_size"] > 1)


def test_vf_eval_saves_bonus_times_advantage_as_each_rollouts_advantage(exit_run: list[dict]) -> None:
    groups: dict[int, list[dict]] = defaultdict(list)
    for row in exit_run:
        groups[row["example_id"]].append(row)
    for rows in groups.values():
        rewards = np.array([row["reward"] for row in rows])
        expected = [row["metrics"]["diversity"] * a for row, a in zip(rows, rewards - rewards.mean(), strict=True)]
        assert [row["advantage"] for row in rows] == pytest.approx(expected)
