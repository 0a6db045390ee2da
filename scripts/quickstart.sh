#!/usr/bin/env bash
# The README's main command: from a fresh clone, install the package with the built-in
# local model into .venv (created if missing; nothing is compiled: the engine is llama.cpp's
# server in the prebuilt xllamacpp wheel), then run `self-improve-local`: it assembles and checks the model file, starts
# the server on 127.0.0.1, runs `vf-eval self-improve` with ExIt on, prints per-metric
# averages and stops the server. Extra flags go to self-improve-local (see --help and
# docs/local-model.md).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# Wheels only: a machine where one would have to be compiled fails here instead of building.
# The faster compiled engine is an option (docs/local-model.md: --engine compiled).
.venv/bin/python -m pip install -q --only-binary :all: -e '.[classic,local]'
exec .venv/bin/self-improve-local "$@"
