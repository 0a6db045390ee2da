"""One curriculum across env workers: the real ``vf-eval`` processes sharing one real
password-protected ``redis-server`` through ``buffer_url`` and ``buffer_password_var``, and a
Redis outage in the middle of a run."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from conftest import saved_rows, vf_eval, vf_eval_command
from redis_fixture import PASSWORD_VAR, files_holding, fresh_prefix, own_server  # noqa: F401 (fixtures)
from scripted_server import ScriptedServer, cycle_policy
from self_improve.buffer.redis_buffer import RedisBuffer

pytestmark = [pytest.mark.redis, pytest.mark.vf_eval]  # the real parts this file's tests start (pyproject's markers)

G = 4


def store_of(url: str, prefix: str, password_var: str | None = None) -> RedisBuffer:
    """The store as the environment configures it (default buffer_size, kappa, strategy)."""
    return RedisBuffer(url, capacity=512, kappa=10.0, seed=0, store_responses=True, prefix=prefix,
                       password_var=password_var)


def text_of(row: dict) -> str:
    return (row["completion"] or [{}])[-1].get("content") or ""


def test_two_vf_eval_processes_grow_one_curriculum_behind_a_password_none_of_them_saves(
        own_server, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    password = "pw-two-processes-" + fresh_prefix()
    own_server.password = password
    own_server.start()
    monkeypatch.setenv(PASSWORD_VAR, password)  # every vf-eval inherits it; each worker reads it
    prefix = fresh_prefix()
    shared = {"buffer_url": own_server.url, "buffer_password_var": PASSWORD_VAR, "buffer_prefix": prefix,
              "min_buffer_size": 4}
    server = ScriptedServer().start()
    printed = {}
    try:
        (tmp_path / "first").mkdir()
        first, printed["first"] = vf_eval(server.url, tmp_path / "first", "-n", "6", "-r", str(G),
                                          env_args={**shared, "select_prob": 0.0})
        processes = {}
        for name, seed in (("second", 1), ("third", 2)):
            (tmp_path / name).mkdir()
            command, environment = vf_eval_command(server.url, tmp_path / name, "-n", "6", "-r", str(G),
                                                   env_args={**shared, "select_prob": 1.0, "seed": seed})
            processes[name] = subprocess.Popen(command, cwd=tmp_path / name, env=environment,
                                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, process in processes.items():
            printed[name], _ = process.communicate(timeout=300)
            assert process.returncode == 0, f"{name} vf-eval failed:\n{printed[name][-3000:]}"
    finally:
        server.stop()
    rows = {"first": first, **{name: saved_rows(tmp_path / name) for name in processes}}
    state = store_of(own_server.url, prefix, PASSWORD_VAR).state_dict()
    assert state["step"] == sum(len(group_rows) // G for group_rows in rows.values()) == 18
    latest = {instance["instance_id"]: instance["iterates"][-1] for instance in state["instances"]}
    first_texts = {text_of(row) for row in first}
    for name in processes:
        parents = {row["info"]["parent_id"] for row in rows[name]}
        assert None not in parents, "with select_prob 1 every group of a warm buffer starts from it"
        drawn_from_first = [parent for parent in parents if latest.get(parent) in first_texts]
        assert drawn_from_first, f"{name} never drew a response another process produced"
    every_text = {text_of(row) for group_rows in rows.values() for row in group_rows}
    assert set(latest.values()) <= every_text, "every instance is a response some process produced"
    assert files_holding(tmp_path, password) == [], "the password is in no result, metadata or log file"
    assert all(password not in output for output in printed.values()), "nor in what any vf-eval printed"
    assert all(len(files_holding(tmp_path / name, PASSWORD_VAR)) >= 2 for name in printed), \
        "metadata.json and env_server.log hold the env args: the variable's name, not its value"


def test_a_redis_restart_mid_run_keeps_every_rollout_and_the_run_goes_on(own_server, tmp_path: Path) -> None:  # noqa: F811
    own_server.start()
    prefix = fresh_prefix()
    server = ScriptedServer(policy=cycle_policy(("correct", "wrong")), delay_s=0.25).start()
    command, environment = vf_eval_command(server.url, tmp_path, "-n", "16", "-r", "2", "-c", "2",
                                           env_args={"buffer_url": own_server.url, "buffer_prefix": prefix,
                                                     "min_buffer_size": 2})
    process = subprocess.Popen(command, cwd=tmp_path, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while store_of(own_server.url, prefix).step < 3:
            assert process.poll() is None and time.monotonic() < deadline, "the run never reached the store"
            time.sleep(0.2)
        own_server.stop()
        time.sleep(4)
        own_server.start()
        output, _ = process.communicate(timeout=300)
    finally:
        process.kill()
        server.stop()
    assert process.returncode == 0, output[-3000:]
    rows = saved_rows(tmp_path)
    assert len(rows) == 32
    assert [row["metrics"]["correct_answer"] for row in rows] == [
        float(server.behaviour_of(text_of(row)) == "correct") for row in rows]
    assert output.count("buffer store unavailable") == 1, output[-3000:]
    assert store_of(own_server.url, prefix).step >= 1, "groups after the restart reach the store again"


def test_an_unreachable_redis_is_refused_naming_the_url_before_any_data_loads(tmp_path: Path, monkeypatch) -> None:
    import self_improve

    monkeypatch.setenv(PASSWORD_VAR, "hunter2")
    with pytest.raises(ValueError, match=r"^buffer_url: cannot reach redis://127\.0\.0\.1:1/0 \(") as refused:
        self_improve.load_environment(buffer_url="redis://127.0.0.1:1/0", buffer_password_var=PASSWORD_VAR,
                                      dataset_name=str(tmp_path / "never-read"))
    assert "hunter2" not in str(refused.value)
