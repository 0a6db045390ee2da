"""Final-answer extraction and exact equivalence checking for GSM8K.

GSM8K answers are numbers, so equivalence is decided on exact rationals
(:class:`fractions.Fraction`), never on strings or floats: ``1,000`` equals
``1000``, ``$18.00`` equals ``18``, ``3/4`` equals ``0.75``. Only when the
boxed text does not reduce to exactly one number (``5 apples and 3 pears``,
``2\\sqrt{2}``) do we fall back to ``math-verify``, on a length-capped string
with a time bound, so a pathological response can neither hang scoring nor
raise. No model text is ever executed or passed to ``eval``.

Usage::

    >>> extract_boxed(r"so the total is \\boxed{\\$1,000}.")
    '\\\\$1,000'
    >>> is_correct(r"\\boxed{1,000 dollars}", "1000")
    True
"""

from __future__ import annotations

import functools
import re
import threading
from fractions import Fraction

MAX_BOXED_CHARS: int = 200
"""Boxed contents longer than this are not parsed: no GSM8K answer is that long,
and capping keeps the worst-case verification time bounded."""

MATH_VERIFY_TIMEOUT_S: int = 2
"""Time bound for the math-verify fallback (applied where signals allow it:
in the main thread; elsewhere the length cap alone bounds the work)."""

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE = re.compile(r"[{}]")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.,]+)\s*\}\s*\{\s*(-?[\d.,]+)\s*\}")
_NUMBER = re.compile(r"(?<![\d.])-?\d+(?:,\d{3})*(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?|(?<![\d])-?\.\d+")


def extract_boxed(text: str) -> str | None:
    """Return the contents of the *last* ``\\boxed{...}`` in ``text``, or None.

    Braces are matched by depth, so ``\\boxed{\\frac{3}{4}}`` yields
    ``\\frac{3}{4}``. "Last" is the closed box that opens last; an unclosed
    box is ignored, and a response with no closed box has no final answer.
    One left-to-right pass, so adversarial input (a megabyte of unbalanced
    braces) costs linear time.
    """
    if not isinstance(text, str):
        return None
    box_braces = {match.end() - 1 for match in _BOX_OPEN.finditer(text)}
    if not box_braces:
        return None
    open_braces: list[int] = []
    best: tuple[int, int] | None = None
    for match in _BRACE.finditer(text):
        position = match.start()
        if text[position] == "{":
            open_braces.append(position)
        elif open_braces:
            opened = open_braces.pop()
            if opened in box_braces and (best is None or opened > best[0]):
                best = (opened, position)
    return None if best is None else text[best[0] + 1 : best[1]]


@functools.lru_cache(maxsize=8192)
def parse_gold(answer: str) -> Fraction:
    """Parse a GSM8K gold answer (the text after ``####``, or a bare number).

    Cached: every rollout and every K-step request re-checks against one of a
    few thousand gold strings, and parsing one costs more than the rest of
    the check.

    Raises ``ValueError`` naming the value when it is not a number: gold
    answers come from the dataset, so a bad one is a data error, not a
    model error.
    """
    text = answer.split("####")[-1]
    number = parse_number(text)
    if number is None:
        raise ValueError(f"gold answer {answer!r} is not a single number")
    return number


def parse_number(text: str) -> Fraction | None:
    """Reduce an answer string to one exact rational, or None when it holds
    zero or several numbers.

    Handles thousands separators, currency and percent signs, ``\\frac``,
    ``a/b``, unicode minus, LaTeX text wrappers and words around the number.
    """
    if len(text) > MAX_BOXED_CHARS:
        return None
    cleaned = text.replace("\u2212", "-").replace("\\!", "").replace("\\,", "").replace("{,}", ",")
    cleaned = cleaned.replace("\\$", " ").replace("$", " ").replace("\\%", " ").replace("%", " ")
    for _ in range(3):
        cleaned = _TEXT_WRAPPER.sub(r" \1 ", cleaned)
    cleaned = _FRAC.sub(r" \1/\2 ", cleaned)
    cleaned = re.sub(r"(\d)\s*,\s*(\d{3})(?!\d)", r"\1,\2", cleaned)
    matches = _NUMBER.findall(cleaned)
    if len(matches) != 1:
        return None
    token = re.sub(r"\s+", "", matches[0]).replace(",", "")
    try:
        if "/" in token:
            numerator, denominator = token.split("/")
            if Fraction(denominator) == 0:
                return None
            return Fraction(numerator) / Fraction(denominator)
        return Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None


def _math_verify_equal(gold: Fraction, predicted: str) -> bool:
    """Symbolic fallback for boxed answers that are not a single plain number."""
    try:
        from math_verify import parse, verify
    except ImportError:  # optional at run time: without it, non-numeric answers are wrong
        return False
    in_main_thread = threading.current_thread() is threading.main_thread()
    timeout = MATH_VERIFY_TIMEOUT_S if in_main_thread else None
    try:
        gold_parsed = parse(f"${gold.numerator}/{gold.denominator}$" if gold.denominator != 1 else f"${gold.numerator}$", parsing_timeout=timeout)
        pred_parsed = parse(f"${predicted}$", parsing_timeout=timeout)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    except Exception:  # math-verify raises many types on odd input; any failure means "not shown equal"
        return False


def is_equivalent(predicted: str, gold: str) -> bool:
    """True when the extracted answer ``predicted`` equals the gold answer exactly."""
    target = parse_gold(gold)
    if len(predicted) > MAX_BOXED_CHARS:
        return False
    value = parse_number(predicted)
    if value is not None:
        return value == target
    return _math_verify_equal(target, predicted)


def is_correct(response: str, gold: str) -> bool:
    """Score a whole response: its last boxed answer must equal ``gold``.

    A response without a boxed answer is wrong, never an error.
    """
    boxed = extract_boxed(response)
    if boxed is None:
        return False
    return is_equivalent(boxed, gold)
