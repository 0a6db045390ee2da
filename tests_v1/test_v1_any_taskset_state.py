"""ExIt over a foreign taskset (``exit-letters``) keeps its state like GSM8K does, and refuses early.

* A second real ``vf-eval exit-letters --env.id self-improve`` run, sharing the first run's Redis
  store (``--env.buffer-url``) or resuming its checkpoint (``--env.buffer-path``), draws instances
  of the first run's tasks and re-mints them against their own task: the wrapped prompt quotes that
  task's request and the buffered reply, and the reward is that task's own, recomputed here.
* ``self-improve-buffer`` shows such a buffer's task prompt where it shows a GSM8K question, and
  reads such a run's ``traces.jsonl`` one group per episode.
* A taskset without rewards or with stop conditions is refused before any model request; a return
  outside [0, r_max] fails its episode at run time, recorded as failed, and the buffer is untouched.
"""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from pathlib import Path

import pytest
import verifiers.v1 as vf
from exit_letters import LettersData, final_answer
from scripted import foreign_server

from conftest import VfEvalFailed, run_vf_eval
from redis_fixture import RedisServer
from self_improve import prompts
from self_improve.viewer import cli, snapshot

GROUP = ("--env.rollouts-per-group", "4", "--env.min-buffer-size", "4", "--env.select-prob", "1.0", "-c", "1")


def letters_run(server_url: str, folder: Path, count: int, *state: str) -> list[vf.WireEpisode]:
    """One real ``vf-eval exit-letters --env.id self-improve`` run of ``count`` episodes in ``folder``."""
    folder.mkdir()
    rows = run_vf_eval(server_url, folder, "--env.id", "self-improve", "-n", str(count), *GROUP, *state,
                       taskset="exit-letters")
    return [vf.WireEpisode.model_validate(row) for row in rows]


def check_redrawn(episodes: list[vf.WireEpisode], first: snapshot.BufferSnapshot) -> None:
    """The second run's first episode iterates an instance of the first run, minted against its own task."""
    step = episodes[0].traces[0].task.data.model_extra["exit_step"]
    assert step["kind"] in ("improve", "diverge") and step["instance"] is not None
    drawn = first.get(step["instance"]["instance_id"])
    assert drawn is not None, "the instance comes from the first run's buffer"
    own = LettersData.model_validate_json(drawn.task.data)  # the task the buffer kept, as JSON
    for trace in episodes[0].traces:
        data = trace.task.data
        assert data.model_extra["exit_step"]["task"]["task_id"] == drawn.task.task_id
        assert data.answer == own.answer  # minted with its own task's data
        assert f"## Request:\n{prompts.request_text(own.prompt)}\n" in data.prompt
        assert drawn.iterates[-1] in data.prompt  # quotes the buffered reply
        assert trace.reward == float(final_answer(trace.last_reply) == own.answer)


