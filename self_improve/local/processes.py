"""Child processes of the local runners: how they are stopped, and SIGTERM as an exception."""

from __future__ import annotations

import subprocess
from types import FrameType

__all__ = ["STOP_GRACE_S", "raise_on_sigterm", "stop_process"]

STOP_GRACE_S: float = 10.0
"""Seconds between SIGTERM and SIGKILL when stopping a child process."""


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after :data:`STOP_GRACE_S` seconds if it is still there; nothing if it has exited."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler: turn ``kill PID`` into ``SystemExit`` so ``with`` blocks
    unwind, the server this process started is stopped and outputs are written."""
    raise SystemExit(128 + signum)
