"""load_environment: typed arguments, presets, validation before loading, data sources."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import inspect
import json
import math
from pathlib import Path

import pytest
import verifiers as vf

from self_improve import exit_config, gsm8k_data, load_environment
from self_improve.exit_config import PRESETS
from self_improve.hosts.classic import ExitEnv

REPO = Path(__file__).resolve().parents[2]


def test_default_environment_is_a_single_turn_env_over_bundled_gsm8k() -> None:
    env = load_environment()
    assert isinstance(env, vf.SingleTurnEnv) and isinstance(env, ExitEnv)
    assert len(env.dataset) == 7473 and len(env.eval_dataset) == 1319


def test_environment_requires_group_rollouts_so_trainers_send_whole_groups() -> None:
    assert load_environment(num_eval_examples=2, num_train_examples=2).requires_group_rollouts


def test_reward_functions_are_inspected_once_and_show_verifiers_their_own_parameters() -> None:
    rubric = load_environment(num_eval_examples=2, num_train_examples=2).rubric
    ours = [func for part in getattr(rubric, "rubrics", [rubric]) for func in part.funcs
            if func.__name__ in {"correct_answer", "format_reward"}]
    assert len(ours) == 2
    for func in ours:
        assert inspect.signature(func) is inspect.signature(func), f"{func.__name__}: signature recomputed per call"
        assert list(inspect.signature(func).parameters) == list(func.__code__.co_varnames[:func.__code__.co_argcount])


def test_the_step_return_and_format_are_scored_once_per_group_from_each_rollouts_one_check(
        checked_texts: list[str]) -> None:
    env = load_environment(num_eval_examples=2, num_train_examples=2, format_weight=0.5)
    texts = ["so \\boxed{5}.", "\\boxed{6}", "5", "\\boxed{5"]
    states = [vf.State(input={"prompt": [], "answer": "5", "info": {"step": "base"}, "example_id": 0},
                       completion=[{"role": "assistant", "content": text}], trajectory=[]) for text in texts]
    asyncio.run(env.rubric.score_group(states))  # verifiers' own scoring: the step return first, then the format
    assert checked_texts == texts  # one check per rollout, which the format reads
    assert [state["metrics"]["correct_answer"] for state in states] == [1.0, 0.0, 0.0, 0.0]
    assert [state["metrics"]["format_reward"] for state in states] == [1.0, 1.0, 0.0, 0.0]
    assert [state["reward"] for state in states] == [1.5, 0.5, 0.0, 0.0]
    ours = [func for func in env.rubric.rubrics[0].funcs]  # the self-improve rubric (the second is the monitor)
    assert [list(inspect.signature(func).parameters)[-1] for func in ours] == ["states", "states"]  # group calls


def test_groups_scored_at_once_each_build_their_score_objects_once_and_keep_their_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []
    verifiers_own = vf.Rubric.group_score_objects

    def counted(self: vf.Rubric, states: list[vf.State]) -> dict:
        built.append(id(states))
        return verifiers_own(self, states)

    monkeypatch.setattr(vf.Rubric, "group_score_objects", counted)
    env = load_environment(num_eval_examples=2, num_train_examples=2, format_weight=0.5)

    def group(texts: list[str]) -> list[vf.State]:
        return [vf.State(input={"prompt": [], "answer": "5", "info": {"step": "base"}, "example_id": 0},
                         completion=[{"role": "assistant", "content": text}], trajectory=[]) for text in texts]

    first, second = group(["\\boxed{5}", "5"]), group(["\\boxed{6}", "\\boxed{5}", "\\boxed{5"])

    async def both() -> None:
        await asyncio.gather(env.rubric.score_group(first), env.rubric.score_group(second))

    asyncio.run(both())
    assert sorted(built) == sorted([id(first), id(second)])  # once per group, for both functions
    assert [state["reward"] for state in first] == [1.5, 0.0]
    assert [state["reward"] for state in second] == [0.5, 1.5, 0.0]
    ours = env.rubric.rubrics[0]
    assert ours.group_score_objects(first) is not ours.group_score_objects(first)  # outside scoring: built each call


def test_rows_carry_prompt_gold_number_and_task_identity() -> None:
    row = load_environment(num_eval_examples=3, num_train_examples=1).eval_dataset[0]
    assert row["prompt"][0]["role"] == "system" and row["prompt"][1]["content"] == row["info"]["question"]
    assert row["answer"].lstrip("-").replace(".", "").isdigit()
    assert row["info"]["task_id"].startswith("test-")


def test_subsets_are_seeded_and_reproducible() -> None:
    first = load_environment(num_eval_examples=5, num_train_examples=5, seed=3)
    again = load_environment(num_eval_examples=5, num_train_examples=5, seed=3)
    other = load_environment(num_eval_examples=5, num_train_examples=5, seed=4)
    ids = lambda env: [row["info"]["task_id"] for row in env.eval_dataset]  # noqa: E731
    assert ids(first) == ids(again) != ids(other)
    assert len(first.dataset) == 5


def test_unknown_argument_raises_naming_it() -> None:
    with pytest.raises(ValueError, match="^select_probability: unknown"):
        load_environment(select_probability=0.5)


@pytest.mark.parametrize(("argument", "value", "message"), [
    ("select_prob", 1.5, r"select_prob: must be a number in \[0.0, 1.0\], got 1.5"),
    ("divergence_prob", -0.1, r"divergence_prob: must be a number in \[0.0, 1.0\]"),
    ("kappa", -1.0, r"kappa: must be a number in \[0.0, inf\)"),
    ("buffer_size", 0, "buffer_size: must be an integer >= 1"),
    ("min_buffer_size", 0, "min_buffer_size: must be an integer >= 1"),
    ("min_buffer_size", 600, r"min_buffer_size: must be <= buffer_size \(512\)"),
    ("num_eval_examples", 0, "num_eval_examples: must be -1"),
    ("num_train_examples", -2, "num_train_examples: must be an integer >= -1"),
    ("strategy", "ppo", "strategy: must be one of grpo, curriculum, improve, diverge, exit"),
    ("iteration_reward", "delta", "iteration_reward: must be one of correctness, improvement"),
    ("diversity_mode", "both", "diversity_mode: must be one of advantage, reward"),
    ("format_weight", "0.1", r"format_weight: must be a number"),
    ("use_think", "yes", "use_think: must be true or false"),
])
def test_out_of_range_value_raises_naming_argument_and_range(argument: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_environment(**{argument: value})


def test_validation_happens_before_any_data_is_loaded(tmp_path) -> None:
    with pytest.raises(ValueError, match="^kappa"):
        load_environment(kappa=-1.0, dataset_name=str(tmp_path / "does-not-exist"))


@pytest.mark.parametrize("strategy", list(PRESETS))
def test_strategy_presets_set_selection_divergence_and_bonus(strategy: str) -> None:
    config = load_environment(strategy=strategy, num_eval_examples=1, num_train_examples=1).config
    for name, value in PRESETS[strategy].items():
        assert getattr(config, name) == value


def test_explicit_arguments_override_the_preset() -> None:
    config = load_environment(strategy="improve", divergence_prob=0.3, num_eval_examples=1,
                              num_train_examples=1).config
    assert config.divergence_prob == 0.3 and config.select_prob == 0.5


def test_full_exit_shapes_rewards_by_default_so_prime_rl_receives_the_bonus() -> None:
    config = load_environment(strategy="exit", num_eval_examples=1, num_train_examples=1).config
    assert config.diversity_bonus and config.diversity_mode == "reward"


def test_papers_sizes_remain_reachable() -> None:
    config = load_environment(buffer_size=512, min_buffer_size=128, num_eval_examples=1, num_train_examples=1).config
    assert (config.buffer_size, config.min_buffer_size) == (512, 128)


def test_load_environment_signature_is_the_config_fields() -> None:
    parameters = inspect.signature(load_environment).parameters
    assert [(p.name, p.default) for p in parameters.values()] == [
        (f.name, f.default) for f in dataclasses.fields(exit_config.ExitConfig)]


def test_every_signature_argument_is_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    for name in inspect.signature(load_environment).parameters:
        if name != "unknown":
            assert f"| `{name}` |" in readme, f"{name} missing from README's Environment Arguments table"


def test_dataset_name_loads_through_datasets_from_a_local_folder(tmp_path) -> None:
    """The hub path (``dataset_name="openai/gsm8k"``) uses the same loader; here it
    points at local JSONL files, since the hub is unreachable from this machine."""
    for split in gsm8k_data.SPLITS:
        with gzip.open(gsm8k_data.DATA_DIR / f"gsm8k_{split}.jsonl.gz", "rt") as source:
            lines = [next(source) for _ in range(6)]
        (tmp_path / f"{split}.jsonl").write_text("".join(lines))
    env = load_environment(dataset_name=str(tmp_path), dataset_config=None)
    assert len(env.dataset) == 6 and len(env.eval_dataset) == 6
    first = json.loads(lines[0])
    assert env.eval_dataset[0]["info"]["question"] == first["question"]


def test_dataset_without_question_column_raises_naming_the_source(tmp_path) -> None:
    for split in gsm8k_data.SPLITS:
        (tmp_path / f"{split}.jsonl").write_text('{"problem": "q", "answer": "1"}\n')
    with pytest.raises(ValueError, match="dataset_name"):
        load_environment(dataset_name=str(tmp_path), dataset_config=None)


BAD_ARGUMENTS: list[tuple[str, object, str]] = [
    ("format_weight", math.inf, r"format_weight: must be a number in \[0.0, inf\), got inf"),
    ("format_weight", math.nan, r"format_weight: must be a number in \[0.0, inf\), got nan"),
    ("diversity_min_range", math.inf, r"diversity_min_range: must be a number in \[0.0, inf\), got inf"),
    ("kappa", math.inf, r"kappa: must be a number in \[0.0, inf\), got inf"),
    ("select_prob", math.nan, r"select_prob: must be a number in \[0.0, 1.0\], got nan"),
    ("buffer_path", "buffer\x00.json", r"buffer_path: must be a non-empty string without NUL bytes"),
    ("buffer_path", "", r"buffer_path: must be a non-empty string"),
    ("buffer_path", "{file}/buffer.json", r"buffer_path: {file}/buffer.json lies under {file}, which is a file"),
    ("buffer_path", "{folder}", r"buffer_path: {folder} is a directory"),
    ("buffer_url", "http://127.0.0.1:6379", r"buffer_url: must start with redis://"),
    ("buffer_prefix", "", r"buffer_prefix: must be a non-empty string"),
    ("seed", -1, r"seed: must be an integer >= 0"),
    ("request_seeds", 1, r"request_seeds: must be true or false"),
]
"""Arguments that used to be accepted and fail later; ``{file}`` and ``{folder}`` are a regular
file and a folder of the test's own."""


