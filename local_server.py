"""llama-cpp-python's OpenAI-compatible server for the built-in model, as a child process on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from types import FrameType, TracebackType

from local_weights import MODEL_NAME, LocalModelError

__all__ = ["DEFAULT_N_CTX", "DEFAULT_STARTUP_TIMEOUT_S", "STOP_GRACE_S", "LocalModelError", "LocalServer",
           "free_port", "port_is_free", "raise_on_sigterm", "tail"]

DEFAULT_STARTUP_TIMEOUT_S: float = 180.0
"""Loading the 1.1 GB model takes about 5 s on a quiet machine; 180 s covers a loaded one."""

DEFAULT_N_CTX: int = 4096
"""Context length in tokens: a self-improve prompt holding a 768-token previous answer needs about 1,300."""

STOP_GRACE_S: float = 10.0
"""Seconds between SIGTERM and SIGKILL when stopping the server."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether a server could bind 127.0.0.1:``port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class LocalServer:
    """llama-cpp-python's OpenAI-compatible server as a child process on 127.0.0.1.

    A context manager: the server runs in its own process group (so a Ctrl-C
    meant for the caller does not kill it half-way) and is stopped by its
    process id on leaving the block, whether by success, error or Ctrl-C.

    Args:
        model_path: the GGUF file to serve.
        port: the port to listen on; default a free one.
        log_path: where the server's stdout and stderr go; default a new file
            ``llama-server-<port>-<time>.log`` in the system temp directory.
        n_ctx: context length in tokens (default :data:`DEFAULT_N_CTX`).
        threads: CPU threads for generation; default all cores.
        startup_timeout_s: how long to wait for the health check
            (default :data:`DEFAULT_STARTUP_TIMEOUT_S`).
        model_alias: the model name the server reports (default :data:`MODEL_NAME`).
    """

    def __init__(
        self,
        model_path: Path,
        port: int | None = None,
        log_path: Path | None = None,
        n_ctx: int = DEFAULT_N_CTX,
        threads: int | None = None,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        model_alias: str = MODEL_NAME,
    ) -> None:
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
            raise ValueError(f"port: must be an integer in [1, 65535] or None, got {port!r}")
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 1:
            raise ValueError(f"n_ctx: must be an integer >= 1, got {n_ctx!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads: must be an integer >= 1 or None, got {threads!r}")
        timeout_ok = not isinstance(startup_timeout_s, bool) and isinstance(startup_timeout_s, (int, float))
        if not timeout_ok or not startup_timeout_s > 0:
            raise ValueError(f"startup_timeout_s: must be a number > 0, got {startup_timeout_s!r}")
        self.model_path = Path(model_path)
        self.port = port
        self.log_path = Path(log_path) if log_path is not None else None
        self.n_ctx = n_ctx
        self.threads = threads or os.cpu_count() or 1
        self.startup_timeout_s = float(startup_timeout_s)
        self.model_alias = model_alias
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:<port>/v1``."""
        if self.port is None:
            raise ValueError("base_url: the server has no port before start()")
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """Process id of the running server, None when not started or stopped."""
        return self._process.pid if self._process is not None else None

    def start(self) -> LocalServer:
        """Start the server and return once it answers ``GET /v1/models``.

        Raises:
            LocalModelError: model file missing, port taken, the server exited
                during start, or no answer within ``startup_timeout_s``; the
                last two show the tail of the server log and its path.
        """
        if self._process is not None:
            raise ValueError("start: this server is already running")
        if not self.model_path.is_file():
            raise LocalModelError(f"model file missing: {self.model_path} "
                                  "(run ensure_model() or pass an existing GGUF)")
        if self.port is None:
            self.port = free_port()
        elif not port_is_free(self.port):
            raise LocalModelError(f"port {self.port} on 127.0.0.1 is already in use; "
                                  "choose another port or leave it unset")
        if self.log_path is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"llama-server-{self.port}-{stamp}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path), "--model_alias", self.model_alias,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_threads", str(self.threads), "--n_ctx", str(self.n_ctx),
        ]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self) -> None:
        assert self._process is not None and self.log_path is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            code = self._process.poll()
            if code is not None:
                raise LocalModelError(
                    f"the model server exited with code {code} during start; last lines of {self.log_path}:\n"
                    f"{tail(self.log_path)}"
                )
            if self._answers():
                return
            if time.monotonic() > deadline:
                raise LocalModelError(
                    f"the model server did not answer {self.base_url}/models within {self.startup_timeout_s:g} s; "
                    f"last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            time.sleep(0.25)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> None:
        """Terminate the server by its process id, then kill it after
        :data:`STOP_GRACE_S` seconds if it is still there. Safe to call twice."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()


def raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler: turn ``kill PID`` into ``SystemExit`` so ``with`` blocks
    unwind, the server this process started is stopped and outputs are written."""
    raise SystemExit(128 + signum)
