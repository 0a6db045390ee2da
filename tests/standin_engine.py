"""A stand-in for llama.cpp's ``llama-server`` in tests of what happens around the engine.

It takes llama-server's command line, serves the scripted OpenAI server on ``--port``, and
can die the way the real engine does, which no test can make the real one do on demand:

* ``STANDIN_LOG``: a line printed at start, as llama-server prints its ``system_info``;
* ``STANDIN_CRASH_AFTER``: completions answered before the process kills itself with
  SIGSEGV (0: at the first, as llama.cpp's AMX path does on the CPUs it breaks on);
* ``STANDIN_BEHAVIOUR``: every answer's behaviour (``scripted_server.BEHAVIOURS``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scripted_server import ScriptedServer, cycle_policy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", type=Path, required=True)
    args, _ = parser.parse_known_args()
    if not args.model.is_file():
        sys.exit(f"error: failed to load model '{args.model}'")
    behaviour = os.environ.get("STANDIN_BEHAVIOUR")
    server = ScriptedServer(policy=(lambda request: behaviour) if behaviour else cycle_policy(), port=args.port)
    crash_after = int(os.environ.get("STANDIN_CRASH_AFTER", "-1"))
    answer, answered, lock = server.answer, [0], threading.Lock()

    def answer_or_crash(body):
        with lock:
            if answered[0] == crash_after:
                # At this thread: kill(getpid()) lets the kernel wake another thread to dump
                # core while this one goes on to write the reply (a race the tests saw).
                signal.pthread_kill(threading.get_ident(), signal.SIGSEGV)
                threading.Event().wait()  # never reply, whatever the signal's path
            answered[0] += 1
        return answer(body)

    server.answer = answer_or_crash
    print(os.environ.get("STANDIN_LOG", "system_info: n_threads = 2 | CPU : AVX2 = 1 |"), flush=True)
    server.start()
    print(f"main: server is listening on http://127.0.0.1:{args.port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
