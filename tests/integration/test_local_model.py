"""The built-in local model: set-up errors, the flags sent to vf-eval, failing loudly, and a real server.

The error tests start the real default engine (the prebuilt ``xllamacpp`` server, run as
``python -m self_improve.local.xserver``, installed by the ``local`` extra); the tests of a
server that dies at its first answer or mid-run use ``standin_engine.py``, which takes the
engines' common command line and dies on demand.
Only the tests that load the 1.1 GB model are ``slow``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from scripted_server import ChatRequest, ScriptedServer
from self_improve.local import build
from self_improve.local import cli as local_model
from self_improve.local.cli import LocalModelError, LocalServer
from self_improve.local.server import ENGINES, engine_library

STANDIN = Path(__file__).resolve().parents[1] / "standin_engine.py"
CONSOLE_SCRIPT = Path(sys.executable).with_name("self-improve-local")


@pytest.fixture
def standin_engine(tmp_path: Path) -> Path:
    """An executable that runs the stand-in engine with llama-server's flags."""
    wrapper = tmp_path / "llama-server"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture
def dummy_model(tmp_path: Path) -> Path:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF stand-in")
    return model


def _processes_mentioning(text: str) -> list[int]:
    """Ids of live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_taken_port_is_named_in_the_error(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(LocalModelError, match=f"port {port} .*already in use"):
            LocalServer(model, port=port).start()


def test_missing_model_file_is_named_in_the_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.gguf"
    with pytest.raises(LocalModelError, match=f"model file missing: {missing}"):
        LocalServer(missing).start()


def test_server_dying_during_start_shows_its_log_path_and_tail(tmp_path: Path) -> None:
    not_a_model = tmp_path / "model.gguf"
    not_a_model.write_text("this is not a GGUF file\n")
    log = tmp_path / "server.log"
    server = LocalServer(not_a_model, log_path=log, startup_timeout_s=120)
    with pytest.raises(LocalModelError, match="during start, the model server exited with code") as raised:
        server.start()
    assert str(log) in str(raised.value)
    assert log.read_text().strip().splitlines()[-1] in str(raised.value)
    assert server.pid is None


def test_startup_timeout_stops_the_server_it_started(standin_engine: Path, dummy_model: Path) -> None:
    with pytest.raises(LocalModelError, match="did not answer .* within 0.001 s"):
        LocalServer(dummy_model, startup_timeout_s=0.001, binary=standin_engine).start()
    assert _processes_mentioning(str(dummy_model)) == []


@pytest.mark.parametrize("argument", [{"port": 0}, {"port": 70000}, {"n_ctx": 0}, {"threads": 0},
                                      {"startup_timeout_s": 0}])
def test_out_of_range_server_argument_raises_value_error_naming_it(tmp_path: Path, argument: dict) -> None:
    name = next(iter(argument))
    with pytest.raises(ValueError, match=f"^{name}:"):
        LocalServer(tmp_path / "model.gguf", **argument)


def test_joined_parts_matching_the_checksum_become_the_target(tmp_path: Path) -> None:
    parts = [tmp_path / "a", tmp_path / "b"]
    parts[0].write_bytes(b"hello ")
    parts[1].write_bytes(b"world")
    target = tmp_path / "joined.gguf"
    local_model.join_parts(parts, target, 11, hashlib.sha256(b"hello world").hexdigest())
    assert target.read_bytes() == b"hello world"


def test_joined_parts_with_a_wrong_checksum_raise_and_leave_no_file(tmp_path: Path) -> None:
    parts = [tmp_path / "a"]
    parts[0].write_bytes(b"corrupted")
    target = tmp_path / "joined.gguf"
    with pytest.raises(LocalModelError, match="does not match.*removed"):
        local_model.join_parts(parts, target, 9, hashlib.sha256(b"something else").hexdigest())
    assert sorted(tmp_path.iterdir()) == parts


def _args(*argv: str) -> local_model.LocalRunConfig:
    config, _ = local_model.parse_args(list(argv))
    return config


def test_built_in_server_gets_one_streamed_request_per_group_with_max_tokens_and_its_own_seed(
        scripted_server: ScriptedServer, tmp_path: Path) -> None:
    args = _args("-n", "2", "-r", "3", "-c", "3", "-t", "99", "-o", str(tmp_path))
    command = local_model.vf_eval_command(args, [], scripted_server.url, "scripted", "SCRIPTED_KEY", local=True)
    completed = subprocess.run(command, cwd=tmp_path, env={**os.environ, "SCRIPTED_KEY": "x"},
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    bodies = scripted_server.requests
    assert len(bodies) == 2  # group_request: each group's prompt is evaluated once
    assert [(body["n"], body["stream"]) for body in bodies] == [(3, True)] * 2
    assert {body.get("max_completion_tokens") for body in bodies} == {99}  # llama-server reads it as max_tokens
    assert len({body.get("seed") for body in bodies}) == 2


def test_c_counts_requests_in_flight_across_groups_not_whole_groups(
        scripted_server: ScriptedServer, tmp_path: Path) -> None:
    scripted_server.delay_s = 0.2  # long enough for every admitted request to overlap
    # one request per rollout (-a): with the default group request, 3 slots hold one group of 2 choices at a time
    args = _args("-n", "4", "-r", "2", "-c", "3", "-a", '{"group_request": false}', "-o", str(tmp_path))
    command = local_model.vf_eval_command(args, [], scripted_server.url, "scripted", "SCRIPTED_KEY", local=True)
    assert command[command.index("-c") + 1] == "8"  # vf-eval admits every group; the env's slots decide
    assert json.loads(command[command.index("-a") + 1])["request_slots"] == 3
    completed = subprocess.run(command, cwd=tmp_path, env={**os.environ, "SCRIPTED_KEY": "x"},
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert len(scripted_server.requests) == 8
    assert scripted_server.most_in_flight == 3  # a group's idle slot went to the next group's request


def test_other_endpoints_get_exactly_the_vf_eval_flags(scripted_server: ScriptedServer, tmp_path: Path) -> None:
    args = _args("-b", scripted_server.url, "-m", "scripted", "-n", "1", "-r", "2", "-t", "50", "-o", str(tmp_path))
    command = local_model.vf_eval_command(args, [], scripted_server.url, "scripted", "SCRIPTED_KEY", local=False)
    completed = subprocess.run(command, cwd=tmp_path, env={**os.environ, "SCRIPTED_KEY": "x"},
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    for body in scripted_server.requests:
        assert "seed" not in body and "max_tokens" not in body
        assert body["max_completion_tokens"] == 50


def test_main_against_an_endpoint_prints_averages_of_the_saved_answers(
        scripted_server: ScriptedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIPTED_KEY", "x")
    monkeypatch.chdir(tmp_path)
    code = local_model.main(["-b", scripted_server.url, "-m", "scripted", "-k", "SCRIPTED_KEY",
                             "-n", "3", "-r", "4", "-a", '{"strategy": "grpo"}', "-o", str(tmp_path / "out")])
    assert code == 0
    printed = capsys.readouterr().out
    results = local_model.find_results(tmp_path / "out")
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    served_solved = sum(s.behaviour == "correct" for s in scripted_server.served) / len(scripted_server.served)
    assert len(rows) == len(scripted_server.served) == 12
    assert f"solved {served_solved:.3f}" in " ".join(printed.split())
    assert f"saved results: {results}" in printed
    assert "groups by step: base 3, improve 0, diverge 0" in printed


def test_an_unknown_engine_is_a_usage_error_naming_the_engines(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        local_model.parse_args(["--engine", "turbo"])
    assert raised.value.code == 2
    assert "engine (--engine): must be one of prebuilt, compiled, got 'turbo'" in capsys.readouterr().err


def test_main_without_a_model_name_for_an_endpoint_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        local_model.main(["-b", "http://127.0.0.1:9/v1"])
    assert raised.value.code == 2
    assert "-m/--model" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.llama_server
def test_real_server_returns_a_real_completion(tmp_path: Path) -> None:
    with LocalServer(local_model.ensure_model(), n_ctx=1024, log_path=tmp_path / "server.log") as server:
        client = OpenAI(base_url=server.base_url, api_key="local")
        reply = client.chat.completions.create(
            model=local_model.MODEL_NAME, max_tokens=16, temperature=0.0, seed=1,
            messages=[{"role": "user", "content": "What is 2 + 3? Answer with the number only."}],
        )
    assert "5" in reply.choices[0].message.content
    assert 0 < reply.usage.completion_tokens <= 16


@pytest.mark.slow
@pytest.mark.llama_server
def test_interrupt_inside_the_block_stops_the_server_by_its_pid(tmp_path: Path) -> None:
    server = LocalServer(local_model.ensure_model(), n_ctx=512, log_path=tmp_path / "server.log")
    with pytest.raises(KeyboardInterrupt), server:
        pid = server.pid
        assert pid is not None and Path(f"/proc/{pid}").exists()
        raise KeyboardInterrupt
    assert not Path(f"/proc/{pid}").exists()
    assert server.pid is None


def test_every_flag_sets_its_field_and_unknown_flags_go_to_vf_eval(tmp_path: Path) -> None:
    config, extra = local_model.parse_args([
        "-m", "x", "-b", "http://h/v1", "-k", "KEY", "-n", "2", "-r", "3", "-c", "5", "-t", "99", "-T", "0.1",
        "-S", '{"top_p": 0.5}', "-a", '{"strategy": "grpo"}', "-o", str(tmp_path), "--port", "8123",
        "--threads", "2", "--n-ctx", "1024", "--startup-timeout", "9", "--cache-dir", str(tmp_path),
        "--max-retries", "3"])
    assert config == local_model.LocalRunConfig(
        model="x", api_base_url="http://h/v1", api_key_var="KEY", num_examples=2, rollouts_per_example=3,
        max_concurrent=5, max_tokens=99, temperature=0.1, sampling_args={"top_p": 0.5}, env_args={"strategy": "grpo"},
        output_dir=tmp_path, port=8123, threads=2, n_ctx=1024, startup_timeout_s=9.0, cache_dir=tmp_path)
    assert extra == ["--max-retries", "3"]


def test_env_args_that_are_not_a_json_object_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        local_model.parse_args(["-a", "[1]"])
    assert raised.value.code == 2
    assert "-a/--env-args" in capsys.readouterr().err


def test_a_server_that_dies_at_its_first_answer_is_caught_at_start_with_the_cause(
        standin_engine: Path, dummy_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_CRASH_AFTER", "0")
    monkeypatch.setenv("STANDIN_LOG", "system_info: n_threads = 2 | CPU : AVX512 = 1 | AMX_INT8 = 1 |")
    log = tmp_path / "server.log"
    started = time.monotonic()
    with pytest.raises(LocalModelError) as raised:
        LocalServer(dummy_model, log_path=log, binary=standin_engine).start()
    message = str(raised.value)
    assert time.monotonic() - started < 30
    assert "exited with code -11" in message and "AMX" in message and "#20824" in message
    assert str(log) in message and "AMX_INT8 = 1" in message  # the log's tail


def test_an_answer_from_another_process_on_the_chosen_port_does_not_count_as_started(
        standin_engine: Path, dummy_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race a free port leaves open: another server takes it before ours binds it."""
    other = ScriptedServer().start()
    try:
        taken = int(other.url.rsplit(":", 1)[1].split("/")[0])
        monkeypatch.setattr("self_improve.local.server.free_port", lambda: taken)
        with pytest.raises(LocalModelError) as raised:
            LocalServer(dummy_model, log_path=tmp_path / "server.log", binary=standin_engine).start()
    finally:
        other.stop()
    assert f"another process answers on port {taken}" in str(raised.value)
    assert other.requests  # it did answer the readiness completion, which was not taken for ours


