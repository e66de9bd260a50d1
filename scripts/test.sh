#!/usr/bin/env bash
# The project's test command: ./scripts/test.sh [extra `cargo test` arguments]
#
# Without DATABASE_URL it runs a throwaway PostgreSQL cluster (unix socket only, fsync off)
# for the duration of the run and points DATABASE_URL at it. With
# CHATLEDGER_TEST_PREPARE_CHECK=1 it also migrates a database and runs
# `cargo sqlx prepare --check` against it (CI sets this).
set -euo pipefail

cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Query macros compile against the committed .sqlx metadata, because the throwaway database
# is not migrated while cargo builds. SQLX_OFFLINE=false checks against DATABASE_URL instead.
export SQLX_OFFLINE="${SQLX_OFFLINE:-true}"

# shellcheck source=scripts/postgres.sh
source scripts/postgres.sh

# PostgreSQL refuses to run as root, so as root the cluster runs as the postgres account.
# Commands run from / so that account never needs access to the caller's directory.
RUN_AS_POSTGRES=0
as_cluster_user() {
    if [[ "$RUN_AS_POSTGRES" == 1 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

PG_TMPDIR=""
PG_BINDIR=""

stop_throwaway_cluster() {
    local status=$?
    if [[ -n "$PG_TMPDIR" ]]; then
        as_cluster_user "$PG_BINDIR/pg_ctl" -D "$PG_TMPDIR/pg" -m immediate -w stop \
            >/dev/null 2>&1 || true
        rm -rf -- "$PG_TMPDIR"
    fi
    exit "$status"
}

start_throwaway_cluster() {
    PG_BINDIR="$(find_pg_bindir)" || die "PostgreSQL server binaries (initdb, pg_ctl) not \
found in PATH, pg_config --bindir or /usr/lib/postgresql/*/bin; install them (Debian/Ubuntu: \
apt-get install postgresql, Fedora: dnf install postgresql-server, macOS: brew install \
postgresql@16) or set DATABASE_URL"
    if [[ "$(id -u)" == 0 ]]; then
        id -u postgres >/dev/null 2>&1 || die "running as root, but there is no 'postgres' \
account to run PostgreSQL as; create it (useradd --system postgres) or set DATABASE_URL"
        RUN_AS_POSTGRES=1
    fi

    PG_TMPDIR="$(mktemp -d /tmp/chatledger-test.XXXXXX)"
    trap stop_throwaway_cluster EXIT
    if [[ "$RUN_AS_POSTGRES" == 1 ]]; then
        chown postgres: "$PG_TMPDIR"
    fi

    step "Starting a throwaway PostgreSQL cluster in $PG_TMPDIR (binaries: $PG_BINDIR)"
    if ! as_cluster_user "$PG_BINDIR/initdb" -D "$PG_TMPDIR/pg" -U postgres \
        --auth-local=trust --auth-host=reject --encoding=UTF8 --locale=C --no-sync \
        >"$PG_TMPDIR/initdb.log" 2>&1; then
        cat "$PG_TMPDIR/initdb.log" >&2
        die "initdb failed"
    fi
    if ! as_cluster_user "$PG_BINDIR/pg_ctl" -D "$PG_TMPDIR/pg" -l "$PG_TMPDIR/postgres.log" \
        -w -t 60 -o "-c listen_addresses='' -c unix_socket_directories='$PG_TMPDIR' \
-c max_connections=300 -c fsync=off -c shared_buffers=128MB" start >/dev/null; then
        cat "$PG_TMPDIR/postgres.log" >&2
        die "could not start PostgreSQL"
    fi

    local psql="$PG_BINDIR/psql"
    [[ -x "$psql" ]] || psql=psql
    as_cluster_user "$psql" -h "$PG_TMPDIR" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 \
        -c "CREATE ROLE chatledger_owner LOGIN CREATEDB CREATEROLE" \
        -c "CREATE DATABASE chatledger OWNER chatledger_owner" \
        -c "CREATE DATABASE chatledger_prepare OWNER chatledger_owner"

    export DATABASE_URL="postgres://chatledger_owner@localhost/chatledger?host=$PG_TMPDIR"
    # The audit tests tamper with the ledger as a superuser, the strongest attacker there is.
    export CHATLEDGER_TEST_SUPERUSER_URL="postgres://postgres@localhost/chatledger?host=$PG_TMPDIR"
    # The prepare check migrates its own database, leaving the suite's one untouched.
    PREPARE_DATABASE_URL="postgres://chatledger_owner@localhost/chatledger_prepare?host=$PG_TMPDIR"
}

if [[ -n "${DATABASE_URL:-}" ]]; then
    step "Using the database in DATABASE_URL"
    PREPARE_DATABASE_URL="$DATABASE_URL"
else
    start_throwaway_cluster
fi

# An independent verifier of exports (tests/independent/verify_export.py) needs only Python and
# the rfc8785 package; the Rust tests run it through CHATLEDGER_TEST_PYTHON.
step "Preparing the independent Python verifier"
VERIFIER_VENV="${CHATLEDGER_VERIFIER_VENV:-target/verifier-venv}"
if [[ ! -x "$VERIFIER_VENV/bin/python" ]] || ! "$VERIFIER_VENV/bin/python" -c 'import rfc8785' 2>/dev/null; then
    python3 -m venv "$VERIFIER_VENV"
    "$VERIFIER_VENV/bin/python" -m pip install --quiet --disable-pip-version-check 'rfc8785>=0.1.4,<0.2'
fi
export CHATLEDGER_TEST_PYTHON="$PWD/$VERIFIER_VENV/bin/python"

step "cargo test --locked --all-targets $*"
cargo test --locked --all-targets "$@"

# The Python client (clients/python) against the binary cargo just built: its own database in
# DATABASE_URL's cluster, plus an embedded-cluster server for the database-outage tests.
step "Python client tests (clients/python/run-tests.sh)"
CHATLEDGER_BIN="$PWD/target/debug/chatledger" clients/python/run-tests.sh

step "schemathesis against /openapi.json (scripts/schemathesis.sh)"
scripts/schemathesis.sh

if [[ "${CHATLEDGER_TEST_PREPARE_CHECK:-0}" == 1 ]]; then
    step "Migrating a database for the sqlx prepare check"
    DATABASE_URL="$PREPARE_DATABASE_URL" cargo run --quiet --locked -- migrate
    step "cargo sqlx prepare --check -- --all-targets"
    DATABASE_URL="$PREPARE_DATABASE_URL" cargo sqlx prepare --check -- --all-targets
fi

step "All test steps passed"
