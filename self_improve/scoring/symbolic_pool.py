"""The symbolic half of answer checking: math-verify in worker processes, with a hard bound.

``answer_check`` sends here only boxed text that is not one plain number but
could be GSM8K arithmetic (``\\sqrt{324}``, ``3 \\times 6``). A check that
overruns returns at once as "no verdict"; the worker that ran it rejoins the
pool if it finishes within ``WORKER_GRACE_S``, else it is killed and replaced.
Workers are fresh interpreters (never a fork of the caller, whose ``__main__``
is never re-imported), shared by every thread and event loop of a process.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import re
import select
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

logger = logging.getLogger(__name__)

WORKER_START_TIMEOUT_S: float = 60.0
"""Bound on the one-time start of the symbolic workers (import and warm-up)."""

SYMBOLIC_WORKERS: int = 2
"""Worker processes: one answers while another finishes an overrun or restarts."""

WORKER_GRACE_S: float = 5.0
"""How long a worker may go on with a check that overran before it is killed
and replaced (math-verify's own limits end most overruns sooner)."""

_DIGIT = re.compile(r"\d")

_WARM_UP = (r"\sqrt{324}", r"\sqrt{18}", r"3 \times 6", r"1.8 \cdot 10", r"36 \div 2", "(10 + 8)", "2^3", "18!",
            r"18\pi", "18x", r"18 \pm 1", r"\{18\}", r"\frac{1}{0}")
_OWN_TIMEOUT_S = 1
"""math-verify's own (signal) limit in a worker, so that a worker whose parent
died mid-check still ends soon."""


@functools.lru_cache(maxsize=1024)
def _parsed_gold(gold: str) -> list[object]:
    from math_verify import parse

    return parse(f"${gold}$", parsing_timeout=_OWN_TIMEOUT_S)


def _symbolic_equal(gold: str, predicted: str) -> bool:
    r"""True when math-verify finds every side of ``predicted`` that holds a
    digit equal to ``gold``: ``x = 3 \times 6`` holds, ``17 = 18`` does not
    (math-verify alone takes the last side). Any failure means "not shown equal"."""
    from math_verify import parse, verify

    try:
        target = _parsed_gold(gold)
        sides = [parse(f"${side}$", parsing_timeout=_OWN_TIMEOUT_S)
                 for side in predicted.split("=") if _DIGIT.search(side)]
        return bool(target and sides) and all(
            side and verify(target, side, timeout_seconds=_OWN_TIMEOUT_S) for side in sides
        )
    except Exception:  # math-verify raises many types on odd input
        return False


def _serve() -> None:
    """Worker main: warm math-verify up, say "ready", then answer each JSON
    ``[gold, predicted]`` line on stdin with ``1`` or ``0``."""
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    replies = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # whatever the libraries print goes to stderr, not into the replies
    for text in _WARM_UP:
        _symbolic_equal("18", text)
    try:
        replies.write(b"ready\n")
        for line in sys.stdin.buffer:
            replies.write(b"1\n" if _symbolic_equal(*json.loads(line)) else b"0\n")
    except BrokenPipeError:  # the parent is gone
        return


_WORKER_MAIN = ("import sys; sys.path.insert(0, sys.argv[1]); "
                "from self_improve.scoring import symbolic_pool; symbolic_pool._serve()")


class _Worker:
    """A math-verify process: a fresh interpreter, so the caller's ``__main__``
    is never re-imported; it exits when its stdin closes."""

    def __init__(self) -> None:
        here = str(Path(__file__).resolve().parents[2])  # the folder holding the package
        self.process = subprocess.Popen([sys.executable, "-c", _WORKER_MAIN, here],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def reply(self, timeout_s: float, request: tuple[str, str] | None = None) -> bytes | None:
        """Send ``request`` if any; the next reply, b"" once the worker died, or None after ``timeout_s``."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        try:
            if request is not None:
                stdin.write(json.dumps(request).encode() + b"\n")
                stdin.flush()
            readable, _, _ = select.select([stdout], [], [], timeout_s)
        except OSError:
            return b""
        return os.read(stdout.fileno(), 64) if readable else None

    def stop(self) -> None:
        self.process.kill()
        self.process.communicate(timeout=5)  # reaps it and closes the pipes


class _SymbolicPool:
    """``SYMBOLIC_WORKERS`` workers shared by every thread and event loop of a
    process. A check that overruns returns at once; its worker rejoins the pool
    when it finishes, or is killed and replaced after ``WORKER_GRACE_S``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = False

    def executor(self) -> ThreadPoolExecutor:
        """Start the workers on first use; returns the threads that wait on them for coroutines."""
        with self._lock:
            if not self._started:
                self._started = True
                self._idle: queue.Queue[_Worker] = queue.Queue()
                self._ready = threading.Event()
                self._ready_at = 0.0
                self._threads = ThreadPoolExecutor(max_workers=32, thread_name_prefix="answer-check")
                for _ in range(SYMBOLIC_WORKERS):
                    self._recover(None)
            return self._threads

    def wait_idle(self, timeout_s: float) -> bool:
        """True once a worker is idle, waiting at most ``timeout_s``."""
        self.executor()
        try:
            self._idle.put(self._idle.get(timeout=timeout_s))
        except queue.Empty:
            return False
        return True

    def ask(self, gold: str, predicted: str, called_at: float, timeout_s: float) -> bool | None:
        """math-verify's verdict, or None when none came within ``timeout_s`` of
        ``called_at`` (or of the first worker's start, if later)."""
        self.executor()
        self._ready.wait(WORKER_START_TIMEOUT_S)
        deadline = max(called_at, self._ready_at) + timeout_s
        try:
            worker: _Worker | None = self._idle.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:  # every worker busy or starting
            worker = None
        reply = worker.reply(max(0.0, deadline - time.monotonic()), (gold, predicted)) if worker else None
        if worker is not None and reply in (b"1\n", b"0\n"):
            self._idle.put(worker)
            return reply == b"1\n"
        logger.debug("answer_check: no symbolic verdict on %r within %.2f s", predicted[:80], timeout_s)
        if worker is not None:
            self._recover(worker)
        return None

    def _recover(self, old: _Worker | None) -> None:
        threading.Thread(target=self._settle, args=(old,), daemon=True, name="answer-check-worker").start()

    def _settle(self, old: _Worker | None) -> None:
        """Return ``old`` to the pool if it still answers within ``WORKER_GRACE_S``;
        otherwise (or with no ``old``) start a new worker in its place."""
        if old is not None:
            if old.reply(WORKER_GRACE_S) in (b"1\n", b"0\n"):
                self._idle.put(old)
                return
            logger.warning("answer_check: a math-verify worker died or ran %.0f s past a check; restarted",
                           WORKER_GRACE_S)
            old.stop()
        worker = _Worker()
        if worker.reply(WORKER_START_TIMEOUT_S) == b"ready\n":
            if not self._ready.is_set():
                self._ready_at = time.monotonic()
            self._idle.put(worker)
        else:
            logger.error("answer_check: a math-verify worker did not start; symbolic checks will time out")
            worker.stop()
        self._ready.set()


POOL = _SymbolicPool()
os.register_at_fork(after_in_child=POOL.__init__)  # a forked child starts its own workers


def warm_up(timeout_s: float = WORKER_START_TIMEOUT_S) -> None:
    """Start the symbolic workers now and wait until one is idle. Raises
    ``RuntimeError`` when none is within ``timeout_s``."""
    if not POOL.wait_idle(timeout_s):
        raise RuntimeError(f"answer_check: no math-verify worker was ready within {timeout_s} s")