def test_a_server_that_answers_counts_as_started_only_after_a_completion(
        standin_engine: Path, dummy_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_CRASH_AFTER", "1")  # the readiness completion, then nothing
    with LocalServer(dummy_model, log_path=tmp_path / "server.log", binary=standin_engine) as server:
        assert server.poll() is None
        with pytest.raises(openai.APIConnectionError):
            OpenAI(base_url=server.base_url, api_key="x", max_retries=0).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}])
        deadline = time.monotonic() + 10
        while server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.poll() == -11


def test_main_exits_non_zero_naming_the_server_log_when_the_server_dies_mid_run(
        standin_engine: Path, dummy_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STANDIN_CRASH_AFTER", "2")  # the readiness completion and one group's request
    monkeypatch.chdir(tmp_path)
    code = local_model.main(["--server-binary", str(standin_engine), "--model-file", str(dummy_model),
                             "-n", "3", "-r", "4", "-o", str(tmp_path / "out"), "--max-retries", "0"])
    err = capsys.readouterr().err
    assert code == 1
    assert "during the run, the model server exited with code -11" in err
    assert str(tmp_path / "out" / "server.log") in err
    assert "self-improve results" not in capsys.readouterr().out


def test_main_on_the_built_in_path_prints_the_averages_and_stops_its_server(
        standin_engine: Path, dummy_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code = local_model.main(["--server-binary", str(standin_engine), "--model-file", str(dummy_model),
                             "-n", "2", "-r", "4", "-o", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert code == 0
    assert "self-improve results: 8 rollouts" in printed and "failed: 0" in printed
    assert _processes_mentioning(str(dummy_model)) == []


def test_an_unreachable_endpoint_is_a_non_zero_exit_within_a_minute(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    started = time.monotonic()
    completed = subprocess.run([str(CONSOLE_SCRIPT), "-b", f"http://127.0.0.1:{closed}/v1", "-m", "x",
                                "-o", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 1
    assert f"cannot reach the endpoint -b http://127.0.0.1:{closed}/v1" in completed.stderr
    assert time.monotonic() - started < 60


def test_more_failed_rollouts_than_the_stated_share_is_a_non_zero_exit(
        scripted_server: ScriptedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    failing: list[str] = []  # every request about the first question is refused

    def policy(request: ChatRequest) -> str:
        failing[:] = failing or [request.question]
        return "refused" if request.question == failing[0] else "correct"

    scripted_server.policy = policy
    monkeypatch.setenv("SCRIPTED_KEY", "x")
    monkeypatch.chdir(tmp_path)
    argv = ["-b", scripted_server.url, "-m", "scripted", "-k", "SCRIPTED_KEY", "-n", "2", "-r", "4",
            "-a", '{"strategy": "grpo"}', "--max-retries", "0"]
    code = local_model.main([*argv, "-o", str(tmp_path / "strict")])
    assert code == 1
    assert "4 of 8 rollouts failed (50% > --max-failed-share 0.1)" in capsys.readouterr().err
    assert local_model.main([*argv, "-o", str(tmp_path / "lenient"), "--max-failed-share", "0.5"]) == 0


def _installed_engines() -> dict[str, Path]:
    found = {}
    for engine in ENGINES:
        try:
            found[engine] = engine_library(engine)
        except LocalModelError:
            continue
    return found


def test_every_installed_engine_holds_no_amx_instruction() -> None:
    installed = _installed_engines()
    assert "prebuilt" in installed, "the local extra's engine (xllamacpp) must be installed"
    for engine, library in installed.items():
        assert build.amx_instruction_count(library) == 0, engine
        listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(library)], capture_output=True,
                                 text=True, check=True).stdout
        assert "\tvfmadd" in listing, engine  # the count reads real instructions: the same build's FMA


def test_a_cpu_without_avx2_is_refused_at_start_naming_the_compiled_engine(
        dummy_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx fma f16c\n")
    monkeypatch.setattr("self_improve.local.cpu.CPUINFO", cpuinfo)
    server = LocalServer(dummy_model, log_path=tmp_path / "server.log")
    with pytest.raises(LocalModelError, match="without AVX2.*--engine compiled"):
        server.start()
    assert server.pid is None and not (tmp_path / "server.log").exists()


def test_a_bad_env_arg_is_a_usage_error_before_any_server_starts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        local_model.parse_args(["-a", '{"buffer_url": "redis://:s3cret-pw@127.0.0.1:6379/0"}'])
    err = capsys.readouterr().err
    assert raised.value.code == 2
    assert "buffer_url" in err and "buffer_password_var" in err and "s3cret-pw" not in err
