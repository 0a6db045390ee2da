"""Answer extraction and exact GSM8K equivalence: tables of answer forms (plain
numbers, and operator/function/word forms around the gold number), and
properties showing the checker never raises on arbitrary model text."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from self_improve.scoring.answer_check import (
    check,
    extract_boxed,
    is_correct,
    parse_gold,
    parse_number,
    warm_up,
)

GENEROUS_S = 10.0
"""Timeout for verdict tests, so a loaded machine cannot turn a verdict into a
timeout; the bound itself is tested in test_answer_check_bounds.py."""

# (boxed contents, gold, expected verdict)
EQUIVALENCE_TABLE: list[tuple[str, str, bool]] = [
    ("1000", "1000", True),
    ("1,000", "1000", True),
    ("1,000,000", "1000000", True),
    ("$18", "18", True),
    ("\\$18", "18", True),
    ("18.00", "18", True),
    ("18.0", "18", True),
    ("18.5", "18", False),
    ("3/4", "0.75", True),
    ("\\frac{3}{4}", "0.75", True),
    ("\\dfrac{3}{4}", "0.75", True),
    ("\\tfrac{1}{2}", "0.5", True),
    ("0.75", "0.75", True),
    (".75", "0.75", True),
    ("-5", "-5", True),
    ("\u22125", "-5", True),
    ("5", "-5", False),
    ("-5", "5", False),
    ("18 dollars", "18", True),
    ("\\text{18 dollars}", "18", True),
    ("18 \\text{ apples}", "18", True),
    ("\\textbf{42}", "42", True),
    ("\\mathrm{42}", "42", True),
    ("x = 7", "7", True),
    ("The answer is 7 cookies", "7", True),
    ("75\\%", "75", True),
    ("75%", "75", True),
    ("1{,}250", "1250", True),
    ("1\\,250", "1250", True),
    ("\\$1,250.00", "1250", True),
    ("17", "18", False),
    ("180", "18", False),
    ("1.8", "18", False),
    ("", "18", False),
    ("eighteen", "18", False),
    ("18 or 19", "18", False),
    ("5 apples and 3 pears", "5", False),
    ("2\\sqrt{4}", "4", True),
    ("2^3", "8", True),
    ("1/0", "0", False),
    ("10 - 2", "8", True),  # an unevaluated expression equal to the answer (math-verify)
    ("10 - 3", "8", False),
    ("0", "0", True),
    ("007", "7", True),
    ("1e3", "1000", False),
    ("{12}", "12", True),
]

# (boxed contents, gold, expected verdict, route): the gold number decorated by an
# operator, function, constant, variable or scaling word is wrong; an expression
# genuinely equal to it is right, and only plain numbers take the plain route.
DECORATED_TABLE: list[tuple[str, str, bool, str]] = [
    ("\\sqrt{18}", "18", False, "symbolic"),
    ("18\\pi", "18", False, "symbolic"),
    ("18!", "18", False, "symbolic"),
    ("18^2", "18", False, "symbolic"),
    ("2\\cdot 18", "18", False, "symbolic"),
    ("18 \\times 2", "18", False, "symbolic"),
    ("18 + 1", "18", False, "symbolic"),
    ("18 * 2", "18", False, "symbolic"),
    ("18 \\div 2", "18", False, "symbolic"),
    ("18^{-1}", "18", False, "symbolic"),
    ("10^{18}", "18", False, "symbolic"),
    ("e^{18}", "18", False, "symbolic"),
    ("\\sqrt[3]{18}", "18", False, "symbolic"),
    ("18\\sqrt{2}", "18", False, "symbolic"),
    ("\\log 18", "18", False, "rejected"),
    ("18 \\pm 1", "18", False, "symbolic"),
    ("\\pm 18", "18", False, "symbolic"),
    ("18x", "18", False, "symbolic"),
    ("18 x", "18", False, "symbolic"),
    ("18i", "18", False, "symbolic"),
    ("18e", "18", False, "symbolic"),
    ("- 18", "18", False, "symbolic"),
    ("-18", "18", False, "plain"),
    ("\\frac{1}{18}", "18", False, "plain"),
    ("18 thousand", "18", False, "rejected"),
    ("18 \\text{ thousand}", "18", False, "rejected"),
    ("\\$18 million", "18", False, "rejected"),
    ("18 hundred", "18", False, "rejected"),
    ("18 dozen", "18", False, "rejected"),
    ("\\text{half of } 36", "18", False, "rejected"),
    ("twice 9", "18", False, "rejected"),
    ("x \\approx 18", "18", False, "rejected"),
    ("17.6 \\approx 18", "18", False, "rejected"),
    ("18 \\text{ dollars and } 5 \\text{ cents}", "18", False, "rejected"),
    ("18 \\text{ then } \\sqrt{4}", "18", False, "rejected"),
    ("17 = 18", "18", False, "symbolic"),
    ("17 \\to 18", "18", False, "rejected"),
    ("17 \\lor 18", "18", False, "rejected"),
    ("17 \\\\ 18", "18", False, "rejected"),
    ("\\cancel{17} 18", "18", False, "rejected"),
    ("17$ or $18", "18", False, "rejected"),
    ("3 \\times 6 = 18", "18", True, "symbolic"),
    ("x = 3 \\times 6", "18", True, "symbolic"),
    ("3 \u00d7 6", "18", True, "symbolic"),
    ("3 \\times 6 \\text{ dollars}", "18", True, "symbolic"),
    ("\\sqrt{324}", "18", True, "symbolic"),
    ("3 \\times 6", "18", True, "symbolic"),
    ("2 \\cdot 9", "18", True, "symbolic"),
    ("6 * 3", "18", True, "symbolic"),
    ("9 + 9", "18", True, "symbolic"),
    ("20 - 2", "18", True, "symbolic"),
    ("36 \\div 2", "18", True, "symbolic"),
    ("2 \\times 3^2", "18", True, "symbolic"),
    ("1.8 \\times 10", "18", True, "symbolic"),
    ("(10 + 8)", "18", True, "symbolic"),
    ("\\sqrt{18^2}", "18", True, "symbolic"),
    ("3! \\cdot 3", "18", True, "symbolic"),
    ("36/2", "18", True, "plain"),
    ("\\frac{36}{2}", "18", True, "plain"),
    ("\\dfrac{72}{4}", "18", True, "plain"),
    ("\\frac{36}{2} \\text{ dollars}", "18", True, "plain"),
    # signs: a sign before \frac or \$ belongs to the number; \frac34 is 3/4
    ("-\\frac{3}{4}", "0.75", False, "plain"),
    ("-\\frac{3}{4}", "-0.75", True, "plain"),
    ("\u2212\\frac{3}{4}", "-0.75", True, "plain"),
    ("\\frac{-3}{4}", "-0.75", True, "plain"),
    ("-\\frac{-3}{4}", "0.75", True, "plain"),
    ("-\\dfrac{1}{2}", "0.5", False, "plain"),
    ("\\frac34", "0.75", True, "plain"),
    ("\\frac34", "34", False, "plain"),
    ("-\\$5", "5", False, "plain"),
    ("-\\$5", "-5", True, "plain"),
    ("\\$-5", "-5", True, "plain"),
    ("The change is -\\$5.", "-5", True, "plain"),
]


@pytest.fixture(scope="module", autouse=True)
def symbolic_workers_up() -> None:
    warm_up()


@pytest.mark.parametrize(("boxed", "gold", "expected"), EQUIVALENCE_TABLE)
def test_boxed_answer_form_is_judged_exactly(boxed: str, gold: str, expected: bool) -> None:
    result = check(f"Reasoning first. \\boxed{{{boxed}}}", gold, timeout_s=GENEROUS_S)
    assert (result.correct, result.timed_out) == (expected, False)


@pytest.mark.parametrize(("boxed", "gold", "expected", "route"), DECORATED_TABLE)
def test_decorated_gold_is_wrong_and_equal_expression_is_right(boxed: str, gold: str, expected: bool,
                                                               route: str) -> None:
    result = check(f"So \\boxed{{{boxed}}}", gold, timeout_s=GENEROUS_S)
    assert (result.correct, result.route) == (expected, route)


def test_the_tables_cover_enough_forms_in_both_directions() -> None:
    assert len(EQUIVALENCE_TABLE) >= 40
    assert len(DECORATED_TABLE) >= 30
    for table in (EQUIVALENCE_TABLE, DECORATED_TABLE):
        assert any(row[2] for row in table) and any(not row[2] for row in table)


def test_is_correct_agrees_with_check_on_plain_forms() -> None:
    for boxed, gold, expected in EQUIVALENCE_TABLE:
        if parse_number(boxed) is not None:
            assert is_correct(f"\\boxed{{{boxed}}}", gold) is expected


def test_gsm8k_answer_forms_take_the_plain_route() -> None:
    for boxed in ("1,000", "\\$1,250.00", "18 dollars", "x = 7", "75\\%", "1\\,250", "43\\,500", "{12}", "18."):
        assert check(f"\\boxed{{{boxed}}}", "1").route == "plain", boxed


def test_thousands_separators_must_group_threes() -> None:
    assert parse_number("43\\,500") == 43500
    assert parse_number("1,25") is None
    assert parse_number("1,0000") is None


def test_scaling_and_number_words_are_not_plain() -> None:
    for text in ("18 thousand", "18 Million", "half", "18 dozen", "18 and one", "twice 18"):
        assert parse_number(text) is None, text


def test_last_boxed_answer_wins() -> None:
    assert is_correct("First \\boxed{5}, then on reflection \\boxed{6}.", "6")
    assert not is_correct("First \\boxed{6}, then on reflection \\boxed{5}.", "6")


def test_nested_braces_are_matched_by_depth() -> None:
    assert extract_boxed("\\boxed{\\frac{3}{4}}") == "\\frac{3}{4}"


def test_unclosed_last_box_falls_back_to_the_previous_closed_one() -> None:
    assert extract_boxed("\\boxed{12} and then \\boxed{13") == "12"


def test_an_overlong_last_box_is_the_answer_and_it_is_wrong() -> None:
    hedged = "\\boxed{12} and then \\boxed{" + "1" * 300 + "}"
    assert extract_boxed(hedged) == "1" * 300
    assert not is_correct(hedged, "12")
    assert extract_boxed("\\boxed{" + "{" * 150 + "}" * 150 + "} then \\boxed{7") == "{" * 150 + "}" * 150


def test_response_without_boxed_answer_is_wrong_not_an_error() -> None:
    assert extract_boxed("The answer is 18.") is None
    assert is_correct("The answer is 18.", "18") is False
    assert check("The answer is 18.", "18").route == "unboxed"


def test_fbox_counts_as_a_box() -> None:
    assert is_correct("\\fbox{18}", "18")


def test_gold_solution_with_hash_marks_parses_to_its_final_number() -> None:
    assert parse_gold("She pays 2*9 = <<2*9=18>>18\n#### 18") == 18
    assert parse_gold("-0.75") == Fraction(-3, 4)


def test_non_numeric_gold_answer_raises_naming_the_value() -> None:
    with pytest.raises(ValueError, match="gold: must be one plain number, got 'many'"):
        parse_gold("many")
    with pytest.raises(ValueError, match="'18 thousand'"):
        parse_gold("18 thousand")


def test_overlong_boxed_text_is_not_parsed() -> None:
    assert parse_number("1" * 500) is None
    assert check("\\boxed{" + "1 " * 300 + "}", "1").correct is False


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_checker_never_raises_on_arbitrary_text(text: str) -> None:
    assert is_correct(text, "18") in (True, False)
    assert is_correct(f"\\boxed{{{text}}}", "18") in (True, False)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="{}\\boxed0123456789 ,./-$", max_size=400))
def test_checker_never_raises_on_unbalanced_braces(text: str) -> None:
    assert is_correct(text, "3") in (True, False)
    extract_boxed(text)


@settings(max_examples=300, deadline=None)
@given(st.fractions(max_denominator=1000), st.sampled_from(["{}", "\\${}", "{} dollars", "\\text{{{} apples}}"]))
def test_a_plain_number_equals_itself_and_nothing_else(value: Fraction, template: str) -> None:
    written = template.format(f"\\frac{{{value.numerator}}}{{{value.denominator}}}")
    assert parse_number(written) == value
    assert parse_number(template.format(value.numerator)) == value.numerator


@settings(max_examples=5, deadline=None)
@given(st.sampled_from(["\\boxed{", "{", "}", "\\boxed{1", "a"]), st.integers(0, 2))
def test_checker_handles_megabyte_strings(unit: str, tail: int) -> None:
    text = unit * (1_000_000 // len(unit)) + "\\boxed{18}" * tail
    assert is_correct(text, "18") is (tail > 0)
