"""A run killed with SIGKILL in the middle of training resumes with its saved buffer.

A child process plays the env-server worker: it loads the environment with a
``buffer_path`` and runs groups against the scripted server, several in flight
at once, until it is killed. The buffer file is written atomically after every
observed group (temporary file, fsync, rename), so whatever instant the kill
lands at, ``buffer_path`` holds one complete state and a restart with the same
``buffer_path`` continues from it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import verifiers as vf

import self_improve
from scripted_server import ScriptedServer

G = 4
KILL_AT_STEP = 6
API_KEY_VAR = "SCRIPTED_KEY"

WORKER = f"""
import asyncio, sys
import verifiers as vf

url, buffer_path = sys.argv[1], sys.argv[2]
env = vf.load_environment("self-improve", strategy="diverge", min_buffer_size=4, num_train_examples=40,
                          num_eval_examples=1, buffer_path=buffer_path)
client = vf.ClientConfig(api_base_url=url, api_key_var="SCRIPTED_KEY")
rows = env.get_dataset()

async def loop(offset):
    index = offset
    while True:
        row = rows[index % len(rows)]
        await env.run_group([dict(row) for _ in range({G})], client, "scripted", {{"max_tokens": 64}})
        index += 3

async def main():
    await asyncio.gather(*(loop(offset) for offset in range(3)))

asyncio.run(main())
"""


def env_args(buffer_path: Path) -> dict[str, Any]:
    """The worker's arguments: a restart must use the same configuration."""
    return {"strategy": "diverge", "min_buffer_size": 4, "num_train_examples": 40, "num_eval_examples": 1,
            "buffer_path": str(buffer_path)}


def saved_step(buffer_path: Path) -> int:
    try:
        return int(json.loads(buffer_path.read_text())["step"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


def run_until_killed(server: ScriptedServer, buffer_path: Path, work_dir: Path) -> None:
    """Start the worker, wait until the file shows ``KILL_AT_STEP`` groups, SIGKILL it."""
    script = work_dir / "worker.py"
    script.write_text(WORKER)
    worker = subprocess.Popen([sys.executable, str(script), server.url, str(buffer_path)], cwd=work_dir,
                              env={**os.environ, API_KEY_VAR: "not-a-secret"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while saved_step(buffer_path) < KILL_AT_STEP:
            assert worker.poll() is None, f"worker exited early: {worker.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "worker saved too few groups in 120 s"
            time.sleep(0.01)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL


@pytest.fixture
def killed_run(scripted_server: ScriptedServer, tmp_path: Path) -> Path:
    """The buffer file a killed worker left behind (server slowed so groups are mid-flight)."""
    scripted_server.delay_s = 0.005
    buffer_path = tmp_path / "run" / "exit_buffer.json"
    run_until_killed(scripted_server, buffer_path, tmp_path)
    return buffer_path


def test_buffer_file_left_by_a_killed_run_is_one_complete_state(killed_run: Path) -> None:
    state = json.loads(killed_run.read_text())

    assert state["step"] >= KILL_AT_STEP
    assert len(state["instances"]) == len({instance["instance_id"] for instance in state["instances"]}) > 0
    assert all(instance["instance_id"] < state["next_id"] for instance in state["instances"])


def test_restart_with_the_same_buffer_path_restores_the_saved_buffer(killed_run: Path) -> None:
    saved = json.loads(killed_run.read_text())

    env = vf.load_environment("self-improve", **env_args(killed_run))

    assert json.loads(json.dumps(env.loop.state_dict())) == saved


def test_resumed_run_continues_the_step_count_and_instance_ids(
    killed_run: Path, scripted_server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(API_KEY_VAR, "not-a-secret")
    saved = json.loads(killed_run.read_text())
    env = vf.load_environment("self-improve", **env_args(killed_run))
    row = env.get_dataset()[0]
    client = vf.ClientConfig(api_base_url=scripted_server.url, api_key_var=API_KEY_VAR)

    asyncio.run(env.run_group([dict(row) for _ in range(G)], client, "scripted", {"max_tokens": 64}))

    resumed = json.loads(killed_run.read_text())
    assert resumed["step"] == saved["step"] + 1
    new_ids = {i["instance_id"] for i in resumed["instances"]} - {i["instance_id"] for i in saved["instances"]}
    assert new_ids and min(new_ids) >= saved["next_id"]


def test_corrupt_buffer_file_raises_value_error_naming_the_path(tmp_path: Path) -> None:
    buffer_path = tmp_path / "exit_buffer.json"
    buffer_path.write_text('{"version": 1, "step": 3, "instances": [')

    with pytest.raises(ValueError, match=re.escape(f"buffer_path: {buffer_path} is not a valid buffer file")):
        self_improve.load_environment(**env_args(buffer_path))
