"""Section 2c's reading of callgrind logs: each process of a traced vf-eval run by its part."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_processes  # noqa: E402

SPAWN = "/venv/bin/python -B -c from\\ multiprocessing.spawn\\ import\\ spawn_main;\\ spawn_main(tracker_fd=10)"


def write_log(folder: Path, pid: int, parent: int, command: str, count: int | None) -> None:
    lines = [f"=={pid}== Callgrind, a call-graph generating cache profiler", f"=={pid}== Command: {command}",
             f"=={pid}== Parent PID: {parent}", f"=={pid}== "]
    if count is not None:
        lines += [f"=={pid}== Events    : Ir", f"=={pid}== Collected : {count}"]
    (folder / f"vg.{pid}.log").write_text("\n".join(lines) + "\n")


def test_processes_are_told_apart_by_their_parents_and_the_rest_is_other(tmp_path: Path) -> None:
    write_log(tmp_path, 100, 1, "/venv/bin/vf-eval self-improve -n 20", 1000)
    write_log(tmp_path, 101, 100, "/venv/bin/python -B -c from\\ multiprocessing.resource_tracker", 7)
    write_log(tmp_path, 102, 100, SPAWN, 300)  # the env server (router), spawned by vf-eval
    write_log(tmp_path, 140, 102, SPAWN, 5000)  # the env worker, spawned by the router
    write_log(tmp_path, 141, 100, "/usr/bin/git rev-parse HEAD", 3)
    assert bench_processes.by_role(tmp_path) == {"vf-eval (client)": 1000, "env server (router)": 300,
                                                 "env worker": 5000, "other": 10}


def test_a_log_without_its_count_is_named_once_the_wait_runs_out(tmp_path: Path) -> None:
    write_log(tmp_path, 100, 1, "/venv/bin/vf-eval plain_gsm8k", None)
    with pytest.raises(bench_processes.IncompleteLog, match=r"vg\.100\.log: no instruction count after 0 s"):
        bench_processes.read_log(tmp_path / "vg.100.log", wait_s=0.0)


def test_a_run_without_an_env_worker_is_refused(tmp_path: Path) -> None:
    write_log(tmp_path, 100, 1, "/venv/bin/vf-eval plain_gsm8k", 1000)
    with pytest.raises(RuntimeError, match="expected one vf-eval, one env server and one env worker"):
        bench_processes.by_role(tmp_path)
