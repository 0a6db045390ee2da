"""The simulated learner driving the real buffer: the paper's qualitative dynamics
(Fig. 6, Fig. 7) on a fast budget, the model's own assumptions, and input checks."""

from __future__ import annotations

import importlib.util
import inspect
import json
from pathlib import Path

import numpy as np
import pytest

from self_improve import load_environment
from self_improve.simulation import (
    LearnerModel,
    SimulationResult,
    SimulationSettings,
    simulate,
    simulation_config,
    success_probability,
    summarize,
)

REPO = Path(__file__).resolve().parents[2]
FAST = SimulationSettings(rollouts=8_000)
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def table() -> dict[str, dict[str, float]]:
    """Four strategies x two seeds x 8,000 rollouts (about 1 s)."""
    return summarize([simulate(strategy, seed, FAST)
                      for strategy in ("uniform", "curriculum", "improve", "diverge") for seed in SEEDS])


def test_prioritised_sampling_picks_higher_variance_groups_than_uniform_replay(table) -> None:
    assert table["curriculum"]["sampled_learnability"] > table["uniform"]["sampled_learnability"]


@pytest.mark.parametrize("strategy", ["improve", "diverge"])
def test_exit_depth_of_sampled_instances_grows_beyond_one(table, strategy: str) -> None:
    assert table[strategy]["sampled_depth"] > 1.0
    assert table[strategy]["max_depth"] >= 3


@pytest.mark.parametrize("strategy", ["uniform", "curriculum"])
def test_question_buffers_never_go_deeper_than_the_question(table, strategy: str) -> None:
    assert table[strategy]["max_depth"] == 0


@pytest.mark.parametrize("strategy", ["improve", "diverge"])
def test_exit_trains_on_more_distinct_prompts_than_the_curriculum_alone(table, strategy: str) -> None:
    assert table[strategy]["distinct_trained"] > table["curriculum"]["distinct_trained"]


def test_self_iteration_training_lifts_heldout_k_step_gain_more_than_base_only_training(table) -> None:
    """The model's transfer assumption at work, not evidence about language models."""
    assert table["improve"]["heldout_delta"] > table["curriculum"]["heldout_delta"]


def test_same_seed_reproduces_every_trace() -> None:
    settings = SimulationSettings(rollouts=2_048)
    first, second = simulate("diverge", 3, settings), simulate("diverge", 3, settings)
    for name in ("sampled_learnability", "sampled_depth", "distinct_trained", "heldout_accuracy"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))


def test_budget_is_spent_exactly_in_whole_batches() -> None:
    result: SimulationResult = simulate("improve", 0, SimulationSettings(rollouts=2_048, groups_per_batch=32))
    assert result.rollouts[-1] == 2_048
    assert np.all(np.diff(result.rollouts) == 8 * 32)


def test_uniform_replay_is_the_curriculum_buffer_with_kappa_zero() -> None:
    uniform, curriculum = simulation_config("uniform", 0, FAST), simulation_config("curriculum", 0, FAST)
    assert (uniform.kappa, uniform.stores_responses) == (0.0, False)
    assert curriculum.kappa == inspect.signature(load_environment).parameters["kappa"].default
    assert uniform.select_prob == curriculum.select_prob


def test_exact_heldout_recursion_matches_sampled_improve_chains() -> None:
    model, rng = LearnerModel(), np.random.default_rng(0)
    ability = rng.normal(-1.0, 1.5, size=4_000)
    correct = rng.random(ability.size) < success_probability(model, "base", ability, 0.5)
    for _ in range(3):
        correct = rng.random(ability.size) < success_probability(model, "improve", ability, 0.5, correct)
    p = success_probability(model, "base", ability, 0.5)
    fix = success_probability(model, "improve", ability, 0.5, False)
    keep = success_probability(model, "improve", ability, 0.5, True)
    for _ in range(3):
        p = p * keep + (1 - p) * fix
    assert correct.mean() == pytest.approx(p.mean(), abs=0.02)


def test_unknown_strategy_raises_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="strategy: .*'exit-ish'"):
        simulate("exit-ish", 0, FAST)


def test_budget_below_one_batch_raises_value_error_naming_rollouts() -> None:
    with pytest.raises(ValueError, match="rollouts: must cover at least one batch"):
        simulate("improve", 0, SimulationSettings(rollouts=100))


def test_negative_learning_rate_raises_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match=r"iteration_lr: must be a number in \[0.0, inf\), got -0.1"):
        simulate("improve", 0, FAST, LearnerModel(iteration_lr=-0.1))


def test_script_writes_plots_and_a_summary_for_each_strategy(tmp_path: Path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("simulate_curriculum", REPO / "scripts" / "simulate_curriculum.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--seeds", "1", "--rollouts", "2048", "--strategies", "curriculum", "improve", "--out", str(tmp_path)])
    assert {p.name for p in tmp_path.glob("*.png")} == {"fig6_learnability_depth.png", "fig7_distinct.png",
                                                         "heldout_kstep.png"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["table"]) == {"curriculum", "improve"}
    assert "| ExIt improve |" in capsys.readouterr().out
