"""``self-improve-kstep --taskset ID`` over the foreign test tasksets, against the scripted server.

Every reported number is recomputed here from the saved per-request log, each return from the
response text with the taskset's own scoring functions; the prompts the server received are
checked against the Appendix B templates; resume after a kill re-asks nothing already logged;
tasksets that cannot be iterated one reply at a time are refused before any request.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import verifiers.v1 as vf
from scripted import foreign_server
from verifiers.v1.utils.loaders import taskset_class

from conftest import KEY_VAR, REPO, TASKSETS
from scripted_server import ScriptedServer, cycle_policy
from self_improve import prompts
from self_improve.kstep import cli

KSTEP = Path(sys.executable).with_name("self-improve-kstep")


def tasks_by_key(taskset_id: str) -> dict[str, vf.Task]:
    return {task.key: task for task in taskset_class(taskset_id)(vf.TasksetConfig(id=taskset_id))}


def run_kstep(server: ScriptedServer, output_dir: Path, *args: str, wait: bool = True) -> Any:
    """The real console script against ``server``; the completed process, or the running one."""
    command = [str(KSTEP), "-b", server.url, "-m", "scripted", "-k", KEY_VAR, "-o", str(output_dir),
               "--no-progress", *args]
    path = os.pathsep.join(filter(None, [str(REPO), str(TASKSETS), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, KEY_VAR: "not-a-secret", "PYTHONPATH": path}
    if not wait:
        return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)


def log_records(output_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (output_dir / "requests.jsonl").read_text().splitlines()]


def partial_return(text: str, answer: str) -> float:
    """exit-partial's return, from its own scoring functions: coverage (weight 1) + answered (weight 0.5)."""
    import exit_partial

    return exit_partial.coverage_of(text, answer) + 0.5 * float(exit_partial.named_letters(text) is not None)


def recompute(records: list[dict[str, Any]], steps: int, threshold: float) -> list[dict[str, Any]]:
    """Per step: solved share and mean return (avg@r: per question over samples, then over
    questions) and the i->c / c->i counts over chains, from the log alone."""
    chains: dict[tuple[str, int], dict[int, dict[str, Any]]] = defaultdict(dict)
    for record in records:
        chains[(record["question_id"], record["sample"])][record["step"]] = record
    rows = []
    for k in range(steps + 1):
        per_question: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for (question, _), chain in chains.items():
            per_question[question].append(chain[k])
        solved = [statistics.fmean(float(r["return"] >= threshold) for r in rs) for rs in per_question.values()]
        means = [statistics.fmean(r["return"] for r in rs) for rs in per_question.values()]
        row = {"accuracy": statistics.fmean(solved), "mean_return": statistics.fmean(means)}
        if k:
            row["incorrect_to_correct"] = sum(c[k - 1]["return"] < threshold <= c[k]["return"] for c in chains.values())
            row["correct_to_incorrect"] = sum(c[k]["return"] < threshold <= c[k - 1]["return"] for c in chains.values())
        rows.append(row)
    return rows


def check_summary(summary: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    for row, want in zip(summary["per_step"], expected, strict=True):
        for key, value in want.items():
            assert row[key] == pytest.approx(value), (row["step"], key)
    assert summary["delta_K"] == pytest.approx(expected[-1]["accuracy"] - expected[0]["accuracy"])
    assert summary["delta_K_return"] == pytest.approx(expected[-1]["mean_return"] - expected[0]["mean_return"])


def test_kstep_over_a_partial_credit_taskset_reports_what_the_log_recomputes(tmp_path: Path) -> None:
    server = foreign_server(cycle_policy(("correct", "wrong", "partial", "unboxed", "partial"))).start()
    try:
        completed = run_kstep(server, tmp_path, "--taskset", "exit-partial", "-n", "4", "-r", "2", "-K", "3",
                              "-p", "0.5", "-c", "2")
        assert completed.returncode == 0, completed.stderr[-3000:]
        records = log_records(tmp_path)
        tasks = tasks_by_key("exit-partial")
        assert len(records) == 4 * 2 * 4 == len(server.requests) and all("error" not in r for r in records)
        by_seed = {body["seed"]: body for body in server.requests}
        chains = {(r["question_id"], r["sample"], r["step"]): r for r in records}
        served = {item.text.strip() for item in server.served}  # the trace's reply is stripped, as the rewards read it
        for record in records:
            task = tasks[record["question_id"]]
            assert record["return"] == pytest.approx(partial_return(record["response"], task.data.answer))
            assert record["response"] in served
            sent = by_seed[record["seed"]]["messages"]
            own = [{"role": m.role, "content": m.content} for m in task.data.prompt]
            if record["step"] == 0:
                assert record["kind"] == "base" and sent == own
            else:
                previous = chains[(record["question_id"], record["sample"], record["step"] - 1)]["response"]
                template = {"improve": prompts.SELF_IMPROVE_TEMPLATE,
                            "diverge": prompts.SELF_DIVERGE_TEMPLATE}[record["kind"]]
                user = template.format(instruction=own[1]["content"], previous_response=previous)
                assert sent == [own[0], {"role": "user", "content": user}]  # the request and y^{k-1} only
        assert {r["kind"] for r in records if r["step"]} == {"improve", "diverge"}
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["taskset"] == "exit-partial" and summary["max_return"] == summary["threshold"] == 1.5
        expected = recompute(records, 3, 1.5)
        check_summary(summary, expected)
        assert 0 < expected[0]["mean_return"] < 1.5
        assert sum(row["incorrect_to_correct"] for row in expected[1:]) > 0
        assert sum(row["correct_to_incorrect"] for row in expected[1:]) > 0
        assert (tmp_path / "kstep.png").stat().st_size > 0

        # A lower threshold rejudges the same log: no request is sent again.
        asked = len(server.requests)
        assert cli.main(["-b", server.url, "-m", "scripted", "-k", KEY_VAR, "-o", str(tmp_path), "--no-progress",
                         "--taskset", "exit-partial", "-n", "4", "-r", "2", "-K", "3", "-p", "0.5",
                         "--threshold", "1.0"]) == 0
        assert len(server.requests) == asked
        rejudged = json.loads((tmp_path / "summary.json").read_text())
        assert rejudged["threshold"] == 1.0
        check_summary(rejudged, recompute(records, 3, 1.0))
    finally:
        server.stop()


def test_kstep_resumes_a_killed_taskset_run_without_asking_again(tmp_path: Path) -> None:
    server = foreign_server(cycle_policy(("correct", "wrong", "unboxed"))).start()
    server.delay_s = 0.4
    args = ("--taskset", "exit-letters", "-n", "3", "-r", "2", "-K", "2", "-c", "1")
    try:
        process = run_kstep(server, tmp_path, *args, wait=False)
        log = tmp_path / "requests.jsonl"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and (not log.exists() or log.read_text().count("\n") < 5):
            assert process.poll() is None, process.communicate()[1][-3000:]
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]  # raise_on_sigterm: outputs still written
        assert json.loads((tmp_path / "summary.json").read_text())["unfinished"] > 0
        kept = log.read_text()
        first = [json.loads(line) for line in kept.splitlines()]
        assert 5 <= len(first) < 18
        asked_before = len(server.requests)

        server.delay_s = 0.0
        completed = run_kstep(server, tmp_path, *args)
        assert completed.returncode == 0, completed.stderr[-3000:]
        assert log.read_text().startswith(kept)  # nothing logged is rewritten
        records = log_records(tmp_path)
        assert len(records) == 18 and all("error" not in r for r in records)
        assert len({(r["question_id"], r["sample"], r["step"]) for r in records}) == 18
        asked_again = [body["seed"] for body in server.requests[asked_before:]]
        assert sorted(asked_again) == sorted(r["seed"] for r in records[len(first):])  # only what was missing
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["done"] == 6 and summary["max_return"] == 1.0
        check_summary(summary, recompute(records, 2, 1.0))
    finally:
        server.stop()


