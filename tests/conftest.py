"""Shared fixtures: the scripted OpenAI-compatible server, a ``vf-eval`` runner, a
buffer file held by another process, the texts the answer check runs on, and the rule of ``tests/unit/``: a unit test
that listens on a socket or starts a subprocess fails (``unit_tests_start_nothing``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripted_server import ScriptedServer

REPO = Path(__file__).resolve().parents[1]
VF_EVAL = Path(sys.executable).with_name("vf-eval")


UNIT = Path(__file__).resolve().parent / "unit"
ALLOWED_IN_UNIT = ("self_improve.scoring import symbolic_pool", "fc-list")
"""Processes a unit test may start without asking: the reward's own math-verify worker
(``scoring/symbolic_pool``, the code under test) and matplotlib's font listing."""


@pytest.fixture(autouse=True)
def unit_tests_start_nothing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``tests/unit/``, fail a test that starts a server or a subprocess: it belongs in
    ``tests/integration/``."""
    if UNIT not in request.node.path.parents:
        return
    popen_init = subprocess.Popen.__init__

    def refuse_popen(self, args, *rest, **kwargs):
        command = " ".join(map(str, args)) if isinstance(args, (list, tuple)) else str(args)
        if not any(allowed in command for allowed in ALLOWED_IN_UNIT):
            pytest.fail(f"unit test started a subprocess ({command[:100]}): move it to tests/integration/")
        popen_init(self, args, *rest, **kwargs)

    def refuse_listen(self, *rest):
        pytest.fail(f"unit test listens on {self.getsockname()}: move it to tests/integration/")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse_popen)
    monkeypatch.setattr(socket.socket, "listen", refuse_listen)


@pytest.fixture
def checked_texts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts the real answer check is run on (``scoring.response.check_async``), in order."""
    from self_improve.scoring import response

    texts: list[str] = []
    real = response.check_async

    async def counting(text: str, gold: str) -> object:  # the real check, counted
        texts.append(text)
        return await real(text, gold)

    monkeypatch.setattr(response, "check_async", counting)
    return texts


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
