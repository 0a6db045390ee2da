"""What the ExIt environment costs next to the model, measured with a model that costs nothing.

Four measurements, printed as Markdown tables:

1. End to end: the real ``vf-eval`` on the same questions with (a) a plain
   GSM8K ``SingleTurnEnv`` (``scripts/bench_envs/plain_gsm8k.py``) and (b)
   ``self-improve`` with ExIt on (default strategy ``diverge``), same -n/-r/-c,
   against the scripted OpenAI server (``scripted_server.py``) running
   in a separate process (a fresh one per run) and answering instantly
   (``scripts/vf_eval_runs.py``). The two runs of a pair go at the same
   time, each pinned with its server to one CPU, the CPUs swapped from pair
   to pair (``--pairing sequential``: one after the other, the order
   swapped): this machine's speed drifts by 10-20% within minutes, and
   runs side by side see the same drift (what is left is the noise between
   two processes: docs/benchmarks.md). Wall and CPU time of every run,
   medians and the median of the paired ratios b/a; a tiny run (-n 1 -r 1)
   of each measures start-up.
2. In process (``scripts/bench_in_process.py``): ``env.run_group`` for both environments with an in-process
   instant OpenAI transport (the scripted server's answers, no socket, no
   worker process): time per group and b/a, and where the difference goes
   (the hook's buffer calls timed as the run makes them, the rubric timed
   on one scored group).
   2b. With ``--instructions GROUPS`` (``scripts/bench_instructions.py``): the same groups counted in
   instructions by callgrind, which this machine's drifting speed does not move.
   2c. ``scripts/bench_instructions.py --end-to-end GROUPS`` (``scripts/bench_processes.py``): section 1's
   real vf-eval counted the same way, per process (vf-eval, env server, env worker).
3. Buffer scaling: ``sample()`` and ``observe()`` of a G=8 group on full
   buffers of N = 512, 10^4, 10^5 instances with typical scores.
4. Memory: tracemalloc peak of a full 512-instance buffer of ~1,000-token
   (4,000-character) responses, and the size and write time of its saved state.

    .venv/bin/python scripts/bench_overhead.py               # everything (about 15 minutes on 2 cores)
    .venv/bin/python scripts/bench_overhead.py --skip-vf-eval # sections 2-4 (about 60 s)
    .venv/bin/python scripts/bench_overhead.py --skip-vf-eval --instructions 100  # and 2b (about 10 more minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCH_ENVS = REPO / "scripts" / "bench_envs"
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(BENCH_ENVS), str(REPO / "scripts")]

import bench_in_process as in_process  # noqa: E402
import bench_instructions  # noqa: E402
from bench_in_process import G, per_op_us  # noqa: E402
from vf_eval_runs import Job, run_at_once, vf_eval_run  # noqa: E402

SIZES: tuple[int, ...] = (512, 10_000, 100_000)
"""Buffer capacities of section 3."""

RESPONSE_CHARS: int = 4_000
"""About 1,000 tokens of English text, the response length of section 4."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--num-examples", type=int, default=1319,
                        help="vf-eval -n (default 1319, the whole GSM8K test split)")
    parser.add_argument("-r", "--rollouts-per-example", type=int, default=8, help="vf-eval -r (default 8)")
    parser.add_argument("-c", "--max-concurrent", type=int, default=64, help="vf-eval -c (default 64)")
    parser.add_argument("--reps", type=int, default=6,
                        help="section 1: pairs of runs, the order (or the CPUs) swapped each pair (default 6)")
    parser.add_argument("--groups", type=int, default=1200,
                        help="section 2: timed groups per environment in the in-process run (default 1200)")
    parser.add_argument("--pairs", type=int, default=24,
                        help="section 2: interleaved pairs of blocks, the order swapped each pair (default 24)")
    parser.add_argument("--instructions", type=int, default=0, metavar="GROUPS",
                        help="section 2b: also count instructions per group under callgrind over GROUPS groups "
                             "(scripts/bench_instructions.py; needs valgrind; about 10 minutes for 100; "
                             "default 0: off)")
    parser.add_argument("--skip-vf-eval", action="store_true", help="skip section 1 (the slow end-to-end runs)")
    parser.add_argument("--no-start-up", action="store_true",
                        help="section 1: skip the -n 1 -r 1 runs that measure start-up (more pairs per hour)")
    parser.add_argument("--raw", type=Path, default=None,
                        help="write section 1's wall and CPU seconds, run by run, to this JSON file")
    parser.add_argument("--exit-args", type=json.loads, default={"strategy": "diverge"},
                        help="section 1: env args (JSON) of (b), the self-improve run (default: "
                             "'{\"strategy\": \"diverge\"}'); e.g. add \"select_prob\": 0 to time ExIt without "
                             "self-improve prompts")
    parser.add_argument("--pairing", choices=("simultaneous", "sequential"), default="simultaneous",
                        help="section 1: run the two runs of a pair at once, one per CPU (default), or one "
                             "after the other")
    args = parser.parse_args(argv)
    for name in ("num_examples", "rollouts_per_example", "max_concurrent", "reps", "groups", "pairs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}")
    if args.instructions < 0:
        parser.error(f"--instructions: must be >= 0, got {args.instructions}")
    return args


