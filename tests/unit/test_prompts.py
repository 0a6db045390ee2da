"""Prompts: the paper's Appendix B templates, verbatim, and the message shapes."""

from __future__ import annotations

import pytest

from self_improve import prompts

# arXiv 2509.04575v1, Appendix B (p. 18), copied from the paper.
PAPER_SELF_IMPROVE = """Improve your current response to this request:

## Request:
{instruction}

## Current response:
{previous_response}"""

PAPER_SELF_DIVERGE = """Consider your current response to this request, and provide another response that takes
an approach that SIGNIFICANTLY DIFFERS from the approach of the current response.

## Request:
{instruction}

## Current response:
{previous_response}

## Your new response format:
- First, provide a brief summary of the approach in the current response above.
- Next, state a meaningfully different approach that can be taken instead.
- Finally, provide your new response using this different approach."""


def test_self_improve_template_is_the_papers_text() -> None:
    assert prompts.SELF_IMPROVE_TEMPLATE == PAPER_SELF_IMPROVE


def test_self_diverge_template_is_the_papers_text() -> None:
    assert prompts.SELF_DIVERGE_TEMPLATE == PAPER_SELF_DIVERGE


def test_improve_prompt_holds_only_the_question_and_the_previous_response() -> None:
    messages = prompts.improve_messages("How many eggs?", "Twelve. \\boxed{12}")
    assert messages[0] == {"role": "system", "content": prompts.SYSTEM_PROMPT}
    assert messages[1]["content"] == PAPER_SELF_IMPROVE.format(
        instruction="How many eggs?", previous_response="Twelve. \\boxed{12}")
    assert len(messages) == 2


def test_braces_in_question_or_response_are_kept_literally() -> None:
    content = prompts.diverge_messages("Is {x} 3?", "\\boxed{3}")[1]["content"]
    assert "Is {x} 3?" in content and "\\boxed{3}" in content


def test_base_prompt_is_system_then_question() -> None:
    assert prompts.base_messages("Q?") == [{"role": "system", "content": prompts.SYSTEM_PROMPT},
                                           {"role": "user", "content": "Q?"}]


def test_system_prompt_asks_for_a_boxed_answer() -> None:
    assert "\\boxed{}" in prompts.SYSTEM_PROMPT


@pytest.mark.parametrize("kind", ["base", "improve", "diverge"])
def test_step_messages_dispatches_on_kind(kind: str) -> None:
    builders = {"base": lambda q, r: prompts.base_messages(q), "improve": prompts.improve_messages,
                "diverge": prompts.diverge_messages}
    assert prompts.step_messages(kind, "Q?", "R") == builders[kind]("Q?", "R")


def test_unknown_step_kind_raises_naming_it() -> None:
    with pytest.raises(ValueError, match="'rewrite'"):
        prompts.step_messages("rewrite", "Q?", "R")  # type: ignore[arg-type]
