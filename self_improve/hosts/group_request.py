"""One model request per group (``group_request``): the G rollouts of a group share one prompt,
so the classic host asks for G choices at once (OpenAI's ``n``) and gives each rollout one.

The server then evaluates the prompt once instead of G times (llama.cpp copies the prompt's
KV cache into the other slots; vLLM shares it too). The group's first rollout to ask sends the
request, with its own sampling arguments (its ``seed`` under ``request_seeds``) and ``n`` = G,
**streamed**, and holds G of the ``request_slots``; each choice gives its slot back the moment
its ``finish_reason`` arrives, so the next group starts on the slots of a group's short answers
while its longest is still being written (a request that returned only at its end held all G
slots until then: docs/local-model.md measures both). Every rollout, in the order it asked,
takes the next choice. Each choice is checked and parsed by verifiers' own client as a response
of one choice, so a choice without content fails its rollout alone; a failed request fails
every rollout of the group whose choice had not ended with the same error, and a server that
streams fewer choices than asked fails the rollouts left without one, naming ``n``. Replies
are text: a rollout offered tools is refused by name.

A choice's usage is the request's prompt tokens and the choice's own completion tokens,
counted from its log-probabilities (asked for when the sampling arguments do not set
``logprobs``): servers report one figure per request or per choice without saying whose.
"""

from __future__ import annotations

import asyncio
from typing import Any

import verifiers as vf
from openai import AsyncStream
from openai.types.chat import ChatCompletion, ChatCompletionChunk