# ---------------------------------------------------------------- section 1: vf-eval end to end


def bench_vf_eval(args: argparse.Namespace) -> list[str]:
    """Paired end-to-end runs; returns the table's lines (and writes ``--raw`` if given)."""
    envs = {"a": ("plain_gsm8k", None), "b": ("self-improve", args.exit_args)}
    sizes = {"full": (args.num_examples, args.rollouts_per_example)}
    if not args.no_start_up:
        sizes["start-up"] = (1, 1)
    cpus = sorted(os.sched_getaffinity(0))[:2]
    at_once = args.pairing == "simultaneous"
    if at_once and len(cpus) < 2:
        raise SystemExit(f"--pairing simultaneous: needs 2 CPUs to pin one run to each, got {len(cpus)}")
    wall: dict[tuple[str, str], list[float]] = {(size, env): [] for size in sizes for env in envs}
    cpu: dict[tuple[str, str], list[float]] = {key: [] for key in wall}
    cpu_of_a: list[int] = []
    for rep in range(args.reps):
        order = ["a", "b"] if rep % 2 == 0 else ["b", "a"]  # a b, b a, ...: order (or core) favours neither
        cpu_of_a.append(cpus[order.index("a")] if at_once else -1)
        for size, (n, r) in sizes.items():
            jobs = [Job(envs[env][0], n, r, args.max_concurrent, envs[env][1]) for env in order]
            results = run_at_once(jobs, cpus) if at_once else [vf_eval_run(job) for job in jobs]
            for env, job, (seconds, cpu_seconds) in zip(order, jobs, results, strict=True):
                wall[(size, env)].append(seconds)
                cpu[(size, env)].append(cpu_seconds)
                print(f"  rep {rep + 1} {size:8s} {job.env_id:13s} {seconds:7.2f} s wall {cpu_seconds:7.2f} s CPU",
                      file=sys.stderr)
    if args.raw is not None:
        args.raw.write_text(json.dumps({"pairing": args.pairing, "exit_args": args.exit_args, "cpu_of_a": cpu_of_a,
                                        "wall": {f"{size} {env}": v for (size, env), v in wall.items()},
                                        "cpu": {f"{size} {env}": v for (size, env), v in cpu.items()}}, indent=1))
    return vf_eval_table(args, wall, cpu, cpu_of_a)


