"""The prime-rl training configs parse and name only real arguments.

Three layouts, one per prime-rl line (docs/prime-rl.md has the table):

* ``configs/prime-rl-v0.6.0``: ``[[orchestrator.train.env]]`` with ``id``,
  ``args`` and ``num_workers`` (prime-rl v0.6.0, and v0.7.0, which maps
  ``num_workers`` onto a static pool);
* ``configs/prime-rl-v0.8.0``: ``[[orchestrator.train.source]]`` with
  ``legacy = { id = "self-improve", args = {...} }`` and ``serve.pool``;
* ``configs/prime-rl-main``: ``[[orchestrator.train.source]]`` with a v1
  ``env`` block: the ExIt loop's arguments on ``env``, the data's on
  ``env.taskset`` (``id = "self-improve"``), the scoring's on
  ``env.taskset.task``, the format reward's weight plugged under
  ``env.taskset.task.rewards.format``.

Either way the values are ``exit_config.ExitConfig`` arguments, so every one
must be a parameter of ``load_environment`` and pass its validation. Whether
prime-rl itself accepts each file is checked by ``scripts/prime_rl_dry_run.sh``
(prime-rl's own ``rl --dry-run`` at each version; it needs prime-rl checkouts,
so it is not part of this suite), and recorded in docs/prime-rl.md.
"""

from __future__ import annotations

import inspect
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

import self_improve
from self_improve.exit_config import ExitConfig, resolve_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").rglob("gsm8k-*.toml"))
"""The GSM8K configs (the ``self-improve`` taskset, every layout). ExIt over another taskset
(``prime-rl-main/taskset-exit.toml``) needs verifiers 0.4: tests_v1/test_v1_prime_rl_configs.py."""
V1_ONLY_CONFIGS = ["prime-rl-main/taskset-exit.toml"]
SAMPLER_CONFIG = REPO / "integrations" / "prime-rl-main" / "gsm8k-exit-sampler.toml"
ENV_ID = "self-improve"
CLASSIC, LEGACY, V1 = "v0.6.0 env", "v0.8.0 legacy source", "main v1 source"

V1_ENV_ONLY = frozenset({"id", "taskset", "agent", "rollouts_per_group", "max_concurrent_agents", "timeout",
                         "retries", "interception"})
"""Fields of the v1 env block that are not ExIt arguments (the seat, G, verifiers' own knobs)."""
V1_TASKSET_ONLY = frozenset({"id", "split", "task", "system_prompt"})
V1_TASK_ONLY = frozenset({"rewards", "metrics", "judges", "stops"})
CONFIG_PASSWORD_VAR = "REDIS_PASSWORD"
"""The variable the Redis configs name as ``buffer_password_var``."""


