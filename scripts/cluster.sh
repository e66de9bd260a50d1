#!/usr/bin/env bash
# A throwaway PostgreSQL cluster in a temp dir, for the test command, CI and the benchmark.
#
# Sourced (scripts/test.sh, bench/lib.sh):
#     source scripts/cluster.sh
#     cluster_start [--fsync=off] [--set NAME=VALUE]... [DATABASE]...
#     DATABASE_URL="$(cluster_url chatledger_owner DATABASE)"
# Run (for a shell or a command of your own against a fresh cluster, removed at the end):
#     scripts/cluster.sh [--fsync=off] [--set NAME=VALUE]... [-- COMMAND [ARG]...]
#     (COMMAND, default $SHELL, gets DATABASE_URL and CHATLEDGER_TEST_SUPERUSER_URL for the
#     database `chatledger`.)
#
# The cluster listens on a unix socket in the temp dir only (no TCP), trusts local connections,
# and has the owner role chatledger_owner (LOGIN CREATEDB CREATEROLE, not a superuser) owning
# each DATABASE. Its encoding is UTF8 with the C locale for sorting and C.UTF-8 for character
# classes, so that lower() and pg_trgm know non-ASCII letters. PostgreSQL refuses to run as
# root, so as root it runs as the `postgres` account, from /, in directories that account owns.
# cluster_start sets an EXIT trap that calls cluster_stop (stop, then remove the temp dir unless
# CLUSTER_KEEP=1); a caller that sets its own EXIT trap afterwards calls cluster_stop from it.
#
# After cluster_start:
#   CLUSTER_DIR     the temp dir (root-owned, 0711): pg/ data, sock/ socket, log/ logs; callers
#                   may keep their own files here, removed with it
#   CLUSTER_PGDATA  the data directory; postmaster.pid is there while it runs
#   CLUSTER_SOCKET  the socket directory, the host of every URL
#   CLUSTER_BINDIR  where initdb and pg_ctl are; CLUSTER_PSQL: psql
#   CLUSTER_LOG     the server's log
# shellcheck shell=bash

# shellcheck source=scripts/postgres.sh
source "$(dirname "${BASH_SOURCE[0]}")/postgres.sh"

CLUSTER_DIR=""
CLUSTER_PGDATA=""
CLUSTER_SOCKET=""
CLUSTER_BINDIR=""
CLUSTER_PSQL=""
CLUSTER_LOG=""
CLUSTER_ACCOUNT="" # the account PostgreSQL runs as when we are root

cluster_die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Runs a command as the cluster's account, from / so that account never needs access to the
# caller's directory.
cluster_as_owner_account() {
    if [[ -n "$CLUSTER_ACCOUNT" ]]; then
        (cd / && runuser -u "$CLUSTER_ACCOUNT" -- "$@")
    else
        (cd / && "$@")
    fi
}

# postgres://ROLE@localhost/DATABASE?host=SOCKET
cluster_url() {
    printf 'postgres://%s@localhost/%s?host=%s\n' "$1" "$2" "$CLUSTER_SOCKET"
}

# psql as the superuser `postgres` on the database `postgres` (a -d later in ARGS wins).
cluster_psql() {
    "$CLUSTER_PSQL" -h "$CLUSTER_SOCKET" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 "$@"
}

