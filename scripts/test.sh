#!/usr/bin/env bash
# The README's test command, what CI runs: lint, then both supported stacks, each in its own
# virtual environment (created if missing), slow tests included.
#   1. classic verifiers 0.3 (.venv): every extra, a real redis-server, tests/
#   2. verifiers 0.4, v1 only (.venv-v1, the package installed from its wheel, not editable): tests_v1/
set -euo pipefail
cd "$(dirname "$0")/.."
# The Redis store's tests start a real redis-server.
command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned with the other packages in one command, so pip takes the CPU build.
# The built-in model's engine is the prebuilt xllamacpp wheel (local extra): nothing compiles.
.venv/bin/python -m pip install -q torch==2.13.0 -e '.[classic,test,local,diversity]'
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"  # tests/unit and tests/integration (pyproject testpaths)

[ -x .venv-v1/bin/python ] || python3 -m venv .venv-v1
.venv-v1/bin/python -m pip install -q --upgrade pip
# Not editable: the verifiers 0.4 suite runs against the built wheel, as users get it.
.venv-v1/bin/python -m pip install -q '.[v1,test]'
.venv-v1/bin/python -m pip install -q --force-reinstall --no-deps .
(cd / && "$OLDPWD/.venv-v1/bin/python" -c 'import self_improve; print("tests_v1 run against", self_improve.__file__)' \
    | grep site-packages)
exec .venv-v1/bin/pytest -o pythonpath=tests tests_v1
