"""GSM8K for verifiers 0.4 (``verifiers.v1``): the taskset, its task and an in-process chat harness.

* :class:`SelfImproveTaskset` yields one :class:`SelfImproveTask` per GSM8K
  question of the bundled copy (``self_improve/data/``, through
  ``gsm8k_data.build_split``, so subsets and ``task_id`` match the classic
  environment), prompted with ``prompts.base_messages``.
* The task checks a trace's answer once, in process (``scoring.answer_check``):
  ``correct`` (weight 1) is the step return, ``format`` (weight 0 unless plugged
  with ``--env.taskset.task.rewards.format.weight``) the closed ``\\boxed{}``,
  and the ``solved`` metric plain correctness.
* :class:`ChatHarness` is the taskset's bundled harness: one tool-free chat
  completion through the rollout's interception endpoint, run in this
  process (no ``uv`` program, no index, no sandbox).

The same task type carries ExIt's self-improve and self-diverge steps:
``v1_env.ExitEnv`` mints them from a buffered instance (``step``, ``depth``,
``parent_id``, ``prev_correct`` and the ``instance`` itself ride on the data).
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
import verifiers.v1 as vf
from pydantic import ConfigDict, Field, model_validator
from verifiers.v1.dialects.chat import message_to_wire

from self_improve import gsm8k_data
from self_improve.exit_config import resolve_config
from self_improve.hosts.v1_config import config_model
from self_improve.scoring.response import CheckRecord, final_reply, improvement_reward, record_check

DATA_FIELDS: tuple[str, ...] = ("num_train_examples", "num_eval_examples", "dataset_name", "dataset_config", "seed")
"""The ``exit_config.ExitConfig`` arguments that belong to the v1 taskset (they choose the rows)."""
TASK_FIELDS: tuple[str, ...] = ("iteration_reward", "use_think")
"""The ``exit_config.ExitConfig`` arguments that belong to the v1 task (they score a trace)."""


class SelfImproveData(vf.TaskData):
    """One GSM8K request, and the ExIt step a minted task asks of it (defaults: a fresh question)."""

    task_id: str
    """Durable id: ``train-<row>`` / ``test-<row>`` in the full split (the task's ``key``)."""
    question: str
    """The original GSM8K question, whatever the prompt is."""
    answer: str
    """The gold number after ``####``."""
    step: Literal["base", "improve", "diverge"] = "base"
    """ExIt step kind of the prompt."""
    depth: int = 0
    """Depth of the responses this prompt produces (0 for a fresh question)."""
    parent_id: int | None = None
    """Buffer instance the prompt was built from (None for a fresh question)."""
    prev_correct: bool = False
    """Whether that instance's latest iterate was correct."""
    instance: dict[str, Any] | None = None
    """The buffer instance itself (``grouping.Instance`` as a dict): the lineage the group's children extend."""
    request_seed: int | None = None
    """``seed`` the harness sends with the request (``request_seeds``); None sends none."""


class _TaskFields(vf.TaskConfig):
    """``SelfImproveTaskConfig`` less its ``ExitConfig`` arguments (``TASK_FIELDS``)."""

    @model_validator(mode="after")
    def _check(self) -> _TaskFields:
        resolve_config({name: getattr(self, name) for name in TASK_FIELDS})  # ValueError naming a bad value
        return self


SelfImproveTaskConfig = config_model(
    "SelfImproveTaskConfig", _TaskFields, TASK_FIELDS, module=__name__,
    doc="How a self-improve trace is scored (`--env.taskset.task.*`).")


def reply_text(trace: vf.Trace, use_think: bool = False) -> str:
    """The response of a trace: its last reply, after ``</think>`` when ``use_think`` is on
    (``scoring.response.final_reply``)."""
    return final_reply(trace.last_reply, use_think)


class SelfImproveTask(vf.Task[SelfImproveData, vf.State, SelfImproveTaskConfig]):  # type: ignore[valid-type]
    """A GSM8K question (or an ExIt step on one), scored in process."""

    @property
    def key(self) -> str:
        """``task_id`` for a fresh question (stable across subsets and runs); a minted step's content hash."""
        return self.data.task_id if self.data.instance is None else self.hash

    def response(self, trace: vf.Trace) -> str:
        """The text that is scored (``reply_text``)."""
        return reply_text(trace, self.config.use_think)

    async def check(self, trace: vf.Trace) -> CheckRecord:
        """Check the response once per trace (kept in ``trace.info``: ``scoring.response.record_check``)."""
        return await record_check(trace.info, self.response(trace), self.data.answer)

    @vf.metric
    async def solved(self, trace: vf.Trace) -> float:
        """Plain correctness of the last ``\\boxed{}`` (what decides a child is solved)."""
        return float((await self.check(trace)).correct)

    @vf.reward(weight=1.0)
    async def correct(self, trace: vf.Trace) -> float:
        """The step return: correctness, or ``scoring.response.improvement_reward`` for a
        self-iteration step under ``iteration_reward="improvement"``."""
        solved = float((await self.check(trace)).correct)
        if self.config.iteration_reward == "improvement" and self.data.step != "base":
            return improvement_reward(solved, float(self.data.prev_correct))
        return solved

    @vf.reward(weight=0.0)
    async def format(self, trace: vf.Trace) -> float:
        """1 when the response closes a ``\\boxed{}`` answer (weight 0: logged, not trained on)."""
        return float((await self.check(trace)).boxed)


class _TasksetFields(vf.TasksetConfig):
    """``SelfImproveTasksetConfig`` less its ``ExitConfig`` arguments (``DATA_FIELDS``)."""

    model_config = ConfigDict(use_attribute_docstrings=True)  # the docs' table reads the descriptions

    task: SelfImproveTaskConfig = SelfImproveTaskConfig()  # type: ignore[valid-type]
    split: Literal["train", "test"] = "train"
    """GSM8K split: train (7,473 questions) for training, test (1,319) for evaluation."""

    @model_validator(mode="after")
    def _check(self) -> _TasksetFields:
        resolve_config({name: getattr(self, name) for name in DATA_FIELDS})  # ValueError naming a bad value
        return self

    @property
    def num_examples(self) -> int:
        """The subset size of the chosen split."""
        return self.num_train_examples if self.split == "train" else self.num_eval_examples


SelfImproveTasksetConfig = config_model(
    "SelfImproveTasksetConfig", _TasksetFields, DATA_FIELDS, module=__name__,
    doc="Which GSM8K rows load (`--env.taskset.*`).",
    notes={"num_train_examples": "Applies with split train.", "num_eval_examples": "Applies with split test.",
           "seed": "Here it seeds the subsets; under the ExIt env it is `--env.seed`'s value (set that one)."})


class SelfImproveTaskset(vf.Taskset[SelfImproveTask, SelfImproveTasksetConfig]):  # type: ignore[valid-type]
    """GSM8K questions with the package's boxed-answer prompt, from the bundled copy by default."""

    def load(self) -> list[SelfImproveTask]:
        config = self.config
        rows = gsm8k_data.build_split(config.split, config.num_examples, seed=config.seed,
                                      dataset_name=config.dataset_name, dataset_config=config.dataset_config)
        return [
            SelfImproveTask(SelfImproveData(id=row["info"]["task_id"], prompt=row["prompt"], answer=row["answer"],
                                            task_id=row["info"]["task_id"], question=row["info"]["question"]),
                            config.task)
            for row in rows
        ]


class ChatHarnessConfig(vf.HarnessConfig):
    """The in-process chat harness (``--env.agent.harness.*``)."""

    model_config = ConfigDict(use_attribute_docstrings=True)  # the docs' table reads the descriptions

    request_timeout: float = Field(600.0, gt=0)
    """Seconds one chat completion may take."""


class ChatHarness(vf.Harness[ChatHarnessConfig]):
    """One chat completion of the task's messages, sent from this process to the rollout's
    interception endpoint (which records it on the trace): no tools, no program, no uv.

    ``Harness.launch`` allows an in-process loop as long as every model call goes
    through ``endpoint`` + ``secret``; this one returns a synthetic exit status.
    """

    APPENDS_SYSTEM_PROMPT = True
    SUPPORTS_RESUME = True
    EXECUTES_CODE = False
    NEEDS_CONTAINER = False

    async def launch(self, ctx: vf.ModelContext, trace: vf.Trace, runtime: vf.Runtime, endpoint: str, secret: str,
                     mcp_urls: dict[str, str], data: vf.TaskData) -> vf.ProgramResult:
        system, prompt = self.resolve_prompt(data)
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else \
            [message_to_wire(message) for message in prompt or []]
        if system is not None:  # a taskset-level system prompt replaces the task's own
            messages = [{"role": "system", "content": system}] + [m for m in messages if m["role"] != "system"]
        body: dict[str, Any] = {"model": ctx.model, "messages": messages}
        seed = getattr(data, "request_seed", None)
        if seed is not None:
            body["seed"] = seed
        async with httpx.AsyncClient(timeout=httpx.Timeout(self.config.request_timeout, connect=10.0)) as client:
            try:
                reply = await client.post(f"{endpoint.rstrip('/')}/chat/completions", json=body,
                                          headers={"Authorization": f"Bearer {secret}"})
            except httpx.HTTPError as error:
                return vf.ProgramResult(exit_code=1, stdout="", stderr=f"chat request failed: {error!r}")
        if reply.status_code >= 400:
            return vf.ProgramResult(exit_code=1, stdout="",
                                    stderr=f"chat completion failed: HTTP {reply.status_code}: {reply.text[:500]}")
        return vf.ProgramResult(exit_code=0, stdout="", stderr="")
