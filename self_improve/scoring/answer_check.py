r"""Final-answer extraction and exact, bounded equivalence checking for GSM8K.

A check takes one of three routes:

* **plain** (microseconds, in the caller): the boxed text is exactly one plain
  number (grammar below), compared with the gold answer as an exact Fraction.
* **rejected** (microseconds): wrong without parsing, because it is not GSM8K
  arithmetic: no digit; a character other than ASCII letters, digits, space,
  ``+ - * / ^ _ ( ) [ ] { } = , . ! | %`` and ``× ÷``; a command other than
  ``\sqrt \frac \dfrac \tfrac \times \cdot \div \pm \left \right \pi \circ``,
  text wrappers and spacing; a scaling word (``thousand``, ``half``,
  ``dozen``, ``twice``...); a word outside ``\text{}``, or a ``\text{}`` with
  more after it; ``**`` or more than one ``^``; an exponent other than a
  number below 100, a fraction of two, a letter or ``\circ``; a factorial of
  anything but a number below 1000; a run of more than 20 digits; over
  ``MAX_BOXED_CHARS`` characters.
* **symbolic**: the rest (``\sqrt{324}``, ``3 \times 6``, ``x = 2^3``) is judged
  by math-verify in a worker process; every side of an equation that holds a
  digit must equal the gold answer. Every check returns within
  ``CHECK_TIMEOUT_S`` = 0.5 s of the call, from any thread or event loop; one
  with no verdict by then is wrong with ``timed_out=True`` (and a logged
  warning), and its worker is killed and replaced unless it finishes within
  ``WORKER_GRACE_S``. The first symbolic check of a process waits once for
  the workers to start (at most ``WORKER_START_TIMEOUT_S``; :func:`warm_up`
  does it ahead of time); the bound then counts from their start.

Plain-number grammar. ``$ \$ € £ ¥``, braces and LaTeX spacing (``\, \; \quad
~``) are dropped; ``\text{}``, ``\textbf{}``, ``\textrm{}``, ``\textit{}``,
``\mathrm{}``, ``\mathbf{}``, ``\mbox{}`` are read as their contents::

    answer  := [label ("=" | ":")] word* [sign]number [percent] word* ["."]
    label   := word (" " word)*                    "x = 7", "Total: 7"
    sign    := "-" | "+" | U+2212                  touching the number: -\$5, \$-5, -\frac{3}{4}
    number  := decimal | decimal "/" decimal | \frac{[sign]decimal}{[sign]decimal}
             | \frac D D                           \dfrac, \tfrac alike; \frac34 is 3/4
    decimal := digits ["." digits] | "." digits    digits ungrouped, or grouped in threes
                                                   by "," "{,}" "\," or a thin/no-break space
    percent := "%" | "\%" | "percent"              the number itself: 75\% is 75
    word    := letters, a space away from the number, not a scaling or number
               word; outside \text{} a single letter is a variable, so "18x",
               "18 x" and "x18" are not plain

No model text is ever executed or passed to ``eval``.

Usage::

    >>> extract_boxed(r"so the total is \boxed{\$1,000}.")
    '\\$1,000'
    >>> is_correct(r"\boxed{1,000 dollars}", "1000")
    True
    >>> check(r"\boxed{18 thousand}", "18")
    CheckResult(correct=False, timed_out=False, route='rejected')
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import numpy as np

from self_improve.scoring import symbolic_pool
from self_improve.scoring.symbolic_pool import warm_up  # noqa: F401 (part of this module's API)

logger = logging.getLogger(__name__)

MAX_BOXED_CHARS: int = 200
"""A box whose contents run past this many characters is not an answer."""

MAX_BOXES_TRIED: int = 100
"""Boxes tried from the end of a response before it counts as having no answer."""

CHECK_TIMEOUT_S: float = 0.5
"""Hard bound on one check, once the symbolic workers are up."""

Route = Literal["unboxed", "plain", "rejected", "symbolic", "timeout"]


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one response, and the route that reached it."""

    correct: bool
    timed_out: bool = False
    route: Route = "plain"


_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE = re.compile(r"[{}]")


