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
    """The messages for a step of the given kind (``previous_response`` unused for base)."""
    if kind == "base":
        return base_messages(question, system_prompt)
    if kind == "improve":
        return improve_messages(question, previous_response, system_prompt)
    if kind == "diverge":
        return diverge_messages(question, previous_response, system_prompt)
    raise ValueError(f"kind: must be 'base', 'improve' or 'diverge', got {kind!r}")
