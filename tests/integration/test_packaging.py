"""The wheel as users get it: one top-level package, every module and data file inside, entry points that resolve.

CI also installs the wheel (not editable) into the verifiers 0.4 environment and runs ``tests_v1`` against it
(``scripts/test.sh``), so a file missing from the wheel fails there too.
"""

from __future__ import annotations

import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(folder), str(REPO)],
                   check=True, capture_output=True, text=True)
    (built,) = folder.glob("self_improve-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_installs_one_top_level_package_and_its_metadata(wheel: zipfile.ZipFile) -> None:
    top_level = {name.split("/")[0] for name in wheel.namelist()}
    dist_info = {name for name in top_level if name.endswith(".dist-info")}
    assert top_level - dist_info == {"self_improve"}
    assert len(dist_info) == 1


def test_every_module_and_data_file_of_the_package_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    source = {path.relative_to(REPO).as_posix() for path in (REPO / "self_improve").rglob("*")
              if path.is_file() and "__pycache__" not in path.parts}
    assert source <= set(wheel.namelist())
    assert {"self_improve/data/gsm8k_train.jsonl.gz", "self_improve/data/gsm8k_test.jsonl.gz",
            "self_improve/data/LICENSE-GSM8K"} <= source


def test_test_fixtures_stay_out_of_the_wheel(wheel: zipfile.ZipFile) -> None:
    assert not [name for name in wheel.namelist() if "scripted_server" in name or name.startswith("tests")]


def test_every_console_script_names_a_function_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [name for name in wheel.namelist() if name.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry_points).decode())
    scripts = dict(parser["console_scripts"])
    assert {"self-improve-local", "self-improve-kstep"} <= set(scripts)
    for target in scripts.values():
        module, function = target.split(":")
        text = wheel.read(module.replace(".", "/") + ".py").decode()
        assert f"\ndef {function}(" in text, target