def extract_boxed(text: str) -> str | None:
    r"""Return the contents of the *last* closed ``\boxed{...}`` in ``text``, or None.

    Braces are matched by depth, so ``\boxed{\frac{3}{4}}`` yields
    ``\frac{3}{4}``. "Last" is the closed box that opens last: an unclosed box
    is skipped (a response cut off while writing one), a closed one is the
    answer however long it is (one past ``MAX_BOXED_CHARS`` is then wrong, so
    an early guess cannot hide behind a long last box). At most
    ``MAX_BOXES_TRIED`` boxes are tried, from the end; a box that does not
    close within its first ``MAX_BOXED_CHARS`` characters is matched on one
    vectorised depth profile of the text, so a megabyte of braces costs a few
    milliseconds.
    """
    if not isinstance(text, str):
        return None
    before = len(text)
    profile: tuple[np.ndarray, np.ndarray] | None = None
    for _ in range(MAX_BOXES_TRIED):
        start = max(text.rfind("\\boxed", 0, before), text.rfind("\\fbox", 0, before))
        if start < 0:
            return None
        before = start
        opening = _BOX_OPEN.match(text, start)
        if opening is None:
            continue
        brace, depth = opening.end() - 1, 0
        for match in _BRACE.finditer(text, brace, brace + MAX_BOXED_CHARS + 2):
            depth += 1 if match.group() == "{" else -1
            if depth == 0:
                return text[brace + 1 : match.start()]
        profile = profile or _brace_depths(text)
        close = _closing_brace(profile, brace)
        if close is not None:
            return text[brace + 1 : close]
    return None


def _brace_depths(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Brace depth after each character, and its minimum over every suffix."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    depths = np.cumsum((codes == ord("{")).astype(np.int64) - (codes == ord("}")))
    return depths, np.minimum.accumulate(depths[::-1])[::-1]


def _closing_brace(profile: tuple[np.ndarray, np.ndarray], brace: int) -> int | None:
    """Where the ``{`` at ``brace`` closes, or None if it never does."""
    depths, suffix_min = profile
    inside = depths[brace] - 1
    if brace + 1 >= len(depths) or suffix_min[brace + 1] > inside:
        return None
    return brace + 1 + int(np.argmax(depths[brace + 1 :] <= inside))


_UNSIGNED = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_WRAPPER_NAMES = "text|textbf|textrm|textit|mathrm|mathbf|mbox"


def _frac_arg(name: str) -> str:
    return rf"\{{\s*(?P<{name}>[-+]?(?:{_UNSIGNED}))\s*\}}|(?P<{name}1>\d)"


_TOKEN = re.compile(
    r"(?P<space>\s+|\\[,;:! ]|\\q?quad(?![A-Za-z])|~)"
    rf"|(?P<wrap>\\(?:{_WRAPPER_NAMES})\s*\{{(?P<inner>(?:[^{{}}]|\{{[^{{}}]*\}})*)\}})"
    rf"|(?P<frac>\\[dt]?frac\s*(?:{_frac_arg('n')})\s*(?:{_frac_arg('d')}))"
    rf"|(?P<ratio>(?P<rn>{_UNSIGNED})\s*/\s*(?P<rd>{_UNSIGNED}))"
    rf"|(?P<number>{_UNSIGNED})"
    r"|(?P<sign>[-+])"
    r"|(?P<skip>\\?\$|[{}€£¥])"
    r"|(?P<word>[A-Za-z]+(?:'[A-Za-z]+)*)"
    r"|(?P<mark>\\?%|[=:.])"
)
_MARKS = {"%": "P", "\\%": "P", "=": "=", ":": "=", ".": "."}
_SEPARATOR = re.compile(r"(?<=\d)(?:\{,\}|\\,|[\u2009\u202f\u00a0])(?=\d{3}(?!\d))")
_PLAIN = re.compile(r"(?:[WV](?: [WV])* ?= ?)?(?:W )*S?N(?: ?P)?(?: W)*(?: ?\.)?")
_GOLD = re.compile(r"S?N")
_SCALING = re.compile(
    r"(?<![A-Za-z\\])(?:thousand|million|billion|trillion|hundred|lakh|crore|dozen|half|halves|third|quarter"
    r"|fourth|fifth|sixth|seventh|eighth|ninth|tenth|hundredth|thousandth|twice|double|triple|thrice|times"
    r"|plus|minus|negative|over|squared|cubed|power|divided|multiplied)s?(?![A-Za-z])",
    re.IGNORECASE,
)
_NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety".split()
)


