"""Shared fixtures: the scripted OpenAI-compatible server, a ``vf-eval`` runner, and a
buffer file held by another process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripted_server import ScriptedServer

REPO = Path(__file__).resolve().parents[1]
VF_EVAL = Path(sys.executable).with_name("vf-eval")


@pytest.fixture
def scripted_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer().start()
    yield server
    server.stop()


@dataclass
class HeldFile:
    """A buffer file claimed by another live process (``BufferFile.claim``), until ``release``."""

    path: Path
    holder: subprocess.Popen

    def release(self) -> None:
        """Kill the holder, as a crashed writer dies: its lock goes with it."""
        self.holder.kill()
        self.holder.wait()


@pytest.fixture
def held_buffer_file(tmp_path: Path) -> Iterator[HeldFile]:
    path = tmp_path / "buffer.json"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from self_improve.buffer.checkpoint import BufferFile; "
         f"BufferFile({str(path)!r}).claim(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    held = HeldFile(path, holder)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield held
    finally:
        held.release()


def run_vf_eval(server_url: str, output_dir: Path, *args: str, env_args: dict | None = None,
                timeout: float = 300) -> list[dict]:
    """Run the real ``vf-eval self-improve ... -s`` and return the saved result rows."""
    return vf_eval(server_url, output_dir, *args, env_args=env_args, timeout=timeout)[0]


def vf_eval_command(server_url: str, output_dir: Path, *args: str,
                    env_args: dict | None = None) -> tuple[list[str], dict[str, str]]:
    """The ``vf-eval self-improve ... -s`` command line and its environment."""
    command = [str(VF_EVAL), "self-improve", "-m", "scripted", "-b", server_url, "-k", "SCRIPTED_KEY",
               "-s", "-o", str(output_dir), "-d", *args]
    if env_args is not None:
        command += ["-a", json.dumps(env_args)]
    return command, {**os.environ, "SCRIPTED_KEY": "not-a-secret"}


def saved_rows(output_dir: Path) -> list[dict]:
    """The rows of the one ``results.jsonl`` a ``vf-eval -s`` run saved under ``output_dir``."""
    results = sorted(output_dir.rglob("results.jsonl"))
    assert len(results) == 1, f"expected one results.jsonl under {output_dir}, found {results}"
    return [json.loads(line) for line in results[0].read_text().splitlines() if line.strip()]


def vf_eval(server_url: str, output_dir: Path, *args: str, env_args: dict | None = None,
            timeout: float = 300) -> tuple[list[dict], str]:
    """Run the real ``vf-eval self-improve ... -s``: the saved result rows, and what it printed."""
    command, environment = vf_eval_command(server_url, output_dir, *args, env_args=env_args)
    completed = subprocess.run(command, cwd=output_dir, env=environment, capture_output=True, text=True,
                               timeout=timeout)
    assert completed.returncode == 0, f"vf-eval failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    return saved_rows(output_dir), completed.stdout + completed.stderr
