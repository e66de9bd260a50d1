#!/usr/bin/env bash
# The Python client's tests against the real server and real PostgreSQL:
#     clients/python/run-tests.sh [pytest arguments]
#
# 1. tools/check_floors.py: no dependency floor in pyproject.toml admits a version with an
#    advisory listed in advisories.tsv (and, per venv, none is installed).
# 2. pytest in one venv per dependency set (CHATLEDGER_CLIENT_DEPS, default "newest oldest"):
#    "newest" installs the newest releases the requirements allow, "oldest" the floors
#    (constraints-oldest.txt). Venvs live in the cargo target directory
#    (CHATLEDGER_CLIENT_VENV_DIR overrides) so reruns are quick.
#
# The server binary is $CHATLEDGER_BIN, else <cargo target dir>/debug/chatledger (the target
# dir as `cargo metadata` reports it, so CARGO_TARGET_DIR is honoured). scripts/test.sh runs
# this after `cargo test` with DATABASE_URL pointing at its throwaway cluster; each pytest
# session then creates its own database there. Without DATABASE_URL the tests start a
# throwaway cluster themselves.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"

target_dir() {
    (cd "$repo" && cargo metadata --format-version 1 --no-deps 2>/dev/null) |
        "$python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null ||
        echo "${CARGO_TARGET_DIR:-$repo/target}"
}

target="$(target_dir)"
export CHATLEDGER_BIN="${CHATLEDGER_BIN:-$target/debug/chatledger}"
if [[ ! -x "$CHATLEDGER_BIN" ]]; then
    echo "error: no chatledger binary at $CHATLEDGER_BIN: run \`cargo build\` first or set CHATLEDGER_BIN" >&2
    exit 1
fi
venv_dir="${CHATLEDGER_CLIENT_VENV_DIR:-$target/python-client-venvs}"
read -r -a dep_sets <<<"${CHATLEDGER_CLIENT_DEPS:-newest oldest}"

echo "==> dependency floors (tools/check_floors.py)"
"$python" "$here/tools/check_floors.py"

status=0
for deps in "${dep_sets[@]}"; do
    venv="$venv_dir/$deps"
    if [[ ! -x "$venv/bin/python" ]]; then
        "$python" -m venv "$venv"
    fi
    pip=("$venv/bin/python" -m pip --disable-pip-version-check --quiet)
    # The venv's own pip and setuptools are as old as the Python that made it.
    "${pip[@]}" install --upgrade pip "setuptools>=78.1.1"
    case "$deps" in
        newest) "${pip[@]}" install --upgrade --upgrade-strategy eager "$here[langchain,test]" ;;
        oldest) "${pip[@]}" install --upgrade -c "$here/constraints-oldest.txt" "$here[langchain,test]" ;;
        *) echo "error: unknown dependency set $deps (newest, oldest)" >&2; exit 2 ;;
    esac
    echo "==> Python client tests, $deps dependencies:"
    "$venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null |
        grep -iE '^(langchain|langchain-core|langgraph|langgraph-checkpoint|pytest|anyio|httpx|h11|fastapi|starlette|uvicorn|gunicorn) ' |
        tr -s ' ' | sed 's/^/    /'
    "$venv/bin/python" "$here/tools/check_floors.py" --installed
    # A regular (not editable) install, as a user would have it; the tests import that copy.
    (cd "$here" && "$venv/bin/python" -m pytest -p no:cacheprovider "$@") || status=$?
done
exit "$status"
