"""Real ``vf-eval`` runs against the instant scripted server, for the benchmarks.

Each run is its own process with its own scripted server process (a fresh
one: its request log starts empty), optionally pinned to one CPU with the
server. A run reports its wall time and its CPU time (user + system of
vf-eval and of every child it waited for, from ``wait4``), so two runs may
go at once, one per core, and each still gets its own figures.

    python scripts/vf_eval_runs.py --serve   # child mode: print the server's URL, stop when stdin closes
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH_ENVS = REPO / "scripts" / "bench_envs"


@dataclass(frozen=True)
class Job:
    """One vf-eval invocation: the env, its arguments and the run's size."""

    env_id: str
    num_examples: int
    rollouts: int
    concurrency: int
    env_args: dict[str, Any] | None = None
    extra: tuple[str, ...] = ()


def serve() -> None:
    """Child-process mode: run the scripted server, print its URL, stop when stdin closes
    (so it also stops if the benchmark dies)."""
    sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the scripted server is a test fixture
    from scripted_server import ScriptedServer

    server = ScriptedServer().start()
    print(server.url, flush=True)
    sys.stdin.read()
    server.stop()


def pinned(cpu: int | None) -> Any:
    """A ``preexec_fn`` that pins the child to ``cpu`` (None: leave it free)."""
    return None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))


@contextmanager
def scripted_server_process(cpu: int | None = None) -> Iterator[str]:
    """The scripted server in its own process (its own GIL); yields the base URL."""
    process = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, cwd=REPO, preexec_fn=pinned(cpu))
    try:
        url = process.stdout.readline().strip() if process.stdout else ""
        if not url.startswith("http"):
            raise RuntimeError(f"scripted server did not start (printed {url!r})")
        yield url
    finally:
        if process.stdin:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _environment() -> dict[str, str]:
    return {**os.environ, "SCRIPTED_KEY": "not-a-secret",
            "PYTHONPATH": os.pathsep.join([str(BENCH_ENVS), os.environ.get("PYTHONPATH", "")])}


def _command(job: Job, url: str, out: Path) -> list[str]:
    command = [str(Path(sys.executable).with_name("vf-eval")), job.env_id, "-m", "scripted", "-b", url,
               "-k", "SCRIPTED_KEY", "-n", str(job.num_examples), "-r", str(job.rollouts),
               "-c", str(job.concurrency), "-d", *job.extra, "-o", str(out)]
    return command + (["-a", json.dumps(job.env_args)] if job.env_args else [])


def _launch(job: Job, url: str, cpu: int | None, out: Path) -> tuple[Job, subprocess.Popen[bytes], float, Path]:
    """Start ``job`` against the server at ``url``, writing into ``out``; what ``_wait`` takes."""
    log = out / "vf-eval.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(_command(job, url, out), cwd=out, env=_environment(), stdout=sink,
                                   stderr=subprocess.STDOUT, preexec_fn=pinned(cpu))
    return job, process, time.perf_counter(), log


def _wait(job: Job, process: subprocess.Popen[bytes], started: float, log: Path) -> tuple[float, float]:
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    output = log.read_text(errors="replace")
    if process.returncode != 0 or "Evaluation completed" not in output:
        raise RuntimeError(f"vf-eval {job.env_id} failed (exit {process.returncode}):\n{output[-3000:]}")
    return elapsed, usage.ru_utime + usage.ru_stime


def run_at_once(jobs: Sequence[Job], cpus: Sequence[int | None]) -> list[tuple[float, float]]:
    """Start every job at the same moment, each with its own server, job i (and its server)
    pinned to ``cpus[i]``; returns each job's (wall s, CPU s) once all have finished.
    Raises if any run fails."""
    with ExitStack() as stack:
        urls = [stack.enter_context(scripted_server_process(cpu)) for cpu in cpus]
        folders = [Path(stack.enter_context(tempfile.TemporaryDirectory())) for _ in jobs]
        launched = [_launch(job, url, cpu, out) for job, url, cpu, out in zip(jobs, urls, cpus, folders, strict=True)]
        with ThreadPoolExecutor(len(launched)) as waiters:
            return list(waiters.map(lambda entry: _wait(*entry), launched))


def vf_eval_run(job: Job, cpu: int | None = None) -> tuple[float, float]:
    """Wall and CPU seconds of one real ``vf-eval`` run on its own; raises if it fails."""
    return run_at_once([job], [cpu])[0]


def vf_eval_seconds(env_id: str, url: str, num_examples: int, rollouts: int, concurrency: int,
                    env_args: dict[str, Any] | None = None, extra: Sequence[str] = ()) -> float:
    """Wall time of one real ``vf-eval`` run against the server at ``url`` (``extra``: more
    flags); raises if it fails."""
    job = Job(env_id, num_examples, rollouts, concurrency, env_args, tuple(extra))
    with tempfile.TemporaryDirectory() as out:
        return _wait(*_launch(job, url, None, Path(out)))[0]


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    serve()
