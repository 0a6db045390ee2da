"""The v1 configs' ``ExitConfig`` fields, made from ``exit_config`` so each is declared once.

``ExitEnvConfig`` (``--env.*``), ``SelfImproveTasksetConfig`` (``--env.taskset.*``)
and ``SelfImproveTaskConfig`` (``--env.taskset.task.*``) each hold some
``exit_config.ExitConfig`` arguments. :func:`config_model` builds such a config
class with pydantic's ``create_model``: the fields of its hand-written base
(what is not an ``ExitConfig`` argument) plus the named arguments, each with the
type, default and one-line doc of its ``ExitConfig`` declaration (the doc is the
field's ``description``, which verifiers' CLI shows in ``--help``).
:func:`flags_table` renders the fields of such configs as the table in
docs/verifiers-v1.md (a test holds the page to it).
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import fields
from functools import cache
from typing import Any

from pydantic import BaseModel, Field, create_model

from self_improve.exit_config import ExitConfig, field_docs, type_name


@cache
def _exit_fields() -> dict[str, tuple[Any, Any]]:
    """Each ``ExitConfig`` field's type and default, by name."""
    hints = typing.get_type_hints(ExitConfig)
    return {spec.name: (hints[spec.name], spec.default) for spec in fields(ExitConfig)}


def exit_fields(names: Sequence[str], notes: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``create_model`` field specs ``{name: (type, Field(default, description=doc))}`` for these
    ``ExitConfig`` arguments; ``notes[name]`` is appended to a field's doc (what differs on this host)."""
    known, docs, notes = _exit_fields(), field_docs(), notes or {}
    unknown = sorted(set(names) - set(known)) + sorted(set(notes) - set(names))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not ExitConfig arguments of this config")
    specs = {}
    for name in names:
        annotation, default = known[name]
        description = f"{docs[name]} {notes[name]}" if name in notes else docs[name]
        specs[name] = (annotation, Field(default, description=description))
    return specs


def config_model(name: str, base: type[BaseModel], names: Sequence[str], doc: str, module: str,
                 notes: Mapping[str, str] | None = None) -> Any:
    """The config class ``name``: ``base``'s fields plus the ``ExitConfig`` arguments ``names``."""
    return create_model(name, __base__=base, __module__=module, __doc__=doc, **exit_fields(names, notes))


def own_fields(config: type[BaseModel]) -> list[str]:
    """The fields the package declares on ``config`` (its own bases' and its ``ExitConfig`` ones, not
    verifiers' inherited ones), in field order; nested config blocks are left out."""
    declared = set().union(*(vars(cls).get("__annotations__", {}) for cls in config.__mro__
                             if cls.__module__.startswith("self_improve.")))
    return [name for name, info in config.model_fields.items() if name in declared
            and not (isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel))]


def flags_table(blocks: Sequence[tuple[str, type[BaseModel]]]) -> str:
    """A markdown table of every own field of each ``(flag prefix, config)`` block: flag, type,
    default and description (the docs' configuration table)."""
    rows = ["| Flag | Type | Default | Description |", "| ---- | ---- | ------- | ----------- |"]
    for prefix, config in blocks:
        for name in own_fields(config):
            info = config.model_fields[name]
            text = re.sub(r"\s+", " ", info.description or "").strip()
            if not text:
                raise ValueError(f"{config.__name__}.{name}: needs a doc string (it is a row of the table)")
            rows.append(f"| `{prefix}.{name.replace('_', '-')}` | {type_name(info.annotation)} "
                        f"| `{json.dumps(info.default)}` | {text} |")
    return "\n".join(rows)
