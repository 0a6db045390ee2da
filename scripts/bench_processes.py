"""Section 2c of ``scripts/bench_overhead.py``: what a group costs end to end, per process, in instructions.

Section 2b counts the env worker's in-process path only. A real ``vf-eval`` run has three
processes: vf-eval itself (the client: it sends each group's inputs, validates the rows that come
back, and prints every metric of every row at the end), the env server (a router that forwards
messages) and the env worker (the environment, the rubric, and each row's serialisation). This
runs the real ``vf-eval`` of section 1 under ``valgrind --tool=callgrind --trace-children=yes``
(every process and thread counted, ``PYTHONHASHSEED`` fixed; the scripted server, which stands in
for the model, is not counted) with ``-n FIRST`` and with ``-n FIRST + GROUPS``; the difference
over GROUPS is what a group costs in each process, start-up cancelled. Each (env, -n) is run
once uncounted first, so a split's first load, which builds its cache, is in neither count.

    .venv/bin/python scripts/bench_instructions.py --end-to-end 200   # about 20 minutes

Needs valgrind. Two counted runs at a time, one per core (an instruction count does not
depend on what else runs).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vf_eval_runs import Job, _command, _environment, pinned, scripted_server_process, vf_eval_run

FIRST: int = 20
"""Questions (groups) of the shorter run, whose count is taken away from the longer one's."""

ENVS: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "a": ("(a) plain GSM8K", "plain_gsm8k", None),
    "b": ("(b) self-improve, ExIt on", "self-improve", {"strategy": "diverge"}),
}
"""The two environments of section 1, as ``vf-eval`` runs them (same questions, -r 8 -c 64)."""

ROLES: tuple[str, ...] = ("vf-eval (client)", "env server (router)", "env worker", "other")
"""Each counted process's part; "other" is multiprocessing's resource tracker and vf-eval's git calls."""