@pytest.mark.parametrize(("argument", "value", "message"), BAD_ARGUMENTS)
def test_an_argument_that_would_fail_later_is_refused_naming_it_before_any_data_loads(
        tmp_path, argument: str, value: object, message: str) -> None:
    regular = tmp_path / "a-file"
    regular.write_text("not a folder")
    if isinstance(value, str):
        value = value.format(file=regular, folder=tmp_path)
    with pytest.raises(ValueError, match="^" + message.format(file=regular, folder=tmp_path)):
        load_environment(**{argument: value}, dataset_name=str(tmp_path / "never-read"))


def test_buffer_path_and_buffer_url_together_are_refused() -> None:
    with pytest.raises(ValueError, match="^buffer_path: must be null with buffer_url"):
        load_environment(buffer_path="b.json", buffer_url="redis://127.0.0.1:6379/0")


def test_rewrite_inputs_builds_the_prompt_and_the_info_of_equal_rows_once() -> None:
    from self_improve.exit_loop import GroupPlan
    from self_improve.grouping import Instance, Task
    from self_improve.hosts.classic import rewrite_input, rewrite_inputs

    task = Task("train-3", "What is 2+3?", "5")
    parent = Instance(instance_id=7, task=task, iterates=("It is 6.",), iterate_correct=(False,), score=0.25,
                      parent_id=None, created_step=1, scored_step=1)
    info = json.dumps({"task_id": "train-3", "question": task.question})
    rows = [{"prompt": [], "answer": "5", "info": info[:-1] + "}", "example_id": i} for i in range(3)]  # equal copies
    rows.append({"prompt": [], "answer": "5", "info": {"task_id": "train-3", "question": "?", "row": 3}})
    for plan in (GroupPlan("base", task), GroupPlan("improve", task, parent)):
        rewritten = rewrite_inputs(rows, plan)
        assert rewritten == [rewrite_input(row, plan) for row in rows]
        assert rewritten[0]["info"] is rewritten[1]["info"]  # built once: JSON text, which verifiers parses per rollout
        assert json.loads(rewritten[3]["info"]) == {**rows[3]["info"], **plan.info()}  # a row of its own keeps its own
        assert json.loads(rewritten[0]["info"]) == {"task_id": "train-3", "question": task.question, **plan.info()}
        assert json.loads(rewritten[0]["info"])["parent_id"] == (7 if plan.instance else None)
