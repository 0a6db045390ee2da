"""Every dotted name of the package that the docs and docstrings mention exists, so a module
that moves cannot leave its old name behind (``buffer_store`` outlived the move to
``buffer/store.py`` in ten places).

Checked, in the package's comments and strings (tokenized, so code is not read as prose), in
scripts/ and integrations/ the same way, and in README.md, docs/*.md and integrations/**/*.md:

* every ``self_improve.a.b...`` name;
* every name in backticks written relative to the package (``hosts.v1_env.mint_step``,
  ``exit_loop.ExitLoop``), or to one of its modules whose name has an underscore
  (``exit_buffer.ExitBuffer``; a one-word leaf such as ``store`` is also a variable name, so
  write ``buffer.store.BufferStore``);
* a backticked ``snake_name.x`` whose first word has an underscore names a module: of the
  package, of integrations/, or one installed here (``prime_rl`` is the one allowed absentee).

Names resolve by reading the modules' source (``ast``), not by importing them, so the check
runs in either venv: a module's top-level definitions, assignments and imports, and a class's
methods and fields; past a name that is not a class the rest is not checked.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import re
import tokenize
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "self_improve"
NOT_INSTALLED_HERE = frozenset({"prime_rl"})
"""Modules the docs name that live in another project's checkout (prime-rl main)."""
ALSO_A_VARIABLE = frozenset({"data"})
"""Top-level modules of the package whose name the docs also use for a variable (``data.model_dump``)."""
RETIRED = ("buffer_store", "buffer_state", "k_step_config", "k_step_chains", "k_step_runner", "k_step_report")
"""The flat modules that moved into ``buffer/`` and ``kstep/``: not even a bare ``k_step_config`` may stay."""
FILE_SUFFIXES = frozenset({"json", "jsonl", "png", "md", "py", "toml", "log", "csv", "txt", "sh", "yaml", "html",
                           "lock", "patch", "gz", "safetensors", "gguf", "pt"})
"""Last words that make ``name.suffix`` a file name, not a dotted name."""

ABSOLUTE = re.compile(r"\bself_improve(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
BACKTICKED = re.compile(r"`+([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def prose(path: Path) -> str:
    """The text of ``path`` a reader sees as documentation: all of a Markdown file; the comments
    and string literals (docstrings included) of a Python file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".py":
        return text
    kinds = (tokenize.COMMENT, tokenize.STRING)
    return "\n".join(token.string for token in tokenize.generate_tokens(io.StringIO(text).readline)
                     if token.type in kinds)


def documented_files() -> list[Path]:
    python = [*PACKAGE.rglob("*.py"), *(REPO / "scripts").glob("*.py"), *(REPO / "integrations").rglob("*.py")]
    markdown = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "integrations").rglob("*.md")]
    return sorted(path for path in python + markdown if path.is_file())


def package_modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = package_modules()
INTEGRATION_MODULES = frozenset(path.stem for path in (REPO / "integrations").rglob("*.py"))


@cache
def module_names(dotted: str) -> frozenset[str]:
    """Names a module defines at top level; with a module ``__getattr__``, the strings it may answer too."""
    tree = ast.parse(MODULES[dotted].read_text(encoding="utf-8"))
    names = set(child.removeprefix(dotted + ".") for child in MODULES if child.startswith(dotted + "."))
    names = {name for name in names if "." not in name}
    for node in tree.body:
        names |= defined_names(node)
    if "__getattr__" in names:
        names |= {node.value for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    return frozenset(names)


def defined_names(node: ast.stmt) -> set[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {name.id for target in node.targets for name in ast.walk(target) if isinstance(name, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    if isinstance(node, ast.Import | ast.ImportFrom):
        return {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    if isinstance(node, ast.If | ast.Try):  # TYPE_CHECKING blocks, optional imports
        return {name for child in [*node.body, *getattr(node, "orelse", [])] for name in defined_names(child)}
    return set()


def find_class(dotted: str, name: str) -> ast.ClassDef | None:
    tree = ast.parse(MODULES[dotted].read_text(encoding="utf-8"))
    return next((node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name), None)


def resolves(dotted: str) -> bool:
    """Whether ``self_improve.x.y...`` names a module, or a name defined in one (see module doc)."""
    parts = dotted.split(".")
    prefixes = [index for index in range(1, len(parts) + 1) if ".".join(parts[:index]) in MODULES]
    if not prefixes:
        return False
    cut = max(prefixes)  # the longest module prefix: self_improve.buffer.store, then BufferStore
    module, rest = ".".join(parts[:cut]), parts[cut:]
    if not rest:
        return True
    if rest[0] not in module_names(module):
        return False
    cls = find_class(module, rest[0])
    if cls is None or len(rest) == 1:
        return True
    members = set()
    for node in cls.body:
        members |= defined_names(node)
    return rest[1] in members


def problems_in(text: str, where: str) -> list[str]:
    """The dotted names in ``text`` (from ``where``) that do not resolve, as ``where: name (why)``."""
    problems = [f"{where}: {name}" for name in sorted(set(ABSOLUTE.findall(text))) if not resolves(name)]
    for name in sorted(set(BACKTICKED.findall(text))):
        first, *rest = name.split(".")
        if first == "self_improve" or rest[-1] in FILE_SUFFIXES:
            continue
        candidates = [module for module in MODULES
                      if (module == f"self_improve.{first}" and first not in ALSO_A_VARIABLE)
                      or ("_" in first and module.endswith(f".{first}"))]
        if candidates:
            if not any(resolves(f"{module}.{'.'.join(rest)}") for module in candidates):
                problems.append(f"{where}: {name} (not defined in {' or '.join(candidates)})")
        elif "_" in first and first not in INTEGRATION_MODULES | NOT_INSTALLED_HERE \
                and importlib.util.find_spec(first) is None:
            problems.append(f"{where}: {name} ({first} is no module)")
    problems += [f"{where}: {name} (retired module)" for name in RETIRED if re.search(rf"\b{name}\b", text)]
    return problems


@pytest.mark.parametrize("path", documented_files(), ids=lambda path: str(path.relative_to(REPO)))
def test_every_dotted_name_resolves(path: Path) -> None:
    assert problems_in(prose(path), str(path.relative_to(REPO))) == []


@pytest.mark.parametrize(("line", "found"), [
    ("See ``buffer_store.BufferStore``.", True),  # a module that moved
    ("# k_step_config: ``self_improve.k_step_config``", True),
    ("``self_improve.buffer.store.NoSuchStore``", True),  # a name the module lacks
    ("``exit_loop.ExitLoop.no_such_method``", True),
    ("``hosts.v1_env.rollout_of`` and ``exit_buffer.ExitBuffer``", False),
    ("``self_improve.buffer.store.BufferStore`` and ``buffer.store.StoreUnavailable``", False),
    ("``results.jsonl`` and ``trace.info`` and ``prime_rl.orchestrator``", False),
    ("``data.model_dump`` of a task, built by ``exit_sampler.ExitTaskSampler``", False),
    ("its modules ``k_step_config`` (settings) and ``kstep.runner``", True),  # a bare retired name
])
def test_the_check_catches_a_stale_name(line: str, found: bool) -> None:
    assert bool(problems_in(line, "probe")) is found
