"""The hard bound: every check returns within ``HARD_BOUND_S`` (generous next to
``CHECK_TIMEOUT_S``) on megabyte strings and on expressions built to stall
math-verify, whether called from the main thread, a worker thread or a
running event loop; an overrun is cut at the bound, reported, and leaves the checker
working. Everything here runs the real math-verify in real worker processes."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from self_improve.scoring.answer_check import CHECK_TIMEOUT_S, CheckResult, check, check_async, is_correct, warm_up
from unit.test_answer_check import DECORATED_TABLE, GENEROUS_S

HARD_BOUND_S = 1.0
STALLS_MATH_VERIFY = r"(\sqrt{2}+\sqrt{3}+\sqrt{5}+\sqrt{7})^{99}"
"""Arithmetic the symbolic route accepts, and that raw math-verify spends minutes on."""


@pytest.fixture(autouse=True)
def symbolic_workers_up() -> None:
    warm_up()


def from_main_thread(response: str) -> tuple[float, CheckResult]:
    started = time.monotonic()
    result = check(response, "18")
    return time.monotonic() - started, result


def from_worker_thread(response: str) -> tuple[float, CheckResult]:
    outcome: list[tuple[float, CheckResult]] = []
    thread = threading.Thread(target=lambda: outcome.append(from_main_thread(response)))
    thread.start()
    thread.join(timeout=30)
    assert outcome, "the check did not return within 30 s in a worker thread"
    return outcome[0]


def from_event_loop(response: str) -> tuple[float, CheckResult]:
    async def timed() -> tuple[float, CheckResult]:
        started = time.monotonic()
        result = await check_async(response, "18")
        return time.monotonic() - started, result

    return asyncio.run(timed())


CALLERS: dict[str, Callable[[str], tuple[float, CheckResult]]] = {
    "main thread": from_main_thread,
    "worker thread": from_worker_thread,
    "event loop": from_event_loop,
}

numbers = st.integers(0, 10**30).map(str)
pathological = st.one_of(
    st.builds(lambda a, b, c: f"{a}^{{{b}^{{{c}}}}}", numbers, numbers, numbers),
    st.builds(lambda b, e: f"{b}^{{{e}}}", numbers, st.integers(0, 10**12)),
    st.builds(str.format, st.sampled_from(["{}!", "({})!", "{}!!", "\\Gamma({})", "\\binom{{{}}}{{7}}"]),
              st.integers(0, 10**12)),
    st.builds(lambda n: rf"\sum_{{i=1}}^{{{n}}} i", st.integers(0, 10**12)),
    st.integers(21, 199).map(lambda n: "9" * n),
    st.sampled_from([STALLS_MATH_VERIFY, r"(\sqrt{2}+\sqrt{3}+\sqrt{5})^{99}", r"10^{10^{10}} + 1"]),
    st.text(max_size=300),
)
expressions = pathological | st.builds(lambda a, op, b: f"{a} {op} {b}", pathological,
                                       st.sampled_from(["+", "-", "\\times", "\\cdot", "/", "="]), pathological)
megabytes = st.builds(
    lambda unit, tail: unit * (1_000_000 // len(unit)) + tail,
    st.sampled_from(["\\boxed{", "{", "}", "\\boxed{1", "a", "{}", "\\boxed{{}", "\\fbox{" + "{" * 99]),
    st.sampled_from(["", "\\boxed{18}", "\\boxed{10^{10^{10}} + 1}", f"\\boxed{{{STALLS_MATH_VERIFY}}}"]),
)
responses = megabytes | expressions.map(lambda expression: f"So \\boxed{{{expression}}}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(responses, st.sampled_from(sorted(CALLERS)))
def test_every_check_returns_within_the_hard_bound(response: str, caller: str) -> None:
    elapsed, result = CALLERS[caller](response)
    assert elapsed < HARD_BOUND_S, f"{caller}: {elapsed:.3f} s on {response[:80]!r}"
    assert isinstance(result.correct, bool) and not (result.correct and result.timed_out)


@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_an_expression_that_stalls_math_verify_is_cut_at_the_bound_and_reported(
    caller: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="self_improve"):
        elapsed, result = CALLERS[caller](f"So \\boxed{{{STALLS_MATH_VERIFY}}}")
    assert result == CheckResult(False, timed_out=True, route="timeout")
    assert CHECK_TIMEOUT_S <= elapsed < HARD_BOUND_S
    assert "no symbolic verdict" in caplog.text


def test_the_checker_answers_again_after_an_overrun() -> None:
    assert check(f"\\boxed{{{STALLS_MATH_VERIFY}}}", "18").timed_out
    assert check(r"\boxed{\sqrt{324}}", "18", timeout_s=GENEROUS_S) == CheckResult(True, route="symbolic")


def test_pathological_scripted_answer_is_rejected_before_parsing() -> None:
    elapsed, result = from_main_thread(r"So \boxed{10^{10^{10}} + 1}")
    assert result == CheckResult(False, route="rejected")
    assert elapsed < HARD_BOUND_S


def test_check_async_keeps_the_event_loop_running_while_math_verify_works() -> None:
    async def check_with_heartbeat() -> tuple[CheckResult, int]:
        ticks = 0
        done = asyncio.Event()

        async def heartbeat() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0)

        beating = asyncio.create_task(heartbeat())
        result = await check_async(f"\\boxed{{{STALLS_MATH_VERIFY}}}", "18")
        done.set()
        await beating
        return result, ticks

    result, ticks = asyncio.run(check_with_heartbeat())
    assert result.timed_out
    assert ticks > 10  # a blocked loop would tick at most once


def test_concurrent_checks_from_threads_and_coroutines_give_the_sequential_verdicts() -> None:
    rows = DECORATED_TABLE[::2]
    responses = [(f"So \\boxed{{{boxed}}}", gold) for boxed, gold, *_ in rows]
    expected = [(correct, route) for _, _, correct, route in rows]
    from_threads: dict[int, CheckResult] = {}

    def judge(index: int) -> None:
        from_threads[index] = check(*responses[index], timeout_s=GENEROUS_S)

    threads = [threading.Thread(target=judge, args=(index,)) for index in range(len(responses))]
    for thread in threads:
        thread.start()

    async def judge_all() -> list[CheckResult]:
        return await asyncio.gather(*(check_async(*pair, timeout_s=GENEROUS_S) for pair in responses))

    from_coroutines = asyncio.run(judge_all())
    for thread in threads:
        thread.join(timeout=60)
    assert [(r.correct, r.route) for r in from_coroutines] == expected
    assert [(from_threads[i].correct, from_threads[i].route) for i in range(len(rows))] == expected


def _check_in_child(results: multiprocessing.Queue) -> None:
    results.put(is_correct(r"\boxed{\sqrt{324}}", "18"))


def test_a_forked_child_starts_its_own_workers() -> None:
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_check_in_child, args=(results,))
    child.start()
    assert results.get(timeout=120) is True
    child.join(timeout=30)


def test_non_positive_timeout_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="timeout_s: must be > 0, got 0"):
        check(r"\boxed{18}", "18", timeout_s=0)