def _kinds(text: str, in_text: bool, numbers: list[Fraction], signs: list[str]) -> str | None:
    r"""One letter per token of ``text``: N(umber), S(ign), P(ercent), "=" (a
    label's end), ".", " ", W(ord), V(ariable: a lone letter outside \text{}),
    X (scaling word) or M (number word), collecting numbers and signs on the
    way; None when a token is outside the grammar."""
    kinds: list[str] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            return None
        position, group, token = match.end(), match.lastgroup, match.group()
        if group == "wrap":
            inner = _kinds(match.group("inner"), True, numbers, signs)
            if inner is None:
                return None
            kinds.append(f" {inner} ")
        elif group in ("frac", "ratio", "number"):
            numbers.append(_value(match))
            kinds.append("N")
        elif group == "sign":
            signs.append(token)
            kinds.append("S")
        elif group == "word":
            word = token.lower()
            kinds.append("P" if word == "percent" else "X" if _SCALING.fullmatch(word) else
                         "M" if word in _NUMBER_WORDS else "V" if len(word) == 1 and not in_text else "W")
        elif group != "skip":
            kinds.append(" " if group == "space" else _MARKS[token])
    return "".join(kinds)


def _value(match: re.Match[str]) -> Fraction:
    """The exact value of a number token; a zero denominator raises ZeroDivisionError."""
    if match.lastgroup == "number":
        return Fraction(match.group("number").replace(",", ""))
    if match.lastgroup == "ratio":
        top, bottom = match.group("rn"), match.group("rd")
    else:
        top, bottom = match.group("n") or match.group("n1"), match.group("d") or match.group("d1")
    return Fraction(top.replace(",", "")) / Fraction(bottom.replace(",", ""))


def _read(text: str, grammar: re.Pattern[str]) -> Fraction | None:
    """The value of ``text`` when its token kinds match ``grammar``, else None."""
    if len(text) > MAX_BOXED_CHARS:
        return None
    numbers: list[Fraction] = []
    signs: list[str] = []
    try:
        kinds = _kinds(_SEPARATOR.sub(",", text.replace("\u2212", "-")), False, numbers, signs)
    except ZeroDivisionError:
        return None
    if kinds is None or not grammar.fullmatch(re.sub(" +", " ", kinds).strip()):
        return None
    return -numbers[0] if signs == ["-"] else numbers[0]


def parse_number(text: str) -> Fraction | None:
    """Reduce an answer to one exact rational, or None when it is not exactly
    one plain number (the module's grammar)."""
    return _read(text, _PLAIN)


@functools.lru_cache(maxsize=8192)
def parse_gold(answer: str) -> Fraction:
    """Parse a GSM8K gold answer (the text after ``####``, or a bare number).

    Cached: every rollout and every K-step request re-checks against one of a
    few thousand gold strings. Strict: a signed number and nothing else.
    Raises ``ValueError`` naming the value otherwise: a bad gold answer is a
    data error, not a model error.
    """
    number = _read(answer.split("####")[-1].strip(), _GOLD)
    if number is None:
        raise ValueError(f"gold: must be one plain number, got {answer!r}")
    return number


