"""The buffer checkpoint file: atomic writes, one writer, and every way a file can be bad."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_exit_buffer import base_group

from self_improve.buffer.checkpoint import BufferFile, read_state
from self_improve.buffer.exit_buffer import ExitBuffer

Edit = Callable[[dict[str, Any]], Any]


def saved_state() -> dict[str, Any]:
    buffer = ExitBuffer(capacity=4)
    buffer.observe(base_group())
    return json.loads(json.dumps(buffer.state_dict()))


def test_save_writes_atomically_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    buffer = ExitBuffer(capacity=4)
    buffer.observe(base_group())
    target = tmp_path / "buffer.json"
    checkpoint = BufferFile(str(target))
    checkpoint.save(buffer.state_dict())
    buffer.observe(base_group(responses=("8", "9", "10", "11")))
    checkpoint.save(buffer.state_dict())
    assert [p.name for p in tmp_path.iterdir()] == ["buffer.json"]
    assert read_state(target) == json.loads(json.dumps(buffer.state_dict()))


def test_an_older_state_never_overwrites_a_newer_one(tmp_path: Path) -> None:
    buffer = ExitBuffer(capacity=4)
    buffer.observe(base_group())
    older = buffer.state_dict()
    buffer.observe(base_group(responses=("8", "9", "10", "11")))
    checkpoint = BufferFile(str(tmp_path / "buffer.json"))
    checkpoint.save(buffer.state_dict())
    checkpoint.save(older)
    assert read_state(tmp_path / "buffer.json")["step"] == 2


def test_corrupt_buffer_file_raises_naming_the_path(tmp_path: Path) -> None:
    target = tmp_path / "buffer.json"
    target.write_text('{"version": 1, "instan')
    with pytest.raises(ValueError, match="buffer.json"):
        read_state(target)


def test_claiming_removes_temporary_files_a_killed_writer_left(tmp_path: Path) -> None:
    target = tmp_path / "buffer.json"
    stale = [tmp_path / ".buffer.json.0123abcd.tmp", tmp_path / ".buffer.json.ffff.tmp"]
    for path in stale:
        path.write_text("{partial")
    (tmp_path / ".other.json.1.tmp").write_text("not ours")
    BufferFile(str(target)).claim()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.1.tmp", "buffer.json.lock"]


def _set(key: str, value: Any) -> Edit:
    return lambda state: state.__setitem__(key, value)


def _set_instance(key: str, value: Any, index: int = 0) -> Edit:
    return lambda state: state["instances"][index].__setitem__(key, value)


def _duplicate_id(state: dict[str, Any]) -> None:
    state["instances"][1]["instance_id"] = state["instances"][0]["instance_id"]


def _duplicate_response(state: dict[str, Any]) -> None:
    state["instances"][1]["iterates"] = list(state["instances"][0]["iterates"])


def _too_many(state: dict[str, Any]) -> None:
    extra = [dict(state["instances"][0], instance_id=10 + i, iterates=[f"x{i}"]) for i in range(4)]
    state["instances"] += extra
    state["next_id"] = 20


BAD_STATES: list[tuple[str, Edit, str]] = [
    ("wrong version", _set("version", 99), r"version: expected 1, got 99"),
    ("missing key", lambda state: state.pop("next_id"), r"next_id: missing from buffer state"),
    ("bad rng", _set("rng", {"bit_generator": "PCG64", "state": "nonsense"}), r"rng: not a numpy PCG64"),
    ("rng of another kind", _set("rng", [1, 2, 3]), r"rng: not a numpy PCG64"),
    ("other buffer_size", _set("capacity", 8), r"capacity: saved buffer has 8.*set buffer_size"),
    ("other strategy", _set("store_responses", False), r"store_responses: saved .*set strategy"),
    ("other kappa", _set("kappa", 1.0), r"kappa: saved buffer has 1.0.*set kappa"),
    ("step not a number", _set("step", "three"), r"step: must be an integer >= 0"),
    ("negative next_id", _set("next_id", -1), r"next_id: must be an integer >= 0"),
    ("instances not a list", _set("instances", {}), r"instances: must be a list"),
    ("too many instances", _too_many, r"instances: 8 saved, above capacity 4"),
    ("duplicate ids", _duplicate_id, r"instances: instance_id 0 is duplicated"),
    ("id at or above next_id", _set_instance("instance_id", 50),
     r"instances: instance_id 50 is duplicated or not below"),
    ("duplicate responses", _duplicate_response, r"instances: instance 1 repeats the response of another"),
    ("NaN score", _set_instance("score", math.nan),
     r"instances: instance 0 has score nan, not a number in \[0, 0.25\]"),
    ("score above 0.25", _set_instance("score", 7.5),
     r"instances: instance 0 has score 7.5, not a number in \[0, 0.25\]"),
    ("negative score", _set_instance("score", -0.1), r"instances: instance 0 has score -0.1"),
    ("score as text", _set_instance("score", "0.1"), r"instances: malformed instance .*score must be a number"),
    ("id as text", _set_instance("instance_id", "0"),
     r"instances: malformed instance .*ids and steps must be integers"),
    ("missing task", lambda state: state["instances"][0].pop("task"), r"instances: malformed instance"),
    ("iterate not text", _set_instance("iterates", [5]), r"instances: malformed instance .*must be strings"),
    ("flags out of step", _set_instance("iterate_correct", [True, False]),
     r"instances: malformed instance .*one true/false"),
    ("parent as text", _set_instance("parent_id", "x"),
     r"instances: malformed instance .*parent_id must be an integer"),
]


@pytest.mark.parametrize(("case", "edit", "message"), BAD_STATES, ids=[case for case, _, _ in BAD_STATES])
def test_a_bad_buffer_file_is_refused_naming_the_file_and_what_to_change(
        tmp_path: Path, case: str, edit: Edit, message: str) -> None:
    state = saved_state()
    edit(state)
    target = tmp_path / "buffer.json"
    target.write_text(json.dumps(state))
    buffer = ExitBuffer(capacity=4)
    with pytest.raises(ValueError, match=rf"^buffer_path: {target} cannot be resumed: {message}"):
        BufferFile(str(target)).resume(buffer)
    assert len(buffer) == 0 and buffer.step == 0, "a refused file must leave the buffer untouched"


@pytest.mark.parametrize(("content", "message"), [
    (b"\xff\xfe not utf-8", "is not a valid buffer file"),
    (b'{"version": 1, "instan', "is not a valid buffer file"),
    (b"[1, 2, 3]", "does not hold a buffer state object"),
])
def test_a_file_that_is_not_a_buffer_state_is_refused_naming_it(tmp_path: Path, content: bytes, message: str) -> None:
    target = tmp_path / "buffer.json"
    target.write_bytes(content)
    with pytest.raises(ValueError, match=rf"^buffer_path: {target} {message}"):
        BufferFile(str(target)).resume(ExitBuffer(capacity=4))


def test_a_good_file_resumes_exactly(tmp_path: Path) -> None:
    state = saved_state()
    target = tmp_path / "buffer.json"
    target.write_text(json.dumps(state))
    buffer = ExitBuffer(capacity=4)
    assert BufferFile(str(target)).resume(buffer)
    assert json.loads(json.dumps(buffer.state_dict())) == state


def test_threads_of_one_process_claiming_at_once_all_succeed(tmp_path: Path) -> None:
    """Groups planned concurrently (vf-eval runs a plan per group in threads) claim together."""
    from concurrent.futures import ThreadPoolExecutor

    target = str(tmp_path / "buffer.json")
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: BufferFile(target).claim(), range(64)))
    assert results == [None] * 64
