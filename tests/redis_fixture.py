"""A real ``redis-server`` for the Redis store's tests, and the helpers they share.

Each server listens on a free port of 127.0.0.1, keeps its files in a
temporary folder, persists nothing unless asked (``--save '' --appendonly
no``) and is stopped by its pid. It can require a password (for the default
user, or for an ACL user of its own), and speak only TLS with a certificate
signed by a throwaway CA (``openssl``). Its URL never holds the password: the
store reads it from ``PASSWORD_VAR``, as the environment does. Test modules
import the fixtures by name.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from self_improve.buffer.redis_buffer import RedisBuffer
from self_improve.grouping import Group, Task

FAST_RETRIES: tuple[float, ...] = (0.01, 0.02, 0.04)
"""Retry delays for tests: an outage is declared after 70 ms instead of 2.1 s."""

PASSWORD_VAR = "SELF_IMPROVE_TEST_REDIS_PASSWORD"
"""The environment variable the tests name as ``buffer_password_var``."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def self_signed_tls(folder: Path) -> Path:
    """A throwaway CA (``ca.crt``) and a server certificate for 127.0.0.1 it signed
    (``server.crt``, ``server.key``), made with ``openssl`` in ``folder``; returns ``folder``."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed (apt-get install openssl)")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for command in (
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=self-improve test CA"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1"],
            ["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "1", "-extfile", "san.cnf"]):
        subprocess.run(["openssl", *command], cwd=folder, check=True, capture_output=True)
    return folder


class RedisServer:
    """One ``redis-server`` process; ``stop`` and ``start`` again keep its port and folder.

    ``password`` protects the default user (``--requirepass``), or, with ``username``, an ACL
    user of that name that may touch only keys starting with ``test-`` (the default user is
    then off). ``tls`` serves only TLS on the port, with ``self_signed_tls``'s certificate.
    """

    def __init__(self, folder: Path, password: str | None = None, appendonly: bool = False,
                 username: str | None = None, tls: bool = False) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed (scripts/test.sh installs it with apt-get)")
        self.folder, self.password, self.appendonly = folder, password, appendonly
        self.username, self.tls = username, tls
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL: its user name if any, never the password; with TLS, ``rediss://``
        naming the CA that signed the server's certificate."""
        user = f"{self.username}@" if self.username else ""
        if self.tls:
            return f"rediss://{user}127.0.0.1:{self.port}/0?ssl_ca_certs={self.folder / 'ca.crt'}"
        return f"redis://{user}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        command = ["redis-server", "--bind", "127.0.0.1", "--dir", str(self.folder),
                   "--save", "", "--daemonize", "no", "--logfile", str(self.folder / "redis.log")]
        if self.tls:
            if not (self.folder / "ca.crt").exists():
                self_signed_tls(self.folder)
            command += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", "server.crt",
                        "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no"]
        else:
            command += ["--port", str(self.port)]
        command += ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else ["--appendonly", "no"]
        if self.password and self.username:
            command += ["--user", "default", "off", "--user", self.username, "on", f">{self.password}", "~test-*",
                        "+@all", "-@dangerous"]
        elif self.password:
            command += ["--requirepass", self.password]
        self.process = subprocess.Popen(command, cwd=self.folder, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, password=self.password, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    client.close()
                    return self
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    log = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM (the server flushes its append-only file) and wait for the pid to exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server shared by the session; tests isolate themselves with ``fresh_prefix``."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def password_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server with a password (``--requirepass``) shared by the session; the tests put it in
    the environment variable their ``buffer_password_var`` names."""
    server = RedisServer(tmp_path_factory.mktemp("redis-password"), password=f"pw-{uuid.uuid4().hex}").start()
    yield server
    server.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test alone (to stop, restart, protect with a password)."""
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def fresh_prefix() -> str:
    """A key prefix no other store uses."""
    return f"test-{uuid.uuid4().hex}"


def redis_store(url: str, capacity: int = 8, kappa: float = 10.0, seed: int = 0, store_responses: bool = True,
                prefix: str | None = None, password_var: str | None = None) -> RedisBuffer:
    """A store on ``url`` under a fresh prefix, with ``FAST_RETRIES``."""
    return RedisBuffer(url, capacity=capacity, kappa=kappa, seed=seed, store_responses=store_responses,
                       prefix=prefix or fresh_prefix(), retry_delays=FAST_RETRIES, password_var=password_var)


def files_holding(folder: Path, secret: str) -> list[Path]:
    """Every file under ``folder`` (walked whole, binary or text) whose bytes contain ``secret``."""
    needle = secret.encode()
    return [path for path in sorted(folder.rglob("*")) if path.is_file() and needle in path.read_bytes()]


def group_for(task: Task, parent, responses: tuple[str, ...], correct: tuple[bool, ...],
              returns: tuple[float, ...] | None = None) -> Group:
    """A base group (``parent`` None) or a self-improvement group of ``parent``."""
    return Group(task=parent.task if parent else task, parent_id=parent.instance_id if parent else None,
                 history=parent.iterates if parent else (), history_correct=parent.iterate_correct if parent else (),
                 kind="improve" if parent else "base", responses=responses, correct=correct,
                 returns=returns if returns is not None else tuple(float(c) for c in correct))
