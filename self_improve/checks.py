"""Range checks that name the argument: the one ``ValueError`` style of every config in the package.

Each check raises ``ValueError("<name>: must be ..., got <value>")`` and returns
nothing; ``exit_config.ExitConfig``, the simulation's settings and
``kstep.config.EvalConfig`` all validate through them::

    >>> number("kappa", -1.0, 0.0)
    Traceback (most recent call last):
    ...
    ValueError: kappa: must be a number in [0.0, inf), got -1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def number(name: str, value: Any, low: float = -math.inf, high: float = math.inf, *,
           low_open: bool = False) -> None:
    """A finite int or float in [low, high] (in (low, high] with ``low_open``); an infinite bound is open."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not (low < value if low_open else low <= value) or not value <= high:
        if math.isinf(low) and math.isinf(high):
            raise ValueError(f"{name}: must be a finite number, got {value!r}")
        lower = "(" if low_open or math.isinf(low) else "["
        upper = ")" if math.isinf(high) else "]"
        raise ValueError(f"{name}: must be a number in {lower}{low}, {high}{upper}, got {value!r}")


def integer(name: str, value: Any, low: int) -> None:
    """An int (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: must be an integer >= {low}, got {value!r}")


def subset_size(name: str, value: Any) -> None:
    """How many examples a seeded subset takes: -1 for all, else >= 1."""
    integer(name, value, -1)
    if value == 0:
        raise ValueError(f"{name}: must be -1 (all) or >= 1, got 0")


def choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    """One of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name}: must be one of {', '.join(allowed)}; got {value!r}")


def flag(name: str, value: Any) -> None:
    """True or False (not 0/1, not "yes")."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}: must be true or false, got {value!r}")


def text(name: str, value: Any, nullable: bool = False) -> None:
    """A non-empty string without NUL bytes (``nullable``: the message says null is accepted too)."""
    if not isinstance(value, str) or not value or "\x00" in value:
        either = " or null" if nullable else ""
        raise ValueError(f"{name}: must be a non-empty string without NUL bytes{either}, got {value!r}")
