"""The prime-rl main configs (``configs/prime-rl-main/``) against the v1 env's own config classes
and its prime-rl trap check (prime-rl's full ``rl --dry-run`` is ``scripts/prime_rl_dry_run.sh``)."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest
from verifiers.v1.utils.loaders import resolve_env_config, taskset_config_type

from self_improve.hosts import v1_env, v1_taskset

MAIN_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "prime-rl-main").glob("*.toml"))
PLACEHOLDER = "my-taskset"
"""The taskset id that taskset-exit.toml tells its reader to replace (the dry run uses exit-letters)."""


def self_improve_source(path: Path) -> dict:
    (source,) = tomllib.loads(path.read_text())["orchestrator"]["train"]["source"]
    return source


def test_every_main_config_is_checked() -> None:
    assert [path.name for path in MAIN_CONFIGS] == ["gsm8k-exit-redis.toml", "gsm8k-exit.toml", "taskset-exit.toml"]


@pytest.mark.parametrize("path", MAIN_CONFIGS, ids=lambda path: path.name)
def test_main_config_passes_the_v1_envs_own_prime_rl_check(path: Path) -> None:
    assert v1_env.prime_rl_problems(tomllib.loads(path.read_text())) == []


@pytest.mark.parametrize("path", MAIN_CONFIGS, ids=lambda path: path.name)
def test_main_config_env_and_taskset_blocks_validate_as_their_config_classes(
        path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a relative buffer_path is checked against the folder it would go in
    env = self_improve_source(path)["env"]
    env_config = v1_env.ExitEnvConfig.model_validate({k: v for k, v in env.items() if k not in ("taskset", "id")})
    assert env_config.rollouts_per_group == 8
    if env.get("id") == "self-improve":  # ExIt over another taskset: a clearly marked placeholder id
        assert env["taskset"] == {"id": PLACEHOLDER} and f'id = "{PLACEHOLDER}"  # PLACEHOLDER' in path.read_text()
        taskset_config = taskset_config_type("exit-letters").model_validate({**env["taskset"], "id": "exit-letters"})
        assert taskset_config.id == "exit-letters"
        return
    taskset_config = v1_taskset.SelfImproveTasksetConfig.model_validate(env["taskset"])
    assert taskset_config.task.iteration_reward == "correctness"


def test_the_prime_rl_check_inspects_exit_over_another_taskset_only() -> None:
    config = tomllib.loads((MAIN_CONFIGS[-1]).read_text())
    broken = copy.deepcopy(config)
    (source,) = broken["orchestrator"]["train"]["source"]
    source["group_size"], source["serve"] = 8, {}
    problems = v1_env.prime_rl_problems(broken)
    assert len(problems) == 2 and "group_size must be 1" in problems[0] and "serve.pool" in problems[1]
    source["env"]["id"] = "best-of-n"  # another env over the same taskset: not ExIt's to check
    assert v1_env.prime_rl_problems(broken) == []
    source["env"].pop("id")  # no env id: the taskset's own env, not this package's
    assert v1_env.prime_rl_problems(broken) == []


@pytest.mark.parametrize("path", [path for path in MAIN_CONFIGS if path.name.startswith("gsm8k")],
                         ids=lambda path: path.name)
def test_main_config_sets_one_seed_which_the_env_gives_the_taskset(
        path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = self_improve_source(path)["env"]
    assert "seed" in env and "seed" not in env["taskset"]  # --env.seed only
    config = resolve_env_config(env)  # as prime-rl's orchestrator and env server resolve it
    assert config.seed == config.taskset.seed == env["seed"]
