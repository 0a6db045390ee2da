"""The usage examples in the modules' docstrings run as written (CI runs no ``--doctest-modules``)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ("self_improve.scoring.answer_check", "self_improve.buffer.exit_buffer", "self_improve.grouping",
           "self_improve.prompts", "self_improve.simulation", "self_improve.checks")


@pytest.mark.parametrize("name", MODULES)
def test_the_usage_example_in_the_module_docstring_runs(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name}: no examples found"
    assert result.failed == 0


def test_every_module_with_an_example_is_listed() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    with_examples = {".".join(path.relative_to(root).with_suffix("").parts)
                     for path in (root / "self_improve").rglob("*.py") if ">>> " in path.read_text()}
    assert with_examples == set(MODULES)
