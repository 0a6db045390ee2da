#!/usr/bin/env bash
# Validate configs/ with prime-rl's own config classes: `rl @ <config> --dry-run` at each
# prime-rl version, without a GPU (the dry run builds and checks the whole RLConfig and
# writes the sub-configs, then exits; no torch, vLLM or model download).
#
#   scripts/prime_rl_dry_run.sh PRIME_RL_GIT VERIFIERS_GIT
#
# PRIME_RL_GIT, VERIFIERS_GIT: git directories (bare is fine) holding prime-rl's tags
# v0.6.0, v0.7.0, v0.8.0 and the main commit below, and the verifiers commits those pin
# as their deps/verifiers submodule. Nothing is fetched from GitHub; packages come from
# the configured pip index. Everything is built under $WORK (default
# /tmp/self-improve-prime-rl): one checkout, one verifiers build and one Python 3.12
# venv per prime-rl version, reused by later runs.
#
# Environment:
#   WORK            where checkouts and venvs go (default /tmp/self-improve-prime-rl)
#   PYTHON312       a Python 3.12 interpreter (default: python3.12 on PATH, else pyenv's)
#   PRIME_RL_MAIN   the prime-rl main commit to check (default below, 2026-08-21)
#   ONLY            space-separated subset of: v0.6.0 v0.7.0 v0.8.0 main patched-main
#
# For every (version, config) pair the script prints PASS or REJECTED: for a pass, the
# worker pool and environment arguments prime-rl wrote into its orchestrator sub-config;
# for a rejection, prime-rl's validation errors. It compares with the expected matrix (a
# config must load at the versions it is written for and be rejected, by config
# validation, at the others) and exits 1 on any mismatch. Full outputs stay under $WORK/runs.
#
# "main" needs this repository's v1 environment importable (taskset id "self-improve",
# i.e. the `self_improve` module exporting a v1 Taskset in `__all__`): prime-rl main's
# config validation imports the taskset to narrow its config class.
# A main config with the placeholder taskset id `my-taskset` (ExIt over another taskset) is
# dry-run as a copy whose id is the test taskset `exit-letters` (tests_v1/tasksets on the path).
# "patched-main" applies integrations/prime-rl-main/0001-*.patch to the main checkout
# and dry-runs integrations/prime-rl-main/gsm8k-exit-sampler.toml.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    sed -n '2,30p' "$0" >&2
    exit 2
fi
PRIME_RL_GIT=$(cd "$1" && pwd)
VERIFIERS_GIT=$(cd "$2" && pwd)
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/tmp/self-improve-prime-rl}
PRIME_RL_MAIN=${PRIME_RL_MAIN:-559b44772e471d1538537b8805cc77f3824a5e64}
ONLY=${ONLY:-v0.6.0 v0.7.0 v0.8.0 main patched-main}
PATCH="$REPO/integrations/prime-rl-main/0001-curriculum-sampler-by-import-path.patch"

find_python() {
    local candidate
    for candidate in ${PYTHON312:-} "$(command -v python3.12 || true)" "$HOME"/.pyenv/versions/3.12*/bin/python; do
        # A pyenv shim is on PATH even when it cannot run 3.12, so try each one.
        if [[ -n $candidate ]] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    echo "no Python 3.12 found; set PYTHON312" >&2
    exit 2
}
PY=$(find_python)
mkdir -p "$WORK"

# checkout NAME REF: a work tree of prime-rl at REF under $WORK/prime-rl-NAME.
checkout() {
    local dir="$WORK/prime-rl-$1"
    if [[ ! -d $dir ]]; then
        git clone --quiet --shared --no-checkout "$PRIME_RL_GIT" "$dir"
    fi
    git -C "$dir" checkout --quiet --force "$2" 2>>"$WORK/git.log"
    git -C "$dir" clean --quiet -fdx
    echo "$dir"
}

# verifiers_checkout COMMIT: the verifiers package source at COMMIT (sparse: the package,
# not the example environments, some of whose large files a mirror may lack). It stays a
# git checkout so that hatch-vcs derives the version prime-rl's pins expect.
verifiers_checkout() {
    local dir="$WORK/verifiers-${1:0:12}"
    if [[ ! -d $dir ]]; then
        git clone --quiet --shared --no-checkout "$VERIFIERS_GIT" "$dir"
        git -C "$dir" config core.sparseCheckout true
        printf '/verifiers/\n/pyproject.toml\n/README.md\n/LICENSE\n' >"$dir/.git/info/sparse-checkout"
        # (git may still complain about example files outside the sparse set that the mirror lacks)
        git -C "$dir" checkout --quiet "$1" 2>>"$WORK/git.log"
        [[ -f $dir/verifiers/__init__.py ]] || { echo "verifiers $1 did not check out" >&2; exit 1; }
    fi
    echo "$dir"
}

