"""``group_request``: one request with ``n`` = G per group, its choices shared among the group's
rollouts, through the real ``vf-eval`` against the real scripted OpenAI server."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from conftest import run_vf_eval
from scripted_server import ScriptedServer, cycle_policy

pytestmark = pytest.mark.vf_eval

PATTERN = ("correct", "wrong", "unboxed", "long")  # "long" makes choices of different lengths
ENV_ARGS = {"group_request": True, "request_seeds": True, "request_slots": 8, "min_buffer_size": 4}


def _groups(rows: list[dict]) -> dict[int, list[dict]]:
    groups: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["example_id"]].append(row)
    return groups


def _text(row: dict) -> str:
    return row["completion"][-1]["content"] if row["completion"] else ""


def _run(server: ScriptedServer, output_dir: Path, *args: str) -> list[dict]:
    """The real vf-eval with ``group_request`` against ``server``, started here and stopped after."""
    server.start()
    try:
        return run_vf_eval(server.url, output_dir, *args, "-t", "64", env_args=ENV_ARGS)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ScriptedServer, list[dict]]:
    # 0.1 s per request: a group finishes before the group after next is planned, as with a model
    server = ScriptedServer(policy=cycle_policy(PATTERN), delay_s=0.1)
    return server, _run(server, tmp_path_factory.mktemp("group_request"), "-n", "16", "-r", "4", "-c", "64")


def test_each_group_sends_one_request_for_its_g_choices(shared_run) -> None:
    server, rows = shared_run
    assert len(rows) == 64
    assert len(server.requests) == 16
    assert [body["n"] for body in server.requests] == [4] * 16
    assert all(body["stream"] is True for body in server.requests)  # each choice frees its slot as it ends
    assert len({body["seed"] for body in server.requests}) == 16  # request_seeds: the group's request has its own


def test_every_rollout_gets_its_own_choice_and_is_scored_by_what_was_served(shared_run) -> None:
    server, rows = shared_run
    for group in _groups(rows).values():
        texts = [_text(row) for row in group]
        assert len(set(texts)) == 4
        assert sorted(server.behaviour_of(text) for text in texts) == sorted(PATTERN)
        for row in group:
            assert row["error"] is None
            assert row["metrics"]["solved"] == (server.behaviour_of(_text(row)) == "correct")


def test_each_rollout_counts_its_own_completion_tokens_not_the_requests(shared_run) -> None:
    _, rows = shared_run
    counts = {row["token_usage"]["output_tokens"] for row in rows}
    assert all(row["token_usage"]["output_tokens"] == len(_text(row).split()) for row in rows)
    assert len(counts) > 1  # the server's usage counts the first choice only


def test_groups_are_still_drawn_from_the_buffer(shared_run) -> None:
    _, rows = shared_run
    assert any(row["info"]["step"] != "base" for row in rows)


def test_a_server_without_n_fails_the_rollouts_left_without_a_choice_by_name(tmp_path: Path) -> None:
    rows = _run(ScriptedServer(policy=cycle_policy(("correct",)), honour_n=False), tmp_path, "-n", "2", "-r", "3")
    for group in _groups(rows).values():
        errors = [row["error"] for row in group]
        assert errors[0] is None and _text(group[0])
        assert all("ended with 1 of n=3 choices" in str(error) for error in errors[1:])
        assert all(row["reward"] == 0.0 for row in group[1:])


def test_a_stream_that_breaks_keeps_the_choices_that_ended_and_fails_the_rest_by_name(tmp_path: Path) -> None:
    rows = _run(ScriptedServer(policy=cycle_policy(("correct",)), stream_choices=2), tmp_path, "-n", "2", "-r", "4")
    for group in _groups(rows).values():
        errors = [row["error"] for row in group]
        assert errors[:2] == [None, None] and all(_text(row) for row in group[:2])
        assert all(row["metrics"]["solved"] == 1.0 for row in group[:2])
        assert all("ended with 2 of n=4 choices" in str(error) for error in errors[2:])


def test_a_choice_the_openai_types_refuse_fails_its_rollout_by_name_and_the_run_ends(tmp_path: Path) -> None:
    server = ScriptedServer(policy=cycle_policy(("correct",)), finish_reason="bogus")
    rows = _run(server, tmp_path, "-n", "1", "-r", "2")
    assert len(rows) == 2
    assert all("group_request: choice" in str(row["error"]) for row in rows)