class _Choice:
    """One streamed choice, as its chunks arrive."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.logprobs: list[dict[str, Any]] = []
        self.finish_reason: str | None = None

    def add(self, delta_choice: Any) -> bool:
        """Take one chunk's part of this choice; True when that part ends it (its first ``finish_reason``)."""
        ended = self.finish_reason is not None
        delta = delta_choice.delta
        if delta is not None:
            self.text.append(delta.content or "")
            self.reasoning.append((delta.model_extra or {}).get("reasoning_content") or "")
        if delta_choice.logprobs is not None and delta_choice.logprobs.content:
            self.logprobs.extend(token.model_dump() for token in delta_choice.logprobs.content)
        self.finish_reason = delta_choice.finish_reason or self.finish_reason
        return not ended and self.finish_reason is not None

    def completion(self, head: ChatCompletionChunk, prompt_tokens: int | None, counted: bool) -> ChatCompletion:
        """This choice as a non-streamed response of one choice."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.text) or None}
        reasoning = "".join(self.reasoning)
        if reasoning:
            message["reasoning_content"] = reasoning
        usage = None if prompt_tokens is None or not counted else {
            "prompt_tokens": prompt_tokens, "completion_tokens": len(self.logprobs),
            "total_tokens": prompt_tokens + len(self.logprobs)}
        return ChatCompletion.model_validate({
            "id": head.id, "object": "chat.completion", "created": head.created, "model": head.model,
            "choices": [{"index": 0, "finish_reason": self.finish_reason, "message": message,
                         "logprobs": {"content": self.logprobs} if self.logprobs else None}],
            "usage": usage})


class SharedGroupRequest:
    """The one request of a group of ``size`` rollouts, sent by the first to ask.

    Args:
        size: G, the rollouts (and choices) of the group, >= 1.
        slot: ``(count) -> async context manager`` holding ``count`` request slots while the
            request runs, entered as a callable that gives one slot back (``RequestSlots.request``).
    """

    def __init__(self, size: int, slot: Any) -> None:
        if size < 1:
            raise ValueError(f"rollouts_per_group: must be >= 1, got {size}")
        self.size = size
        self._slot = slot
        self._asked = 0
        self._replies: list[asyncio.Future[vf.Response]] = []
        self._sender: asyncio.Future[None] | None = None
        self._choices: dict[int, _Choice] = {}
        self._head: ChatCompletionChunk | None = None
        """The stream's first chunk: the id, creation time and model of every choice."""
        self._prompt_tokens: int | None = None
        self._counted = True

    async def response(self, client: Any, prompt: vf.Messages, model: str, tools: list[vf.Tool] | None,
                       sampling_args: vf.SamplingArgs) -> vf.Response:
        """The next rollout's response: its choice of the group's one request."""
        index, self._asked = self._asked, self._asked + 1
        if index >= self.size:
            raise vf.InvalidModelResponseError(f"group_request: rollout {index + 1} of a group of {self.size} asked")
        if self._sender is None:
            loop = asyncio.get_running_loop()
            self._replies = [loop.create_future() for _ in range(self.size)]
            self._sender = asyncio.ensure_future(self._send(client, prompt, model, tools, sampling_args))
        return await asyncio.shield(self._replies[index])

    async def _send(self, client: Any, prompt: vf.Messages, model: str, tools: list[vf.Tool] | None,
                    sampling_args: vf.SamplingArgs) -> None:
        """Stream the request and settle every rollout's reply, whatever happens: a choice that
        ended is its rollout's response even when the stream fails later."""
        failure: BaseException | None = None
        try:
            await self._stream(client, prompt, model, tools, sampling_args)
        except vf.Error as error:
            failure = error
        except Exception as error:  # as verifiers' Client.get_response wraps it
            failure = vf.ModelError(str(error) or type(error).__name__)
            failure.__cause__ = error
        except BaseException:  # cancelled: no rollout waits forever
            for reply in self._replies:
                if not reply.done():
                    reply.set_exception(vf.ModelError("group_request: the group's request was cancelled"))
            raise
        if failure is None:
            ended = sum(choice.finish_reason is not None for choice in self._choices.values())
            failure = vf.InvalidModelResponseError(
                f"group_request: the server's stream ended with {ended} of n={self.size} choices (a "
                "server without n returns one: set group_request to false)")
        for index, reply in enumerate(self._replies):
            choice = self._choices.get(index)
            if choice is None or choice.finish_reason is None or self._head is None:
                reply.set_exception(failure)
            else:
                try:
                    one = choice.completion(self._head, self._prompt_tokens, self._counted)
                except ValueError as error:  # a choice OpenAI's types cannot hold (pydantic's ValidationError)
                    reply.set_exception(vf.InvalidModelResponseError(f"group_request: choice {index}: {error}"))
                    continue
                outcome = await _one_choice(client, one)
                (reply.set_exception if isinstance(outcome, BaseException) else reply.set_result)(outcome)

    async def _stream(self, client: Any, prompt: vf.Messages, model: str, tools: list[vf.Tool] | None,
                      sampling_args: vf.SamplingArgs) -> None:
        if not all(hasattr(client, name) for name in ("to_native_prompt", "from_native_response")) or \
                not hasattr(getattr(client, "client", None), "post"):
            raise vf.ModelError(f"group_request: needs verifiers' OpenAI chat client (verifiers >= 0.3), got "
                                f"{type(client).__name__}")
        if tools:
            raise vf.ModelError("group_request: replies are text; a rollout offered tools needs group_request false")
        args: dict[str, Any] = {key: value for key, value in sampling_args.items() if value is not None}
        extra_body = args.pop("extra_body", None) or {}
        if "max_tokens" in args:  # as verifiers' client sends it
            args["max_completion_tokens"] = args.pop("max_tokens")
        self._counted = args.setdefault("logprobs", True) is True
        native_prompt, extra = await client.to_native_prompt(prompt)
        body = {"model": model, "messages": native_prompt, **args, **extra_body, "n": self.size, "stream": True,
                "stream_options": {"include_usage": True}}
        async with self._slot(self.size) as choice_ended:
            stream = await client.client.post(
                "/chat/completions", body=body, cast_to=ChatCompletion, stream=True,
                stream_cls=AsyncStream[ChatCompletionChunk],
                options={"headers": extra["extra_headers"]} if extra.get("extra_headers") else {})
            async for chunk in stream:
                self._head = self._head or chunk
                if chunk.usage is not None:
                    self._prompt_tokens = chunk.usage.prompt_tokens
                for delta_choice in chunk.choices:
                    if not 0 <= delta_choice.index < self.size:
                        continue
                    if self._choices.setdefault(delta_choice.index, _Choice()).add(delta_choice):
                        choice_ended()  # its server slot is free now: the next group may start on it


async def _one_choice(client: Any, one: ChatCompletion) -> vf.Response | BaseException:
    """One choice as verifiers' client reads a response of one choice, or the error it raises."""
    try:
        await client.raise_from_native_response(one)
        return await client.from_native_response(one)
    except vf.Error as error:
        return error
    except Exception as error:
        return vf.ModelError(str(error))
