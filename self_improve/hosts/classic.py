"""The ExIt loop hosted by classic verifiers (0.1.14 - 0.3.x): a ``vf.SingleTurnEnv``
over GSM8K whose per-group hook is the body of Algorithm 1's loop.

``run_group`` calls ``_run_group_states`` once per GRPO group, so the hook
plans the whole group, lets verifiers generate and score the G rollouts of
that one prompt, and hands them to the loop. All per-group state lives in
local variables, so any number of groups can be in flight.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from typing import Any

import verifiers as vf

from self_improve import gsm8k_data
from self_improve.exit_config import ExitConfig, resolve_config, signature
from self_improve.exit_loop import ExitLoop, GroupPlan, GroupReport, Rollout, route_logs_to
from self_improve.grouping import Task
from self_improve.hosts.group_request import SharedGroupRequest
from self_improve.scoring.response import CHECK_KEY, cached_check
from self_improve.scoring.rewards import build_rubric, max_return, response_text

_GROUP_REQUEST: ContextVar[SharedGroupRequest | None] = ContextVar("self_improve_group_request", default=None)
"""The running group's one request (``group_request``), seen by its rollouts' tasks."""


class RolloutFailed(vf.Error):
    """A rollout kept out of the buffer that verifiers did not mark as failed: a timeout, or no answer text."""


def input_task(row: vf.RolloutInput) -> Task:
    """The GSM8K task a dataset row carries."""
    info = _info_dict(row.get("info"))
    return Task(task_id=str(info["task_id"]), question=str(info["question"]), answer=str(row["answer"]))


def rewrite_input(row: vf.RolloutInput, plan: GroupPlan) -> vf.RolloutInput:
    """A copy of one rollout input carrying the plan's prompt, answer and step info."""
    return rewrite_inputs([row], plan)[0]


def rewrite_inputs(rows: list[vf.RolloutInput], plan: GroupPlan) -> list[vf.RolloutInput]:
    """``rewrite_input`` for each row of a group, the plan's prompt and step info built once.

    The rows share the prompt's messages, which verifiers deep-copies into each rollout's state.
    The info goes as JSON text, shared by the rows that carry equal info (G copies of one row, as
    verifiers sends a group): every classic verifiers parses text info into each rollout's own
    dict (``init_state``), which costs less than deep-copying a dict key by key (the step's four
    keys on every rollout: docs/benchmarks.md)."""
    messages, step, first = plan.messages(), plan.info(), rows[0].get("info")
    shared = json.dumps({**_info_dict(first), **step})
    return [{**row, "prompt": messages, "answer": plan.task.answer,  # type: ignore[misc]
             "info": shared if row.get("info") == first else json.dumps({**_info_dict(row.get("info")), **step})}
            for row in rows]


def rollout_of(state: vf.State, parser: vf.Parser) -> Rollout:
    """What the loop needs of a scored rollout, and why it failed if it did.

    The error, timeout and reward keys are the state's own (verifiers' ``State`` forwards only its
    input fields, prompt, answer, info and example_id, to the rollout's input), so they are read as
    a plain dict's: ``State.get`` is a Python call that raises and catches ``KeyError`` when a key
    is missing (``timed_out`` mostly is).
    """
    own = dict.get
    check = cached_check(state)
    text = check.response if check is not None else None
    if text is None:  # not checked (a failed rollout), or checked by a host that kept no text
        text = response_text(parser, state.get("completion") or [])
    error, failure = own(state, "error"), None
    if error is not None:
        failure = f"error: {error!r:.200}"
    elif own(state, "timed_out") or own(state, "stop_condition") == "timeout_reached":
        failure = "timed out"
    return Rollout(response=text, reward=float(own(state, "reward")), correct=bool(check and check.correct),
                   failure=failure, check_timed_out=bool(check and check.timed_out))


def write_report(states: list[vf.State], report: GroupReport) -> None:
    """Metrics, shaped rewards or advantages, and failures back into the rollouts' states."""
    for state, metrics, reward, advantage, problem in zip(states, report.metrics, report.rewards,
                                                          report.advantages, report.failures, strict=True):
        state["metrics"].update(metrics)
        if report.bonus is not None:
            state["reward"], state["advantage"] = reward, advantage
            for step in state["trajectory"]:
                step["reward"], step["advantage"] = reward, advantage
        if problem is not None and state.get("error") is None:
            state["error"] = RolloutFailed(problem)
        state.pop(CHECK_KEY, None)  # read by now; kept out of what the env server sends back


