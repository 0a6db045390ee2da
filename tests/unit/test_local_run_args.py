"""``self-improve-local``'s flags as the env arguments and vf-eval flags they become (no server started)."""

from __future__ import annotations

import json

import pytest

from self_improve.local import cli


def _command(*argv: str, local: bool = True) -> tuple[list[str], dict]:
    config, extra = cli.parse_args(list(argv))
    command = cli.vf_eval_command(config, extra, "http://127.0.0.1:1/v1", "m", "KEY", local=local)
    return command, json.loads(command[command.index("-a") + 1])


def test_c_becomes_the_request_slots_and_vf_eval_admits_every_group() -> None:
    command, env_args = _command("-n", "5", "-r", "3", "-c", "6")
    assert env_args["request_slots"] == 6
    assert command[command.index("-c") + 1] == "15"


def test_the_buffer_is_sampled_once_one_group_is_scored_unless_a_says_otherwise() -> None:
    assert _command("-r", "4")[1]["min_buffer_size"] == 4
    assert _command("-r", "4", "-a", '{"min_buffer_size": 2, "request_slots": 1}')[1] == {
        "request_seeds": True, "group_request": True, "request_slots": 1, "min_buffer_size": 2}


def test_only_the_built_in_server_gets_request_seeds_and_one_streamed_request_per_group() -> None:
    assert _command()[1]["request_seeds"] is True
    assert _command()[1]["group_request"] is True  # llama.cpp evaluates each group's prompt once
    remote = _command("-b", "http://h/v1", "-m", "x", local=False)[1]
    assert "request_seeds" not in remote and "group_request" not in remote  # a server may not stream n


def test_a_turns_group_request_off() -> None:
    assert _command("-a", '{"group_request": false}')[1]["group_request"] is False


def test_run_arguments_the_env_would_refuse_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.parse_args(["-r", "9", "-a", '{"buffer_size": 4}'])
    assert raised.value.code == 2
    assert "min_buffer_size: must be <= buffer_size (4), got 9" in capsys.readouterr().err
