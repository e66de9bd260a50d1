#!/usr/bin/env bash
# Property-based contract test: schemathesis (from PyPI) against the server's own
# /openapi.json, once per authority (writer on session routes, auditor on audit routes, admin
# on admin routes). Checks: no 5xx, responses match the schema, documented status codes and
# content types. Needs DATABASE_URL; runs CHATLEDGER_BIN, else the binary cargo builds.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cargo-bin.sh
source scripts/cargo-bin.sh

: "${DATABASE_URL:?DATABASE_URL must be set (scripts/test.sh sets it)}"
VENV="${CHATLEDGER_SCHEMATHESIS_VENV:-target/schemathesis-venv}"
EXAMPLES="${CHATLEDGER_SCHEMATHESIS_EXAMPLES:-25}"
BIN="${CHATLEDGER_BIN:-$(cargo_bin chatledger)}"

if [[ ! -x "$VENV/bin/schemathesis" ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check 'schemathesis>=4.3,<5'
fi

WORK="$(mktemp -d /tmp/chatledger-schemathesis.XXXXXX)"
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

tenant="st-$(date +%s)-$$"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/admin.key"
"$BIN" tenants create "$tenant" >/dev/null
writer="$("$BIN" keys create --tenant "$tenant" --role writer 2>/dev/null)"
auditor="$("$BIN" keys create --tenant "$tenant" --role auditor 2>/dev/null)"

"$BIN" checkpoint-key --generate "$WORK/checkpoint.key" --name chatledger/schemathesis >/dev/null
"$BIN" serve --listen 127.0.0.1:0 --log-format json --admin-key-file "$WORK/admin.key" \
    --checkpoint-key-file "$WORK/checkpoint.key" \
    2>"$WORK/server.log" &
SERVER_PID=$!
address=""
for _ in $(seq 1 300); do
    address="$(grep -o '"message":"chatledger listening","address":"[^"]*"' "$WORK/server.log" \
        | sed 's/.*"address":"//; s/"$//' || true)"
    [[ -n "$address" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.1
done
[[ -n "$address" ]] || { echo "the server did not start" >&2; exit 1; }
base="http://$address"

# Some data, so that reads, verify and export also meet existing sessions.
curl -fsS -o /dev/null -H "Authorization: Bearer $writer" -H 'Content-Type: application/json' \
    -d '{"messages":[{"role":"user","content":"hello"},{"role":"assistant","content":[{"type":"text","text":"hi"},"there"]}]}' \
    "$base/v1/sessions/s1/messages"

checks=not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance
run() {
    local key="$1"; shift
    "$VENV/bin/schemathesis" run "$base/openapi.json" -H "Authorization: Bearer $key" \
        --checks "$checks" --max-examples "$EXAMPLES" --generation-deterministic --no-color "$@"
}
# The live tail never ends by itself (tests/api/tail.rs covers it), so it is not fuzzed here.
run "$writer" --exclude-path-regex '^/v1/admin|/verify$|/export$|/events$'
run "$auditor" --include-path-regex '/verify$|/export$'
run "$(cat "$WORK/admin.key")" --include-path-regex '^/v1/admin'
