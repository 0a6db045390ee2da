"""Latency and payload of the Redis store next to the in-process buffer, measured in one run.

For each capacity N, both stores are filled with the same base groups of
G=8 responses (binary returns, success rate uniform per task, so about half
the children are solved with score 0), then:

* ``sample()``: median and p99 over ``--samples`` calls of each store;
* ``observe(group)``: a self-improve group of G=8 new responses built from a
  parent the file buffer drew, observed by both stores (so their contents
  stay identical), median and p99 over ``--observes`` groups;
* ``metrics()`` and ``state_dict()``: median over a few calls;
* server side: microseconds the server spent in commands per call (``INFO
  commandstats``), the bytes it received and sent per call (``INFO stats``,
  protocol included), and the memory of the full store (``INFO memory``).

Responses are ``--response-chars`` characters (default 4,000, about 1,000
tokens, as ``scripts/bench_overhead.py``). Without ``--url`` a private
``redis-server`` on a free port of 127.0.0.1 is started (``--save ''
--appendonly no``) and stopped at the end; latency is then loopback TCP.

    .venv/bin/python scripts/bench_store.py                      # N = 512 and 10,000 (about 1 minute)
    .venv/bin/python scripts/bench_store.py --url redis://host:6379/0 --sizes 512
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from self_improve.buffer.exit_buffer import ExitBuffer  # noqa: E402
from self_improve.buffer.redis_buffer import RedisBuffer, redact  # noqa: E402
from self_improve.grouping import Group, Task  # noqa: E402

G: int = 8
"""Rollouts per group (the paper's group size)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="an existing server (default: start a private redis-server)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 10_000], help="capacities N")
    parser.add_argument("--samples", type=int, default=2_000, help="sample() calls per store and N")
    parser.add_argument("--observes", type=int, default=500, help="observed groups per store and N")
    parser.add_argument("--response-chars", type=int, default=4_000, help="characters per response")
    return parser.parse_args(argv)


@contextmanager
def private_server() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port, stopped by its pid."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", folder,
                                    "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port)
            for _ in range(500):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.01)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait()


def text(serial: int, chars: int) -> str:
    """A distinct response of ``chars`` characters."""
    head = f"response {serial}: "
    return head + "x" * max(chars - len(head), 0)


def random_group(task: Task, parent, rng: np.random.Generator, serial: int, chars: int) -> Group:
    correct = tuple(bool(x) for x in rng.random(G) < rng.random())
    return Group(task=task, parent_id=parent.instance_id if parent else None,
                 history=parent.iterates if parent else (), history_correct=parent.iterate_correct if parent else (),
                 kind="improve" if parent else "base", responses=tuple(text(serial + i, chars) for i in range(G)),
                 returns=tuple(float(c) for c in correct), correct=correct)


def timed_us(operation: Callable[[], object]) -> float:
    started = time.perf_counter()
    operation()
    return (time.perf_counter() - started) * 1e6


class Traffic:
    """What the server received and sent (bytes) and spent in commands (us) on one call:
    ``INFO stats`` and ``INFO commandstats`` read just before and after it, less the share of
    one reading (measured by two readings in a row)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def _read(self) -> np.ndarray:
        stats = self.client.info("stats")
        commands = self.client.info("commandstats")
        busy = sum(value["usec"] for name, value in commands.items() if name != "cmdstat_info")
        return np.array([stats["total_net_input_bytes"], stats["total_net_output_bytes"], busy], dtype=np.int64)

    def measure(self, operation: Callable[[], object]) -> tuple[float, np.ndarray]:
        first, second = self._read(), self._read()
        latency = timed_us(operation)
        return latency, self._read() - second - (second - first)


def row(label: str, name: str, latencies: list[float], reference: float | None, used: np.ndarray | None) -> str:
    """One table line: median and p99, the ratio to the file store, and the server's share per call."""
    median, p99 = float(np.median(latencies)), float(np.percentile(latencies, 99))
    ratio = f"{median / reference:,.1f}x" if reference else ""
    sent, received, busy = (f"{value:,.0f}" for value in used) if used is not None else ("", "", "")
    return f"| {label} | {name} | {median:,.0f} | {p99:,.0f} | {ratio} | {busy} | {sent} | {received} |"


def bench(url: str, capacity: int, args: argparse.Namespace) -> list[str]:
    rng = np.random.default_rng(capacity)
    file = ExitBuffer(capacity=capacity, seed=0)
    store = RedisBuffer(url, capacity=capacity, kappa=10.0, seed=0, store_responses=True,
                        prefix=f"bench-{uuid.uuid4().hex}")
    memory_before = redis.Redis.from_url(url).info("memory")["used_memory"]
    serial = 0
    while len(file) < capacity:
        group = random_group(Task(f"train-{serial}", "question", "1"), None, rng, serial * G, args.response_chars)
        file.observe(group)
        store.observe(group)
        serial += 1
    memory = redis.Redis.from_url(url).info("memory")["used_memory"] - memory_before
    traffic = Traffic(url)
    timings: dict[str, tuple[list[float], list[float], list[np.ndarray]]] = {}

    def record(label: str, file_call: Callable[[], object], redis_call: Callable[[], object]) -> None:
        file_us, redis_us, used = timings.setdefault(label, ([], [], []))
        file_us.append(timed_us(file_call))
        latency, share = traffic.measure(redis_call)
        redis_us.append(latency)
        used.append(share)

    for _ in range(args.samples):
        record("sample()", file.sample, store.sample)
    for n in range(args.observes):
        parent = file.sample()
        group = random_group(parent.task, parent, rng, 10**8 + n * G, args.response_chars)
        record("observe(G=8)", lambda: file.observe(group), lambda: store.observe(group))  # noqa: B023
    for label, method, calls in (("metrics()", "metrics", 20), ("state_dict()", "state_dict", 3)):
        for _ in range(calls):
            record(label, getattr(file, method), getattr(store, method))
    depth = file.metrics()["buffer_depth_mean"]
    lines = [f"N = {capacity:,}: server memory of the full store {memory / 2**20:,.1f} MiB "
             f"({memory / capacity:,.0f} bytes per instance at depth 0); mean depth {depth:.2f} after the "
             "observed groups.", "",
             "| operation | store | median us | p99 us | redis / file (median) | server busy us / call | "
             "bytes to server / call | bytes from server / call |", "|---|---|---|---|---|---|---|---|"]
    for label, (file_us, redis_us, used) in timings.items():
        lines.append(row(label, "file", file_us, None, None))
        lines.append(row(label, "redis", redis_us, float(np.median(file_us)), np.mean(used, axis=0)))
    store.load_state_dict(ExitBuffer(capacity=capacity).state_dict())  # leave an empty store behind
    return lines + [""]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"Machine: {os.cpu_count()} CPU cores (client and server share them; load average "
          f"{os.getloadavg()[0]:.1f} at start), {platform.python_implementation()} {platform.python_version()}, "
          f"redis-py {redis.__version__}, responses of {args.response_chars:,} characters, G = 8.")
    with nullcontext(args.url) if args.url else private_server() as url:
        server = redis.Redis.from_url(url).info("server")
        print(f"Server: redis {server['redis_version']} at {redact(url)}.\n")
        for capacity in args.sizes:
            print("\n".join(bench(url, capacity, args)))


if __name__ == "__main__":
    main()
