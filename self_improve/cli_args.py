"""Command lines generated from dataclasses: each field states its default, help and flags once.

A field declared with :func:`option` becomes one flag::

    @dataclass(frozen=True)
    class Args:
        steps: int = option(4, "self-improvement steps", "-K")
        base_url: str | None = option(None, "endpoint; unset starts the local model", "-b", "--api-base-url")
        progress: bool = option(True, "draw the progress bar")        # --no-progress

    config = from_namespace(Args, build_parser(Args).parse_args(argv))

Flag names: ``--`` + the field name with dashes, unless a ``--`` alias replaces
it; one-dash aliases are added. A bool that defaults to True gets only
``--no-<name>``, one that defaults to False only ``--<name>``. Values are
converted by the annotation (``int``, ``float``, ``str``, ``Path``, optionally
``| None``); a ``dict`` field takes a JSON object. A ``ValueError`` raised
while building the dataclass (its ``__post_init__`` checks) is re-raised
with the flags added after the field name, ``"steps (-K/--steps): ..."``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import re
import types
import typing
from collections.abc import Sequence
from typing import Any

_HELP, _FLAGS, _GROUP = "cli_help", "cli_flags", "cli_group"


def option(default: Any, help: str, *flags: str, group: str | None = None) -> Any:
    """A dataclass field with a command-line flag; a dict default is copied for each instance."""
    metadata = {_HELP: help, _FLAGS: flags, _GROUP: group}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _options(cls: type) -> list[tuple[dataclasses.Field[Any], Any, bool]]:
    """(field, value type, whether None is allowed) of each field declared with :func:`option`."""
    hints = typing.get_type_hints(cls)
    found = []
    for spec in dataclasses.fields(cls):
        if _HELP not in spec.metadata:
            continue
        kind, optional = hints[spec.name], False
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            members = [member for member in typing.get_args(kind) if member is not type(None)]
            optional = len(members) < len(typing.get_args(kind))
            if len(members) != 1:
                raise TypeError(f"{cls.__name__}.{spec.name}: only `T` or `T | None` can be a flag, got {kind}")
            kind = members[0]
        found.append((spec, typing.get_origin(kind) or kind, optional))
    return found


def _default(spec: dataclasses.Field[Any]) -> Any:
    return spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default


def flags(cls: type, name: str) -> list[str]:
    """The command-line flags of field ``name``, short ones first."""
    spec = next(spec for spec in dataclasses.fields(cls) if spec.name == name)
    given = spec.metadata[_FLAGS]
    long = next((flag for flag in given if flag.startswith("--")), "--" + name.replace("_", "-"))
    if isinstance(spec.default, bool) and spec.default:
        long = "--no-" + long[2:]
        return [long]
    return [flag for flag in given if not flag.startswith("--")] + [long]


class _Formatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` to a flag's help where X says something (not None, not a bool)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default is not None and action.default is not argparse.SUPPRESS
        if shown and not isinstance(action.default, bool) and action.option_strings:
            text += " (default: %(default)s)"
        return text


def build_parser(cls: type, **parser_kwargs: Any) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with one flag per :func:`option` field of dataclass ``cls``."""
    parser = argparse.ArgumentParser(formatter_class=_Formatter, **parser_kwargs)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for spec, kind, _ in _options(cls):
        title = spec.metadata[_GROUP]
        if title is not None and title not in groups:
            groups[title] = parser.add_argument_group(title)
        target = parser if title is None else groups[title]
        names, default, help_text = flags(cls, spec.name), _default(spec), spec.metadata[_HELP]
        metavar = names[-1][2:].upper().replace("-", "_")
        if kind is bool:
            action = "store_false" if default else "store_true"
            if default:
                help_text += "; this flag turns it off"
            target.add_argument(*names, dest=spec.name, action=action, default=default, help=help_text)
        elif kind is dict:
            shown = None if default is None else json.dumps(default)
            target.add_argument(*names, dest=spec.name, default=shown, metavar="JSON", help=help_text)
        else:
            target.add_argument(*names, dest=spec.name, type=kind, default=default, metavar=metavar, help=help_text)
    return parser


def _json_object(cls: type, name: str, text: str | None, optional: bool) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{name} ({'/'.join(flags(cls, name))}): not JSON: {text!r} ({error})") from error
    if not isinstance(value, dict) and not (value is None and optional):
        raise ValueError(f"{name} ({'/'.join(flags(cls, name))}): must be a JSON object, got {text!r}")
    return value


def with_flags(cls: type, message: str) -> str:
    """``message`` with the flags of the field it starts with added: ``"steps: x"`` -> ``"steps (-K/--steps): x"``."""
    match = re.match(r"(\w+):", message)
    if match is None or match[1] not in {spec.name for spec in dataclasses.fields(cls)}:
        return message
    return f"{match[1]} ({'/'.join(flags(cls, match[1]))}){message[match.end(1):]}"


def from_namespace(cls: type, namespace: argparse.Namespace, **overrides: Any) -> Any:
    """The dataclass ``cls`` built from parsed flags (and ``overrides``).

    Raises:
        ValueError: a JSON flag does not hold an object, or ``cls`` rejects a
            value; the message names the field and its flags.
    """
    values: dict[str, Any] = {}
    for spec, kind, optional in _options(cls):
        value = getattr(namespace, spec.name)
        values[spec.name] = _json_object(cls, spec.name, value, optional) if kind is dict else value
    try:
        return cls(**{**values, **overrides})
    except ValueError as error:
        raise ValueError(with_flags(cls, str(error))) from error


def parse(cls: type, argv: Sequence[str] | None = None, **parser_kwargs: Any) -> Any:
    """``from_namespace(cls, build_parser(cls, ...).parse_args(argv))``."""
    return from_namespace(cls, build_parser(cls, **parser_kwargs).parse_args(argv))
