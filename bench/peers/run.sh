#!/usr/bin/env bash
# The three LangChain chat histories side by side, in one run on this machine:
#   chatledger ChatLedgerMessageHistory, langchain-postgres PostgresChatMessageHistory and
#   langchain-community RedisChatMessageHistory, driven as RunnableWithMessageHistory drives
#   a history (read, then add a 2-message turn of ~200 and ~800 characters, sessions of
#   about 20 messages), at 1, 8 and 32 workers, sync (a process per worker) and async (all
#   workers as tasks on one event loop), plus one 10,000-message read each.
#
#   bench/peers/run.sh                       # about 10 minutes
#   BENCH_SECONDS=3 BENCH_WORKERS=1,8 bench/peers/run.sh
#
# It installs what it needs: a venv (in the cargo target dir) with this repository's client,
# langchain-postgres + psycopg, langchain-community + redis; redis-server from Debian's
# packages when missing. It starts a throwaway PostgreSQL cluster (bench/lib.sh: default
# settings, fsync on, unix socket) shared by chatledger and langchain-postgres, a
# redis-server on a loopback port (no persistence, as a cache is run), and a release
# chatledger server on the cluster; all of them are stopped on exit, whatever happens.
#
# Output: a markdown table on stdout and in bench/results/peers-latest.md, and every point
# as one JSON line in bench/results/peers-latest.jsonl (for bench/compare.sh).
#
# Settings (environment):
#   BENCH_SECONDS (8)          measured seconds per point (after 1 s of warm-up)
#   BENCH_REPEAT (2)           runs per point; the table shows the best, the JSON lines all
#   BENCH_WORKERS (1,8,32)     worker counts
#   BENCH_MODES (sync,async)
#   BENCH_BACKENDS (chatledger,langchain-postgres,redis)
#   BENCH_BUILD (1)            0: do not run cargo build (CHATLEDGER_BIN must exist)
#   BENCH_POOL_SIZE (16)       chatledger's --pool-size
#   BENCH_RESULTS (bench/results/peers-latest.md), its .jsonl beside it
set -euo pipefail

PEERS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$PEERS_DIR/../.." && pwd)"
TARGET="$(cd "$REPO" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
export CHATLEDGER_BIN="${CHATLEDGER_BIN:-$TARGET/release/chatledger}"

# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

if [[ "${BENCH_BUILD:-1}" == 1 ]]; then
    step "cargo build --release --locked --bin chatledger"
    (cd "$REPO" && SQLX_OFFLINE="${SQLX_OFFLINE:-true}" cargo build --release --locked --bin chatledger) >&2
fi
[[ -x "$CHATLEDGER_BIN" ]] || die "no $CHATLEDGER_BIN (set CHATLEDGER_BIN or BENCH_BUILD=1)"

if ! command -v redis-server >/dev/null; then
    step "Installing redis-server (apt-get)"
    apt-get update -qq >&2 && apt-get install -y -qq redis-server >&2
fi

VENV="${BENCH_PEERS_VENV:-$TARGET/bench-peers-venv}"
step "Python venv $VENV"
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade \
    "$REPO/clients/python[langchain]" langchain-postgres "psycopg[binary]" psycopg-pool \
    langchain-community redis
# The client from this checkout, rebuilt even when its version did not change.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps \
    "$REPO/clients/python"
"$VENV/bin/python" -m pip list --disable-pip-version-check 2>/dev/null |
    grep -iE '^(chatledger|langchain-core|langchain-postgres|langchain-community|psycopg|redis) ' |
    tr -s ' ' | sed 's/^/    /' >&2

REDIS_PID=""
peers_cleanup() {
    local status=$?
    if [[ -n "$REDIS_PID" ]]; then
        kill -TERM "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    (exit "$status")
    bench_cleanup
}

bench_start_cluster
trap peers_cleanup EXIT
bench_prepare_database
bench_start_server

"${PG_SUPER[@]}" -d postgres -c "CREATE DATABASE lcpg"
PG_CONNINFO="host=$PG_SOCK user=postgres dbname=lcpg"

REDIS_PORT=""
for attempt in 1 2 3 4 5; do
    REDIS_PORT=$((40000 + RANDOM % 20000))
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
        --daemonize no --logfile "$BENCH_TMP/redis.log" &
    REDIS_PID=$!
    for i in $(seq 1 50); do
        if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then break 2; fi
        kill -0 "$REDIS_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=""
done
[[ -n "$REDIS_PID" ]] || die "redis-server did not start"
note "redis-server pid $REDIS_PID on 127.0.0.1:$REDIS_PORT (no persistence)"

RESULTS="${BENCH_RESULTS:-$REPO/bench/results/peers-latest.md}"
mkdir -p "$(dirname "$RESULTS")"
busy="$(machine_busy_percent 2)"
header="Peers benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(machine_summary); machine busy \
${busy}% of one core before the run. $(pg_summary | head -c 200). chatledger $(
    "$CHATLEDGER_BIN" --version 2>/dev/null | head -1) release build, --pool-size ${BENCH_POOL_SIZE:-16}; \
redis-server $(redis-server --version | awk '{print $3}' | cut -d= -f2), no persistence. \
${BENCH_SECONDS:-8} s per point after 1 s of warm-up, best of ${BENCH_REPEAT:-2} runs. sync: one process per worker; async: \
all workers as tasks on one event loop in one process."

step "Running the peers benchmark"
"$VENV/bin/python" "$PEERS_DIR/peers.py" \
    --chatledger-url "$BENCH_URL" --chatledger-key "$WRITER_KEY" \
    --postgres "$PG_CONNINFO" --redis "redis://127.0.0.1:$REDIS_PORT/0" \
    --seconds "${BENCH_SECONDS:-8}" --repeat "${BENCH_REPEAT:-2}" --workers "${BENCH_WORKERS:-1,8,32}" \
    --modes "${BENCH_MODES:-sync,async}" \
    --backends "${BENCH_BACKENDS:-chatledger,langchain-postgres,redis}" \
    --out-md "$RESULTS" --out-jsonl "${RESULTS%.md}.jsonl" --header "$header"
note "wrote $RESULTS and ${RESULTS%.md}.jsonl"
