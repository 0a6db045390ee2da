"""Cost per check of ``answer_check`` against raw math-verify on the same inputs.

Three groups of boxed answers, each judged by ``answer_check.check`` (whole
response in, verdict out) and by raw math-verify in this process
(``parse`` gold and answer, then ``verify``, its default signal time limits,
main thread):

* plain: GSM8K answer forms the plain route takes;
* symbolic: arithmetic and decorated forms that go to the worker process;
* pathological: towers, huge factorials and powers, and an expression that
  stalls math-verify (rejected before parsing, or killed at the bound).

Reports median and worst microseconds per check, the ratios raw/ours, and
every input where the two verdicts differ. Both sides are warmed up first.

Usage::

    .venv/bin/python scripts/bench_answer_check.py               # 200 repeats of plain, 20 of symbolic
    .venv/bin/python scripts/bench_answer_check.py --repeats 50
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from math_verify import parse, verify  # noqa: E402

from self_improve.scoring import answer_check  # noqa: E402

PLAIN = [
    ("18", "18"), ("1,000", "1000"), ("\\$1,250.00", "1250"), ("\\frac{3}{4}", "0.75"), ("\\frac34", "0.75"),
    ("18 dollars", "18"), ("\\text{18 dollars}", "18"), ("x = 7", "7"), ("75\\%", "75"), ("-5", "-5"),
    ("-\\$5", "5"), ("0.75", "0.75"), ("43\\,500", "43500"), ("18.", "18"), ("17", "18"),
]
SYMBOLIC = [
    ("\\sqrt{324}", "18"), ("3 \\times 6", "18"), ("2 \\cdot 9", "18"), ("36 \\div 2", "18"),
    ("2 \\times 3^2", "18"), ("1.8 \\times 10", "18"), ("(10 + 8)", "18"), ("20 - 2", "18"),
    ("3 \\times 6 = 18", "18"), ("\\sqrt{18}", "18"), ("18\\pi", "18"), ("18!", "18"), ("18^2", "18"),
    ("2\\cdot 18", "18"), ("18x", "18"), ("17 = 18", "18"),
]
PATHOLOGICAL = [
    ("10^{10^{10}} + 1", "5"), ("(10^{10})!", "5"), ("2^{99999999}", "5"), ("99999!", "5"),
    ("(\\sqrt{2}+\\sqrt{3}+\\sqrt{5}+\\sqrt{7})^{99}", "18"),
]


def ours(boxed: str, gold: str) -> bool:
    return answer_check.check(f"So the answer is \\boxed{{{boxed}}}.", gold).correct


def raw(boxed: str, gold: str) -> bool:
    try:
        return bool(verify(parse(f"${gold}$"), parse(f"${boxed}$")))
    except Exception:
        return False


Cases = list[tuple[str, str]]


def timed(judge: Callable[[str, str], bool], cases: Cases, repeats: int) -> tuple[list[float], list[bool]]:
    """Microseconds of every call, and the verdict on each case."""
    micros: list[float] = []
    verdicts: list[bool] = []
    for boxed, gold in cases:
        for _ in range(repeats):
            started = time.perf_counter_ns()
            verdict = judge(boxed, gold)
            micros.append((time.perf_counter_ns() - started) / 1000)
        verdicts.append(verdict)
    return micros, verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200, help="repeats per plain input (symbolic: a tenth)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # kills are expected here; math-verify logs every timeout
    answer_check.warm_up()
    for boxed, gold in PLAIN + SYMBOLIC:
        ours(boxed, gold), raw(boxed, gold)
    groups = [("plain", PLAIN, args.repeats), ("symbolic", SYMBOLIC, max(1, args.repeats // 10)),
              ("pathological", PATHOLOGICAL, 1)]
    print(f"{'group':<13}{'n':>6}  {'ours median':>12}{'ours worst':>12}  {'raw median':>12}{'raw worst':>12}"
          f"  {'median x':>9}{'worst x':>9}   (microseconds per check)")
    differences: list[str] = []
    for name, cases, repeats in groups:
        our_micros, our_verdicts = timed(ours, cases, repeats)
        raw_micros, raw_verdicts = timed(raw, cases, repeats)
        our_median, raw_median = statistics.median(our_micros), statistics.median(raw_micros)
        print(f"{name:<13}{len(our_micros):>6}  {our_median:>12.1f}{max(our_micros):>12.1f}  {raw_median:>12.1f}"
              f"{max(raw_micros):>12.1f}  {raw_median / our_median:>9.1f}{max(raw_micros) / max(our_micros):>9.1f}")
        differences += [f"  {boxed!r} (gold {gold}): ours {mine}, raw math-verify {theirs}"
                        for (boxed, gold), mine, theirs in zip(cases, our_verdicts, raw_verdicts, strict=True)
                        if mine != theirs]
    print(f"bound: CHECK_TIMEOUT_S = {answer_check.CHECK_TIMEOUT_S} s; verdicts that differ from raw math-verify:")
    print("\n".join(differences) or "  none")


if __name__ == "__main__":
    main()
