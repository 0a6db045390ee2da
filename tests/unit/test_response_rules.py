"""The per-response rules of ``self_improve.scoring.response``: the improvement reward, the scored
text after ``</think>``, and the once-per-rollout check record."""

from __future__ import annotations

import ast
import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from self_improve.scoring.answer_check import extract_boxed
from self_improve.scoring.response import (
    CHECK_KEY,
    CheckRecord,
    cached_check,
    final_reply,
    improvement_reward,
    record_check,
)

UNIT = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@given(UNIT, UNIT)
def test_improvement_reward_lies_in_zero_one(r_new: float, r_prev: float) -> None:
    assert 0.0 <= improvement_reward(r_new, r_prev) <= 1.0


@given(UNIT, UNIT, UNIT)
def test_improvement_reward_grows_with_the_new_return(a: float, b: float, r_prev: float) -> None:
    low, high = sorted((a, b))
    assert improvement_reward(low, r_prev) <= improvement_reward(high, r_prev)


@given(UNIT)
def test_nothing_is_left_to_improve_after_a_perfect_return(r_new: float) -> None:
    assert improvement_reward(r_new, 1.0) == 0.0


@given(UNIT, st.floats(min_value=0.0, max_value=0.999, allow_nan=False))
def test_improvement_reward_is_the_share_of_the_gap_closed(r_new: float, r_prev: float) -> None:
    expected = max(0.0, r_new - r_prev) / (1.0 - r_prev)
    assert improvement_reward(r_new, r_prev) == pytest.approx(expected)


@pytest.mark.parametrize(("r_new", "r_prev", "expected"), [
    (1.0, 0.0, 1.0), (0.0, 0.0, 0.0), (0.0, 0.5, 0.0), (0.75, 0.5, 0.5), (1.0, 1.0, 0.0), (0.0, 1.0, 0.0),
])
def test_improvement_reward_at_the_corners(r_new: float, r_prev: float, expected: float) -> None:
    assert improvement_reward(r_new, r_prev) == expected


WORDS = st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=40)


@given(WORDS, WORDS)
def test_only_the_text_after_the_last_think_end_is_scored(thinking: str, reply: str) -> None:
    text = f"<think>{thinking}</think>draft</think>{reply}"
    assert final_reply(text, use_think=True) == reply.strip()
    assert final_reply(text, use_think=False) == text.strip()  # a plain model's reply is all scored


@given(WORDS)
def test_a_reply_without_think_end_is_scored_whole(reply: str) -> None:
    assert final_reply(reply, use_think=True) == reply.strip() == final_reply(reply)


@pytest.mark.parametrize("empty", [None, "", "  \n", "<think>all thought</think>  "])
def test_no_reply_scores_as_empty_text(empty: str | None) -> None:
    assert final_reply(empty, use_think=True) == ""


def test_a_rollout_is_checked_once_and_the_record_stays_plain(checked_texts: list[str]) -> None:
    state: dict = {}
    assert cached_check(state) is None
    first = asyncio.run(record_check(state, "so \\boxed{1,000}.", "1000", keep_response=True))
    again = asyncio.run(record_check(state, "so \\boxed{7}.", "1000"))  # a later reader: no second check
    assert first == again == CheckRecord(correct=True, timed_out=False, response="so \\boxed{1,000}.", boxed=True)
    assert checked_texts == ["so \\boxed{1,000}."]
    assert json.loads(json.dumps(state)) == state  # plain values: a state stays serialisable
    assert cached_check(state) == first


PIECES = st.sampled_from(["\\boxed{", "\\boxed {", "\\fbox{", "{", "}", "12", "twelve", " ", "\\frac{1}{2}"])


@given(st.lists(PIECES, max_size=8).map("".join))
def test_the_record_says_whether_the_text_closes_a_box_as_extract_boxed_does(text: str) -> None:
    record = asyncio.run(record_check({}, text, "12"))  # the format reward reads it instead of looking again
    assert record.boxed == (extract_boxed(text) is not None)


def test_a_record_without_the_response_keeps_none() -> None:
    info: dict = {}
    record = asyncio.run(record_check(info, "\\boxed{3}", "4"))
    assert record == CheckRecord(correct=False, boxed=True)
    assert info[CHECK_KEY] == {"correct": False, "timed_out": False, "boxed": True}
    assert cached_check({CHECK_KEY: {"correct": True}}) == CheckRecord(correct=True)  # written by another host


REPO = Path(__file__).resolve().parents[2]


def source_of(module: str) -> Path | None:
    """The file of a module of the package (read, not imported), or None when ``module`` is none."""
    base = REPO.joinpath(*module.split("."))
    return next((path for path in (base.with_suffix(".py"), base / "__init__.py") if path.is_file()), None)


def imported_modules(module: str) -> set[str]:
    """The top-level names of every module ``module`` imports, following the package's own imports."""
    seen, todo, found = set(), [module], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = source_of(name)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:  # the package uses no relative imports
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in targets:
                found.add(target.split(".")[0])
                if target.startswith("self_improve.") and source_of(target) is not None:
                    todo.append(target)
    return found


def test_the_rules_import_no_verifiers() -> None:
    imported = imported_modules("self_improve.scoring.response")
    assert {"numpy", "subprocess"} <= imported  # answer_check's and symbolic_pool's: the walk follows imports
    assert "verifiers" not in imported
    assert "verifiers" in imported_modules("self_improve.scoring.rewards")  # and would see one