def test_kstep_retries_a_server_error_of_a_taskset_step(tmp_path: Path) -> None:
    server = foreign_server(cycle_policy(("error", "correct"))).start()
    try:
        assert cli.main(["-b", server.url, "-m", "scripted", "-k", KEY_VAR, "-o", str(tmp_path), "--no-progress",
                         "--taskset", "exit-letters", "-n", "2", "-K", "0", "--retry-backoff", "0"]) == 0
        records = log_records(tmp_path)
        assert [r["attempts"] for r in records] == [2, 2] and all(r["return"] == 1.0 for r in records)
    finally:
        server.stop()


REFUSED = {
    "kstep_no_rewards": ("no rewards", '''
        class T(vf.Task[vf.TaskData, vf.State, vf.TaskConfig]):
            @vf.metric
            async def length(self, trace: vf.Trace) -> float:
                return float(len(trace.last_reply or ""))
        PROMPT = "Say hi."'''),
    "kstep_multi_turn": ("stop conditions", '''
        class T(vf.Task[vf.TaskData, vf.State, vf.TaskConfig]):
            @vf.stop
            async def said_bye(self, trace: vf.Trace) -> bool:
                return "bye" in (trace.last_reply or "")
            @vf.reward
            async def polite(self, trace: vf.Trace) -> float:
                return 1.0
        PROMPT = "Chat with me until I say bye."'''),
    "kstep_history": ("['assistant'] messages", '''
        class T(vf.Task[vf.TaskData, vf.State, vf.TaskConfig]):
            @vf.reward
            async def polite(self, trace: vf.Trace) -> float:
                return 1.0
        PROMPT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                  {"role": "user", "content": "Go on."}]'''),
}


@pytest.mark.parametrize("module", sorted(REFUSED))
def test_kstep_refuses_a_taskset_it_cannot_iterate_before_any_request(module: str, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str],
                                                                      scripted_server: ScriptedServer) -> None:
    reason, body = REFUSED[module]
    source = "import verifiers.v1 as vf\n" + textwrap.dedent(body) + textwrap.dedent('''
        class S(vf.Taskset[T, vf.TasksetConfig]):
            def load(self):
                return [T(vf.TaskData(id="only", prompt=PROMPT), self.config.task)]
        __all__ = ["S"]
        ''')
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    output = tmp_path / "out"
    taskset_id = module.replace("_", "-")
    assert cli.main(["-b", scripted_server.url, "-m", "scripted", "-o", str(output), "--no-progress",
                     "--taskset", taskset_id]) == 2
    error = capsys.readouterr().err
    assert f"taskset: {taskset_id!r} cannot be iterated one reply at a time" in error and reason in error
    assert not scripted_server.requests and not output.exists()


def test_kstep_names_a_taskset_that_is_not_installed(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     scripted_server: ScriptedServer) -> None:
    assert cli.main(["-b", scripted_server.url, "-o", str(tmp_path / "out"), "--taskset", "no-such-taskset"]) == 2
    assert "taskset: 'no-such-taskset' is not an installed v1 taskset" in capsys.readouterr().err
    assert not scripted_server.requests
