"""Groups per second of the real ``vf-eval self-improve`` with 1 and 2 env-server workers
sharing one Redis buffer, against the scripted server answering at once in its own process.

Also runs 1 worker with the in-process buffer as the reference. Repetitions are
interleaved (in-process, Redis x 1, Redis x 2, ...), so the ratios come from one run. Each
run uses a fresh key prefix on one private ``redis-server`` (loopback, no persistence).

    .venv/bin/python scripts/bench_workers.py            # -n 400 -r 8 -c 256, 3 repetitions
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vf_eval_runs import scripted_server_process, vf_eval_seconds  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_redis(folder: str) -> tuple[subprocess.Popen[bytes], str]:
    """A private ``redis-server`` on a free loopback port; returns it and its URL once it answers."""
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", folder,
                               "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as probe:
                probe.sendall(b"PING\r\n")
                if probe.recv(16).startswith(b"+PONG"):
                    return server, f"redis://127.0.0.1:{port}/0"
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                raise
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--num-examples", type=int, default=400, help="vf-eval -n (default 400)")
    parser.add_argument("-r", "--rollouts-per-example", type=int, default=8, help="vf-eval -r (default 8)")
    parser.add_argument("-c", "--max-concurrent", type=int, default=256, help="vf-eval -c (default 256)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (default 3)")
    args = parser.parse_args(argv)
    groups = args.num_examples
    runs = {"in-process buffer, 1 worker": (None, 1), "Redis buffer, 1 worker": ("redis", 1),
            "Redis buffer, 2 workers": ("redis", 2)}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory() as folder, scripted_server_process() as url:
        redis, redis_url = start_redis(folder)
        try:
            for rep in range(args.reps):
                for name, (store, workers) in runs.items():
                    env_args = {"strategy": "diverge"}
                    if store:
                        env_args |= {"buffer_url": redis_url, "buffer_prefix": f"bench-{uuid.uuid4().hex}"}
                    elapsed = vf_eval_seconds("self-improve", url, args.num_examples, args.rollouts_per_example,
                                              args.max_concurrent, env_args, ("--num-workers", str(workers)))
                    seconds[name].append(elapsed)
                    print(f"  rep {rep + 1} {name:28s} {elapsed:7.2f} s", file=sys.stderr)
        finally:
            redis.terminate()
            redis.wait(timeout=10)
    reference = statistics.median(seconds["in-process buffer, 1 worker"])
    print(f"`.venv/bin/python scripts/bench_workers.py {' '.join(argv if argv is not None else sys.argv[1:])}`: "
          f"vf-eval -n {args.num_examples} -r {args.rollouts_per_example} -c {args.max_concurrent}, "
          f"{args.reps} interleaved repetitions, {os.cpu_count()} CPU cores shared by vf-eval, its workers, "
          "the scripted server and redis-server\n")
    print("| run | median s | groups/s | vs in-process, 1 worker |")
    print("|---|---|---|---|")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {groups / median:.1f} | {reference / median:.3f} |")


if __name__ == "__main__":
    main()
