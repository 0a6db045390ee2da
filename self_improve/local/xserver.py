"""The prebuilt engine as a process of its own: llama.cpp's server from the ``xllamacpp`` wheel.

``python -m self_improve.local.xserver --model F --port P ...`` takes the flags of
``llama-server`` that :class:`~self_improve.local.server.LocalServer` passes and serves
llama.cpp's OpenAI-compatible HTTP server on 127.0.0.1 until it gets SIGTERM. Running it in a
child process, not inside the caller, keeps what makes failures loud the same for both
engines: an exit status (a crash is a signal, not a dead caller), a log file, and a process id
to stop. The CPU check comes first: the wheel is built for AVX2, and a CPU without it is
refused with the fallback named instead of dying on an illegal instruction.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from self_improve.local.cpu import require_avx2


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """llama-server's flags that :meth:`LocalServer.command` uses; others are refused."""
    parser = argparse.ArgumentParser(prog="python -m self_improve.local.xserver",
                                     description="llama.cpp's server from the prebuilt xllamacpp wheel")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--alias", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--parallel", type=int, required=True)
    parser.add_argument("--ctx-size", type=int, required=True)
    parser.add_argument("--no-webui", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until SIGTERM or SIGINT; exit 1 with a message when the CPU or the model is unfit."""
    args = parse_args(argv)
    try:
        require_avx2()
    except ValueError as error:
        sys.exit(f"error: {error}")
    if not args.model.is_file():
        sys.exit(f"error: failed to load model '{args.model}'")
    import xllamacpp  # after the CPU check: the wheel's code needs AVX2

    print(f"system_info: {xllamacpp.get_system_info()}", flush=True)
    params = xllamacpp.CommonParams()
    params.model.path = str(args.model)
    params.model_alias = {args.alias}
    params.hostnames = [args.host]
    params.port = args.port
    params.n_parallel = args.parallel
    params.n_ctx = args.ctx_size
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.ui = False
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = xllamacpp.Server(params)
    print(f"main: server is listening on http://{args.host}:{args.port}", flush=True)
    stop.wait()
    del server
    sys.exit(0)


if __name__ == "__main__":
    main()