_SYMBOLIC_CHARS = re.compile(r"[0-9A-Za-z\s+\-*/^_()\[\]{}=,.!|%×÷\\]*")
_COMMAND = re.compile(r"\\([A-Za-z]+|.?)", re.DOTALL)
_SYMBOLIC_COMMANDS = frozenset(
    [*_WRAPPER_NAMES.split("|"), *"sqrt frac dfrac tfrac times cdot div pm left right pi circ quad qquad".split(),
     *",;:! {}$%"]
)
_WRAPPER = rf"\\(?:{_WRAPPER_NAMES})\s*\{{[^{{}}]*\}}"
_WRAPPED_OR_COMMAND = re.compile(rf"{_WRAPPER}|\\[A-Za-z]+")
_WRAPPED_THEN_MORE = re.compile(rf"{_WRAPPER}.*[0-9A-Za-z\\]", re.DOTALL)  # math-verify would drop all of it
_INVISIBLE_DELIMITER = re.compile(r"\\(?:left|right)\s*\.")
_PROSE = re.compile(r"[A-Za-z]{2,}")
_DIGIT = re.compile(r"\d")
_LONG_DIGITS = re.compile(r"\d{21}")
_FACTORIAL = re.compile(r"(?<![\d.])\d{1,3}!")
_EXPONENT = re.compile(r"\^\s*(?:\{([^{}]*)\}|(\\[A-Za-z]+|.))", re.DOTALL)
_SMALL_EXPONENT = re.compile(r"\s*(?:[-+]?\d{1,2}(?:\s*/\s*\d{1,2})?|[A-Za-z]|\\circ)\s*")


def _cannot_be_an_answer(text: str) -> bool:
    """True for non-plain text that is not GSM8K arithmetic (the module doc's list)."""
    if len(text) > MAX_BOXED_CHARS or not _DIGIT.search(text) or not _SYMBOLIC_CHARS.fullmatch(text):
        return True
    if any(name not in _SYMBOLIC_COMMANDS for name in _COMMAND.findall(text)) or _INVISIBLE_DELIMITER.search(text):
        return True
    if _SCALING.search(text) or _PROSE.search(_WRAPPED_OR_COMMAND.sub(" ", text)) or _WRAPPED_THEN_MORE.search(text):
        return True
    text = text.replace("\\!", "")
    if "**" in text or text.count("^") > 1 or _LONG_DIGITS.search(text):
        return True
    if text.count("!") != len(_FACTORIAL.findall(text)):
        return True
    exponent = _EXPONENT.search(text)
    return exponent is not None and not _SMALL_EXPONENT.fullmatch(exponent.group(1) or exponent.group(2))


def _without_symbolic(boxed: str | None, gold: str, timeout_s: float) -> CheckResult | tuple[str, str]:
    """The verdict when no symbolic check is needed, else (gold, text) to check symbolically."""
    if not timeout_s > 0:
        raise ValueError(f"timeout_s: must be > 0, got {timeout_s!r}")
    target = parse_gold(gold)
    if boxed is None:
        return CheckResult(False, route="unboxed")
    value = parse_number(boxed)
    if value is not None:
        return CheckResult(value == target, route="plain")
    text = boxed.replace("\u2212", "-")
    if _cannot_be_an_answer(text):
        return CheckResult(False, route="rejected")
    return str(target), text


def _symbolic_result(verdict: bool | None) -> CheckResult:
    if verdict is None:
        return CheckResult(False, timed_out=True, route="timeout")
    return CheckResult(verdict, route="symbolic")


def _judge(boxed: str | None, gold: str, timeout_s: float) -> CheckResult:
    called_at = time.monotonic()
    plan = _without_symbolic(boxed, gold, timeout_s)
    if isinstance(plan, CheckResult):
        return plan
    return _symbolic_result(symbolic_pool.POOL.ask(*plan, called_at, timeout_s))


def check(response: str, gold: str, timeout_s: float = CHECK_TIMEOUT_S) -> CheckResult:
    """Judge a whole response: its last boxed answer must equal ``gold``.

    Safe from any thread; returns within ``timeout_s`` (see the module doc).
    A response without a boxed answer is wrong, never an error.
    """
    return _judge(extract_boxed(response), gold, timeout_s)


async def check_async(response: str, gold: str, timeout_s: float = CHECK_TIMEOUT_S) -> CheckResult:
    """:func:`check` for a running event loop: plain and rejected answers are
    judged inline, a symbolic check is awaited without blocking the loop."""
    called_at = time.monotonic()
    plan = _without_symbolic(extract_boxed(response), gold, timeout_s)
    if isinstance(plan, CheckResult):
        return plan
    loop = asyncio.get_running_loop()
    pool = symbolic_pool.POOL
    return _symbolic_result(await loop.run_in_executor(pool.executor(), pool.ask, *plan, called_at, timeout_s))


def is_correct(response: str, gold: str) -> bool:
    """:func:`check`'s verdict alone."""
    return check(response, gold).correct
