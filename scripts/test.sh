#!/usr/bin/env bash
# The README's test command: installs the package with every extra into .venv
# (created if missing) and runs the whole test suite, slow tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned with the other packages in one command, so pip takes the CPU build.
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    .venv/bin/python -m pip install -q torch==2.13.0 -e '.[test,local,diversity]'
exec .venv/bin/python -m pytest "$@"
