"""One model request per group (``group_request``): the G rollouts of a group share one prompt,
so the classic host asks for G choices at once (OpenAI's ``n``) and gives each rollout one.

The server then evaluates the prompt once instead of G times (llama.cpp copies the prompt's
KV cache into the other slots; vLLM shares it too). The group's first rollout to ask sends the
request, with its own sampling arguments (its ``seed`` under ``request_seeds``) and
``n`` = G, and holds G of the ``request_slots`` while it runs; every rollout, in the order it
asked, takes the next choice. Each choice is checked and parsed by verifiers' own client as
a response of one choice, so a choice without content fails its rollout alone; a failed
request fails every rollout of the group with the same error, and a server that returns fewer
choices than asked fails the rollouts left without one, naming ``n``.

A choice's usage is the request's prompt tokens and the choice's own completion tokens,
counted from its log-probabilities (asked for when the sampling arguments do not set
``logprobs``): servers report one figure for the whole request (llama.cpp: the first choice's).
"""

from __future__ import annotations

import asyncio
from typing import Any

import verifiers as vf


class SharedGroupRequest:
    """The one request of a group of ``size`` rollouts, sent by the first to ask.

    Args:
        size: G, the rollouts (and choices) of the group, >= 1.
        slot: ``(count) -> context manager`` holding ``count`` request slots while the request runs.
    """

    def __init__(self, size: int, slot: Any) -> None:
        if size < 1:
            raise ValueError(f"rollouts_per_group: must be >= 1, got {size}")
        self.size = size
        self._slot = slot
        self._asked = 0
        self._reply: asyncio.Future[list[vf.Response | BaseException]] | None = None

    async def response(self, client: Any, prompt: vf.Messages, model: str, tools: list[vf.Tool] | None,
                       sampling_args: vf.SamplingArgs) -> vf.Response:
        """The next rollout's response: its choice of the group's one request."""
        index, self._asked = self._asked, self._asked + 1
        if index >= self.size:
            raise vf.InvalidModelResponseError(f"group_request: rollout {index + 1} of a group of {self.size} asked")
        if self._reply is None:
            self._reply = asyncio.ensure_future(self._send(client, prompt, model, tools, sampling_args))
        replies = await asyncio.shield(self._reply)
        reply = replies[index]
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def _send(self, client: Any, prompt: vf.Messages, model: str, tools: list[vf.Tool] | None,
                    sampling_args: vf.SamplingArgs) -> list[vf.Response | BaseException]:
        if not all(hasattr(client, name) for name in ("to_native_prompt", "get_native_response")):
            raise vf.ModelError(f"group_request: needs a verifiers Client (verifiers >= 0.3), got "
                                f"{type(client).__name__}")
        args: dict[str, Any] = {**sampling_args, "n": self.size}
        counted = args.setdefault("logprobs", True) is True
        async with self._slot(self.size):
            try:
                native_prompt, extra = await client.to_native_prompt(prompt)
                native = await client.get_native_response(native_prompt, model, args,
                                                          await client.to_native_tools(tools), **extra)
            except vf.Error:
                raise
            except Exception as error:  # as verifiers' Client.get_response wraps it
                raise vf.ModelError from error
        choices = list(getattr(native, "choices", None) or [])
        replies: list[vf.Response | BaseException] = []
        for index in range(self.size):
            if index >= len(choices):
                replies.append(vf.InvalidModelResponseError(
                    f"group_request: the server returned {len(choices)} choices for n={self.size} (it does "
                    "not support n); set group_request to false"))
                continue
            replies.append(await _one_choice(client, native, choices[index], counted))
        return replies


async def _one_choice(client: Any, native: Any, choice: Any, counted: bool) -> vf.Response | BaseException:
    """One choice as verifiers' client reads a response of one choice, or the error it raises."""
    usage = getattr(native, "usage", None)
    logprobs = getattr(getattr(choice, "logprobs", None), "content", None)
    if usage is not None:
        completion = len(logprobs) if counted and logprobs is not None else None
        usage = None if completion is None else usage.model_copy(update={
            "completion_tokens": completion, "total_tokens": usage.prompt_tokens + completion})
    one = native.model_copy(update={"choices": [choice], "usage": usage})
    try:
        await client.raise_from_native_response(one)
        return await client.from_native_response(one)
    except vf.Error as error:
        return error
    except Exception as error:
        return vf.ModelError(str(error))

