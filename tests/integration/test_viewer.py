"""``self-improve-buffer`` on what real runs leave behind: the real ``vf-eval`` against the scripted
server fills a buffer file, a real ``redis-server`` prefix and a results.jsonl; every number the command
prints is recomputed here from the saved state, and nothing it reads is ever changed."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from conftest import run_vf_eval, saved_rows
from redis_fixture import RedisServer, free_port, fresh_prefix, group_for, redis_server, redis_store  # noqa: F401
from scripted_server import ScriptedServer, cycle_policy
from self_improve.buffer.checkpoint import read_state
from self_improve.buffer.redis_buffer import RedisBuffer
from self_improve.cli_args import flags
from self_improve.grouping import Task
from self_improve.viewer import cli, lineage, simulated, snapshot
from self_improve.viewer.config import ViewerConfig

pytestmark = [pytest.mark.redis, pytest.mark.vf_eval]  # the real parts this file's tests start (pyproject's markers)

COMMAND = Path(sys.executable).with_name("self-improve-buffer")
PATTERN = ("correct", "wrong", "unboxed", "wrong", "correct", "wrong", "long")
ENV_ARGS = {"min_buffer_size": 4, "select_prob": 0.8, "row_metrics": "all"}
"""A buffer sampled early and often, so 24 groups reach depth 2 and beyond; the buffer's metrics on every row."""


@dataclass
class Run:
    """What one real vf-eval run left: its rows, results file and buffer file (or Redis prefix)."""

    rows: list[dict]
    results: Path
    buffer: Path | None = None
    url: str | None = None
    prefix: str | None = None


def vf_eval_run(tmp_path: Path, env_args: dict) -> tuple[list[dict], Path]:
    server = ScriptedServer(policy=cycle_policy(PATTERN)).start()
    try:
        rows = run_vf_eval(server.url, tmp_path, "-n", "24", "-r", "4", "-t", "64", env_args={**ENV_ARGS, **env_args})
    finally:
        server.stop()
    assert rows == saved_rows(tmp_path)
    return rows, next(tmp_path.rglob("results.jsonl"))


@pytest.fixture(scope="module")
def file_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("file-run")
    rows, results = vf_eval_run(out, {"buffer_path": str(out / "buffer.json")})
    return Run(rows, results, buffer=out / "buffer.json")