def vf_eval_table(args: argparse.Namespace, wall: dict[tuple[str, str], list[float]],
                  cpu: dict[tuple[str, str], list[float]], cpu_of_a: list[int]) -> list[str]:
    """Section 1's Markdown: every pair, the medians, and the median of the paired ratios."""

    def paired(times: dict[tuple[str, str], list[float]], size: str = "full") -> float:
        return statistics.median(b / a for a, b in zip(times[(size, "a")], times[(size, "b")], strict=True))

    median = {key: statistics.median(values) for key, values in wall.items()}
    median_cpu = {key: statistics.median(values) for key, values in cpu.items()}
    at_once = args.pairing == "simultaneous"
    rows = []
    for i in range(args.reps):
        a, b, ca, cb = wall[("full", "a")][i], wall[("full", "b")][i], cpu[("full", "a")][i], cpu[("full", "b")][i]
        where = f" (a on CPU {cpu_of_a[i]})" if at_once else ""
        rows.append(f"| rep {i + 1}{where} | {a:.2f} | {b:.2f} | {b / a:.3f} | {ca:.2f} | {cb:.2f} | {cb / ca:.3f} |")
    how = ("the two runs of each pair at the same time, each pinned with its own server to one of the two CPUs "
           "(alternating), so the machine's speed changes hit both" if at_once else
           "the two runs of each pair one after the other, in alternating order (a b, b a, ...)")

    def ratio(size: str, table: dict[tuple[str, str], float]) -> float:
        return table[(size, "b")] / table[(size, "a")]

    return [
        f"vf-eval -n {args.num_examples} -r {args.rollouts_per_example} -c {args.max_concurrent}, "
        f"{args.reps} pairs, {how}; (b) with -a '{json.dumps(args.exit_args)}'; "
        "a fresh instant scripted server in its own process for each run. "
        "CPU time is user + system of the vf-eval process and the children it waited for:",
        "",
        "| pair | (a) plain GSM8K, wall s | (b) self-improve, ExIt on, wall s | b/a wall | (a) CPU s | (b) CPU s "
        "| b/a CPU |",
        "|---|---|---|---|---|---|---|",
        *rows,
        f"| median | {median[('full', 'a')]:.2f} | {median[('full', 'b')]:.2f} | {ratio('full', median):.3f} | "
        f"{median_cpu[('full', 'a')]:.2f} | {median_cpu[('full', 'b')]:.2f} | {ratio('full', median_cpu):.3f} |",
        f"| median of the paired ratios | | | **{paired(wall):.3f}** | | | **{paired(cpu):.3f}** |",
        *([] if args.no_start_up else [
            f"| start-up (-n 1 -r 1): median, and median of the paired ratios | {median[('start-up', 'a')]:.2f} | "
            f"{median[('start-up', 'b')]:.2f} | {paired(wall, 'start-up'):.3f} | "
            f"{median_cpu[('start-up', 'a')]:.2f} | {median_cpu[('start-up', 'b')]:.2f} | "
            f"{paired(cpu, 'start-up'):.3f} |"]),
    ]


# ---------------------------------------------------------------- section 2: in process


def bench_in_process(args: argparse.Namespace) -> list[str]:
    """Section 2 (``scripts/bench_in_process.py``): whole groups in process, and where the difference goes."""
    return in_process.bench_in_process(args.groups, args.pairs, args.max_concurrent, args.rollouts_per_example)


# ---------------------------------------------------------------- sections 3-4: buffer scaling, memory


def full_buffer(capacity: int, rng: np.random.Generator, response: Callable[[int], str]) -> Any:
    """A buffer filled to ``capacity`` by base groups of G binary returns whose success
    rate is uniform per task: scores k/8 (1 - k/8) for unsolved children, 0 for solved ones."""
    from self_improve.buffer.exit_buffer import ExitBuffer
    from self_improve.exit_loop import GroupPlan
    from self_improve.grouping import Task

    buffer = ExitBuffer(capacity=capacity)
    serial = 0
    while len(buffer) < capacity:
        correct = [bool(x) for x in rng.random(G) < rng.random()]
        plan = GroupPlan("base", Task(f"train-{serial}", "question", "1"))
        buffer.observe(plan.group([response(serial * G + i) for i in range(G)], [float(c) for c in correct], correct))
        serial += 1
    return buffer


