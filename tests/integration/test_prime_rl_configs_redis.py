"""The prime-rl configs' parts that need a real process: the Redis configs' env
args reach a real password-protected ``redis-server``, and the dry-run script
parses as bash. The rest of the configs' tests are in
tests/unit/test_prime_rl_configs.py, whose helpers this file reads."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import self_improve
from redis_fixture import fresh_prefix, password_server  # noqa: F401  (a fixture, requested by name)
from unit.test_prime_rl_configs import CONFIGS, REPO, config_id, env_args, one_entry

REDIS_CONFIGS = [path for path in CONFIGS if "buffer_url" in env_args(one_entry(path)[1])]


@pytest.mark.redis
@pytest.mark.parametrize("path", REDIS_CONFIGS, ids=config_id)
def test_redis_config_env_args_are_accepted_by_load_environment(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, password_server  # noqa: F811
) -> None:
    _, entry = one_entry(path)
    monkeypatch.chdir(tmp_path)
    args = dict(env_args(entry))
    # reach a real Redis with a password: the test's own server, under a fresh prefix
    args |= {"buffer_url": password_server.url, "buffer_prefix": fresh_prefix()}
    monkeypatch.setenv(args["buffer_password_var"], password_server.password)

    env = self_improve.load_environment(**args)

    for name, value in args.items():
        assert getattr(env.config, name) == value


def test_redis_configs_exist() -> None:
    assert REDIS_CONFIGS, "no prime-rl config names a buffer_url"


def test_dry_run_script_is_valid_bash() -> None:
    script = REPO / "scripts" / "prime_rl_dry_run.sh"

    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
