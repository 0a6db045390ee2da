"""The Redis password never lands in saved results or logs: it is passed by the name of an
environment variable (``buffer_password_var``), a password inside ``buffer_url`` is refused,
and a real ``vf-eval -s`` run against a real password-protected ``redis-server`` leaves the
password in no file it wrote and in nothing it printed. Also: an ACL user named in the URL,
and ``rediss://`` against a TLS-only server with a self-signed certificate."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import vf_eval
from redis_fixture import (  # noqa: F401 (fixtures)
    FAST_RETRIES,
    PASSWORD_VAR,
    RedisServer,
    files_holding,
    fresh_prefix,
    own_server,
    redis_store,
)
from scripted_server import ScriptedServer
from self_improve import load_environment
from self_improve.buffer.redis_buffer import RedisBuffer
from self_improve.exit_config import ExitConfig
from self_improve.exit_loop import ExitLoop
from self_improve.grouping import Group, Task

pytestmark = [pytest.mark.redis, pytest.mark.vf_eval]  # the real parts this file's tests start (pyproject's markers)

PASSWORD = "pw-" + "k7Qz9vXe2LmR4tYw"
"""Long and unlike anything else a run prints, so finding it anywhere means it leaked."""

URLS_WITH_A_PASSWORD: list[tuple[str, str]] = [
    ("redis://:{pw}@10.0.0.5:6379/0", "its user info"),
    ("redis://alice:{pw}@10.0.0.5:6379/0", "its user info"),
    ("rediss://10.0.0.5:6379/0?password={pw}", "the query parameter 'password'"),
    ("rediss://10.0.0.5:6379/0?ssl_ca_certs=/ca.crt&ssl_password={pw}", "the query parameter 'ssl_password'"),
    ("unix:///run/redis.sock?db=0&password={pw}", "the query parameter 'password'"),
]


def base_group(task_id: str = "t0") -> Group:
    return Group(task=Task(task_id, f"question {task_id}", "1"), parent_id=None, history=(), history_correct=(),
                 kind="base", responses=("a", "b", "c", "d"), correct=(True, False, False, False),
                 returns=(1.0, 0.0, 0.0, 0.0))


@pytest.mark.parametrize(("url", "where"), URLS_WITH_A_PASSWORD)
def test_a_password_in_buffer_url_is_refused_naming_the_argument_but_not_the_password_before_any_data_loads(
        tmp_path: Path, url: str, where: str) -> None:
    with pytest.raises(ValueError, match=r"^buffer_url: must not hold a password") as refused:
        load_environment(buffer_url=url.format(pw=PASSWORD), dataset_name=str(tmp_path / "never-read"))
    message = str(refused.value)
    assert where in message and "buffer_password_var" in message and PASSWORD not in message
    with pytest.raises(ValueError, match=r"^buffer_url: must not hold a password") as refused_by_store:
        RedisBuffer(url.format(pw=PASSWORD), capacity=8, kappa=10.0, seed=0, store_responses=True)
    assert PASSWORD not in str(refused_by_store.value)


@given(st.text(min_size=1, max_size=40), st.booleans())
def test_any_password_in_the_url_is_refused_and_never_repeated(password: str, with_user: bool) -> None:
    encoded = quote(password, safe="")
    url = f"redis://{'alice' if with_user else ''}:{encoded}@127.0.0.1:6379/0"
    with pytest.raises(ValueError) as refused:
        ExitConfig(buffer_url=url).resolved()
    message = str(refused.value)
    assert message.startswith("buffer_url: must not hold a password")
    assert f":{password}@" not in message and f":{encoded}@" not in message and url not in message


def test_a_url_with_only_a_user_name_and_the_ca_is_accepted() -> None:
    ExitConfig(buffer_url="rediss://alice@10.0.0.5:6379/0?ssl_ca_certs=/etc/ca.crt").resolved()


@pytest.mark.parametrize("value", ["", None])
def test_an_unset_or_empty_password_variable_is_refused_naming_the_argument_and_variable_before_any_data_loads(
        tmp_path: Path, monkeypatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv(PASSWORD_VAR, raising=False)
    else:
        monkeypatch.setenv(PASSWORD_VAR, value)
    state = "unset" if value is None else "empty"
    with pytest.raises(ValueError, match=f"^buffer_password_var: the environment variable {PASSWORD_VAR} is {state}"):
        load_environment(buffer_url="redis://127.0.0.1:6379/0", buffer_password_var=PASSWORD_VAR,
                         dataset_name=str(tmp_path / "never-read"))
    with pytest.raises(ValueError, match=f"^buffer_password_var: the environment variable {PASSWORD_VAR} is {state}"):
        RedisBuffer("redis://127.0.0.1:1/0", capacity=8, kappa=10.0, seed=0, store_responses=True,
                    password_var=PASSWORD_VAR)


@pytest.mark.parametrize("value", [PASSWORD, "my secret!", "9LIVES", "", 42])
def test_a_password_given_as_the_variable_name_is_refused_without_repeating_it(value: object) -> None:
    with pytest.raises(ValueError, match="^buffer_password_var: must be the name of an environment variable") \
            as refused:
        ExitConfig(buffer_url="redis://127.0.0.1:6379/0", buffer_password_var=value).resolved()  # type: ignore
    assert str(value) not in str(refused.value) or value == ""


def test_a_password_variable_without_buffer_url_is_refused(monkeypatch) -> None:
    monkeypatch.setenv(PASSWORD_VAR, PASSWORD)
    with pytest.raises(ValueError, match="^buffer_password_var: needs buffer_url"):
        ExitConfig(buffer_password_var=PASSWORD_VAR).resolved()


def test_the_password_variable_is_read_when_the_worker_connects(own_server, monkeypatch) -> None:  # noqa: F811
    own_server.password = PASSWORD
    own_server.start()
    monkeypatch.setenv(PASSWORD_VAR, PASSWORD)
    config = ExitConfig(buffer_url=own_server.url, buffer_prefix=fresh_prefix(), buffer_password_var=PASSWORD_VAR)
    loop = ExitLoop.from_config(config.resolved())
    loop.store.observe(base_group())
    assert len(loop.store) == 4
    monkeypatch.setenv(PASSWORD_VAR, "not-the-password")  # a worker started later reads the variable again
    with pytest.raises(ValueError, match=r"^buffer_url: cannot reach redis://127\.0\.0\.1:\d+/0 \(") as refused:
        ExitLoop.from_config(config)
    assert PASSWORD not in str(refused.value) and "not-the-password" not in str(refused.value)


def test_an_acl_user_in_the_url_reaches_the_store_with_its_password_by_variable_name(
        tmp_path: Path, monkeypatch) -> None:
    server = RedisServer(tmp_path, password=PASSWORD, username="exit-worker").start()  # the default user is off
    try:
        monkeypatch.setenv(PASSWORD_VAR, PASSWORD)
        store = redis_store(server.url, password_var=PASSWORD_VAR)
        assert server.url.startswith("redis://exit-worker@")
        store.observe(base_group())
        store.load_state_dict(store.state_dict())
        store.check_invariants()
        assert len(store) == 4 and store.sample().task.task_id == "t0"
        with pytest.raises(ValueError, match=r"^buffer_url: cannot reach .*no permissions to access one of the keys"):
            redis_store(server.url, password_var=PASSWORD_VAR, prefix="other-run")  # keys outside ~test-*
        with pytest.raises(ValueError, match=r"^buffer_url: cannot reach redis://127"):
            redis_store(server.url.replace("exit-worker@", ""), password_var=PASSWORD_VAR)  # default user: off
    finally:
        server.stop()


def test_rediss_with_a_self_signed_ca_reaches_a_tls_only_server_and_verifies_its_certificate(
        tmp_path: Path, monkeypatch) -> None:
    server = RedisServer(tmp_path, password=PASSWORD, tls=True).start()
    try:
        monkeypatch.setenv(PASSWORD_VAR, PASSWORD)
        config = ExitConfig(buffer_url=server.url, buffer_prefix=fresh_prefix(), buffer_password_var=PASSWORD_VAR)
        store = ExitLoop.from_config(config.resolved()).store
        store.observe(base_group())
        assert len(store) == 4 and store.sample().task.task_id == "t0"
        untrusted = server.url.split("?")[0]  # no CA named: the system's CAs do not trust the certificate
        with pytest.raises(ValueError, match=r"^buffer_url: cannot reach rediss://.*CERTIFICATE_VERIFY_FAILED"):
            RedisBuffer(untrusted, capacity=512, kappa=10.0, seed=0, store_responses=True,
                        retry_delays=FAST_RETRIES, password_var=PASSWORD_VAR)
        plain = server.url.replace("rediss://", "redis://").split("?")[0]
        with pytest.raises(ValueError, match=r"^buffer_url: cannot reach redis://"):
            RedisBuffer(plain, capacity=512, kappa=10.0, seed=0, store_responses=True, timeout_s=1.0,
                        retry_delays=FAST_RETRIES, password_var=PASSWORD_VAR)
    finally:
        server.stop()


def test_vf_eval_with_the_password_by_variable_name_saves_and_prints_no_trace_of_it(
        own_server, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    """Where env args land (verifiers 0.3: ``metadata.json``'s ``env_args``, ``env_server.log``'s
    ``Initializing ZMQEnvServer ... env_args=``), the variable's name does and its value does not.
    A marker in ``buffer_prefix`` shows the walk finds what env args carry."""
    own_server.password = PASSWORD
    own_server.start()
    monkeypatch.setenv(PASSWORD_VAR, PASSWORD)
    marker = f"leak-marker-{uuid.uuid4().hex}"
    output = tmp_path / "run"
    output.mkdir()
    server = ScriptedServer().start()
    try:
        rows, printed = vf_eval(server.url, output, "-n", "2", "-r", "4",
                                env_args={"buffer_url": own_server.url, "buffer_password_var": PASSWORD_VAR,
                                          "buffer_prefix": f"test-{marker}", "min_buffer_size": 4})
    finally:
        server.stop()
    assert len(rows) == 8
    store = redis_store(own_server.url, capacity=512, prefix=f"test-{marker}", password_var=PASSWORD_VAR)
    assert store.step == 2, "the run reached the password-protected store"
    (metadata,) = output.rglob("metadata.json")
    assert json.loads(metadata.read_text())["env_args"]["buffer_password_var"] == PASSWORD_VAR
    holding_marker = {path.name for path in files_holding(output, marker)}
    assert {"metadata.json", "env_server.log"} <= holding_marker, "the walk must see where env args are written"
    assert files_holding(output, PASSWORD) == []
    assert PASSWORD not in printed