@pytest.fixture(scope="module")
def redis_run(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Run:  # noqa: F811
    out, prefix = tmp_path_factory.mktemp("redis-run"), fresh_prefix()
    rows, results = vf_eval_run(out, {"buffer_url": redis_server.url, "buffer_prefix": prefix})
    return Run(rows, results, url=redis_server.url, prefix=prefix)


def command(*args: str) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    return subprocess.run([str(COMMAND), *args], capture_output=True, text=True, timeout=120)


def viewer(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``main`` in this process: (exit status, stdout, stderr)."""
    status = cli.main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def expected_summary(state: dict, top: int) -> dict:
    """The summary's numbers, recomputed from a saved ``state_dict`` without the viewer's code."""
    held = state["instances"]
    scores = np.array([i["score"] for i in held])
    depths = [max(len(i["iterates"]) - 1, 0) for i in held]
    weights = [math.exp(state["kappa"] * s) for s in scores]
    chance = {i["instance_id"]: w / math.fsum(weights) for i, w in zip(held, weights, strict=True)}
    ranked = sorted(held, key=lambda i: (-i["score"], i["instance_id"]))[:top]
    chains = [i["iterate_correct"] for i in held if len(i["iterates"]) >= 2]
    return {
        "size": len(held), "step": state["step"], "next_id": state["next_id"],
        "score": {"min": scores.min(), "q25": np.percentile(scores, 25), "q50": np.median(scores),
                  "q75": np.percentile(scores, 75), "mean": scores.mean(), "max": scores.max()},
        "depth": {"mean": np.mean(depths), "max": max(depths),
                  "counts": {str(d): n for d, n in sorted(Counter(depths).items())}},
        "distinct_tasks": len({i["task"]["task_id"] for i in held}),
        "times_sampled": sum(i["times_sampled"] for i in held),
        "wrong_to_right": sum(not c[0] and c[-1] for c in chains), "chains": len(chains),
        "top": [(i["instance_id"], i["score"], chance[i["instance_id"]], i["task"]["task_id"],
                 max(len(i["iterates"]) - 1, 0), i["times_sampled"]) for i in ranked],
    }


def assert_summary_matches(shown: dict, state: dict, top: int = 10) -> None:
    expected = expected_summary(state, top)
    for key in ("size", "step", "next_id", "distinct_tasks", "times_sampled"):
        assert shown[key] == expected[key], key
    assert shown["score"] == pytest.approx(expected["score"], abs=1e-12)
    assert shown["depth"]["mean"] == pytest.approx(expected["depth"]["mean"])
    assert (shown["depth"]["max"], shown["depth"]["counts"]) == (expected["depth"]["max"], expected["depth"]["counts"])
    assert shown["chains"]["depth_at_least_1"] == expected["chains"]
    assert shown["chains"]["outcomes"].get("wrong->right", 0) == expected["wrong_to_right"]
    rows = [(r["instance_id"], r["score"], r["probability"], r["task_id"], r["depth"], r["times_sampled"])
            for r in shown["top"]]
    assert [row[:2] + row[3:] for row in rows] == [row[:2] + row[3:] for row in expected["top"]]
    assert [row[2] for row in rows] == pytest.approx([row[2] for row in expected["top"]], rel=1e-9)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def redis_contents(url: str) -> dict[bytes, bytes]:
    """Every key of the server with its serialised value (DUMP), and nothing else."""
    client = redis.Redis.from_url(url)
    try:
        return {key: client.dump(key) for key in client.scan_iter(count=1000)}
    finally:
        client.close()


# --- the buffer file ------------------------------------------------------------------------------------------


def test_the_summary_of_a_buffer_file_equals_the_numbers_of_its_saved_state(file_run: Run) -> None:
    before = digest(file_run.buffer)
    done = command(str(file_run.buffer), "--json", "-k", "12")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    state = read_state(file_run.buffer)
    assert_summary_matches(shown, state, top=12)
    assert shown["depth"]["max"] >= 2, "the run is meant to grow chains of several steps"
    assert [i["instance_id"] for i in shown["instances"]] == [i["instance_id"] for i in state["instances"]]
    assert digest(file_run.buffer) == before


def test_the_text_summary_shows_the_same_numbers_as_the_json(file_run: Run, capsys) -> None:
    status, text, _ = viewer(capsys, str(file_run.buffer), "-k", "3")
    expected = expected_summary(read_state(file_run.buffer), 3)
    assert status == 0
    assert f"size {expected['size']} of 512   step {expected['step']} (groups observed)" in text
    assert f"distinct tasks {expected['distinct_tasks']}" in text
    assert f"min {expected['score']['min']:.4f}" in text and f"max {expected['score']['max']:.4f}" in text
    table = text.splitlines()[-4:]
    assert table[0].split() == ["id", "score", "P", "task", "depth", "sampled", "parent", "y^0..y^k"]
    for line, (instance_id, score, chance, task_id, depth, sampled) in zip(table[1:], expected["top"], strict=True):
        assert line.split()[:6] == [str(instance_id), f"{score:.4f}", f"{chance:.2%}", task_id, str(depth),
                                    str(sampled)]


def test_kappa_given_on_the_command_line_changes_the_probabilities_only(file_run: Run, capsys) -> None:
    state = read_state(file_run.buffer)
    _, shown, _ = viewer(capsys, str(file_run.buffer), "--json", "--kappa", "0")
    assert all(row["probability"] == pytest.approx(1 / len(state["instances"])) for row in json.loads(shown)["top"])
    assert json.loads(shown)["saved_kappa"] == state["kappa"]


def test_show_prints_the_deepest_chain_back_to_its_base_task(file_run: Run, capsys) -> None:
    state = read_state(file_run.buffer)
    deepest = max(state["instances"], key=lambda i: (len(i["iterates"]), i["instance_id"]))
    done = command(str(file_run.buffer), "show", str(deepest["instance_id"]), "--width", "60")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1] == "question: " + lineage.cut(deepest["task"]["question"], 60)
    iterate_lines = [line for line in lines if line.startswith("  y^")]
    assert len(iterate_lines) == len(deepest["iterates"]) >= 3
    for k, (line, text, correct) in enumerate(zip(iterate_lines, deepest["iterates"], deepest["iterate_correct"],
                                                  strict=True)):
        assert line.split()[:2] == [f"y^{k}", "right" if correct else "wrong"]
        assert line.endswith(lineage.cut(text, 60)) and len(lineage.cut(text, 60)) <= 60
    by_id = {i["instance_id"]: i for i in state["instances"]}
    links, parent = [], deepest["parent_id"]
    while parent is not None:
        links.append(parent)
        if parent not in by_id:
            break
        parent = by_id[parent]["parent_id"]
    parents_line = lines[-1]
    assert parents_line.startswith(f"parents: {deepest['instance_id']} (depth {len(deepest['iterates']) - 1})")
    assert [int(part.split()[0]) for part in parents_line.split(" <- ")[1:-1]] == links
    assert parents_line.endswith(f"base task {deepest['task']['task_id']}")
    for parent_id in links:  # each held parent's iterates are the start of the child's chain
        if parent_id in by_id:
            assert deepest["iterates"][: len(by_id[parent_id]["iterates"])] == by_id[parent_id]["iterates"]


def test_show_json_lists_every_iterate_in_full(file_run: Run, capsys) -> None:
    instance = read_state(file_run.buffer)["instances"][-1]
    _, out, _ = viewer(capsys, str(file_run.buffer), "show", str(instance["instance_id"]), "--json")
    found = json.loads(out)
    assert [(i["text"], i["correct"]) for i in found["iterates"]] == list(zip(instance["iterates"],
                                                                            instance["iterate_correct"], strict=True))


def test_buffer_plots_and_csv_are_written(file_run: Run, tmp_path: Path, capsys) -> None:
    status, _, err = viewer(capsys, str(file_run.buffer), "--plot", str(tmp_path / "png"), "--csv",
                            str(tmp_path / "instances.csv"))
    assert status == 0, err
    for name in ("buffer_scores.png", "buffer_depths.png"):
        assert (tmp_path / "png" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "instances.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    state = read_state(file_run.buffer)
    assert [(int(r["instance_id"]), float(r["score"])) for r in rows] == [(i["instance_id"], i["score"])
                                                                          for i in state["instances"]]
    assert math.fsum(float(r["probability"]) for r in rows) == pytest.approx(1.0)


# --- the Redis store ------------------------------------------------------------------------------------------


def test_a_redis_prefix_shows_the_stores_state_and_no_key_changes(redis_run: Run) -> None:
    state = RedisBuffer(redis_run.url, capacity=512, kappa=10.0, seed=0, store_responses=True,
                        prefix=redis_run.prefix).state_dict()  # a client registers itself: read before the snapshot
    before = redis_contents(redis_run.url)
    done = command(redis_run.url, "--prefix", redis_run.prefix, "--json")
    assert done.returncode == 0, done.stderr
    assert_summary_matches(json.loads(done.stdout), state)
    deepest = max(state["instances"], key=lambda i: len(i["iterates"]))
    shown = command(redis_run.url, "--prefix", redis_run.prefix, "show", str(deepest["instance_id"]))
    assert shown.returncode == 0 and shown.stdout.count("\n  y^") == len(deepest["iterates"])
    assert redis_contents(redis_run.url) == before


def test_a_redis_snapshot_is_one_state_of_the_store_while_a_worker_writes(redis_server: RedisServer) -> None:  # noqa: F811
    store = redis_store(redis_server.url, capacity=512)
    store.observe(group_for(Task("t-0", "q", "1"), None, ("a0", "b0", "c0"), (True, False, False)))
    stop = threading.Event()

    def write() -> None:
        for n in range(1, 150):
            if stop.is_set():
                return
            store.observe(group_for(Task(f"t-{n}", "q", "1"), None, (f"a{n}", f"b{n}", f"c{n}"), (True, False, False)))

    writer = threading.Thread(target=write)
    writer.start()
    seen = []
    try:
        while writer.is_alive():
            held = snapshot.read_redis(redis_server.url, store.prefix)
            assert len(held.instances) == 3 * held.step == held.next_id, "each group adds 3 instances atomically"
            seen.append(held.step)
    finally:
        stop.set()
        writer.join()
    assert len(set(seen)) > 1, "the snapshots were taken while the store grew"


# --- results.jsonl --------------------------------------------------------------------------------------------


def test_a_results_file_shows_its_groups_in_the_order_the_buffer_saw_them(file_run: Run, tmp_path: Path) -> None:
    done = command(str(file_run.results), "--json", "--plot", str(tmp_path))
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    rows, state = file_run.rows, read_state(file_run.buffer)
    assert (len(shown["groups"]), shown["rollouts"]) == (len(rows) // 4, len(rows)) == (state["step"], 4 * 24)
    assert shown["steps"] == dict(sorted(Counter(r["info"]["step"] for r in rows[::4]).items()))
    assert shown["from_buffer_share"] == pytest.approx(np.mean([r["metrics"]["from_buffer"] for r in rows]))
    assert shown["learnability_mean"] == pytest.approx(np.mean([r["metrics"]["learnability"] for r in rows]))
    sizes = [group["buffer_size"] for group in shown["groups"]]
    assert sizes == sorted(sizes) and sizes[-1] == len(state["instances"]), "one group observed after another"
    assert shown["buffer_after_last_group"]["buffer_distinct_tasks"] == len({i["task"]["task_id"]
                                                                           for i in state["instances"]})
    from_wrong = [r for r in rows if r["info"]["step"] != "base" and not r["info"]["prev_correct"]]
    assert shown["from_wrong"]["right_share"] == pytest.approx(np.mean([r["metrics"]["solved"] for r in from_wrong]))
    for name in ("fig6_depth_learnability.png", "fig7_distinct_tasks.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_csv_of_a_redis_run_has_one_row_per_group_ending_at_the_stores_state(redis_run: Run, tmp_path: Path,
                                                                                 capsys) -> None:
    status, out, err = viewer(capsys, str(redis_run.results), "--csv", str(tmp_path / "groups.csv"))
    assert status == 0, err
    assert out.startswith(f"run {redis_run.results}")
    with open(tmp_path / "groups.csv", newline="") as handle:
        groups = list(csv.DictReader(handle))
    store = snapshot.read_redis(redis_run.url, redis_run.prefix)
    assert len(groups) == len(redis_run.rows) // 4 == store.step
    in_buffer_order = sorted(redis_run.rows[::4], key=lambda row: row["metrics"]["buffer_step"])
    assert [g["task_id"] for g in groups] == [r["info"]["task_id"] for r in in_buffer_order]
    assert float(groups[-1]["buffer_size"]) == len(store.instances)
    assert float(groups[-1]["buffer_distinct_tasks"]) == len({i.task.task_id for i in store.instances})


# --- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "message"), [
    (None, "source: {path} does not exist"),
    ('{"version": 1, "capaci', "source: {path} is not a buffer checkpoint: not JSON"),
    ('{"version": 1}', "source: {path} is not a valid buffer checkpoint: capacity: missing from buffer state"),
    ("[1, 2]", "source: {path} is not a valid buffer checkpoint: state: must be a JSON object"),
])
def test_a_missing_or_corrupt_buffer_file_is_named(tmp_path: Path, capsys, content: str | None, message: str) -> None:
    path = tmp_path / "buffer.json"
    if content is not None:
        path.write_text(content)
    status, out, err = viewer(capsys, str(path))
    assert (status, out) == (2, "")
    assert err.startswith(f"self-improve-buffer: error: {message.format(path=path)}") and err.count("\n") == 1
    assert content is None or path.read_text() == content


def test_a_corrupt_results_file_is_named_with_its_line(file_run: Run, tmp_path: Path, capsys) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text(file_run.results.read_text().splitlines()[0] + "\n{not json\n")
    status, _, err = viewer(capsys, str(path))
    assert status == 2 and err.startswith(f"self-improve-buffer: error: source: {path} line 2 is not JSON")
    path.write_text('{"example_id": 0, "info": {}, "metrics": {}}\n')
    status, _, err = viewer(capsys, str(path))
    assert status == 2 and f"source: {path} is not a self-improve vf-eval output" in err


def test_an_unreachable_redis_is_named_and_the_console_script_prints_no_traceback() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = command(url)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"self-improve-buffer: error: source: cannot reach {url} (")


def test_a_prefix_without_a_buffer_is_named_with_the_prefixes_that_hold_one(redis_run: Run, capsys) -> None:
    before = redis_contents(redis_run.url)
    status, _, err = viewer(capsys, redis_run.url, "--prefix", "no-such-run")
    assert status == 2
    assert err.startswith("self-improve-buffer: error: prefix (--prefix): no buffer under 'no-such-run' on "
                          f"{redis_run.url}; prefixes holding one: ") and repr(redis_run.prefix) in err
    assert redis_contents(redis_run.url) == before


def test_a_password_travels_only_through_the_named_variable(tmp_path: Path, capsys, monkeypatch) -> None:
    server = RedisServer(tmp_path, password="hunter2-secret").start()
    try:
        plain = server.url  # the fixture's URL never holds the password
        monkeypatch.setenv("VIEWER_TEST_PASSWORD", "hunter2-secret")
        store = redis_store(plain, password_var="VIEWER_TEST_PASSWORD")
        store.observe(group_for(Task("t", "q", "1"), None, ("a", "b"), (True, False)))
        with_password = plain.replace("redis://", "redis://:hunter2-secret@")
        status, _, err = viewer(capsys, with_password, "--prefix", store.prefix)
        assert status == 2 and "--password-var" in err and "hunter2" not in err
        monkeypatch.delenv("VIEWER_TEST_PASSWORD", raising=False)
        status, _, err = viewer(capsys, plain, "--prefix", store.prefix, "--password-var", "VIEWER_TEST_PASSWORD")
        assert status == 2 and "password_var (--password-var): the variable VIEWER_TEST_PASSWORD is not set" in err
        monkeypatch.setenv("VIEWER_TEST_PASSWORD", "wrong")
        status, _, err = viewer(capsys, plain, "--prefix", store.prefix, "--password-var", "VIEWER_TEST_PASSWORD")
        assert status == 2 and f"source: {plain} refused the password" in err
        monkeypatch.setenv("VIEWER_TEST_PASSWORD", "hunter2-secret")
        status, out, err = viewer(capsys, plain, "--prefix", store.prefix, "--password-var", "VIEWER_TEST_PASSWORD")
        assert status == 0, err
        assert "size 2 of 8   step 1" in out
    finally:
        server.stop()


@pytest.mark.parametrize(("args", "message"), [
    (["{buffer}", "show", "999999"], "show ID: instance 999999 is not in {buffer}"),
    (["{buffer}", "show", "x"], "show ID: must be followed by an instance id, got 'x'"),
    (["{results}", "show", "1"], "show ID: needs a buffer source"),
    (["{buffer}", "{results}"], "source: several sources must all be results.jsonl files"),
    (["{buffer}", "--json", "--csv", "x.csv"], "json (--json): give --json or --csv FILE, not both"),
    (["{buffer}", "-k", "0"], "top (-k/--top): must be >= 1, got 0"),
    (["{buffer}", "--kappa", "-1"], "kappa (--kappa): must be a finite number >= 0"),
])
def test_bad_arguments_are_named(file_run: Run, capsys, args: list[str], message: str) -> None:
    names = {"buffer": file_run.buffer, "results": file_run.results}
    status, _, err = viewer(capsys, *(arg.format(**names) for arg in args))
    assert status == 2 and err.startswith("self-improve-buffer: error: " + message.format(**names)), err


def test_help_lists_a_flag_for_every_setting() -> None:
    done = command("--help")
    assert done.returncode == 0
    for name in ("prefix", "password_var", "kappa", "top", "width", "plot", "title", "json", "csv"):
        assert flags(ViewerConfig, name)[-1] in done.stdout
    assert "SOURCE" in done.stdout and "show ID" in done.stdout


@given(st.text(), st.integers(min_value=1, max_value=300))
def test_a_cut_iterate_is_one_line_no_longer_than_the_width(text: str, width: int) -> None:
    shown = lineage.cut(text, width)
    assert "\n" not in shown and len(shown) <= max(width, 3)
    assert shown == " ".join(text.split()) or shown.endswith("...")


def test_the_simulated_learner_leaves_a_buffer_and_rows_the_viewer_reads(tmp_path: Path, capsys) -> None:
    buffer, results = simulated.run(tmp_path, "diverge", rollouts=2 * 8 * 32, seed=3)
    state = read_state(buffer)
    status, out, err = viewer(capsys, str(buffer), "--json")
    assert status == 0, err
    assert_summary_matches(json.loads(out), state)
    status, out, err = viewer(capsys, str(results), "--json")
    shown = json.loads(out)
    assert len(shown["groups"]) == state["step"] == 64
    assert shown["buffer_after_last_group"]["buffer_size"] == len(state["instances"])


def test_rows_without_the_buffers_metrics_draw_fig6_and_say_why_fig7_is_missing(tmp_path: Path, capsys) -> None:
    _, results = simulated.run(tmp_path / "run", "diverge", rollouts=8 * 8 * 4, seed=1)
    core = tmp_path / "core.jsonl"  # the rows as row_metrics="core" writes them
    core.write_text("".join(json.dumps({**row, "metrics": {k: v for k, v in row["metrics"].items()
                                                           if k in ("from_buffer", "learnability", "solved")}}) + "\n"
                            for row in map(json.loads, results.read_text().splitlines())))
    status, out, err = viewer(capsys, str(core), "--plot", str(tmp_path / "plots"))
    assert status == 0, err
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["fig6_depth_learnability.png"]
    assert 'no fig7_distinct_tasks.png: the rows carry no buffer metrics (run with row_metrics="all")' in err
    assert "buffer after the last group" not in out
