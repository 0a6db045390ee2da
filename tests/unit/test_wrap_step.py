"""``prompts.wrap_step``: the Appendix B steps over any task's own prompt, in the prompt's shape."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from self_improve import prompts


def test_a_string_prompt_stays_a_string() -> None:
    assert prompts.wrap_step("base", "Spell cat.", "tac") == "Spell cat."
    assert prompts.wrap_step("improve", "Spell cat.", "tac") == prompts.SELF_IMPROVE_TEMPLATE.format(
        instruction="Spell cat.", previous_response="tac")
    assert prompts.wrap_step("diverge", "Spell cat.", "tac") == prompts.SELF_DIVERGE_TEMPLATE.format(
        instruction="Spell cat.", previous_response="tac")


def test_messages_keep_the_tasks_own_system_message() -> None:
    prompt = [{"role": "system", "content": "Answer on an ANSWER line."}, {"role": "user", "content": "Q?"}]
    wrapped = prompts.wrap_step("improve", prompt, "ANSWER: x")
    assert wrapped == [{"role": "system", "content": "Answer on an ANSWER line."},
                       {"role": "user", "content": prompts.SELF_IMPROVE_TEMPLATE.format(
                           instruction="Q?", previous_response="ANSWER: x")}]
    assert prompts.wrap_step("base", prompt, "") == prompt
    assert prompts.wrap_step("diverge", [{"role": "user", "content": "Q?"}], "R")[0]["role"] == "user"


def test_message_objects_and_text_parts_are_read() -> None:
    prompt = [SimpleNamespace(role="user", content=[{"type": "text", "text": "Part one."},
                                                   {"type": "text", "text": "Part two."}])]
    assert prompts.request_text(prompt) == "Part one.\n\nPart two."
    assert prompts.wrap_step("improve", prompt, "R")[0]["content"].count("Part one.\n\nPart two.") == 1


def test_gsm8k_steps_are_wrap_step_over_the_base_messages() -> None:
    base = prompts.base_messages("How many eggs?")
    for kind in ("base", "improve", "diverge"):
        assert prompts.step_messages(kind, "How many eggs?", "12") == prompts.wrap_step(kind, base, "12")
    assert prompts.step_messages("improve", "How many eggs?", "12") == prompts.improve_messages("How many eggs?", "12")


@pytest.mark.parametrize(("kind", "prompt", "message"), [
    ("rewrite", "Q", "kind: must be 'base', 'improve' or 'diverge', got 'rewrite'"),
    ("improve", 3, "prompt: must be a string or a list of chat messages, got int"),
    ("improve", [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
     "prompt[0].content: must hold text only"),
])
def test_bad_input_is_named(kind: str, prompt: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        prompts.wrap_step(kind, prompt, "R")  # type: ignore[arg-type]
