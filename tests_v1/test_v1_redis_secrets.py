"""The real v1 ``vf-eval`` against a real password-protected ``redis-server``, the password
passed by variable name (``--env.buffer-password-var``): it is in no file the run wrote and in
nothing it printed, while the variable's name is where verifiers 0.4 keeps the env config
(``configs/resolved/eval.json``, the whole resolved eval config, ``--env.*`` included)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from conftest import VfEvalFailed, run_vf_eval, vf_eval
from redis_fixture import PASSWORD_VAR, RedisServer, files_holding, redis_store
from scripted_server import ScriptedServer


def test_v1_vf_eval_with_the_password_by_variable_name_saves_and_prints_no_trace_of_it(
        scripted_server: ScriptedServer, tmp_path: Path, monkeypatch) -> None:
    password = f"pw-v1-{uuid.uuid4().hex}"
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis", password=password).start()
    try:
        monkeypatch.setenv(PASSWORD_VAR, password)
        marker = f"leak-marker-{uuid.uuid4().hex}"
        output = tmp_path / "out"
        output.mkdir()
        episodes, printed = vf_eval(scripted_server.url, output, "-n", "2", "-c", "1", "--env.rollouts-per-group", "4",
                                    "--env.min-buffer-size", "4", "--env.buffer-url", server.url,
                                    "--env.buffer-password-var", PASSWORD_VAR,
                                    "--env.buffer-prefix", f"test-{marker}",
                                    "--env.taskset.num-train-examples", "10")
        assert len(episodes) == 2
        store = redis_store(server.url, capacity=512, prefix=f"test-{marker}", password_var=PASSWORD_VAR)
        assert store.step == 2, "both groups reached the password-protected store"
    finally:
        server.stop()
    resolved = output / "run" / "configs" / "resolved" / "eval.json"  # verifiers 0.4's cli/output.write_config
    assert resolved in files_holding(output, marker), "the walk must see where the env config is written"
    assert resolved in files_holding(output, PASSWORD_VAR), "the variable's name is saved with the env config"
    assert files_holding(tmp_path, password) == []
    assert password not in printed


def test_v1_vf_eval_with_the_password_variable_unset_fails_naming_it_before_any_request(
        scripted_server: ScriptedServer, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(PASSWORD_VAR, raising=False)
    with pytest.raises(VfEvalFailed) as failure:
        run_vf_eval(scripted_server.url, tmp_path, "-n", "1", "--env.buffer-url", "redis://127.0.0.1:1/0",
                    "--env.buffer-password-var", PASSWORD_VAR)
    assert f"buffer_password_var: the environment variable {PASSWORD_VAR} is unset" in failure.value.output
    assert not scripted_server.requests
