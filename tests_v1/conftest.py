"""Fixtures for the verifiers 0.4 (v1) tests: run them with the v1 virtual environment,
``.venv-v1/bin/python -m pytest tests_v1``.

* ``scripted_server``: the real HTTP OpenAI server of ``scripted_server``;
* ``run_vf_eval``: the real v1 ``vf-eval self-improve`` in a subprocess, returning the
  saved episodes of ``traces.jsonl`` (``vf_eval``: and what it printed);
* ``EnvServerThread``: verifiers' own ``EnvServer`` (ZMQ, as prime-rl main's env
  server runs it) in a thread of this process, so a test can read the env's buffer
  between episodes; episodes are dispatched with verifiers' ``EnvClient`` the way
  prime-rl's orchestrator does (client-side taskset, ``task.data.model_dump(mode="json")``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import verifiers

if hasattr(verifiers, "SingleTurnEnv"):  # classic verifiers (<= 0.3.x), whose verifiers.v1 is an older API
    collect_ignore_glob = ["test_*.py"]
else:
    import verifiers.v1 as vf
    from verifiers.v1.serve import EnvClient
    from verifiers.v1.serve.server import EnvServer
    from verifiers.v1.utils.loaders import resolve_env_config

from scripted_server import ScriptedServer

REPO = Path(__file__).resolve().parents[1]
TASKSETS = REPO / "tests_v1" / "tasksets"
"""The test tasksets ``exit-letters`` and ``exit-partial`` (importable once this is on the path)."""
if str(TASKSETS) not in sys.path:
    sys.path.insert(0, str(TASKSETS))
VF_EVAL = Path(sys.executable).with_name("vf-eval")
KEY_VAR = "SCRIPTED_KEY"


@pytest.fixture
def scripted_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer().start()
    yield server
    server.stop()


def run_vf_eval(server_url: str, output_dir: Path, *args: str, timeout: float = 300,
                taskset: str = "self-improve") -> list[dict]:
    """Run ``vf-eval TASKSET -m scripted ... --no-push --no-rich`` and return the saved episodes."""
    return vf_eval(server_url, output_dir, *args, timeout=timeout, taskset=taskset)[0]


def vf_eval(server_url: str, output_dir: Path, *args: str, timeout: float = 300,
            taskset: str = "self-improve") -> tuple[list[dict], str]:
    """``run_vf_eval``'s episodes, and what the run printed (stdout, then stderr). ``taskset``:
    ``self-improve`` (GSM8K) or any importable one, e.g. ``exit-letters`` with ``--env.id self-improve``."""
    command = [str(VF_EVAL), taskset, "-m", "scripted", "--client.base-url", server_url,
               "--client.api-key-var", KEY_VAR, "--no-push", "--no-rich", "-o", str(output_dir),
               "--run.name", "run", *args]
    environment = {**os.environ, KEY_VAR: "not-a-secret", "PRIME_RUNS_MODE": "disabled",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), str(TASKSETS),
                                                                 os.environ.get("PYTHONPATH")]))}
    completed = subprocess.run(command, cwd=output_dir, env=environment, capture_output=True, text=True,
                               timeout=timeout)
    if completed.returncode != 0:
        raise VfEvalFailed(completed.returncode, completed.stdout[-3000:] + "\n" + completed.stderr[-5000:])
    traces = output_dir / "run" / "traces.jsonl"
    rows = [json.loads(line) for line in traces.read_text().splitlines() if line.strip()]
    return rows, completed.stdout + completed.stderr


class VfEvalFailed(RuntimeError):
    def __init__(self, returncode: int, output: str) -> None:
        super().__init__(f"vf-eval exited {returncode}:\n{output}")
        self.returncode, self.output = returncode, output


class EnvServerThread:
    """verifiers' ``EnvServer`` for ``env`` (an env-config dict) on an OS-assigned 127.0.0.1 port."""

    def __init__(self, env: dict[str, Any]) -> None:
        self.config = resolve_env_config(env)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> EnvServerThread:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: Any) -> None:
        self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(30)

    def _serve(self) -> None:
        async def main() -> None:
            try:
                self.server = EnvServer(self.config, address="tcp://127.0.0.1:0")
            except BaseException as error:
                self._error = error
                self._ready.set()
                return
            self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
            self._ready.set()
            await self.server.run()

        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            pass

    @property
    def env(self) -> Any:
        return self.server.env

    def run_episodes(self, server_url: str, count: int, after_each: Any = None) -> list[Any]:
        """Dispatch ``count`` episodes one after another, cycling through the client-side
        taskset; check each episode's provenance as prime-rl's dispatcher does."""

        async def main() -> list[Any]:
            client = EnvClient(self.server.address)
            await client.wait_for_server_startup(timeout=30)
            tasks = list(vf.load_taskset(self.config.taskset))
            model_client = vf.EvalClientConfig(base_url=server_url, api_key_var=KEY_VAR)
            episodes = []
            try:
                for index in range(count):
                    task = tasks[index % len(tasks)]
                    episode = await client.run(model_client, "scripted", vf.SamplingConfig(temperature=1.0),
                                               task.data.model_dump(mode="json"))
                    assert (episode.task.key, episode.task.hash) == (task.key, task.hash), "provenance"
                    episodes.append(episode)
                    if after_each is not None:
                        after_each(episode)
            finally:
                await client.close()
            return episodes

        os.environ.setdefault(KEY_VAR, "not-a-secret")
        return asyncio.run(main())
