"""Throughput of the K-step scaffold against plain concurrent client calls.

Both sides send the *same* requests (the warm-up scaffold run's, replayed
from its ``requests.jsonl``: same questions, prompt kinds, seeds and previous
responses; the server's texts differ only in a request counter) at the same
concurrency through the same client
(``openai.AsyncOpenAI``, no client retries) to a scripted server that answers
at once. The server runs in a separate process so it does not compete with
the client for the GIL. Repetitions alternate which side goes first.

Scaffold time covers what a run does per request: scheduling across chains,
prompt building, answer checking, the flushed append to ``requests.jsonl``
and the progress bar. Writing the final outputs (chains, summary, plot) is a
one-off cost per run and is reported separately.

Usage::

    .venv/bin/python scripts/bench_k_step_eval.py            # 100 questions x 2 samples x (K=4 + 1), c=8
    .venv/bin/python scripts/bench_k_step_eval.py -c 2 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the package, and the scripted server (a test fixture)

import openai  # noqa: E402
from openai.resources.chat.completions import AsyncCompletions  # noqa: E402
from openai.types.chat import ChatCompletion  # noqa: E402

from self_improve import prompts  # noqa: E402
from self_improve.kstep import cli as ke  # noqa: E402

SERVER = ("import sys; sys.path.insert(0, 'tests'); from collections import deque; "
          "from scripted_server import ScriptedServer; "
          "server = ScriptedServer(served=deque(maxlen=1), requests=deque(maxlen=1)).start(); "
          "print(server.url, flush=True); sys.stdin.read()")
"""The scripted server (answers from ``cycle_policy``: correct, wrong, unboxed,
correct) with its logs capped: a log that grows by every request would slow
the server down as the benchmark goes on and favour whichever side runs first."""


def replay_requests(config: ke.EvalConfig, questions: list[ke.Question], log_path: Path) -> list[dict[str, Any]]:
    """The scaffold's requests, rebuilt from its log as create() keyword arguments."""
    by_id = {q.question_id: q for q in questions}
    records = ke.RequestLog(log_path).load()
    responses = {(r["question_id"], r["sample"], r["step"]): r["response"] for r in records}
    calls = []
    for record in records:
        question = by_id[record["question_id"]].question
        previous = responses.get((record["question_id"], record["sample"], record["step"] - 1), "")
        calls.append({"model": config.model, "messages": prompts.step_messages(record["kind"], question, previous),
                      "extra_body": {**config.body_args, "seed": record["seed"]}})
    return calls


async def plain_calls(url: str, calls: list[dict[str, Any]], concurrency: int, timeout_s: float) -> None:
    semaphore = asyncio.Semaphore(concurrency)
    async with openai.AsyncOpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=timeout_s) as client:

        async def one(call: dict[str, Any]) -> None:
            async with semaphore:
                await client.chat.completions.create(**call)

        await asyncio.gather(*(one(call) for call in calls))