# venv NAME PRIME_RL_DIR: a Python 3.12 venv with the verifiers prime-rl pins, prime-rl's
# config package and what its `rl` entrypoint imports at module level (v0.6.0's verifiers
# does not bring loguru, which prime-rl's logger needs).
venv() {
    local name=$1 prime_rl=$2 dir="$WORK/venv-$1"
    if [[ ! -x $dir/bin/rl-dry-run-ready ]]; then
        local commit
        commit=$(git -C "$prime_rl" ls-tree HEAD deps/verifiers | awk '{print $3}')
        local verifiers
        verifiers=$(verifiers_checkout "$commit")
        rm -rf "$dir"
        "$PY" -m venv "$dir"
        "$dir/bin/pip" install --quiet --disable-pip-version-check \
            "$verifiers" "$prime_rl/packages/prime-rl-configs" \
            nvidia-ml-py psutil setproctitle tomli_w loguru >"$WORK/pip-$name.log" 2>&1 \
            || { echo "pip install failed for $name, see $WORK/pip-$name.log" >&2; exit 1; }
        printf '#!/bin/sh\n# verifiers %s\n' "$commit" >"$dir/bin/rl-dry-run-ready"
        chmod +x "$dir/bin/rl-dry-run-ready"
    fi
    echo "$dir"
}

FAILED=0

