"""K-step self-improvement evaluation against the real scripted OpenAI server.

Policies here are tables: each request's seed (derived from question, sample
and step) tells the server which chain and step it serves, and a pattern such
as "WCC" says what that chain answers at steps 0, 1, 2 (C correct, W wrong,
U unboxed, E server error). Expected numbers are counted by hand from the
tables and written out as literals.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from scripted_server import ChatRequest, ScriptedServer
from self_improve import atomic_io, gsm8k_data, prompts
from self_improve.kstep import cli as ke

REPO = Path(__file__).resolve().parents[2]
CONSOLE_SCRIPT = Path(sys.executable).with_name("self-improve-kstep")
LETTERS = {"C": "correct", "W": "wrong", "U": "unboxed", "E": "error"}

# Rows: question index -> the patterns of samples 0 and 1 (steps 0, 1, 2).
HAND_TABLE = {0: ("WCC", "WWC"), 1: ("CCW", "CCC"), 2: ("WWW", "CWC")}
ERROR_TABLE = {0: ("WCC", "WWC"), 1: ("CE", "CWW"), 2: ("WWW", "CWC")}


@pytest.fixture(scope="module")
def questions() -> list[ke.Question]:
    return ke.load_questions(3, seed=0)


@pytest.fixture
def server() -> ScriptedServer:
    scripted = ScriptedServer().start()
    yield scripted
    scripted.stop()


def make_config(tmp_path: Path, **overrides: object) -> ke.EvalConfig:
    settings = {"num_questions": 3, "samples": 2, "steps": 2, "concurrency": 3, "retry_backoff_s": 0.0,
                "max_attempts": 1, "progress": False, "output_dir": tmp_path / "out", "model": "scripted"}
    return ke.EvalConfig(**{**settings, **overrides})


def seed_index(questions: list[ke.Question], samples: int, steps: int,
               seed: int = 0) -> dict[int, tuple[int, int, int]]:
    index = {ke.request_seed(seed, q.question_id, s, k): (i, s, k)
             for i, q in enumerate(questions) for s in range(samples) for k in range(steps + 1)}
    assert len(index) == len(questions) * samples * (steps + 1), "request seeds collide"
    return index


def table_policy(questions: list[ke.Question], table: dict[int, tuple[str, ...]], steps: int = 2,
                 fail_first: dict[tuple[int, int, int], int] | None = None) -> Callable[[ChatRequest], str]:
    """Answer each (question, sample, step) as the table says; ``fail_first``
    makes a request fail its first N attempts with a 500."""
    index = seed_index(questions, 2, steps)
    failures = Counter(fail_first or {})

    def policy(request: ChatRequest) -> str:
        i, sample, step = index[request.seed]
        if failures[(i, sample, step)] > 0:
            failures[(i, sample, step)] -= 1
            return "error"
        return LETTERS[table[i][sample][step]]

    return policy


def served_positions(server: ScriptedServer, questions: list[ke.Question],
                     steps: int = 2) -> list[tuple[int, int, int]]:
    index = seed_index(questions, 2, steps)
    return [index[body["seed"]] for body in server.requests]


def fractions(steps: list[dict]) -> list[float]:
    """i->c, c->i and cumulative net fractions of steps 1.., flattened."""
    keys = ("incorrect_to_correct_frac", "correct_to_incorrect_frac", "cumulative_net_frac")
    return [row[key] for row in steps[1:] for key in keys]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_reported_number_matches_a_hand_count(tmp_path, server, questions):
    server.policy = table_policy(questions, HAND_TABLE)
    summary = ke.evaluate(make_config(tmp_path), server.url, questions)
    steps = summary["per_step"]
    # Step 0: per-question rates 0, 1, 1/2. Step 1: 1/2, 1, 0. Step 2: 1, 1/2, 1/2.
    assert [row["accuracy"] for row in steps] == pytest.approx([1 / 2, 1 / 2, 2 / 3])
    assert [row["stderr"] for row in steps] == pytest.approx([0.5 / math.sqrt(3), 0.5 / math.sqrt(3),
                                                               math.sqrt(1 / 12) / math.sqrt(3)])
    assert [row["correct"] for row in steps] == [3, 3, 4]
    assert [row["n_valid"] for row in steps] == [6, 6, 6]
    assert [row["kinds"] for row in steps] == [{"base": 6}, {"improve": 6}, {"improve": 6}]
    # Step 1: q0s0 W->C; q2s1 C->W. Step 2: q0s1 and q2s1 W->C; q1s0 C->W.
    assert [(row["incorrect_to_correct"], row["correct_to_incorrect"], row["net"], row["cumulative_net"])
            for row in steps[1:]] == [(1, 1, 0, 0), (2, 1, 1, 1)]
    assert fractions(steps) == pytest.approx([1 / 6, 1 / 6, 0.0, 2 / 6, 1 / 6, 1 / 6])
    assert summary["delta_K"] == pytest.approx(1 / 6)
    # Paired differences p_q2 - p_q0: 1, -1/2, 0.
    assert summary["delta_K_stderr"] == pytest.approx(math.sqrt(7 / 12) / math.sqrt(3))
    assert (summary["chains"], summary["done"], summary["errors"], summary["unfinished"]) == (6, 6, 0, 0)


def test_chain_rows_hold_every_iterate_and_its_correctness(tmp_path, server, questions):
    server.policy = table_policy(questions, {0: ("CUC", "WWW"), 1: ("CCC", "CCC"), 2: ("WWW", "WWW")})
    ke.evaluate(make_config(tmp_path), server.url, questions)
    rows = {(row["question_id"], row["sample"]): row for row in read_jsonl(tmp_path / "out" / ke.CHAINS_FILE)}
    row = rows[(questions[0].question_id, 0)]
    assert row["correct"] == [True, False, True]
    assert [it["step"] for it in row["iterates"]] == [0, 1, 2]
    assert [server.behaviour_of(it["response"]) for it in row["iterates"]] == ["correct", "unboxed", "correct"]


def test_each_step_sends_only_the_question_and_the_previous_response(tmp_path, server, questions):
    server.policy = table_policy(questions, HAND_TABLE)
    ke.evaluate(make_config(tmp_path), server.url, questions)
    chains = {(row["question_id"], row["sample"]): row for row in read_jsonl(tmp_path / "out" / ke.CHAINS_FILE)}
    for body, (i, sample, step) in zip(server.requests, served_positions(server, questions), strict=True):
        question = questions[i]
        iterates = chains[(question.question_id, sample)]["iterates"]
        expected = (prompts.base_messages(question.question) if step == 0
                    else prompts.improve_messages(question.question, iterates[step - 1]["response"]))
        assert body["messages"] == expected


def test_step_kinds_follow_the_seeded_divergence_draws(tmp_path, server, questions):
    server.policy = table_policy(questions, HAND_TABLE)
    config = make_config(tmp_path, divergence_prob=0.5)
    ke.evaluate(config, server.url, questions)
    positions = served_positions(server, questions)
    seen = {position: served.kind for position, served in zip(positions, server.served, strict=True)}
    expected = {(i, s, k): ke.step_kind(config, questions[i].question_id, s, k) for (i, s, k) in seen}
    assert seen == expected
    assert Counter(kind for (i, s, k), kind in seen.items() if k > 0).keys() == {"improve", "diverge"}


def test_divergence_probability_one_sends_every_later_step_the_diverge_prompt(tmp_path, server, questions):
    server.policy = table_policy(questions, HAND_TABLE)
    ke.evaluate(make_config(tmp_path, divergence_prob=1.0), server.url, questions)
    assert Counter(served.kind for served in server.served) == {"base": 6, "diverge": 12}


def test_each_request_carries_its_own_reproducible_seed(tmp_path, server, questions):
    server.policy = table_policy(questions, HAND_TABLE)
    ke.evaluate(make_config(tmp_path), server.url, questions)
    assert sorted(served_positions(server, questions)) == [(i, s, k) for i in range(3) for s in range(2)
                                                           for k in range(3)]


def test_no_request_seeds_sends_no_seed(tmp_path, server, questions):
    ke.evaluate(make_config(tmp_path, request_seeds=False), server.url, questions)
    assert len(server.requests) == 18
    assert all("seed" not in body for body in server.requests)


def test_sampling_args_are_sent_as_max_tokens_temperature_and_extra_fields(tmp_path, server, questions):
    config = make_config(tmp_path, max_tokens=321, temperature=0.25, sampling_args={"top_p": 0.9})
    ke.evaluate(config, server.url, questions)
    body = server.requests[0]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["model"]) == (321, 0.25, 0.9, "scripted")
    assert "max_completion_tokens" not in body


def test_concurrency_limit_is_reached_and_never_exceeded(tmp_path, server, questions):
    in_flight, peak, lock = [0], [0], threading.Lock()

    def slow_policy(request: ChatRequest) -> str:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        return "correct"

    server.policy = slow_policy
    ke.evaluate(make_config(tmp_path, concurrency=4), server.url, questions)
    assert peak[0] == 4
    assert len(server.requests) == 18


def test_failed_request_is_retried_then_recorded_as_error_not_wrong(tmp_path, server, questions):
    server.policy = table_policy(questions, ERROR_TABLE)
    summary = ke.evaluate(make_config(tmp_path, max_attempts=3), server.url, questions)
    assert Counter(served_positions(server, questions))[(1, 0, 1)] == 3
    assert len(server.requests) == 5 * 3 + 1 + 3
    steps = summary["per_step"]
    assert [row["n_valid"] for row in steps] == [6, 5, 5]
    # Step 1 rates: q0 1/2, q1 0 (only s1, wrong), q2 0. Step 2: 1, 0, 1/2.
    assert [row["accuracy"] for row in steps] == pytest.approx([1 / 2, 1 / 6, 1 / 2])
    assert [row["stderr"] for row in steps] == pytest.approx([0.5 / math.sqrt(3), math.sqrt(1 / 12) / math.sqrt(3),
                                                               0.5 / math.sqrt(3)])
    assert [(row["incorrect_to_correct"], row["correct_to_incorrect"], row["cumulative_net"])
            for row in steps[1:]] == [(1, 2, -1), (2, 0, 1)]
    assert fractions(steps) == pytest.approx([1 / 5, 2 / 5, -1 / 5, 2 / 5, 0.0, 1 / 5])
    assert summary["delta_K"] == pytest.approx(0.0)
    assert summary["delta_K_stderr"] == pytest.approx(1 / math.sqrt(3))  # paired: 1, -1, 0
    assert (summary["done"], summary["errors"], summary["unfinished"]) == (5, 1, 0)
    chain = next(row for row in read_jsonl(tmp_path / "out" / ke.CHAINS_FILE)
                 if (row["question_id"], row["sample"]) == (questions[1].question_id, 0))
    assert chain["status"] == "error" and "InternalServerError" in chain["error"] and chain["correct"] == [True]


def test_transient_error_is_retried_and_the_chain_completes(tmp_path, server, questions):
    server.policy = table_policy(questions, HAND_TABLE, fail_first={(2, 1, 1): 2})
    summary = ke.evaluate(make_config(tmp_path, max_attempts=3), server.url, questions)
    assert (summary["done"], summary["errors"]) == (6, 0)
    record = next(r for r in read_jsonl(tmp_path / "out" / ke.REQUESTS_FILE)
                  if (r["question_id"], r["sample"], r["step"]) == (questions[2].question_id, 1, 1))
    assert record["attempts"] == 3
    assert summary["per_step"][2]["accuracy"] == pytest.approx(2 / 3)


def test_unreachable_endpoint_counts_errors_and_reports_no_accuracy(tmp_path, questions):
    summary = ke.evaluate(make_config(tmp_path, max_attempts=2), "http://127.0.0.1:9/v1", questions)
    assert (summary["done"], summary["errors"]) == (0, 6)
    assert [row["accuracy"] for row in summary["per_step"]] == [None, None, None]
    assert [row["n_valid"] for row in summary["per_step"]] == [0, 0, 0]
    assert summary["delta_K"] is None
    assert "APIConnectionError" in read_jsonl(tmp_path / "out" / ke.REQUESTS_FILE)[0]["error"]


def test_rerun_continues_errored_chains_without_repeating_finished_requests(tmp_path, server, questions):
    failing_last_step = {i: tuple(pattern[:2] + "E" for pattern in row) for i, row in HAND_TABLE.items()}
    server.policy = table_policy(questions, failing_last_step)
    first = ke.evaluate(make_config(tmp_path), server.url, questions)
    assert (first["done"], first["errors"]) == (0, 6)
    server.requests.clear()
    server.policy = table_policy(questions, HAND_TABLE)
    second = ke.evaluate(make_config(tmp_path), server.url, questions)
    assert sorted(served_positions(server, questions)) == [(i, s, 2) for i in range(3) for s in range(2)]
    assert (second["done"], second["errors"]) == (6, 0)
    assert second["per_step"][2]["accuracy"] == pytest.approx(2 / 3)


def test_rerun_with_a_larger_k_extends_finished_chains(tmp_path, server, questions):
    server.policy = table_policy(questions, HAND_TABLE)
    ke.evaluate(make_config(tmp_path, steps=1), server.url, questions)
    server.requests.clear()
    summary = ke.evaluate(make_config(tmp_path), server.url, questions)
    assert sorted(served_positions(server, questions)) == [(i, s, 2) for i in range(3) for s in range(2)]
    assert summary["per_step"][2]["cumulative_net"] == 1


def test_killed_run_resumes_without_repeating_a_finished_request(tmp_path, questions):
    slow = ScriptedServer(policy=table_policy(questions, HAND_TABLE), delay_s=0.2).start()
    try:
        command = [str(CONSOLE_SCRIPT), "-b", slow.url, "-m", "scripted", "-n", "3", "-r", "2", "-K", "2", "-c", "2",
                   "--retry-backoff", "0", "--no-progress", "-o", str(tmp_path / "out")]
        process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = tmp_path / "out" / ke.REQUESTS_FILE
        deadline = time.monotonic() + 60
        while not (log.exists() and log.read_text().count("\n") >= 6) and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        finished = {r["seed"] for r in ke.RequestLog(log).load() if "error" not in r}
        assert 6 <= len(finished) < 18
        sent_before = len(slow.requests)
        subprocess.run(command, cwd=tmp_path, check=True, capture_output=True, timeout=120)
        resent = {body["seed"] for body in slow.requests[sent_before:]}
    finally:
        slow.stop()
    assert not finished & resent
    rows = read_jsonl(tmp_path / "out" / ke.CHAINS_FILE)
    assert [row["status"] for row in rows] == ["done"] * 6
    summary = json.loads((tmp_path / "out" / ke.SUMMARY_FILE).read_text())
    assert summary["per_step"][2]["accuracy"] == pytest.approx(2 / 3)


def test_torn_last_line_is_dropped_with_a_warning(tmp_path, server, questions, caplog):
    server.policy = table_policy(questions, {i: tuple(p[:1] + "E" for p in row) for i, row in HAND_TABLE.items()})
    ke.evaluate(make_config(tmp_path), server.url, questions)
    log = tmp_path / "out" / ke.REQUESTS_FILE
    with log.open("a") as handle:
        handle.write('{"question_id": "test-2')
    server.policy = table_policy(questions, HAND_TABLE)
    summary = ke.evaluate(make_config(tmp_path), server.url, questions)
    assert "torn last line" in caplog.text
    assert summary["done"] == 6
    assert all(isinstance(record, dict) for record in read_jsonl(log))


def test_corrupt_line_before_the_end_raises(tmp_path):
    log = tmp_path / ke.REQUESTS_FILE
    log.write_text('{"step": 0}\nnot json\n{"step": 1}\n')
    with pytest.raises(ValueError, match="line 2"):
        ke.RequestLog(log).load()


def test_resume_with_different_sampling_settings_is_refused(tmp_path, server, questions):
    ke.evaluate(make_config(tmp_path), server.url, questions)
    with pytest.raises(ValueError, match="body_args"):
        ke.evaluate(make_config(tmp_path, temperature=0.1), server.url, questions)


def test_question_subset_is_the_environment_split_rule(questions):
    split = gsm8k_data.build_split("test", num_examples=3, seed=0)
    assert [q.question_id for q in questions] == [row["info"]["task_id"] for row in split]
    assert [q.answer for q in questions] == [row["answer"] for row in split]


@pytest.mark.parametrize("overrides, name", [
    ({"steps": -1}, "steps"), ({"samples": 0}, "samples"), ({"concurrency": 0}, "concurrency"),
    ({"num_questions": 0}, "num_questions"), ({"divergence_prob": 1.5}, "divergence_prob"),
    ({"sampling_args": {"n": 2}}, "sampling_args"), ({"sampling_args": {"extra_body": {"seed": 1}}}, "sampling_args"),
    ({"max_attempts": 0}, "max_attempts"), ({"timeout_s": 0}, "timeout_s"),
])
def test_bad_settings_raise_value_error_naming_them(overrides, name):
    with pytest.raises(ValueError, match=name):
        ke.EvalConfig(**overrides)


def test_sampling_args_that_are_not_json_exit_with_a_clear_message(capsys):
    assert ke.main(["-b", "http://127.0.0.1:9/v1", "-S", "{oops"]) == 2
    assert "sampling_args" in capsys.readouterr().err


def test_console_script_prints_the_markdown_table_and_writes_every_output(tmp_path, server, questions):
    server.policy = table_policy(questions, HAND_TABLE)
    completed = subprocess.run([str(CONSOLE_SCRIPT), "-b", server.url, "-m", "scripted", "-n", "3", "-r", "2",
                                "-K", "2", "-o", "out"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                               check=True)
    table = [line for line in completed.stdout.splitlines() if line.startswith("| ")]
    assert table[1:] == ["| 0 | base 6 | 6 | 50.0% | 28.9% | - | - | - | - | - |",
                         "| 1 | improve 6 | 6 | 50.0% | 28.9% | 1 | 1 | 0 | 0 | 0.0% |",
                         "| 2 | improve 6 | 6 | 66.7% | 16.7% | 2 | 1 | 1 | 1 | 16.7% |"]
    assert "Δ_K = acc_2 − acc_0 = +16.7 points" in completed.stdout
    assert "k-step" in completed.stderr  # the progress bar
    out = tmp_path / "out"
    assert len(read_jsonl(out / ke.CHAINS_FILE)) == 6 and len(read_jsonl(out / ke.REQUESTS_FILE)) == 18
    assert (out / ke.PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / ke.TABLE_FILE).read_text().splitlines()[2:5] == table[1:]


def test_script_under_scripts_runs_the_same_entry_point(tmp_path):
    completed = subprocess.run([sys.executable, str(REPO / "scripts" / "k_step_eval.py"), "--help"],
                               capture_output=True, text=True, timeout=60, check=True)
    assert "self-improve-kstep" in completed.stdout and "--steps" in completed.stdout


def test_every_short_and_long_flag_sets_its_field():
    short = ke.parse_args(["-m", "x", "-b", "http://h/v1", "-k", "KEY", "-n", "7", "-r", "3", "-K", "5", "-c", "6",
                           "-t", "99", "-T", "0.2", "-S", '{"top_p": 0.5}', "-p", "0.25", "-o", "somewhere"])
    long = ke.parse_args(["--model", "x", "--api-base-url", "http://h/v1", "--api-key-var", "KEY",
                          "--num-questions", "7", "--samples", "3", "--steps", "5", "--max-concurrent", "6",
                          "--max-tokens", "99", "--temperature", "0.2", "--sampling-args", '{"top_p": 0.5}',
                          "--divergence-prob", "0.25", "--output-dir", "somewhere"])
    assert short == long == ke.EvalConfig(
        model="x", base_url="http://h/v1", api_key_var="KEY", num_questions=7, samples=3, steps=5, concurrency=6,
        max_tokens=99, temperature=0.2, sampling_args={"top_p": 0.5}, divergence_prob=0.25,
        output_dir=Path("somewhere"))
    rest = ke.parse_args(["--seed", "3", "--no-request-seeds", "--max-attempts", "2", "--retry-backoff", "0.5",
                          "--timeout", "9", "--no-progress"])
    assert rest == ke.EvalConfig(seed=3, request_seeds=False, max_attempts=2, retry_backoff_s=0.5, timeout_s=9.0,
                                 progress=False)
    assert ke.parse_args([]) == ke.EvalConfig()


def test_atomic_write_keeps_the_old_file_and_no_temporary_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    atomic_io.write_text_atomic(target, "old")

    def failing_replace(source, destination):
        raise OSError("disk gone")

    monkeypatch.setattr(atomic_io.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        atomic_io.write_text_atomic(target, "new")
    assert target.read_text() == "old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["summary.json"]