def timed(action: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def scaffold_run(url: str, config: ke.EvalConfig, questions: list[ke.Question]) -> tuple[float, float, float]:
    """(request-phase wall s, request-phase CPU s, output-writing s) of one fresh run."""
    output_dir = config.resolved_output_dir
    output_dir.mkdir(parents=True)
    log = ke.RequestLog(output_dir / ke.REQUESTS_FILE)
    chains: list[ke.Chain] = []

    def requests() -> None:
        chains.extend(ke.load_chains(config, questions, log))
        asyncio.run(ke.run_chains(config, chains, log, url))
        log.close()

    wall, cpu = timed(requests)
    outputs_s, _ = timed(lambda: ke.write_outputs(config, chains, output_dir, url))
    return wall, cpu, outputs_s


STUB_REPLY = {"id": "stub", "object": "chat.completion", "created": 0, "model": "scripted",
              "choices": [{"index": 0, "finish_reason": "stop",
                           "message": {"role": "assistant", "content": "Working it out. The answer is \\boxed{7}."}}],
              "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def intrinsic_costs(run_scaffold: Callable[[], float], run_plain: Callable[[], float],
                    repeats: int) -> tuple[float, float]:
    """Median CPU seconds of each side with the HTTP transport stubbed out (create()
    returns a fixed reply at once): what each side itself costs, immune to other load."""
    original = AsyncCompletions.create
    reply = ChatCompletion.model_validate(STUB_REPLY)

    async def stub(self: AsyncCompletions, **kwargs: Any) -> ChatCompletion:
        await asyncio.sleep(0)
        return reply

    AsyncCompletions.create = stub
    try:
        scaffold = statistics.median(run_scaffold() for _ in range(repeats))
        plain = statistics.median(run_plain() for _ in range(repeats))
    finally:
        AsyncCompletions.create = original
    return scaffold, plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--questions", type=int, default=100)
    parser.add_argument("-r", "--samples", type=int, default=2)
    parser.add_argument("-K", "--steps", type=int, default=4)
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-progress", action="store_true",
                        help="hide the scaffold's progress bar (on stderr; shown by default, as in real runs)")
    args = parser.parse_args()

    server = subprocess.Popen([sys.executable, "-c", SERVER], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        questions = ke.load_questions(args.questions, seed=0)
        scratch = Path(tempfile.mkdtemp(prefix="bench_kstep_"))

        def config_for(name: str) -> ke.EvalConfig:
            return ke.EvalConfig(model="scripted", num_questions=args.questions, samples=args.samples,
                                 steps=args.steps, concurrency=args.concurrency, progress=not args.no_progress,
                                 output_dir=scratch / name)

        warm = config_for("warmup")
        scaffold_run(url, warm, questions)
        calls = replay_requests(warm, questions, warm.output_dir / ke.REQUESTS_FILE)
        asyncio.run(plain_calls(url, calls[:200], args.concurrency, warm.timeout_s))

        total = args.questions * args.samples * (args.steps + 1)
        print(f"{args.questions} questions x {args.samples} samples x {args.steps + 1} steps = {total} requests "
              f"per run, concurrency {args.concurrency}, server in its own process")
        print("| rep | scaffold req/s | plain req/s | ratio | scaffold CPU ms/req | plain CPU ms/req | outputs (s) |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        scaffold_rates, plain_rates, ratios = [], [], []
        for rep in range(args.repeats):
            config = config_for(f"rep{rep}")
            timings: dict[str, tuple[float, float]] = {}
            for side in (("plain", "scaffold") if rep % 2 else ("scaffold", "plain")):
                if side == "scaffold":
                    *timings["scaffold"], outputs_s = scaffold_run(url, config, questions)
                else:
                    timings["plain"] = timed(lambda: asyncio.run(plain_calls(url, calls, args.concurrency,
                                                                             warm.timeout_s)))
            scaffold_rates.append(total / timings["scaffold"][0])
            plain_rates.append(len(calls) / timings["plain"][0])
            ratios.append(scaffold_rates[-1] / plain_rates[-1])
            print(f"| {rep} | {scaffold_rates[-1]:.0f} | {plain_rates[-1]:.0f} | {ratios[-1]:.3f} | "
                  f"{1000 * timings['scaffold'][1] / total:.2f} | {1000 * timings['plain'][1] / len(calls):.2f} | "
                  f"{outputs_s:.2f} |")
        print(f"\nthroughput ratio scaffold/plain (target >= 0.95): median of paired reps "
              f"{statistics.median(ratios):.3f}, best run vs best run {max(scaffold_rates) / max(plain_rates):.3f}, "
              f"median vs median {statistics.median(scaffold_rates) / statistics.median(plain_rates):.3f}")
        stub_configs = iter(config_for(f"stub{i}") for i in range(args.repeats))
        scaffold_cpu, plain_cpu = intrinsic_costs(
            lambda: scaffold_run(url, next(stub_configs), questions)[1],
            lambda: timed(lambda: asyncio.run(plain_calls(url, calls, args.concurrency, 600.0)))[1], args.repeats)
        print(f"own CPU per request with the transport stubbed: scaffold {1e6 * scaffold_cpu / total:.0f} us, "
              f"plain {1e6 * plain_cpu / len(calls):.0f} us; scaffold extra "
              f"{1e6 * (scaffold_cpu / total - plain_cpu / len(calls)):.0f} us per request")
    finally:
        server.stdin.close()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
