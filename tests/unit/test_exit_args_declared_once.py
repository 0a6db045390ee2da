"""Each ``ExitConfig`` argument's doc and default are written once, in ``exit_config.py``: the
source (read as syntax trees, not imported) holds no second copy of a doc, and no host config class
declares an ``ExitConfig`` field by hand (the v1 configs make theirs with ``hosts.v1_config``)."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

from self_improve import exit_config

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(REPO / "self_improve").rglob("*.py"), *(REPO / "integrations").rglob("*.py")])


def string_constants(path: Path) -> list[str]:
    """Every string literal of a module (adjacent literals joined, as Python joins them)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def doc_places(paths: list[Path]) -> dict[str, Counter[str]]:
    """For each argument, the files whose string literals hold its doc, with how many times."""
    places: dict[str, Counter[str]] = {name: Counter() for name in exit_config.field_docs()}
    for path in paths:
        for text in string_constants(path):
            for name, doc in exit_config.field_docs().items():
                places[name][path.name] += doc in text
    return {name: +counts for name, counts in places.items()}


def hand_declared(paths: list[Path]) -> list[str]:
    """``Class.field`` for each class-body annotation that names an ``ExitConfig`` field."""
    names, found = set(exit_config.field_docs()), []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                found += [f"{path.name}: {node.name}.{stmt.target.id}" for stmt in node.body
                          if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                          and stmt.target.id in names]
    return found


def test_each_argument_doc_occurs_once_in_the_package_in_exit_config() -> None:
    for name, counts in doc_places(SOURCES).items():
        assert counts == Counter({"exit_config.py": 1}), f"{name}: its doc is written in {dict(counts)}"


def test_no_host_config_class_declares_an_exit_config_field_by_hand() -> None:
    hosts = sorted((REPO / "self_improve" / "hosts").rglob("*.py"))
    assert hosts and hand_declared(hosts) == [], "declare them with hosts.v1_config (type, default, doc)"


def test_the_scans_find_a_doc_and_a_field_written_again(tmp_path: Path) -> None:
    doc = exit_config.field_docs()["use_think"]
    copy = tmp_path / "copy.py"  # the doc split over two adjacent literals, as long lines are written
    copy.write_text(f"class TaskConfig:\n    use_think: bool = False\n    ({doc[:20]!r}\n     {doc[20:]!r})\n")
    assert doc_places([copy])["use_think"] == Counter({"copy.py": 1})
    assert hand_declared([copy]) == ["copy.py: TaskConfig.use_think"]
