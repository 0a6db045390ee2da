"""Section 2b of ``scripts/bench_overhead.py``: what a group costs in instructions, counted by callgrind.

Time on this 2-core machine drifts by 10-20% within seconds: two timed blocks of the same plain
environment, half a second apart, differ by 7% (IQR) in section 2, so its ratio moves by several
percent from run to run. An instruction count does not drift. Each environment runs in its own
process under ``valgrind --tool=callgrind`` (every thread counted, ``PYTHONHASHSEED`` fixed):
``WARM_UP_GROUPS`` untimed groups and then N groups, the same way section 2 runs them (the in-process
instant transport, 8 groups in flight, the collector set as vf-eval's env worker sets it). Each
is run with N = 0 and with N = ``--groups``; the difference over N is what one group costs,
start-up and warm-up cancelled. It counts work, not time: cache misses and waits for the GIL
are not in it, so it complements section 2 rather than replacing it.

    .venv/bin/python scripts/bench_instructions.py              # (a) and (b) (about 10 minutes for 100 groups)
    .venv/bin/python scripts/bench_instructions.py --arms a,b,b-no-format,b-select0  # and two parts of (b) taken away
    .venv/bin/python scripts/bench_instructions.py --child b 5  # one counted process: (b), warm-up + 5 groups
    .venv/bin/python scripts/bench_instructions.py --end-to-end 200  # section 2c: each process of a real vf-eval run

Needs valgrind (``apt-get install -y valgrind``). The runs go two at a time, one per core; the
arms that take a part of (b) away say, by difference, what that part costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "scripts" / "bench_envs"), str(REPO / "scripts")]

import bench_in_process as in_process  # noqa: E402
from bench_processes import CHILD_ENV, bench_processes, read_log  # noqa: E402

CONCURRENCY: int = 8
"""Groups in flight, as section 2 runs them (vf-eval -c 64 with -r 8)."""



def _plain() -> Any:
    import plain_gsm8k

    return plain_gsm8k.load_environment()


def _exit(**env_args: Any) -> Any:
    from self_improve.hosts.classic import load_environment

    return load_environment(strategy="diverge", **env_args)


def _exit_without_format() -> Any:
    env = _exit()
    rubric = env.rubric.rubrics[0]  # the self-improve rubric (the second is verifiers' monitor)
    rubric.funcs, rubric.weights = rubric.funcs[:1], rubric.weights[:1]
    return env


ARMS: dict[str, tuple[str, Callable[[], Any]]] = {
    "a": ("(a) plain GSM8K", _plain),
    "b": ("(b) self-improve, ExIt on", _exit),
    "b-no-format": ("(b) less its format reward (one rubric function fewer)", _exit_without_format),
    "b-select0": ("(b) with `select_prob` 0 (every hook call and buffer update, only base prompts)",
                  lambda: _exit(select_prob=0)),
}
"""What each counted process runs: the two environments of section 2, and (b) with one part taken away."""


def child(arm: str, groups: int) -> None:
    """The counted process: the arm's environment, its warm-up groups, then ``groups`` more."""
    env = ARMS[arm][1]()
    client = in_process.instant_client()

    async def run() -> None:
        await in_process.run_groups(env, client, in_process.block_rows(env, 0, in_process.WARM_UP_GROUPS), CONCURRENCY)
        await in_process.run_groups(env, client, in_process.block_rows(env, in_process.WARM_UP_GROUPS, groups),
                                    CONCURRENCY)

    with in_process.worker_gc():
        asyncio.run(run())




def counted(jobs: list[tuple[str, int]], folder: Path) -> list[int]:
    """Instructions of each (arm, groups) child under callgrind, run side by side."""
    running = []
    for arm, groups in jobs:
        log = folder / f"{arm}-{groups}.log"
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder / 'callgrind.%p'}",
                   f"--log-file={log}", sys.executable, __file__, "--child", arm, str(groups)]
        running.append((subprocess.Popen(command, env={**os.environ, **CHILD_ENV}), log))
    counts = []
    for process, log in running:
        if process.wait() != 0:
            raise RuntimeError(f"callgrind run failed (exit {process.returncode}):\n{log.read_text()[-3000:]}")
        counts.append(int(read_log(log)["count"]))
    return counts


def bench_instructions(groups: int, arms: Sequence[str] = ("a", "b")) -> list[str]:
    """Section 2b's Markdown: instructions per group of each arm, and its ratio to (a)."""
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind: not found; install it (apt-get install -y valgrind) or leave out --instructions")
    arms = list(dict.fromkeys(["a", *arms]))
    for arm in arms:  # uncounted: the first load of a split builds its cache, which the counted runs find
        subprocess.run([sys.executable, __file__, "--child", arm, "0"], env={**os.environ, **CHILD_ENV}, check=True)
    per_group = {}
    with tempfile.TemporaryDirectory() as name:
        for start in range(0, len(arms), 2):  # two processes at a time, one per core
            pair = arms[start:start + 2]
            begun = counted([(arm, 0) for arm in pair], Path(name))
            ended = counted([(arm, groups) for arm in pair], Path(name))
            per_group.update({arm: (end - begin) / groups for arm, begin, end in zip(pair, begun, ended, strict=True)})
    a = per_group["a"]
    return [f"Instructions per group, counted by callgrind (every thread; {in_process.WARM_UP_GROUPS} warm-up "
            f"groups, then {groups} counted, {CONCURRENCY} in flight, less a run of the warm-up alone):", "",
            "| arm | millions of instructions per group | ratio to (a) | difference to (a), millions |",
            "|---|---|---|---|",
            *(f"| {ARMS[arm][0]} | {count / 1e6:.2f} | **{count / a:.3f}** | {(count - a) / 1e6:+.2f} |"
              for arm, count in per_group.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=100, help="counted groups per environment (default 100)")
    parser.add_argument("--arms", default="a,b",
                        help=f"comma-separated arms to count, (a) always among them (default a,b; "
                             f"of {', '.join(ARMS)})")
    parser.add_argument("--end-to-end", type=int, default=0, metavar="GROUPS",
                        help="instead, section 2c: count each process of a real vf-eval run per group, over GROUPS "
                             "groups (scripts/bench_processes.py; about 20 minutes for 200)")
    parser.add_argument("--child", nargs=2, metavar=("ARM", "GROUPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child[0] not in ARMS:
            parser.error(f"--child: ARM must be one of {', '.join(ARMS)}, got {args.child[0]!r}")
        child(args.child[0], int(args.child[1]))
        return
    if args.groups < 1:
        parser.error(f"--groups: must be >= 1, got {args.groups}")
    if args.end_to_end < 0:
        parser.error(f"--end-to-end: must be >= 0, got {args.end_to_end}")
    if args.end_to_end:
        print("\n".join(bench_processes(args.end_to_end)))
        return
    arms = args.arms.split(",")
    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown:
        parser.error(f"--arms: must name arms among {', '.join(ARMS)}, got {', '.join(unknown)}")
    print("\n".join(bench_instructions(args.groups, arms)))


if __name__ == "__main__":
    main()