def improve_group(buffer: Any, rng: np.random.Generator, response: Callable[[int], str], serial: int) -> Any:
    """A self-improve group from a sampled instance, with random binary returns."""
    from self_improve.exit_loop import GroupPlan

    parent = buffer.sample()
    correct = [bool(x) for x in rng.random(G) < rng.random()]
    return GroupPlan("improve", parent.task, parent).group([response(serial + i) for i in range(G)],
                                                           [float(c) for c in correct], correct)


def bench_scaling() -> list[str]:
    """Section 3: per-operation cost on full buffers of growing capacity."""
    lines = ["Full buffers (scores from G=8 binary groups; about half the instances are solved, score 0), "
             "median us per operation:", "",
             "| N | sample() | observe(G=8 group) | metrics() |", "|---|---|---|---|"]
    for capacity in SIZES:
        rng = np.random.default_rng(capacity)
        buffer = full_buffer(capacity, rng, lambda i: f"response {i}")
        serial = iter(range(10**7, 10**9, G))
        sample_us = per_op_us(buffer.sample)

        def observe(buffer: Any = buffer, rng: np.random.Generator = rng, serial: Any = serial) -> None:
            buffer.observe(improve_group(buffer, rng, lambda i: f"response {i}", next(serial)))

        observe_us = per_op_us(observe) - sample_us
        metrics_us = per_op_us(buffer.metrics, min_ops=5)
        lines.append(f"| {capacity:,} | {sample_us:,.0f} | {observe_us:,.0f} | {metrics_us:,.0f} |")
    return lines


def bench_memory() -> list[str]:
    """Section 4: a full 512-instance ExIt buffer of 4,000-character responses, grown the way
    the hook grows it (base groups, then half the groups improving a sampled instance)."""
    from self_improve.buffer.checkpoint import write_state

    def response(i: int) -> str:
        return f"{i:010d} " + "x" * (RESPONSE_CHARS - 11)

    tracemalloc.start()
    rng = np.random.default_rng(1)
    buffer = full_buffer(512, rng, response)
    for step in range(1_000):
        if rng.random() < 0.5:
            buffer.observe(improve_group(buffer, rng, response, 10**8 + step * G))
    retained, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    iterates = sum(len(instance.iterates) for instance in buffer.instances())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "buffer.json"
        save_ms = per_op_us(lambda: write_state(buffer.state_dict(), path), min_ops=5) / 1e3
        size = path.stat().st_size
    depth = buffer.metrics()["buffer_depth_mean"]
    mib = 2**20
    return [f"512 instances, {RESPONSE_CHARS:,}-character responses, mean depth {depth:.2f} "
            f"({iterates:,} iterates held, shared with parents in memory):", "",
            "| retained (tracemalloc) | peak while filling | saved state (JSON) | state_dict + write_state |",
            "|---|---|---|---|",
            f"| {retained / mib:.1f} MiB | {peak / mib:.1f} MiB | {size / mib:.1f} MiB | {save_ms:.0f} ms |"]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sections: list[tuple[str, Callable[[], list[str]]]] = []
    if not args.skip_vf_eval:
        sections.append(("End to end (vf-eval)", lambda: bench_vf_eval(args)))
    sections.append(("In process (run_group)", lambda: bench_in_process(args)))
    if args.instructions:
        sections.append(("In process, instructions (callgrind)",
                         lambda: bench_instructions.bench_instructions(args.instructions)))
    sections += [("Buffer scaling", bench_scaling), ("Buffer memory", bench_memory)]
    command = ["scripts/bench_overhead.py", *(argv if argv is not None else sys.argv[1:])]
    print(f"`.venv/bin/python {' '.join(command)}`, {os.cpu_count()} CPU cores\n")
    for title, section in sections:
        started = time.perf_counter()
        lines = section()
        print(f"### {title} ({time.perf_counter() - started:.0f} s)\n")
        print("\n".join(lines) + "\n", flush=True)


if __name__ == "__main__":
    main()