CHILD_ENV: dict[str, str] = {"PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
"""Every counted process's (sections 2b and 2c): a fixed hash seed, and no BLAS thread pool, whose
idle threads spin, which callgrind would count."""

_LOG = {key: re.compile(pattern, re.MULTILINE) for key, pattern in
        {"pid": r"^==(\d+)== Callgrind", "parent": r"Parent PID: (\d+)", "command": r"Command: (.*)",
         "count": r"Collected : (\d+)"}.items()}


def _job(env: str, groups: int) -> Job:
    return Job(ENVS[env][1], groups, 8, 64, ENVS[env][2])


class IncompleteLog(RuntimeError):
    """A process's callgrind log without its count: it was still running, or it was killed (valgrind
    writes nothing for SIGKILL), when the wait ran out."""


def read_log(log: Path, wait_s: float = 120.0) -> dict[str, str]:
    """pid, parent, command and count of one process's callgrind log, once it is complete: a child
    (multiprocessing's resource tracker) may still be writing its log when vf-eval has exited."""
    deadline = time.monotonic() + wait_s
    while True:
        text = log.read_text(errors="replace")
        found = {key: pattern.search(text) for key, pattern in _LOG.items()}
        if all(match is not None for match in found.values()):
            return {key: match.group(1) for key, match in found.items()}  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            raise IncompleteLog(f"{log}: no instruction count after {wait_s:.0f} s:\n{text[-2000:]}")
        time.sleep(0.5)


def by_role(folder: Path) -> dict[str, int]:
    """Instructions of each process of one traced run, by its part (read from valgrind's logs:
    vf-eval is the process named so, the router its spawned child, the worker the router's)."""
    processes = [read_log(log) for log in folder.glob("vg.*.log")]
    main = [p["pid"] for p in processes if "vf-eval" in p["command"].split(" ")[0]]
    router = [p["pid"] for p in processes if p["parent"] in main and "spawn_main" in p["command"]]
    worker = [p["pid"] for p in processes if p["parent"] in router and "spawn_main" in p["command"]]
    if len(main) != 1 or len(router) != 1 or len(worker) != 1:
        raise RuntimeError(f"{folder}: expected one vf-eval, one env server and one env worker, got pids "
                           f"{main}, {router}, {worker}")
    counts = dict.fromkeys(ROLES, 0)
    for process in processes:
        role = {main[0]: ROLES[0], router[0]: ROLES[1], worker[0]: ROLES[2]}.get(process["pid"], ROLES[3])
        counts[role] += int(process["count"])
    return counts


def traced(env: str, groups: int, cpu: int, folder: Path) -> dict[str, int]:
    """One real ``vf-eval`` run of ``env`` over ``groups`` questions under callgrind, pinned with its
    server to ``cpu``; its instructions by process part."""
    folder.mkdir(parents=True)
    with scripted_server_process(cpu) as url:
        command = ["valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={folder}/cg.%p",
                   f"--log-file={folder}/vg.%p.log", *_command(_job(env, groups), url, folder)]
        log = folder / "vf-eval.log"
        with log.open("wb") as sink:
            done = subprocess.run(command, cwd=folder, env={**_environment(), **CHILD_ENV}, stdout=sink,
                                  stderr=subprocess.STDOUT, preexec_fn=pinned(cpu), check=False)
    output = log.read_text(errors="replace")
    if done.returncode != 0 or "Evaluation completed" not in output:
        raise RuntimeError(f"vf-eval {env} under callgrind failed (exit {done.returncode}):\n{output[-3000:]}")
    return by_role(folder)


def bench_processes(groups: int) -> list[str]:
    """Section 2c's Markdown: millions of instructions per group in each process, (a) and (b)."""
    runs = [(env, n) for n in (FIRST, FIRST + groups) for env in ENVS]
    for env, n in runs:  # uncounted: the first load of each selection builds its cache
        vf_eval_run(_job(env, n))
    cpus = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as name, ThreadPoolExecutor(2) as pool:

        def count(index: int) -> dict[str, int]:
            """One run's counts; once more if a process left no count (seen three times on 2026-12-06: a
            spawned child of the (a) run of 220 questions, then of both runs of 20, most likely killed
            at vf-eval's shutdown, which is slow under callgrind)."""
            env, n = runs[index]
            try:
                return traced(env, n, cpus[index % len(cpus)], Path(name) / f"{env}-{n}")
            except IncompleteLog as error:
                print(f"{env} {n}: run again, a process left no count ({str(error).splitlines()[0]})", file=sys.stderr)
                return traced(env, n, cpus[index % len(cpus)], Path(name) / f"{env}-{n}-again")

        counts = dict(zip(runs, pool.map(count, range(len(runs))), strict=True))
    per_group = {env: {role: (counts[(env, FIRST + groups)][role] - counts[(env, FIRST)][role]) / groups
                       for role in ROLES} for env in ENVS}
    totals = {env: sum(per_group[env].values()) for env in ENVS}
    lines = [f"Instructions per group in each process of a real vf-eval run (-r 8 -c 64, the instant scripted "
             f"server not counted), counted by callgrind: a run of {FIRST + groups} questions less one of {FIRST}:", "",
             "| process | (a) plain, millions | (b) ExIt, millions | (b) - (a), millions |", "|---|---|---|---|"]
    lines += [f"| {role} | {per_group['a'][role] / 1e6:.2f} | {per_group['b'][role] / 1e6:.2f} | "
              f"{(per_group['b'][role] - per_group['a'][role]) / 1e6:+.2f} |" for role in ROLES]
    lines.append(f"| **all** | {totals['a'] / 1e6:.2f} | {totals['b'] / 1e6:.2f} | "
                 f"{(totals['b'] - totals['a']) / 1e6:+.2f} (ratio **{totals['b'] / totals['a']:.3f}**) |")
    print(json.dumps({"per_group": per_group, "counts": {f"{env} {n}": c for (env, n), c in counts.items()}}),
          file=sys.stderr)
    return lines
