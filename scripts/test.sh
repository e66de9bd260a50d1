#!/usr/bin/env bash
# The project's test command: ./scripts/test.sh [extra `cargo test` arguments]
#
# Without DATABASE_URL it runs a throwaway PostgreSQL cluster (scripts/cluster.sh: unix socket
# only, fsync off) for the duration of the run and points DATABASE_URL at it. With
# CHATLEDGER_TEST_PREPARE_CHECK=1 it also migrates a database and runs
# `cargo sqlx prepare --check` against it (CI sets this).
set -euo pipefail

cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Query macros compile against the committed .sqlx metadata, because the throwaway database
# is not migrated while cargo builds. SQLX_OFFLINE=false checks against DATABASE_URL instead.
export SQLX_OFFLINE="${SQLX_OFFLINE:-true}"

# shellcheck source=scripts/cluster.sh
source scripts/cluster.sh
# shellcheck source=scripts/cargo-bin.sh
source scripts/cargo-bin.sh

if [[ -n "${DATABASE_URL:-}" ]]; then
    step "Using the database in DATABASE_URL"
    PREPARE_DATABASE_URL="$DATABASE_URL"
else
    cluster_start --fsync=off --set max_connections=300 --set shared_buffers=128MB \
        chatledger chatledger_prepare
    DATABASE_URL="$(cluster_url chatledger_owner chatledger)"
    # The audit tests tamper with the ledger as a superuser, the strongest attacker there is.
    CHATLEDGER_TEST_SUPERUSER_URL="$(cluster_url postgres chatledger)"
    export DATABASE_URL CHATLEDGER_TEST_SUPERUSER_URL
    # The prepare check migrates its own database, leaving the suite's one untouched.
    PREPARE_DATABASE_URL="$(cluster_url chatledger_owner chatledger_prepare)"
fi

# An independent verifier of exports (tests/independent/verify_export.py) needs only Python, the
# rfc8785 package and, for checkpoint signatures (Ed25519), the cryptography package; the Rust
# tests run it through CHATLEDGER_TEST_PYTHON.
step "Preparing the independent Python verifier"
VERIFIER_VENV="${CHATLEDGER_VERIFIER_VENV:-target/verifier-venv}"
if [[ ! -x "$VERIFIER_VENV/bin/python" ]] || ! "$VERIFIER_VENV/bin/python" -c 'import rfc8785, cryptography' 2>/dev/null; then
    python3 -m venv "$VERIFIER_VENV"
    "$VERIFIER_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        'rfc8785>=0.1.4,<0.2' 'cryptography>=42'
fi
export CHATLEDGER_TEST_PYTHON="$PWD/$VERIFIER_VENV/bin/python"

step "cargo test --locked --all-targets $*"
cargo test --locked --all-targets "$@"

# The Python client (clients/python) against the binary cargo just built: its own database in
# DATABASE_URL's cluster, plus an embedded-cluster server for the database-outage tests.
# Where cargo put it: target/debug unless CARGO_TARGET_DIR (or a cargo config) says otherwise.
CHATLEDGER_BIN="$(cargo_bin chatledger)"
export CHATLEDGER_BIN
step "Python client tests (clients/python/run-tests.sh)"
clients/python/run-tests.sh

step "Console tests in headless Chromium (scripts/console-tests.sh)"
scripts/console-tests.sh

step "schemathesis against /openapi.json (scripts/schemathesis.sh)"
scripts/schemathesis.sh

if [[ "${CHATLEDGER_TEST_PREPARE_CHECK:-0}" == 1 ]]; then
    step "Migrating a database for the sqlx prepare check"
    DATABASE_URL="$PREPARE_DATABASE_URL" cargo run --quiet --locked -- migrate
    step "cargo sqlx prepare --check -- --all-targets"
    DATABASE_URL="$PREPARE_DATABASE_URL" cargo sqlx prepare --check -- --all-targets
fi

step "All test steps passed"
