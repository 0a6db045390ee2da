"""The prebuilt engine's CPU check: a CPU without AVX2 is refused with the fallback named."""

from __future__ import annotations

from pathlib import Path

import pytest

from self_improve.local.cpu import FALLBACK, cpu_flags, require_avx2

HASWELL = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c bmi2\n\nprocessor\t: 1\nflags\t\t: fpu\n"
SANDY_BRIDGE = "processor\t: 0\nflags\t\t: fpu sse2 sse4_2 avx\n"


def _cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


def test_the_first_cpus_flags_are_read(tmp_path: Path) -> None:
    assert cpu_flags(_cpuinfo(tmp_path, HASWELL)) == {"fpu", "sse2", "avx", "avx2", "fma", "f16c", "bmi2"}


def test_a_cpu_with_avx2_fma_and_f16c_passes(tmp_path: Path) -> None:
    require_avx2(_cpuinfo(tmp_path, HASWELL))


def test_a_cpu_without_avx2_is_refused_naming_what_is_missing_and_the_fallback(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^cpu: must support AVX2, FMA, F16C") as raised:
        require_avx2(_cpuinfo(tmp_path, SANDY_BRIDGE))
    assert "without AVX2, FMA, F16C" in str(raised.value)
    assert FALLBACK in str(raised.value) and "--engine compiled" in FALLBACK


@pytest.mark.parametrize("text", ["", "processor\t: 0\nFeatures\t: fp asimd\n"])
def test_a_cpuinfo_without_flags_is_not_judged(tmp_path: Path, text: str) -> None:
    assert cpu_flags(_cpuinfo(tmp_path, text)) is None
    require_avx2(_cpuinfo(tmp_path, text))


def test_a_missing_cpuinfo_is_not_judged(tmp_path: Path) -> None:
    assert cpu_flags(tmp_path / "absent") is None
