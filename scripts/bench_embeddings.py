"""Cost of the diversity bonus: embedding one group against generating it.

Generates the G responses of one group (one GSM8K test question, G requests
with distinct seeds, sent together as vf-eval sends a group) with the built-in
local model, or with any OpenAI-compatible server given by ``--base-url``;
then embeds those same G responses with the default embedding model, as the
environment does once per group (one batch), ``--repeats`` times. Prints the
one-off cold start (import + model load + first batch), the median warm
embedding time, the generation wall time and their ratio (target: under 5%).

``--contended`` also times embeddings made while a second group generates,
as happens when vf-eval or a trainer has several groups in flight (both
compete for the same cores), and that group's generation time.

Usage::

    .venv/bin/python scripts/bench_embeddings.py                      # starts the built-in local model
    .venv/bin/python scripts/bench_embeddings.py --base-url http://127.0.0.1:8000/v1 --model NAME
    .venv/bin/python scripts/bench_embeddings.py --embed-only         # GSM8K gold solutions, no model
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import openai  # noqa: E402

from self_improve import gsm8k_data, prompts  # noqa: E402
from self_improve.exit_config import DEFAULT_EMBEDDING_MODEL  # noqa: E402
from self_improve.scoring import diversity  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url",
                        help="OpenAI-compatible server to generate with (default: start the built-in one)")
    parser.add_argument("--model", help="model name at --base-url (default: the built-in model's name)")
    parser.add_argument("--group-size", type=int, default=8, help="G, responses per group (default 8, the paper's)")
    parser.add_argument("--question", type=int, default=0, help="index of the GSM8K test question (default 0)")
    parser.add_argument("--max-tokens", type=int, default=768, help="max_tokens per response (default 768)")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    parser.add_argument("--repeats", type=int, default=10, help="warm embedding repetitions (default 10)")
    parser.add_argument("--embedding-model", default=DEFAULT_EMBEDDING_MODEL,
                        help=f"embedding model (default {DEFAULT_EMBEDDING_MODEL})")
    parser.add_argument("--embed-only", action="store_true",
                        help="time embeddings of G GSM8K gold solutions only; no generation")
    parser.add_argument("--contended", action="store_true",
                        help="also time embeddings made while a second group generates")
    return parser


def check_args(args: argparse.Namespace) -> None:
    for name in ("group_size", "max_tokens", "repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}")
    if args.model is not None and args.base_url is None:
        raise ValueError("--model: only meaningful with --base-url")


@contextlib.contextmanager
def generation_server(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """(base URL, model name): the given server, or the built-in one started here and stopped after."""
    if args.base_url is not None:
        yield args.base_url, args.model or "default"
        return
    from self_improve.local import cli as local_model

    with local_model.LocalServer(local_model.ensure_model()) as server:
        yield server.base_url, local_model.MODEL_NAME


async def generate_group(base_url: str, model: str, question: str, args: argparse.Namespace,
                         first_seed: int) -> tuple[list[str], float]:
    """The G responses to one prompt (distinct seeds, sent together) and the wall time for all."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="local", max_retries=0, timeout=1800)
    messages = prompts.base_messages(question)
    start = time.perf_counter()
    replies = await asyncio.gather(*(
        client.chat.completions.create(model=model, messages=messages, max_tokens=args.max_tokens,
                                       temperature=args.temperature, seed=first_seed + i)
        for i in range(args.group_size)))
    elapsed = time.perf_counter() - start
    await client.close()
    return [reply.choices[0].message.content or "" for reply in replies], elapsed


def time_embedding(model_name: str, texts: list[str]) -> float:
    start = time.perf_counter()
    diversity.embed_texts(model_name, texts)
    return time.perf_counter() - start


def warm_times(model_name: str, texts: list[str], repeats: int) -> list[float]:
    return [time_embedding(model_name, texts) for _ in range(repeats)]


def embed_while(model_name: str, texts: list[str], running: threading.Event) -> list[float]:
    """Embed ``texts`` again and again until ``running`` is cleared (at least once)."""
    times = [time_embedding(model_name, texts)]
    while running.is_set():
        times.append(time_embedding(model_name, texts))
    return times


async def contended(base_url: str, model: str, question: str, texts: list[str],
                    args: argparse.Namespace) -> tuple[list[float], float]:
    running = threading.Event()
    running.set()
    worker = asyncio.create_task(asyncio.to_thread(embed_while, args.embedding_model, texts, running))
    try:
        _, generation_s = await generate_group(base_url, model, question, args, first_seed=10_000)
    finally:
        running.clear()  # also on Ctrl-C, or the embedding thread would keep the process alive
    return await worker, generation_s


def words(texts: list[str]) -> str:
    counts = [len(text.split()) for text in texts]
    return f"{min(counts)}-{max(counts)} words (median {statistics.median(counts):g})"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    row = gsm8k_data.load_raw("test")[args.question]
    print(f"G={args.group_size}, question {args.question} of the GSM8K test split, embedding model "
          f"{args.embedding_model}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.embed_only:
        rows = gsm8k_data.load_raw("test").select(range(args.group_size))
        texts = [r["answer"].split("####")[0].strip() for r in rows]
        cold = time_embedding(args.embedding_model, texts)
        warm = warm_times(args.embedding_model, texts, args.repeats)
        print(f"texts: {args.group_size} GSM8K gold solutions, {words(texts)}")
        print(f"embedding cold start (import + load + first batch): {cold:.2f} s")
        print(f"embedding per group, warm: median {statistics.median(warm) * 1000:.0f} ms over {args.repeats} "
              f"(min {min(warm) * 1000:.0f}, max {max(warm) * 1000:.0f})")
        return 0
    with generation_server(args) as (base_url, model):
        print(f"generating with {model} at {base_url}, max_tokens {args.max_tokens}, "
              f"temperature {args.temperature}")
        texts, generation_s = asyncio.run(generate_group(base_url, model, row["question"], args, first_seed=1))
        print(f"generation of one group: {generation_s:.1f} s; responses {words(texts)}, "
              f"{len(set(texts))} distinct")
        cold = time_embedding(args.embedding_model, texts)
        warm = warm_times(args.embedding_model, texts, args.repeats)
        median = statistics.median(warm)
        print(f"embedding cold start (import + load + first batch, once per process): {cold:.2f} s")
        print(f"embedding per group, warm: median {median * 1000:.0f} ms over {args.repeats} "
              f"(min {min(warm) * 1000:.0f}, max {max(warm) * 1000:.0f})")
        print(f"ratio embedding / generation: {median / generation_s:.2%} (target < 5%)")
        if args.contended:
            busy, busy_generation_s = asyncio.run(contended(base_url, model, row["question"], texts, args))
            busy_median = statistics.median(busy)
            print(f"embedding non-stop while a second group generates "
                  f"({busy_generation_s:.1f} s, {len(busy)} batches): "
                  f"median {busy_median * 1000:.0f} ms per group; ratio {busy_median / busy_generation_s:.2%}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
