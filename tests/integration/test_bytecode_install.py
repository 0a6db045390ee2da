"""The argument table and validation work from bytecode alone (a package
installed without its sources), checked in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from self_improve import exit_config

REPO = Path(__file__).resolve().parents[2]


def test_the_table_and_validation_work_where_only_bytecode_is_installed(tmp_path) -> None:
    package = tmp_path / "self_improve"
    package.mkdir()
    for name in ("__init__.py", "checks.py", "exit_config.py"):
        (package / name).write_text((REPO / "self_improve" / name).read_text())
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-b", str(package)], check=True)
    for source in package.glob("*.py"):
        source.unlink()
    probe = ("from self_improve import exit_config as e\n"
             "try:\n    e.resolve_config({'kappa': -1})\nexcept ValueError as error:\n    print(error)\n"
             "print(e.arguments_table())")
    shown = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONPATH": str(tmp_path)}).stdout
    assert shown == f"kappa: must be a number in [0.0, inf), got -1\n{exit_config.arguments_table()}\n"