def load(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        return tomllib.load(handle)


def layout(entry: dict[str, Any]) -> str:
    if "legacy" in entry:
        return LEGACY
    if isinstance(entry.get("env"), dict):
        return V1
    return CLASSIC


def train_entries(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The self-improve train entries: v0.8.0 legacy sources, main v1 sources or v0.6.0 env items."""
    train = config.get("orchestrator", {}).get("train", {})
    sources = [source for source in train.get("source", [])
               if source.get("legacy", {}).get("id") == ENV_ID
               or source.get("env", {}).get("taskset", {}).get("id") == ENV_ID]
    envs = [env for env in train.get("env", []) if env.get("id") == ENV_ID]
    return sources + envs


def v1_env_args(env: dict[str, Any]) -> dict[str, Any]:
    """The ExitConfig arguments a v1 env block spreads over env, taskset and task."""
    taskset = env.get("taskset", {})
    task = taskset.get("task", {})
    parts = [
        {k: v for k, v in env.items() if k not in V1_ENV_ONLY},
        {k: v for k, v in taskset.items() if k not in V1_TASKSET_ONLY},
        {k: v for k, v in task.items() if k not in V1_TASK_ONLY},
    ]
    format_weight = task.get("rewards", {}).get("format", {}).get("weight")
    if format_weight is not None:
        parts.append({"format_weight": format_weight})
    args: dict[str, Any] = {}
    for part in parts:
        for name, value in part.items():
            assert args.get(name, value) == value, f"{name} differs between env blocks: {args[name]!r} != {value!r}"
            args[name] = value
    return args


def env_args(entry: dict[str, Any]) -> dict[str, Any]:
    kind = layout(entry)
    if kind == LEGACY:
        return entry["legacy"]["args"]
    if kind == V1:
        return v1_env_args(entry["env"])
    return entry["args"]


def one_entry(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    config = load(path)
    (entry,) = train_entries(config)
    return config, entry


def worker_pool(entry: dict[str, Any]) -> dict[str, Any]:
    """The env-server pool, in v0.7.0+'s terms (v0.6.0's ``num_workers = N`` is a static pool of N)."""
    if layout(entry) == CLASSIC:
        return {"type": "static", "num_workers": entry["num_workers"]}
    return entry.get("serve", {}).get("pool", {"type": "elastic"})


def group_size(config: dict[str, Any], entry: dict[str, Any]) -> int:
    """G, rollouts per ExIt group: prime-rl's group_size, or the v1 env's rollouts_per_group."""
    if layout(entry) == V1:
        return entry["env"]["rollouts_per_group"]
    return entry.get("group_size", config["orchestrator"]["group_size"])


def load_environment_parameters() -> set[str]:
    signature = inspect.signature(self_improve.load_environment)
    return {name for name, p in signature.parameters.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}


def config_id(path: Path) -> str:
    return str(path.relative_to(REPO / "configs"))


each_config = pytest.mark.parametrize("path", CONFIGS, ids=config_id)


def test_every_config_is_checked_here_or_in_tests_v1() -> None:
    every = sorted(config_id(path) for path in (REPO / "configs").rglob("*.toml"))
    assert every == sorted([*map(config_id, CONFIGS), *V1_ONLY_CONFIGS])


@each_config
def test_config_declares_exactly_one_self_improve_train_env(path: Path) -> None:
    assert len(train_entries(load(path))) == 1


@each_config
def test_config_env_args_are_parameters_of_load_environment(path: Path) -> None:
    _, entry = one_entry(path)

    assert set(env_args(entry)) <= load_environment_parameters()


def test_load_environment_parameters_are_the_exit_config_fields() -> None:
    """What the tests above reflect on is the one list of arguments, ExitConfig's fields."""
    assert load_environment_parameters() == {field.name for field in fields(ExitConfig)}


@pytest.mark.parametrize("path", [path for path in CONFIGS if "buffer_url" not in env_args(one_entry(path)[1])],
                         ids=config_id)
def test_config_env_args_are_accepted_by_load_environment(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-process configs; the Redis ones reach a real server in
    tests/integration/test_prime_rl_configs_redis.py."""
    _, entry = one_entry(path)
    monkeypatch.chdir(tmp_path)  # buffer_path is relative to where the run starts
    args = dict(env_args(entry))

    env = self_improve.load_environment(**args)

    for name, value in args.items():
        assert getattr(env.config, name) == value


@each_config
def test_config_uses_the_papers_math_hyperparameters(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, entry = one_entry(path)
    monkeypatch.chdir(tmp_path)
    exit_config = resolve_config(env_args(entry))
    orchestrator = config["orchestrator"]

    assert group_size(config, entry) == 8
    assert orchestrator["batch_size"] // group_size(config, entry) == 128  # batch_size counts rollouts
    assert (exit_config.buffer_size, exit_config.min_buffer_size) == (512, 128)
    assert (exit_config.select_prob, exit_config.divergence_prob) == (0.5, 0.2)
    assert exit_config.kappa == 10.0
    assert exit_config.format_weight == 0.1
    assert config["trainer"]["optim"]["lr"] == 1e-6
    assert config["trainer"]["loss"]["kl_tau"] == 1e-3


@each_config
def test_config_runs_a_single_env_worker_unless_the_buffer_is_in_redis(path: Path) -> None:
    """Each worker process holds its own in-process buffer; only Redis shares one."""
    _, entry = one_entry(path)

    if "buffer_url" in env_args(entry):
        assert worker_pool(entry)["num_workers"] > 1
    elif layout(entry) == CLASSIC:
        assert entry["num_workers"] == 1
    else:
        assert entry["serve"]["pool"] == {"type": "static", "num_workers": 1}


@each_config
def test_config_keeps_the_buffer_file_inside_the_runs_output_dir(path: Path) -> None:
    config, entry = one_entry(path)
    args = env_args(entry)

    assert ("buffer_path" in args) != ("buffer_url" in args)  # a checkpoint file, or Redis: never neither
    if "buffer_path" in args:
        assert Path(args["buffer_path"]).is_relative_to(config["output_dir"])


def test_configs_cover_the_three_prime_rl_layouts() -> None:
    layouts = {layout(entry) for config_path in CONFIGS for entry in train_entries(load(config_path))}

    assert layouts == {CLASSIC, LEGACY, V1}


@pytest.mark.parametrize("folder", ["prime-rl-v0.6.0", "prime-rl-v0.8.0", "prime-rl-main"])
def test_each_layout_has_a_single_worker_and_a_redis_config(folder: str) -> None:
    names = {path.name for path in (REPO / "configs" / folder).glob("gsm8k-*.toml")}

    assert names == {"gsm8k-exit.toml", "gsm8k-exit-redis.toml"}


@pytest.mark.parametrize("folder", ["prime-rl-v0.6.0", "prime-rl-v0.8.0", "prime-rl-main"])
def test_redis_config_is_its_single_worker_twin_but_for_workers_buffer_and_run_names(folder: str) -> None:
    """The two configs of a layout train the same run; only where the buffer lives differs."""
    names = ("gsm8k-exit.toml", "gsm8k-exit-redis.toml")
    single, shared = (one_entry(REPO / "configs" / folder / name) for name in names)
    single_args, shared_args = env_args(single[1]), env_args(shared[1])

    assert {k: v for k, v in single_args.items() if k != "buffer_path"} == \
        {k: v for k, v in shared_args.items() if k not in ("buffer_url", "buffer_prefix", "buffer_password_var")}
    assert single[0]["orchestrator"] == {**shared[0]["orchestrator"], "train": single[0]["orchestrator"]["train"]}
    assert single[0]["trainer"] == shared[0]["trainer"]
    assert single[0]["model"] == shared[0]["model"]


def test_redis_configs_take_the_password_by_variable_name() -> None:
    """A password in an env arg would be saved and logged by prime-rl; the configs name a variable."""
    redis = [env_args(one_entry(path)[1]) for path in CONFIGS if "buffer_url" in env_args(one_entry(path)[1])]
    assert len(redis) == 3
    assert all(args["buffer_password_var"] == CONFIG_PASSWORD_VAR for args in redis)


def test_redis_configs_give_each_run_its_own_key_prefix() -> None:
    """Runs sharing one Redis server must not share a buffer: one prefix per run."""
    prefixes = [env_args(one_entry(path)[1]).get("buffer_prefix") for path in CONFIGS]
    redis = [prefix for prefix in prefixes if prefix is not None]

    assert len(redis) == 3
    assert all(prefix != ExitConfig.buffer_prefix for prefix in redis)


MAIN_CONFIGS = [path for path in CONFIGS if path.parent.name == "prime-rl-main"]
each_main_config = pytest.mark.parametrize("path", MAIN_CONFIGS, ids=config_id)


@each_main_config
def test_v1_config_trains_whole_episodes_as_groups(path: Path) -> None:
    """prime-rl main: one episode is one ExIt group of G rollouts, so prime-rl's own group is 1."""
    config, entry = one_entry(path)

    assert layout(entry) == V1
    assert config["orchestrator"]["group_size"] == 1
    assert "group_size" not in entry
    assert entry["env"]["taskset"]["split"] == "train"
    assert entry["env"].get("id") is None  # the taskset's own env (v1_env.ExitEnv), not single-agent


@each_config
def test_config_with_the_diversity_bonus_sends_it_in_the_reward(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prime-rl recomputes advantages from rewards, so an advantage-only bonus would be lost."""
    _, entry = one_entry(path)
    monkeypatch.chdir(tmp_path)
    exit_config = resolve_config(env_args(entry))

    assert not exit_config.diversity_bonus or exit_config.diversity_mode == "reward"


def test_sampler_config_passes_exit_loop_arguments_to_the_curriculum() -> None:
    """integrations/prime-rl-main: the ExIt sampler route, prime-rl's own groups of 8."""
    config = load(SAMPLER_CONFIG)
    (source,) = config["orchestrator"]["train"]["source"]
    sampler = source["curriculum"]["sampler"]
    exit_config = resolve_config(sampler["kwargs"])

    assert (sampler["type"], sampler["import_path"]) == ("custom", "exit_sampler.ExitTaskSampler")
    assert source["env"]["id"] == "single-agent" and source["env"]["taskset"]["id"] == ENV_ID
    assert config["orchestrator"]["group_size"] == 8
    assert not exit_config.diversity_bonus  # a sampler cannot shape rewards
    assert "buffer_path" not in sampler["kwargs"]  # prime-rl checkpoints the sampler's state
