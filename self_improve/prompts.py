"""Every prompt the package sends, in one place.

The self-improve and self-diverge templates are Appendix B of "Bootstrapping
Task Spaces for Self-Improvement" (arXiv 2509.04575v1, p. 18), verbatim,
including the line break the paper typesets after "takes". Request is the
original GSM8K question; Current response is the previous iterate y^k only,
never the whole chat, so every self-iteration step is a fresh single-turn task.

The paper's math runs used no system prompt; GSM8K scoring here reads the
last ``\\boxed{}``, so a short system prompt asks for one. It is part of every
message list, base and self-iteration alike, because a prompt rewritten at run
time must carry its own system message.

Usage::

    >>> messages = improve_messages("What is 2+3?", "It is 6.")
    >>> messages[1]["content"].splitlines()[0]
    'Improve your current response to this request:'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from self_improve.grouping import StepKind

SYSTEM_PROMPT: str = (
    "Solve the math problem step by step. "
    "Put your final answer, a single number, inside \\boxed{} at the end of your response."
)

SELF_IMPROVE_TEMPLATE: str = """Improve your current response to this request:

## Request:
{instruction}

## Current response:
{previous_response}"""

SELF_DIVERGE_TEMPLATE: str = """Consider your current response to this request, and provide another response that takes
an approach that SIGNIFICANTLY DIFFERS from the approach of the current response.

## Request:
{instruction}

## Current response:
{previous_response}

## Your new response format:
- First, provide a brief summary of the approach in the current response above.
- Next, state a meaningfully different approach that can be taken instead.
- Finally, provide your new response using this different approach."""

Messages = list[dict[str, str]]
Prompt = str | Messages
"""A task's own prompt: a string, or chat messages with an optional system message first."""


def _with_system(user: str, system_prompt: str) -> Messages:
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]


def base_messages(question: str, system_prompt: str = SYSTEM_PROMPT) -> Messages:
    """Turn 0: the GSM8K question as it stands."""
    return _with_system(question, system_prompt)


def improve_messages(question: str, previous_response: str, system_prompt: str = SYSTEM_PROMPT) -> Messages:
    """A self-improve step: improve y^k for the original request."""
    user = SELF_IMPROVE_TEMPLATE.format(instruction=question, previous_response=previous_response)
    return _with_system(user, system_prompt)


def diverge_messages(question: str, previous_response: str, system_prompt: str = SYSTEM_PROMPT) -> Messages:
    """A self-divergence step: answer again with a significantly different approach."""
    user = SELF_DIVERGE_TEMPLATE.format(instruction=question, previous_response=previous_response)
    return _with_system(user, system_prompt)


def step_messages(kind: StepKind, question: str, previous_response: str,
                  system_prompt: str = SYSTEM_PROMPT) -> Messages:
    """The messages for a GSM8K step of the given kind (``previous_response`` unused for base):
    ``wrap_step`` over ``base_messages(question)``."""
    return wrap_step(kind, base_messages(question, system_prompt), previous_response)  # type: ignore[return-value]


def _text_of(content: Any, where: str) -> str:
    """The text of a message's content: a string, or text parts (``{"type": "text", "text": ...}``)."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    texts = []
    for part in content:
        part_type = _field(part, "type")
        if part_type != "text":
            raise ValueError(f"{where}: must hold text only to be quoted in a self-iteration prompt, "
                             f"got a {part_type!r} part")
        texts.append(str(_field(part, "text") or ""))
    return "\n\n".join(text for text in texts if text)


def _field(item: Any, name: str) -> Any:
    """``item[name]`` of a mapping, else ``item.name`` (a pydantic message)."""
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


def request_text(prompt: Prompt | Sequence[Any]) -> str:
    """The request a task's prompt makes: the string itself, or the text of its non-system
    messages joined by a blank line (what Appendix B quotes as "## Request")."""
    if isinstance(prompt, str):
        return prompt
    parts = [_text_of(_field(m, "content"), f"prompt[{i}].content")
             for i, m in enumerate(prompt) if _field(m, "role") != "system"]
    return "\n\n".join(part for part in parts if part)


def wrap_step(kind: StepKind, prompt: Prompt | Sequence[Any], previous_response: str) -> Prompt:
    """The prompt of an ExIt step over ANY task's own ``prompt``, in the prompt's own shape.

    * ``base``: the prompt as it stands (messages copied as plain dicts).
    * ``improve`` / ``diverge``: the Appendix B template whose Request is ``request_text(prompt)``
      and whose Current response is ``previous_response``. A string prompt gives a string;
      a message list gives its system messages (kept, in order, first) and one user message.

    Messages may be dicts or objects with ``role`` / ``content`` (verifiers' message models);
    non-text content parts are refused with a ``ValueError`` naming the message. No verifiers import.

    >>> wrap_step("improve", "Spell cat.", "tac").splitlines()[0]
    'Improve your current response to this request:'
    >>> [m["role"] for m in wrap_step("diverge", [{"role": "system", "content": "S"},
    ...                                             {"role": "user", "content": "Q"}], "R")]
    ['system', 'user']
    """
    if kind not in ("base", "improve", "diverge"):
        raise ValueError(f"kind: must be 'base', 'improve' or 'diverge', got {kind!r}")
    if not isinstance(prompt, str) and not isinstance(prompt, Sequence):
        raise ValueError(f"prompt: must be a string or a list of chat messages, got {type(prompt).__name__}")
    if kind == "base":
        if isinstance(prompt, str):
            return prompt
        return [{"role": str(_field(m, "role")), "content": _text_of(_field(m, "content"), f"prompt[{i}].content")}
                for i, m in enumerate(prompt)]
    template = SELF_IMPROVE_TEMPLATE if kind == "improve" else SELF_DIVERGE_TEMPLATE
    user = template.format(instruction=request_text(prompt), previous_response=previous_response)
    if isinstance(prompt, str):
        return user
    systems = [{"role": "system", "content": _text_of(_field(m, "content"), f"prompt[{i}].content")}
               for i, m in enumerate(prompt) if _field(m, "role") == "system"]
    return [*systems, {"role": "user", "content": user}]
