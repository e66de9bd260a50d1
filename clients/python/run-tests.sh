#!/usr/bin/env bash
# The Python client's tests against the real server and real PostgreSQL:
#     clients/python/run-tests.sh [pytest arguments]
# scripts/test.sh runs this after `cargo test` (which built target/debug/chatledger) with
# DATABASE_URL pointing at its throwaway cluster; each pytest session then creates its own
# database there. Without DATABASE_URL the tests start a throwaway cluster themselves.
# The venv is kept in target/ (CHATLEDGER_CLIENT_VENV overrides) so reruns are quick.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${CHATLEDGER_CLIENT_VENV:-$repo/target/python-client-venv}"

if [[ ! -x "$venv/bin/python" ]]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
# A regular (not editable) install, as a user would have it; the tests import that copy.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$here[langchain,test]"
"$venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null |
    grep -E '^(langchain|langchain-core|langgraph|httpx|pytest) ' | tr -s ' ' | sed 's/^/    /'

export CHATLEDGER_BIN="${CHATLEDGER_BIN:-$(source "$repo/scripts/cargo-bin.sh" && cargo_bin chatledger)}"
cd "$here"
exec "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
