"""A policy that answers with expressions built to stall a symbolic checker cannot stall the
environment: the real ``vf-eval`` against the real scripted server, timed beside a normal run on
the same questions in the same test."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import run_vf_eval
from scripted_server import ScriptedServer, cycle_policy

pytestmark = pytest.mark.vf_eval  # the real parts this file's tests start (pyproject's markers)

ARGS = ("-n", "5", "-r", "4", "-c", "20")


def timed_run(policy, folder: Path) -> tuple[float, list[dict]]:
    server = ScriptedServer(policy=policy).start()
    try:
        started = time.perf_counter()
        rows = run_vf_eval(server.url, folder, *ARGS, env_args={"select_prob": 0.0})
        return time.perf_counter() - started, rows
    finally:
        server.stop()


def test_pathological_answers_keep_vf_eval_within_five_times_a_normal_run(tmp_path: Path) -> None:
    (tmp_path / "normal").mkdir()
    (tmp_path / "pathological").mkdir()
    normal_s, normal_rows = timed_run(cycle_policy(), tmp_path / "normal")
    stalled_s, stalled_rows = timed_run(lambda request: "pathological", tmp_path / "pathological")
    assert len(stalled_rows) == len(normal_rows) == 20
    assert all(row["metrics"]["correct_answer"] == 0.0 for row in stalled_rows)
    assert stalled_s <= 5 * normal_s, f"pathological run took {stalled_s:.1f} s against {normal_s:.1f} s"
