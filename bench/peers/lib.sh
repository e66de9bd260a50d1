# The peers of bench/peers/run.sh and bench/compare.sh (sourced after bench/lib.sh, not run):
# a venv with this checkout's client, langchain-postgres and langchain-community with redis;
# redis-server from Debian's packages when missing, run on a loopback port without
# persistence (as a cache is run); the peers' run itself (bench/peers/peers.py).
# shellcheck shell=bash

PEERS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REDIS_PID=""
REDIS_PORT=""

# Installs what the peers need; sets PEERS_PYTHON.
peers_install() {
    if ! command -v redis-server >/dev/null; then
        step "Installing redis-server (apt-get)"
        apt-get update -qq >&2 && apt-get install -y -qq redis-server >&2
    fi
    local venv="${BENCH_PEERS_VENV:-$(cargo_target_dir)/bench-peers-venv}"
    step "Python venv $venv"
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade \
        "$REPO_DIR/clients/python[langchain]" langchain-postgres "psycopg[binary]" psycopg-pool \
        langchain-community redis
    # The client from this checkout, rebuilt even when its version did not change.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall \
        --no-deps "$REPO_DIR/clients/python"
    "$venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null |
        grep -iE '^(chatledger|langchain-core|langchain-postgres|langchain-community|psycopg|redis) ' |
        tr -s ' ' | sed 's/^/    /' >&2
    PEERS_PYTHON="$venv/bin/python"
}

# Starts redis-server on a free loopback port (needs BENCH_TMP); sets REDIS_PID and REDIS_PORT.
peers_start_redis() {
    local attempt i
    for attempt in 1 2 3 4 5; do
        REDIS_PORT=$((40000 + RANDOM % 20000))
        redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
            --daemonize no --logfile "$BENCH_TMP/redis.log" &
        REDIS_PID=$!
        for i in $(seq 1 50); do
            if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
                note "redis-server pid $REDIS_PID on 127.0.0.1:$REDIS_PORT (no persistence)"
                return 0
            fi
            kill -0 "$REDIS_PID" 2>/dev/null || break
            sleep 0.1
        done
        peers_stop_redis
    done
    die "redis-server did not start"
}

peers_stop_redis() {
    if [[ -n "$REDIS_PID" ]]; then
        kill -TERM "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
        REDIS_PID=""
    fi
}

# The EXIT trap of a script that started redis-server and the bench cluster and server.
peers_cleanup() {
    local status=$?
    peers_stop_redis
    (exit "$status")
    bench_cleanup
}

# peers_run RESULTS_MD: the three histories against the running server, a database `lcpg` in
# the bench cluster and the running redis-server.
peers_run() {
    local results="$1"
    "${PG_SUPER[@]}" -d postgres -c "CREATE DATABASE lcpg"
    local busy header
    busy="$(machine_busy_percent 2)"
    header="Peers benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(machine_summary); machine busy \
${busy}% of one core before the run. $(pg_summary | head -c 200). chatledger $(
        "$CHATLEDGER_BIN" --version 2>/dev/null | head -1) release build, --pool-size ${BENCH_POOL_SIZE:-16}; \
redis-server $(redis-server --version | awk '{print $3}' | cut -d= -f2), no persistence. \
${BENCH_PEERS_SECONDS:-8} s per point after 1 s of warm-up, best of ${BENCH_REPEAT:-2} runs. sync: one process per worker; async: \
all workers as tasks on one event loop in one process."
    mkdir -p "$(dirname "$results")"
    step "Running the peers benchmark"
    "$PEERS_PYTHON" "$PEERS_DIR/peers.py" \
        --chatledger-url "$BENCH_URL" --chatledger-key "$WRITER_KEY" \
        --chatledger-database "host=$PG_SOCK user=postgres dbname=chatledger" \
        --postgres "host=$PG_SOCK user=postgres dbname=lcpg" \
        --redis "redis://127.0.0.1:$REDIS_PORT/0" \
        --seconds "${BENCH_PEERS_SECONDS:-8}" --repeat "${BENCH_REPEAT:-2}" \
        --workers "${BENCH_WORKERS:-1,8,32}" --modes "${BENCH_MODES:-sync,async}" \
        --backends "${BENCH_BACKENDS:-chatledger,langchain-postgres,redis}" \
        --out-md "$results" --out-jsonl "${results%.md}.jsonl" --header "$header"
    note "wrote $results and ${results%.md}.jsonl"
}
