"""Whether this CPU can run the prebuilt engine (the ``xllamacpp`` wheel, built for AVX2).

Stdlib only, and checked before the wheel's code is loaded: on a CPU without AVX2 that code
would die on an illegal instruction, so the user gets a message naming the fallback instead.
"""

from __future__ import annotations

from pathlib import Path

CPUINFO: Path = Path("/proc/cpuinfo")
"""Where Linux lists the CPU's instruction sets (the ``flags`` lines)."""

REQUIRED_FLAGS: tuple[str, ...] = ("avx2", "fma", "f16c")
"""Instruction sets the prebuilt wheel is compiled for (its ``get_system_info()``: AVX2, FMA, F16C)."""

FALLBACK: str = ("use the compiled engine instead, built for this CPU: "
                 "CMAKE_ARGS=\"$(python3 self_improve/local/build.py)\" pip install '.[local-compiled]', "
                 "then self-improve-local --engine compiled")
"""What a user whose CPU cannot run the prebuilt engine should do."""


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str] | None:
    """The instruction-set flags of the first CPU in ``cpuinfo``; None where the file has none (not Linux x86)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return set(value.split())
    return None


def require_avx2(cpuinfo: Path | None = None) -> None:
    """Refuse a CPU that lacks one of :data:`REQUIRED_FLAGS`; a ``cpuinfo`` without flags is not judged.

    ``cpuinfo`` defaults to :data:`CPUINFO`, read at call time.

    Raises:
        ValueError: ``cpu: must support AVX2, FMA and F16C ...``, naming the missing ones and :data:`FALLBACK`.
    """
    cpuinfo = CPUINFO if cpuinfo is None else Path(cpuinfo)
    flags = cpu_flags(cpuinfo)
    if flags is None:
        return
    missing = [flag for flag in REQUIRED_FLAGS if flag not in flags]
    if missing:
        raise ValueError(f"cpu: must support {', '.join(f.upper() for f in REQUIRED_FLAGS)} for the prebuilt engine "
                         f"(xllamacpp), got a CPU without {', '.join(f.upper() for f in missing)} "
                         f"(from {cpuinfo}); {FALLBACK}")