def test_a_second_run_shares_the_redis_store_of_a_foreign_taskset(tmp_path: Path) -> None:
    server, redis = foreign_server().start(), RedisServer(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    redis.start()
    prefix = f"test-{uuid.uuid4().hex}"
    shared = ("--env.buffer-url", redis.url, "--env.buffer-prefix", prefix)
    try:
        letters_run(server.url, tmp_path / "one", 2, *shared)
        first = snapshot.read_redis(redis.url, prefix, None)
        assert len(first.instances) >= 4 and all(i.task.data for i in first.instances)
        second = letters_run(server.url, tmp_path / "two", 2, *shared)
        assert snapshot.read_redis(redis.url, prefix, None).step == 4, "both runs' groups reached one store"
    finally:
        server.stop()
        redis.stop()
    check_redrawn(second, first)


def test_a_second_run_resumes_the_checkpoint_of_a_foreign_taskset_and_the_viewer_shows_its_prompts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "buffer.json")
    server = foreign_server().start()
    try:
        letters_run(server.url, tmp_path / "one", 2, "--env.buffer-path", path)
        first = snapshot.read_file(path)
        assert len(first.instances) >= 4 and first.step == 2
        second = letters_run(server.url, tmp_path / "two", 2, "--env.buffer-path", path)
    finally:
        server.stop()
    check_redrawn(second, first)
    assert snapshot.read_file(path).step == 4
    instance = first.instances[0]
    own = LettersData.model_validate_json(instance.task.data)
    assert cli.main([path, "show", str(instance.instance_id), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["question"], shown["answer"]) == (own.prompt, own.answer)
    assert shown["task_id"] == instance.task.task_id
    assert cli.main([path, "show", str(instance.instance_id), "--width", "1000"]) == 0
    assert f"question: {own.prompt}" in capsys.readouterr().out
    # The run log of the second run: one group per episode, its task and step from the plan it carries.
    assert cli.main([str(tmp_path / "two" / "run" / "traces.jsonl"), "--json"]) == 0
    groups = json.loads(capsys.readouterr().out)["groups"]
    plans = [episode.traces[0].task.data.model_extra["exit_step"] for episode in second]
    assert [(g["task_id"], g["step"], g["depth"]) for g in groups] == \
        [(p["task"]["task_id"], p["kind"], p["depth"]) for p in plans]


TASK_HEAD = "import verifiers.v1 as vf\n"
TASKSET_TAIL = '''
class S(vf.Taskset[T, vf.TasksetConfig]):
    def load(self):
        return [T(vf.TaskData(id="only", prompt="Say hi."), self.config.task)]
__all__ = ["S"]
'''
REFUSED = {
    "exit_no_rewards": ("it has no rewards", '''
        class T(vf.Task[vf.TaskData, vf.State, vf.TaskConfig]):
            @vf.metric
            async def length(self, trace: vf.Trace) -> float:
                return float(len(trace.last_reply or ""))'''),
    "exit_multi_turn": ("stop conditions (@vf.stop", '''
        class T(vf.Task[vf.TaskData, vf.State, vf.TaskConfig]):
            @vf.stop
            async def said_bye(self, trace: vf.Trace) -> bool:
                return "bye" in (trace.last_reply or "")
            @vf.reward
            async def polite(self, trace: vf.Trace) -> float:
                return 1.0'''),
}


def write_taskset(folder: Path, module: str, task_source: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An installable one-task taskset ``module`` in ``folder`` (put on the vf-eval's path); its id."""
    (folder / f"{module}.py").write_text(TASK_HEAD + textwrap.dedent(task_source) + TASKSET_TAIL)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
    return module.replace("_", "-")


@pytest.mark.parametrize("module", sorted(REFUSED))
def test_exit_refuses_a_taskset_it_cannot_iterate_before_any_request(module: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    reason, source = REFUSED[module]
    taskset_id = write_taskset(tmp_path, module, source, monkeypatch)
    server = foreign_server().start()
    try:
        with pytest.raises(VfEvalFailed) as failure:
            run_vf_eval(server.url, tmp_path, "--env.id", "self-improve", "-n", "1", taskset=taskset_id)
        assert not server.requests
    finally:
        server.stop()
    output = failure.value.output
    assert f"taskset: {taskset_id!r} cannot be iterated one reply at a time" in output and reason in output


def test_a_return_above_r_max_fails_the_episode_and_leaves_the_buffer(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    taskset_id = write_taskset(tmp_path, "exit_overflow", '''
        class T(vf.Task[vf.TaskData, vf.State, vf.TaskConfig]):
            @vf.reward(weight=1.0)
            async def doubled(self, trace: vf.Trace) -> float:
                return 2.0''', monkeypatch)
    path = tmp_path / "buffer.json"
    server = foreign_server().start()
    try:
        rows = run_vf_eval(server.url, tmp_path, "--env.id", "self-improve", "-n", "1", "--env.rollouts-per-group",
                           "2", "--env.buffer-path", str(path), taskset=taskset_id)
        assert len(server.requests) == 2  # a runtime failure: the rollouts ran
    finally:
        server.stop()
    (episode,) = [vf.WireEpisode.model_validate(row) for row in rows]
    assert not episode.ok
    errors = " ".join(f"{error.type}: {error.message}" for error in episode.errors)
    assert "a return of 2.0 lies outside [0, r_max=1.0]" in errors
    assert not path.exists() or snapshot.read_file(str(path)).step == 0
