"""Section 2 of ``scripts/bench_overhead.py``: whole groups in one process, and where the difference goes.

``env.run_group`` for the plain GSM8K environment (a) and self-improve with ExIt on (b), through an
in-process instant OpenAI transport (the scripted server's answers, no socket, no worker process),
in interleaved blocks of groups, the order swapped each pair (a b, b a, ...). Each block starts
with an empty young generation (``gc.collect()`` before it, untimed) and runs with the collector
set as vf-eval's env worker sets it, so a collection lands in a block only when the block itself
allocates enough to trigger one, and is then counted in the table's GC row.

The breakdown is measured, part by part, during the same timed blocks: every call the ExIt hook
makes (``input_task``, ``loop.plan``, ``rewrite_input``, ``rollout_of``, ``loop.finish``,
``write_report``) and verifiers' per-row ``state_to_output`` (in worker threads) is timed in the
CPU time of the thread that runs it (``time.thread_time``: a call that waits for the GIL while
another thread runs is not charged for that thread's work); the scripted model's own work (it
answers self-iteration prompts, which are longer) likewise; garbage collection by a
``gc.callbacks`` timer; the rubric on one scored group, outside the run. What no part explains is
the "rest", shown next to the spread of the pairs, which is the noise of the figure.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

G: int = 8
"""Rollouts per group (the paper's group size)."""

WARM_UP_GROUPS: int = 50
"""Untimed groups of each environment before the pairs (imports, caches, the first buffer draws)."""

HOOK_CALLS: tuple[str, ...] = ("input_task", "rewrite_inputs", "rollout_of", "write_report")
"""Module functions of ``hosts.classic`` that the hook calls once per group or per row."""


class CallClock:
    """Thread CPU seconds of instrumented calls, per (environment, part); ``env`` names the
    environment whose block is running."""

    def __init__(self) -> None:
        self.env = "a"
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.calls: dict[tuple[str, str], int] = defaultdict(int)

    def wrap(self, part: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function``, charging the CPU time of each call (in the calling thread) to ``part``."""

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                key = (self.env, part)
                self.seconds[key] += time.thread_time() - started
                self.calls[key] += 1

        return wrapper

    def gc_callback(self, phase: str, info: dict[str, Any]) -> None:
        """A ``gc.callbacks`` entry: the wall time of every collection, charged to ``"gc"``."""
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.seconds[(self.env, "gc")] += time.perf_counter() - self._gc_started
            self.calls[(self.env, "gc")] += 1

    def us_per_group(self, env: str, part: str, groups: int) -> float:
        return self.seconds.get((env, part), 0.0) / groups * 1e6


@contextmanager
def patched(target: Any, name: str, replacement: Any) -> Iterator[None]:
    """``target.name`` replaced for the duration (a module function or an instance's method)."""
    original = getattr(target, name)
    setattr(target, name, replacement)
    try:
        yield
    finally:
        if isinstance(target, type) or not hasattr(type(target), name):
            setattr(target, name, original)
        else:
            delattr(target, name)  # an instance attribute shadowing the class's method


@contextmanager
def instrumented(clock: CallClock, exit_env: Any, handler_box: dict[str, Any]) -> Iterator[None]:
    """Every part of the table timed by ``clock`` while the benchmark runs."""
    import verifiers.envs.environment as environment

    from self_improve.hosts import classic

    loop, buffer = exit_env.loop, exit_env.buffer
    with ExitStack() as stack:
        for name in HOOK_CALLS:
            stack.enter_context(patched(classic, name, clock.wrap(name, getattr(classic, name))))
        for name in ("plan", "finish"):
            stack.enter_context(patched(loop, name, clock.wrap(f"loop.{name}", getattr(loop, name))))
        for name in ("sample", "observe", "metrics"):
            stack.enter_context(patched(buffer, name, clock.wrap(f"buffer.{name}", getattr(buffer, name))))
        stack.enter_context(patched(environment, "state_to_output",
                                    clock.wrap("state_to_output", environment.state_to_output)))
        handler_box["wrap"] = clock.wrap
        gc.callbacks.append(clock.gc_callback)
        try:
            yield
        finally:
            gc.callbacks.remove(clock.gc_callback)
            handler_box.pop("wrap", None)


def instant_client(handler_box: dict[str, Any] | None = None) -> Any:
    """A verifiers client whose OpenAI transport answers in process from the scripted server's logic;
    while ``handler_box["wrap"]`` is set, the scripted answer is timed as the part ``"model"``."""
    import httpx
    from openai import AsyncOpenAI
    from verifiers.clients.openai_chat_completions_client import OpenAIChatCompletionsClient

    from scripted_server import ScriptedServer

    scripted = ScriptedServer()
    box = handler_box if handler_box is not None else {}

    def answer(request: httpx.Request) -> httpx.Response:
        status, payload = scripted.answer(json.loads(request.content))
        return httpx.Response(status, json=payload)

    def handle(request: httpx.Request) -> httpx.Response:
        wrap = box.get("wrap")
        return wrap("model", answer)(request) if wrap else answer(request)

    transport = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    return OpenAIChatCompletionsClient(AsyncOpenAI(base_url="http://instant/v1", api_key="x", http_client=transport))


async def run_groups(env: Any, client: Any, rows: list[dict[str, Any]], concurrency: int) -> None:
    """``env.run_group`` on each row's question (G rollouts), ``concurrency`` groups in flight
    (as vf-eval's -c / -r)."""
    limit = asyncio.Semaphore(concurrency)

    async def one(row: dict[str, Any]) -> None:
        async with limit:
            await env.run_group([dict(row) for _ in range(G)], client, "scripted", {"max_tokens": 64})

    await asyncio.gather(*(one(row) for row in rows))


def per_op_us(operation: Callable[[], object], min_ops: int = 20, budget_s: float = 1.0) -> float:
    """Median microseconds of ``operation`` over at least ``min_ops`` calls or ``budget_s`` seconds."""
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < min_ops or time.perf_counter() < deadline:
        started = time.perf_counter()
        operation()
        samples.append(time.perf_counter() - started)
        if len(samples) >= 100_000:
            break
    return statistics.median(samples) * 1e6


@contextmanager
def worker_gc() -> Iterator[None]:
    """The garbage collector as vf-eval's env worker sets it (verifiers ``serve/server/env_worker.py``:
    ``gc.collect(); gc.freeze(); gc.set_threshold(150_000, 10, 10)``), restored afterwards.

    With the default thresholds a full collection of this process's heap (both environments' datasets,
    verifiers, the scripted server's log) takes about 250 ms and comes every 100-200 groups: it lands in
    one environment's timing or the other's, which made this section bimodal."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(150_000, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def rubric_score_group_us(env: Any, client: Any) -> float:
    """Median us of scoring one finished group with the environment's rubric, the
    per-rollout reward and metric functions included (the hook is bypassed to get the states)."""
    import verifiers as vf

    from self_improve.exit_loop import GroupPlan
    from self_improve.hosts.classic import input_task, rewrite_input
    from self_improve.scoring.response import CHECK_KEY

    row = dict(env.eval_dataset[0])
    plan = GroupPlan("base", input_task(row))
    inputs = [rewrite_input(row, plan) if hasattr(env, "loop") else dict(row) for _ in range(G)]
    states = asyncio.run(vf.SingleTurnEnv._run_group_states(env, inputs, client, "scripted", {"max_tokens": 64}))
    loop = asyncio.new_event_loop()

    def score() -> None:
        for state in states:  # each time a fresh check, as in the run (self-improve caches it in the state)
            state.pop(CHECK_KEY, None)
        loop.run_until_complete(env.rubric.score_group(states))

    try:
        return per_op_us(score, min_ops=200)
    finally:
        loop.close()


def timer_us() -> float:
    """What ``CallClock.wrap`` adds to one call: a timed no-op minus a bare one, median us."""
    clock = CallClock()
    timed, bare = clock.wrap("no-op", lambda: None), (lambda: None)
    return max(0.0, per_op_us(timed, min_ops=10_000, budget_s=0.2) - per_op_us(bare, min_ops=10_000, budget_s=0.2))


def timer_overhead_us(clock: CallClock, env: str, groups: int) -> float:
    """The timers' own cost per group in ``env``'s blocks (GC is timed by a callback, not counted)."""
    timed_calls = sum(count for (name, part), count in clock.calls.items() if name == env and part != "gc")
    return timed_calls * timer_us() / groups


def rubric_functions(env: Any) -> int:
    """Reward and metric functions the environment's rubric calls, the library's own included."""
    return sum(len(rubric.funcs) for rubric in getattr(env.rubric, "rubrics", [env.rubric]))


class Pairs:
    """Per-block wall and whole-process CPU seconds per group, for (a) and (b)."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {"a": [], "b": []}
        self.cpu: dict[str, list[float]] = {"a": [], "b": []}

    def diffs_us(self, kind: str) -> list[float]:
        times = self.wall if kind == "wall" else self.cpu
        return [(b - a) * 1e6 for a, b in zip(times["a"], times["b"], strict=True)]

    def ratio(self, kind: str) -> float:
        times = self.wall if kind == "wall" else self.cpu
        return statistics.median(b / a for a, b in zip(times["a"], times["b"], strict=True))

    def median_us(self, kind: str, env: str) -> float:
        return statistics.median(self.wall[env] if kind == "wall" else self.cpu[env]) * 1e6


def noise(diffs: list[float]) -> tuple[float, float]:
    """The interquartile range of the pairs' differences, and the standard error of their median
    (1.2533 sd / sqrt(n), the normal approximation)."""
    quartiles = statistics.quantiles(diffs, n=4) if len(diffs) > 1 else [diffs[0]] * 3
    spread = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    return quartiles[2] - quartiles[0], 1.2533 * spread / len(diffs) ** 0.5


async def timed_pairs(envs: dict[str, Any], client: Any, clock: CallClock, pairs: int, per_block: int,
                      concurrency: int) -> Pairs:
    """The interleaved blocks, the order swapped each pair; ``clock`` charges each block's parts
    to its environment."""
    result = Pairs()
    for name, env in envs.items():  # warm-up, untimed and uncharged
        clock.env = f"warm-up {name}"
        await run_groups(env, client, block_rows(env, 0, WARM_UP_GROUPS), concurrency)
    for pair in range(pairs):
        for name in ("a", "b") if pair % 2 == 0 else ("b", "a"):
            rows = block_rows(envs[name], WARM_UP_GROUPS + pair * per_block, per_block)
            gc.collect()  # each block starts with an empty young generation
            clock.env = name
            wall_started, cpu_started = time.perf_counter(), time.process_time()
            await run_groups(envs[name], client, rows, concurrency)
            result.wall[name].append((time.perf_counter() - wall_started) / per_block)
            result.cpu[name].append((time.process_time() - cpu_started) / per_block)
        print(f"  pair {pair + 1}: b - a {(result.wall['b'][-1] - result.wall['a'][-1]) * 1e6:,.0f} us wall, "
              f"{(result.cpu['b'][-1] - result.cpu['a'][-1]) * 1e6:,.0f} us CPU per group", file=sys.stderr)
    return result


def block_rows(env: Any, start: int, count: int) -> list[dict[str, Any]]:
    """``count`` test rows from ``start`` on (wrapping round the test split)."""
    size = len(env.eval_dataset)
    return [dict(env.eval_dataset[(start + i) % size]) for i in range(count)]


def bench_in_process(groups: int, pairs: int, max_concurrent: int, rollouts_per_example: int) -> list[str]:
    """Section 2's Markdown: whole groups in process, and where the difference goes."""
    import plain_gsm8k

    from self_improve.buffer.checkpoint import write_state
    from self_improve.hosts.classic import load_environment

    plain, exit_env = plain_gsm8k.load_environment(), load_environment(strategy="diverge")
    envs = {"a": plain, "b": exit_env}
    concurrency = max(1, max_concurrent // rollouts_per_example)
    per_block = max(1, groups // pairs)
    clock, handler_box = CallClock(), {}
    client = instant_client(handler_box)
    with worker_gc(), instrumented(clock, exit_env, handler_box):
        result = asyncio.run(timed_pairs(envs, client, clock, pairs, per_block, concurrency))
    rubric_us = {name: rubric_score_group_us(env, client) for name, env in envs.items()}
    with tempfile.TemporaryDirectory() as folder:
        persist_ms = per_op_us(lambda: write_state(exit_env.buffer.state_dict(), Path(folder) / "buffer.json"),
                               min_ops=5) / 1e3
    timed_groups = pairs * per_block
    header = (f"In process: `env.run_group` on {per_block} test questions x {pairs} interleaved pairs of blocks "
              f"(order swapped each pair, {WARM_UP_GROUPS} untimed warm-up groups each first), G={G}, "
              f"{concurrency} groups in flight, the scripted server's answers through an in-process transport, "
              "the garbage collector set as vf-eval's env worker sets it (`gc.freeze()`, threshold 150,000) and "
              "emptied before each block. CPU time is the whole process's (verifiers runs `state_to_output` "
              "in worker threads):")
    return [header, "", *summary_table(result), "", *breakdown_table(result, clock, rubric_us, exit_env, plain,
                                                                      timed_groups), "",
            f"Not in the run above (no `buffer_path`): saving the buffer ({len(exit_env.buffer)} instances) with "
            f"`state_dict` + `write_state` takes {persist_ms:.1f} ms, off the event loop and coalesced."]


def summary_table(result: Pairs) -> list[str]:
    lines = ["| | (a) plain GSM8K | (b) self-improve, ExIt on | b/a (median of the paired ratios) "
             "| b - a per pair: median, IQR, standard error of the median |", "|---|---|---|---|---|"]
    for kind in ("wall", "CPU"):
        key = "wall" if kind == "wall" else "cpu"
        diffs = result.diffs_us(key)
        iqr, error = noise(diffs)
        lines.append(f"| {kind} us per group (median) | {result.median_us(key, 'a'):,.0f} | "
                     f"{result.median_us(key, 'b'):,.0f} | **{result.ratio(key):.3f}** | "
                     f"{statistics.median(diffs):,.0f}, {iqr:,.0f}, {error:,.0f} |")
    return lines


def breakdown_table(result: Pairs, clock: CallClock, rubric_us: dict[str, float], exit_env: Any, plain: Any,
                    groups: int) -> list[str]:
    """Where (b) - (a) goes: every part measured, the rest against the noise."""
    a_us = result.median_us("cpu", "a")
    calls = [("input_task", "hook: `input_task`"), ("loop.plan", "hook: `loop.plan` (of which the buffer's `sample`: "
                                                                 "{sample})"),
             ("rewrite_inputs", "hook: `rewrite_inputs` (the group's prompts)"),
             ("rollout_of", f"hook: `rollout_of` x {G}"),
             ("loop.finish", "hook: `loop.finish` (of which the buffer's `observe` {observe}, "
                             "`metrics` {metrics})"),
             ("write_report", "hook: `write_report`")]
    sub = {name: f"{clock.us_per_group('b', f'buffer.{name}', groups):,.0f}"
           for name in ("sample", "observe", "metrics")}
    rows: list[tuple[str, float, float]] = [(label.format(**sub), 0.0, clock.us_per_group("b", part, groups))
                                            for part, label in calls]
    rows += [(f"verifiers `state_to_output` x {G} (worker threads)", clock.us_per_group("a", "state_to_output", groups),
              clock.us_per_group("b", "state_to_output", groups)),
             ("the scripted model answering (bench's server, in process; self-iteration prompts are longer)",
              clock.us_per_group("a", "model", groups), clock.us_per_group("b", "model", groups)),
             ("garbage collection in the block", clock.us_per_group("a", "gc", groups),
              clock.us_per_group("b", "gc", groups)),
             (f"rubric: {rubric_functions(exit_env)} reward/metric functions vs {rubric_functions(plain)} "
              "(`env.rubric.score_group` on one group, outside the run, each answer checked afresh)",
              rubric_us["a"], rubric_us["b"])]
    rows.append(("the timers themselves (calls timed x the cost of one timer, `timer_us`)",
                 timer_overhead_us(clock, "a", groups), timer_overhead_us(clock, "b", groups)))
    measured = sum(b - a for _, a, b in rows)
    lines = ["Where (b) - (a) goes, us per group. Each part is measured: the hook's calls and `state_to_output` "
             "in the CPU time of the thread that runs them, as the run makes them; the rest is the CPU "
             "difference that no part explains:", "",
             "| part | (a) | (b) | b - a | share of a plain group (CPU) |", "|---|---|---|---|---|"]
    lines += [f"| {label} | {a:,.0f} | {b:,.0f} | {b - a:,.0f} | {(b - a) / a_us:.1%} |" for label, a, b in rows]
    total = statistics.median(result.diffs_us("cpu"))
    iqr, error = noise(result.diffs_us("cpu"))
    lines += [f"| sum of the measured parts | | | {measured:,.0f} | {measured / a_us:.1%} |",
              f"| total CPU difference (median of the pairs' b - a) | | | {total:,.0f} | {total / a_us:.1%} |",
              f"| rest (total - parts) | | | {total - measured:,.0f} | {(total - measured) / a_us:.1%} |",
              f"| noise: IQR of the pairs' b - a; standard error of their median | | | {iqr:,.0f}; {error:,.0f} | "
              f"{iqr / a_us:.1%}; {error / a_us:.1%} |"]
    return lines
