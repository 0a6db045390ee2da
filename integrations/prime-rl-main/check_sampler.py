"""Drive ExitTaskSampler through prime-rl main's own Curriculum, without a model.

Run with the *patched* prime-rl main on the path (see README.md), after
``rl @ gsm8k-exit-sampler.toml --dry-run`` wrote its orchestrator config::

    python check_sampler.py outputs/self-improve/gsm8k-exit-sampler/configs/orchestrator.json

It rebuilds the train source's ``CurriculumConfig`` from that file, loads the
self-improve taskset as prime-rl's orchestrator does (``vf.load_taskset``),
builds ``prime_rl.orchestrator.curriculum.Curriculum`` (which imports
``exit_sampler.ExitTaskSampler`` through the patch), and plays groups: a
scripted policy answers correctly in 3 of 8 rollouts, the traces are built
like the env server's (one per episode, the dispatched task's data), and the
curriculum observes each group. Checks: the buffer fills, minted improve /
diverge tasks appear once it holds ``min_buffer_size`` instances, their data
validates as the taskset's ``TaskData`` (what the env server does with
``task_data``), and a checkpoint round trip restores the sampler.
Needs torch only because prime-rl's orchestrator package imports it.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections import Counter

import verifiers.v1 as vf
from prime_rl.configs.orchestrator import CurriculumConfig, CustomSamplerConfig
from prime_rl.orchestrator.curriculum import Curriculum

from self_improve.hosts.v1_taskset import SelfImproveData

G = 8


def episode(task: vf.Task, correct: bool, group_id: str) -> vf.Episode:
    answer = f"\\boxed{{{task.data.answer}}}" if correct else "\\boxed{-1}"
    text = f"Step {task.data.step} at depth {task.data.depth}. {answer}"  # new text per step: not deduplicated
    trace = vf.Trace(
        task=vf.TraceTask(type=type(task).__name__, data=task.data, key=task.key, hash=task.hash),
        agent=vf.AgentInfo(config=vf.AgentConfig()),
        nodes=[vf.MessageNode(message=vf.AssistantMessage(content=text), sampled=True)],
        rewards={"correct": vf.Reward(score=float(correct))},
        metrics={"solved": float(correct)},
        info={"exit_check": {"correct": correct, "timed_out": False}},
        ok=True,
    )
    return vf.Episode(env=vf.EnvInfo(id="self-improve", name="gsm8k-exit"), task=trace.task,
                      group=vf.GroupInfo(id=group_id), traces=[trace])


def main(path: str) -> None:
    orchestrator = json.loads(open(path).read())
    source = orchestrator["train"]["source"][0]
    config = CurriculumConfig.model_validate(source["curriculum"])
    assert isinstance(config.sampler, CustomSamplerConfig), config.sampler
    taskset_config = vf.resolve_env_config(source["env"]).taskset
    tasks = list(vf.load_taskset(taskset_config))
    min_buffer = config.sampler.kwargs["min_buffer_size"]
    curriculum = Curriculum(config, tasks)
    print(f"sampler {type(curriculum.sampler).__module__}.{type(curriculum.sampler).__name__} over {len(tasks)} tasks")

    kinds: Counter[str] = Counter()
    groups = min_buffer // 2 + 100  # two distinct responses per group: warm after min_buffer / 2 groups
    for _ in range(groups):
        task = next(curriculum.sampler)
        SelfImproveData.model_validate(task.data.model_dump(mode="json"))  # as the env server validates task_data
        kinds[task.data.step] += 1
        group_id = uuid.uuid4().hex
        curriculum.on_result([episode(task, index < 3, group_id) for index in range(G)])
    metrics = curriculum.metrics()
    print(f"{groups} groups: steps {dict(kinds)}; metrics {json.dumps(metrics, sort_keys=True)}")
    assert metrics["sampler/buffer_size"] >= min_buffer, metrics
    assert kinds["improve"] + kinds["diverge"] > 0, kinds
    assert metrics["sampler/buffer_depth_mean"] > 0, metrics  # self-iteration children were buffered

    state = curriculum.state_dict()
    restored = Curriculum(config, tasks)
    restored.load_state_dict(state)
    assert restored.state_dict() == state
    print(f"checkpoint round trip: cursor {state['sampler']['cursor']}, "
          f"{len(state['sampler']['buffer']['instances'])} buffered instances")
    print("OK")


if __name__ == "__main__":
    main(sys.argv[1])
