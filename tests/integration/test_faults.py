"""Nothing wrong enters the buffer: rollouts that time out, fail, or return no answer
text keep their whole group out of it, and show as failures in the saved results.

Driven through the real ``vf-eval --timeout`` against the real scripted server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_classic_host import client_for, group_inputs

from conftest import HeldFile, run_vf_eval, vf_eval
from scripted_server import ChatRequest, ScriptedServer
from self_improve import load_environment
from self_improve.buffer.checkpoint import read_state

pytestmark = pytest.mark.vf_eval  # the real parts this file's tests start (pyproject's markers)

FAULTS = ("hang", "blank", "null")


def faulty_policy(request: ChatRequest) -> str:
    """Base questions with an even gold answer get one fault (hang, blank, null in turn by gold);
    every other request is answered correctly or wrongly in turn."""
    gold = int(float(request.gold)) if request.gold.lstrip("-").replace(".", "").isdigit() else 1
    if request.kind == "base" and gold % 2 == 0 and request.index_for_question == 1:
        return FAULTS[(gold // 2) % len(FAULTS)]
    return ("correct", "wrong")[request.index_for_question % 2]


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], dict, ScriptedServer]:
    server = ScriptedServer(policy=faulty_policy).start()
    folder = tmp_path_factory.mktemp("faults")
    buffer_path = folder / "buffer.json"
    try:
        rows = run_vf_eval(server.url, folder, "-n", "16", "-r", "4", "-c", "64", "--timeout", "3",
                           env_args={"buffer_path": str(buffer_path), "min_buffer_size": 4, "select_prob": 0.5})
    finally:
        server.stop()
    return rows, read_state(buffer_path), server


def groups_of(rows: list[dict]) -> dict[int, list[dict]]:
    groups: dict[int, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["example_id"], []).append(row)
    return groups


def text_of(row: dict) -> str:
    completion = row.get("completion") or []
    return (completion[-1].get("content") or "") if completion else ""


def test_the_run_really_had_every_kind_of_fault(faulty_run) -> None:
    _, _, server = faulty_run
    assert {served.behaviour for served in server.served} >= set(FAULTS)


def test_every_faulty_rollout_is_saved_as_a_failure(faulty_run) -> None:
    rows, _, server = faulty_run
    faulty = {(s.question, s.text) for s in server.served if s.behaviour in FAULTS and s.text.strip()}
    failed = [row for row in rows if row.get("error")]
    assert len(failed) >= 3
    for row in rows:
        if not text_of(row).strip() or row.get("stop_condition") == "timeout_reached":
            assert row.get("error"), f"a rollout without an answer was saved without an error: {row['example_id']}"
    assert all(row.get("error") for row in rows if (row["info"]["question"], text_of(row)) in faulty)


def test_no_response_of_a_group_with_a_failure_enters_the_buffer(faulty_run) -> None:
    rows, state, _ = faulty_run
    buffered = {tuple(instance["iterates"]) for instance in state["instances"]}
    latest = {iterates[-1] for iterates in buffered}
    complete_texts: set[str] = set()
    for group in groups_of(rows).values():
        texts = {text_of(row) for row in group}
        if any(row.get("error") for row in group):
            assert not texts & latest, "a response of a failed group entered the buffer"
        else:
            complete_texts |= texts
    assert latest and latest <= complete_texts
    assert all(text.strip() for iterates in buffered for text in iterates)


def test_every_complete_group_reached_the_buffer(faulty_run) -> None:
    rows, state, _ = faulty_run
    complete = [group for group in groups_of(rows).values() if not any(row.get("error") for row in group)]
    assert state["step"] == len(complete) > 0


def test_failed_rollouts_are_not_scored_as_buffer_parents(faulty_run) -> None:
    """A failed group is not observed at all, so it never re-scores the instance it came from."""
    rows, state, _ = faulty_run
    failed_parents = {row["info"]["parent_id"] for group in groups_of(rows).values()
                      if any(r.get("error") for r in group) for row in group} - {None}
    scored_later = {instance["instance_id"] for instance in state["instances"]
                    if instance["scored_step"] > instance["created_step"]}
    complete_parents = {row["info"]["parent_id"] for group in groups_of(rows).values()
                        if not any(r.get("error") for r in group) for row in group} - {None}
    assert scored_later <= complete_parents
    assert not (failed_parents - complete_parents) & scored_later


def test_log_lines_reach_the_vf_eval_output_and_per_group_lines_only_with_verbose(
        tmp_path: Path, scripted_server: ScriptedServer) -> None:
    buffer_path = tmp_path / "buffer.json"
    _, quiet = vf_eval(scripted_server.url, tmp_path, "-n", "2", "-r", "2", env_args={"buffer_path": str(buffer_path)})
    assert "group test-" not in quiet
    second = tmp_path / "again"
    second.mkdir()
    _, verbose = vf_eval(scripted_server.url, second, "-n", "2", "-r", "2", "-v",
                         env_args={"buffer_path": str(buffer_path)})
    assert f"resumed buffer from {buffer_path}" in verbose
    assert "group test-" in verbose and "step=base" in verbose


def test_a_second_writer_of_a_buffer_file_is_refused_before_it_generates_anything(
        held_buffer_file: HeldFile, scripted_server: ScriptedServer) -> None:
    target = held_buffer_file.path
    env = load_environment(num_eval_examples=2, num_train_examples=1, buffer_path=str(target))
    with pytest.raises(ValueError, match=f"buffer_path: {target} is being written by another process"):
        asyncio.run(env.run_group(group_inputs(env, 0), client_for(scripted_server), "scripted",
                                  {"max_tokens": 64}))
    assert scripted_server.requests == [], "nothing may be generated for a group that cannot be saved"