class ExitEnv(vf.SingleTurnEnv):
    """GSM8K single-turn environment with the ExIt per-group hook."""

    def __init__(self, loop: ExitLoop, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loop = loop
        self.max_return = max_return(self.rubric)

    @property
    def requires_group_rollouts(self) -> bool:
        """Always: the hook plans and scores whole groups, so trainers must send them whole
        (verifiers otherwise infers this from a group-level rubric function)."""
        return True

    @property
    def config(self) -> ExitConfig:
        return self.loop.config

    @property
    def buffer(self) -> Any:
        return self.loop.store

    async def setup_state(self, state: vf.State) -> vf.State:
        """A fresh seed per request when ``request_seeds`` is on."""
        if self.config.request_seeds:
            state["sampling_args"] = {**(state.get("sampling_args") or {}), "seed": self.loop.request_seed()}
        return await super().setup_state(state)

    async def get_model_response(self, state: vf.State, prompt: vf.Messages, client: Any = None,
                                 model: str | None = None, tool_defs: list[vf.Tool] | None = None,
                                 sampling_args: vf.SamplingArgs | None = None) -> Any:
        """The model's reply, holding one of the ``request_slots`` while it is generated; with
        ``group_request``, this rollout's choice of the group's one request."""
        shared = _GROUP_REQUEST.get()
        if shared is None:
            if self.loop.slots is None:  # nothing to hold: verifiers' own call, with no wrapper around it
                return await super().get_model_response(state, prompt, client, model, tool_defs, sampling_args)
            async with self.loop.request_slot():
                return await super().get_model_response(state, prompt, client, model, tool_defs, sampling_args)
        self._get_usage_tracker(state, create_if_missing=True)
        response = await shared.response(client or state["client"], prompt, model or state["model"],
                                         tool_defs if tool_defs is not None else state.get("tool_defs") or None,
                                         sampling_args or state["sampling_args"] or {})
        self.increment_state_usage_from_response(state, response)
        return response

    async def _run_group_states(self, group_inputs: list[vf.RolloutInput], client: Any, model: str,
                                sampling_args: vf.SamplingArgs) -> list[vf.State]:
        size = len(group_inputs)
        shared = SharedGroupRequest(size, self.loop.request_slot) if self.config.group_request else None
        async with self.loop.admit(size, size if shared else 1):  # request_slots: planned when slots are free
            plan = await self.loop.aplan(input_task(group_inputs[0]))  # Algorithm 1, lines 3-7
            inputs = rewrite_inputs(group_inputs, plan)
            token = _GROUP_REQUEST.set(shared)
            try:
                states = await super()._run_group_states(inputs, client, model, sampling_args)  # line 8
            finally:
                _GROUP_REQUEST.reset(token)
        rollouts = [rollout_of(state, self.parser) for state in states]
        report = await self.loop.afinish(plan, rollouts, self.max_return)  # lines 9-13
        write_report(states, report)
        return states


def load_environment(**env_args: Any) -> ExitEnv:
    """The self-improve environment; every argument is a field of ``exit_config.ExitConfig``.

    Raises:
        ValueError: an unknown argument, a value out of range, a bad buffer
            file or an unreachable Redis, named in the message, before any data
            is loaded.
    """
    config = resolve_config(env_args)
    route_logs_to("verifiers")
    loop = ExitLoop.from_config(config)
    parser = vf.MaybeThinkParser() if config.use_think else vf.Parser()
    split_args = {"seed": config.seed, "dataset_name": config.dataset_name, "dataset_config": config.dataset_config}
    return ExitEnv(
        loop=loop,
        dataset=gsm8k_data.build_split("train", config.num_train_examples, **split_args),
        eval_dataset=gsm8k_data.build_split("test", config.num_eval_examples, **split_args),
        parser=parser,
        rubric=build_rubric(parser, config.iteration_reward, config.format_weight),
    )


load_environment.__signature__ = signature()  # type: ignore[attr-defined]



def _info_dict(info: Any) -> dict[str, Any]:
    if isinstance(info, str):
        return json.loads(info) if info else {}
    return dict(info or {})