# cluster_start [--fsync=on|off] [--set NAME=VALUE]... [DATABASE]...
cluster_start() {
    local fsync=on
    local -a settings=()
    local -a databases=()
    while [[ $# -gt 0 ]]; do
        case "$1" in
        --fsync=on | --fsync=off) fsync="${1#--fsync=}" ;;
        --set)
            [[ "${2:-}" == *=* ]] || cluster_die "cluster_start: --set wants NAME=VALUE"
            settings+=("$2")
            shift
            ;;
        --set=*=*) settings+=("${1#--set=}") ;;
        -*) cluster_die "cluster_start: unknown option $1" ;;
        *) databases+=("$1") ;;
        esac
        shift
    done
    [[ -z "$CLUSTER_DIR" ]] || cluster_die "cluster_start: a cluster already runs in $CLUSTER_DIR"

    CLUSTER_BINDIR="$(find_pg_bindir)" || cluster_die "PostgreSQL server binaries (initdb, \
pg_ctl) not found in PATH, pg_config --bindir or /usr/lib/postgresql/*/bin; install them \
(Debian/Ubuntu: apt-get install postgresql, Fedora: dnf install postgresql-server, macOS: brew \
install postgresql@16), or point DATABASE_URL at a database (scripts/test.sh then uses it)"
    CLUSTER_PSQL="$(find_pg_tool psql)" || cluster_die "psql not found"
    if [[ "$(id -u)" == 0 ]]; then
        id -u postgres >/dev/null 2>&1 || cluster_die "running as root, but there is no \
'postgres' account to run PostgreSQL as; create it (useradd --system postgres)"
        CLUSTER_ACCOUNT=postgres
    fi

    CLUSTER_DIR="$(mktemp -d "${TMPDIR:-/tmp}/chatledger-cluster.XXXXXX")"
    trap '_cluster_on_exit' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    CLUSTER_PGDATA="$CLUSTER_DIR/pg"
    CLUSTER_SOCKET="$CLUSTER_DIR/sock"
    CLUSTER_LOG="$CLUSTER_DIR/log/postgres.log"
    chmod 0711 "$CLUSTER_DIR"
    mkdir -m 0700 "$CLUSTER_PGDATA" "$CLUSTER_SOCKET" "$CLUSTER_DIR/log"
    if [[ -n "$CLUSTER_ACCOUNT" ]]; then
        chown "$CLUSTER_ACCOUNT:" "$CLUSTER_PGDATA" "$CLUSTER_SOCKET" "$CLUSTER_DIR/log"
    fi

    printf '==> A throwaway PostgreSQL cluster in %s (binaries: %s; fsync %s)\n' \
        "$CLUSTER_DIR" "$CLUSTER_BINDIR" "$fsync" >&2
    # --no-sync only skips flushing initdb's own files; fsync is the running cluster's setting.
    if ! cluster_as_owner_account "$CLUSTER_BINDIR/initdb" -D "$CLUSTER_PGDATA" -U postgres \
        --auth-local=trust --auth-host=reject --encoding=UTF8 --locale=C --lc-ctype=C.UTF-8 \
        --no-sync >"$CLUSTER_DIR/log/initdb.log" 2>&1; then
        cat "$CLUSTER_DIR/log/initdb.log" >&2
        cluster_die "initdb failed (is the C.UTF-8 locale installed? locale -a lists it)"
    fi

    # The settings go into postgresql.conf (written as the cluster's account), so that no value
    # passes through a shell.
    local setting conf=""
    settings=("listen_addresses=" "unix_socket_directories=$CLUSTER_SOCKET" "fsync=$fsync" \
        "${settings[@]}")
    for setting in "${settings[@]}"; do
        conf+="${setting%%=*} = '$(_cluster_conf_quote "${setting#*=}")'"$'\n'
    done
    # shellcheck disable=SC2016 # $1 is the inner shell's
    printf '\n# scripts/cluster.sh\n%s' "$conf" |
        cluster_as_owner_account sh -c 'cat >>"$1"' sh "$CLUSTER_PGDATA/postgresql.conf"

    if ! cluster_as_owner_account "$CLUSTER_BINDIR/pg_ctl" -D "$CLUSTER_PGDATA" \
        -l "$CLUSTER_LOG" -w -t 60 start >/dev/null; then
        cat "$CLUSTER_LOG" >&2
        cluster_die "could not start PostgreSQL"
    fi

    local -a statements=(-c "CREATE ROLE chatledger_owner LOGIN CREATEDB CREATEROLE")
    local database
    for database in "${databases[@]}"; do
        statements+=(-c "CREATE DATABASE \"$database\" OWNER chatledger_owner")
    done
    cluster_psql "${statements[@]}"
}

# Stops the cluster (fast, else immediate) and removes its temp dir unless CLUSTER_KEEP=1.
# Harmless when no cluster runs.
cluster_stop() {
    [[ -n "$CLUSTER_DIR" ]] || return 0
    if [[ -f "$CLUSTER_PGDATA/postmaster.pid" ]]; then
        cluster_as_owner_account "$CLUSTER_BINDIR/pg_ctl" -D "$CLUSTER_PGDATA" -m fast -w \
            -t 30 stop >/dev/null 2>&1 ||
            cluster_as_owner_account "$CLUSTER_BINDIR/pg_ctl" -D "$CLUSTER_PGDATA" \
                -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [[ "${CLUSTER_KEEP:-0}" == 1 ]]; then
        printf '    kept %s (CLUSTER_KEEP=1)\n' "$CLUSTER_DIR" >&2
    else
        rm -rf -- "$CLUSTER_DIR"
    fi
    CLUSTER_DIR=""
}

_cluster_on_exit() {
    local status=$?
    cluster_stop
    exit "$status"
}

# A value inside single quotes in postgresql.conf: ' doubled.
_cluster_conf_quote() { printf '%s' "${1//\'/\'\'}"; }

# Run, not sourced: a cluster for one command.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    options=()
    while [[ $# -gt 0 ]]; do
        case "$1" in
        --) shift && break ;;
        --set) options+=("$1" "${2:-}") && shift 2 ;;
        -*) options+=("$1") && shift ;;
        *) break ;;
        esac
    done
    cluster_start "${options[@]}" chatledger
    DATABASE_URL="$(cluster_url chatledger_owner chatledger)"
    CHATLEDGER_TEST_SUPERUSER_URL="$(cluster_url postgres chatledger)"
    export DATABASE_URL CHATLEDGER_TEST_SUPERUSER_URL
    printf 'DATABASE_URL=%s\n' "$DATABASE_URL" >&2
    if [[ $# -eq 0 ]]; then
        set -- "${SHELL:-bash}"
    fi
    status=0
    "$@" || status=$?
    exit "$status"
fi
