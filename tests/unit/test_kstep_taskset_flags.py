"""``self-improve-kstep``'s taskset flags: what they need, and the error without verifiers 0.4."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest

from self_improve.kstep import cli
from self_improve.kstep.config import EvalConfig

VERIFIERS = importlib.metadata.version("verifiers")


@pytest.mark.parametrize("argv, message", [
    (["--threshold", "1"], "threshold (--threshold): needs --taskset"),
    (["--max-return", "2"], "max_return (--max-return): needs --taskset"),
    (["--taskset-args", '{"split": "test"}'], "taskset_args (--taskset-args): needs --taskset"),
    (["--taskset", "t", "--max-return", "0"], "max_return (--max-return): must be a number in (0.0, inf)"),
    (["--taskset", "t", "--taskset-args", '{"id": "other"}'],
     "taskset_args (--taskset-args): must be a JSON object without 'id'"),
])
def test_taskset_flags_are_checked(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        cli.parse_args(argv)


def test_a_taskset_run_has_its_own_identity_and_output_dir() -> None:
    gsm8k, taskset = EvalConfig(), EvalConfig(taskset="exit-letters", threshold=0.5)
    assert "system_prompt" in gsm8k.identity() and "taskset" not in gsm8k.identity()  # GSM8K's run.json as before
    assert taskset.identity()["taskset"] == "exit-letters" and "threshold" not in taskset.identity()
    assert taskset.resolved_output_dir.name.startswith("exit-letters-")


@pytest.mark.skipif(tuple(int(p) for p in re.findall(r"\d+", VERIFIERS)[:2]) >= (0, 4),
                    reason=f"verifiers {VERIFIERS} is 0.4: tests_v1/test_v1_kstep_taskset.py runs --taskset")
def test_taskset_without_verifiers_04_names_the_v1_extra(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out"
    assert cli.main(["-b", "http://127.0.0.1:9/v1", "-o", str(output), "--taskset", "exit-letters"]) == 2
    error = capsys.readouterr().err
    assert "taskset: --taskset 'exit-letters' needs verifiers 0.4" in error and "the v1 extra" in error
    assert f"found verifiers {VERIFIERS}" in error and not output.exists()