# summarise VENV RUN: what the dry run wrote for the self-improve train env (orchestrator
# sub-config): its worker pool and its environment arguments, whatever the layout.
summarise() {
    "$1/bin/python" - "$2" <<'PY'
import json, sys, tomllib
from pathlib import Path

configs = sorted(Path(sys.argv[1]).glob("**/configs/orchestrator.*"))  # .toml up to v0.8.0, .json on main
if not configs:
    sys.exit(0)
text = configs[0].read_text()
train = (json.loads(text) if configs[0].suffix == ".json" else tomllib.loads(text)).get("train", {})
for entry in train.get("env", []) + train.get("source", []):
    pool = entry.get("pool") or entry.get("serve", {}).get("pool") or {"num_workers": entry.get("num_workers")}
    env = entry.get("env", {})
    if "legacy" in entry:
        where, args = f"legacy id={entry['legacy'].get('id')}", entry["legacy"].get("args", {})
    elif env:
        taskset = env.get("taskset", {})
        where = f"v1 env id={env.get('id')!r} taskset id={taskset.get('id')!r}"
        args = {k: v for k, v in env.items() if k not in ("id", "taskset", "agent", "timeout", "retries",
                                                          "interception") and v is not None}
        args |= {f"taskset.{k}": v for k, v in taskset.items() if k not in ("id", "task") and v is not None}
    else:
        where, args = f"id={entry.get('id')}", entry.get("args", {})
    curriculum = entry.get("curriculum") or {}
    sampler = curriculum.get("sampler", {})
    extra = f" sampler={json.dumps(sampler)}" if sampler else ""
    print(f"wrote {configs[0].name}: {where} group_size={entry.get('group_size')} "
          f"pool={json.dumps(pool)}{extra} args={json.dumps(args)}")
PY
}
# dry_run NAME PRIME_RL_DIR VENV CONFIG EXPECT(pass|reject)
dry_run() {
    local name=$1 prime_rl=$2 env=$3 config=$4 expect=$5
    local label=${config#"$REPO"/}
    local run="$WORK/runs/$name/$(echo "$label" | tr '/' '_')"
    rm -rf "$run" && mkdir -p "$run"
    local status=PASS
    # Relative paths in the config (output_dir, buffer_path) resolve against the run folder.
    # prime_rl.configs is read from the checkout (so a patch applies), and this repository is
    # on the path so that prime-rl main can import the v1 taskset.
    local path="$prime_rl/packages/prime-rl-configs/src:$prime_rl/src"
    path="$path:$REPO${EXTRA_PYTHONPATH:+:$EXTRA_PYTHONPATH}"
    (cd "$run" && PYTHONPATH="$path" \
        "$env/bin/python" -m prime_rl.entrypoints.rl @ "$config" --dry-run) >"$run/output.txt" 2>&1 \
        || status=REJECTED
    local why="" written=""
    if [[ $status == REJECTED ]]; then
        # The validation errors inside prime-rl's error box, else the last line (a traceback's).
        why=$(sed -n '/validation error/,/╰/p' "$run/output.txt" | sed 's/[│╰╯─]//g; s/^ *//; s/ *$//' \
            | { grep -v '^$' || true; } | paste -sd ' ' -)
        [[ -n $why ]] || why=$(grep -v '^\s*$' "$run/output.txt" | tail -1 || true)
    else
        written=$(summarise "$env" "$run")
    fi
    local verdict=ok
    if [[ $status == PASS && $expect == reject ]] || [[ $status == REJECTED && $expect == pass ]]; then
        verdict=UNEXPECTED
    elif [[ $status == REJECTED ]] && ! grep -q "validation error" "$run/output.txt"; then
        verdict="UNEXPECTED (not a config error)"  # e.g. a missing module: proves nothing
    fi
    [[ $verdict == ok ]] || FAILED=1
    printf '%-13s %-50s %-8s (expected %s: %s)\n' "$name" "$label" "$status" "$expect" "$verdict"
    [[ -n $why ]] && printf '    %s\n' "${why:0:400}"
    [[ -n $written ]] && printf '    %s\n' "$written"
    printf '    output: %s\n' "$run/output.txt"
    return 0
}

CLASSIC_V060=("$REPO"/configs/prime-rl-v0.6.0/*.toml)
CLASSIC_V080=("$REPO"/configs/prime-rl-v0.8.0/*.toml)
V1_MAIN=("$REPO"/configs/prime-rl-main/*.toml)
PLACEHOLDER='id = "my-taskset"'  # the taskset id of configs/prime-rl-main/taskset-exit.toml

for name in $ONLY; do
    case $name in
        v0.6.0 | v0.7.0 | v0.8.0) ref=$name ;;
        main | patched-main) ref=$PRIME_RL_MAIN ;;
        *) echo "unknown version $name" >&2; exit 2 ;;
    esac
    dir=$(checkout "$name" "$ref")
    env=$(venv "${name#patched-}" "$dir")  # main and patched-main share one venv
    pinned=$(sed -n 's/^# verifiers //p' "$env/bin/rl-dry-run-ready")
    echo "== $name: prime-rl $(git -C "$dir" rev-parse HEAD), verifiers $pinned"
    case $name in
        v0.6.0 | v0.7.0)
            for c in "${CLASSIC_V060[@]}"; do dry_run "$name" "$dir" "$env" "$c" pass; done
            for c in "${CLASSIC_V080[@]}"; do dry_run "$name" "$dir" "$env" "$c" reject; done
            ;;
        v0.8.0)
            for c in "${CLASSIC_V080[@]}"; do dry_run "$name" "$dir" "$env" "$c" pass; done
            for c in "${CLASSIC_V060[@]}"; do dry_run "$name" "$dir" "$env" "$c" reject; done
            ;;
        main)
            for c in "${V1_MAIN[@]}"; do
                if grep -q "$PLACEHOLDER" "$c"; then
                    # ExIt over another taskset: the committed placeholder id cannot be imported, so
                    # dry-run a copy with only that id replaced by the test taskset exit-letters.
                    copy="$WORK/runs/$(basename "$c" .toml)-exit-letters.toml"
                    mkdir -p "$WORK/runs"
                    sed "s/$PLACEHOLDER/id = \"exit-letters\"/" "$c" >"$copy"
                    EXTRA_PYTHONPATH="$REPO/tests_v1/tasksets" dry_run "$name" "$dir" "$env" "$copy" pass
                else
                    dry_run "$name" "$dir" "$env" "$c" pass
                fi
            done
            dry_run "$name" "$dir" "$env" "${CLASSIC_V060[0]}" reject
            dry_run "$name" "$dir" "$env" "${CLASSIC_V080[0]}" reject
            # Unpatched main has no `custom` sampler type.
            EXTRA_PYTHONPATH="$REPO/integrations/prime-rl-main" dry_run "$name" "$dir" "$env" \
                "$REPO/integrations/prime-rl-main/gsm8k-exit-sampler.toml" reject
            ;;
        patched-main)
            git -C "$dir" apply --check "$PATCH"
            git -C "$dir" apply "$PATCH"
            echo "   applied $(basename "$PATCH")"
            # The config names exit_sampler.ExitTaskSampler, which lives in integrations/prime-rl-main.
            EXTRA_PYTHONPATH="$REPO/integrations/prime-rl-main" dry_run "$name" "$dir" "$env" \
                "$REPO/integrations/prime-rl-main/gsm8k-exit-sampler.toml" pass
            ;;
    esac
done
exit $FAILED
