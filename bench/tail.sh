#!/usr/bin/env bash
# Live-tail benchmark, on this machine against a throwaway PostgreSQL cluster (as
# bench/compare.sh): commit-to-event latency p50/p99 with 100 and 1,000 open streams on one
# session, and the server's memory per open stream (RSS delta / streams), measured by
# chatledger-tail-bench (bench/tail_bench.rs, a tokio client on loopback). Prints figures; it is
# not a test and asserts nothing beyond every event arriving.
#
#   bench/tail.sh                                  # ~1 minute with the defaults
#   TAIL_STREAMS=100,1000,2000 TAIL_APPENDS=50 bench/tail.sh
#
# Settings: TAIL_STREAMS (100,1000), TAIL_APPENDS (30 single-message appends per phase),
# TAIL_INTERVAL_MS (200 between appends), BENCH_POOL_SIZE (16), BENCH_BUILD (1: build the release
# binary; 0: use target/release/chatledger or CHATLEDGER_BIN), BENCH_KEEP_TMP (0).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

if [[ "${BENCH_BUILD:-1}" == 1 ]]; then
    step "cargo build --release --bin chatledger --bin chatledger-tail-bench"
    CHATLEDGER_BIN="${CHATLEDGER_BIN:-$(cargo_bin chatledger --release --bin chatledger-tail-bench)}"
    TAIL_BENCH_BIN="${TAIL_BENCH_BIN:-$(cargo_bin chatledger-tail-bench --release)}"
else
    CHATLEDGER_BIN="${CHATLEDGER_BIN:-$(cargo_target_dir)/release/chatledger}"
    TAIL_BENCH_BIN="${TAIL_BENCH_BIN:-$(cargo_target_dir)/release/chatledger-tail-bench}"
fi
[[ -x "$CHATLEDGER_BIN" ]] || die "no $CHATLEDGER_BIN (set CHATLEDGER_BIN or BENCH_BUILD=1)"
[[ -x "$TAIL_BENCH_BIN" ]] || die "no $TAIL_BENCH_BIN (set TAIL_BENCH_BIN or BENCH_BUILD=1)"

# A thousand streams need a thousand descriptors on each side.
ulimit -n "$(ulimit -Hn)"
bench_start_cluster
bench_prepare_database
READER_KEY="$("$CHATLEDGER_BIN" keys create --tenant bench --role reader --label tail-bench \
    --database-url "$DATABASE_URL" 2>/dev/null)"
export CHATLEDGER_MAX_STREAMS_PER_KEY=100000
bench_start_server
step "machine"
machine_summary >&2 || true
step "live tail: streams ${TAIL_STREAMS:-100,1000}, ${TAIL_APPENDS:-30} appends each"
TAIL_BENCH_WRITER_KEY="$WRITER_KEY" TAIL_BENCH_READER_KEY="$READER_KEY" "$TAIL_BENCH_BIN" \
    --address "${BENCH_URL#http://}" --server-pid "$SERVER_PID" \
    --streams "${TAIL_STREAMS:-100,1000}" --appends "${TAIL_APPENDS:-30}" \
    --interval-ms "${TAIL_INTERVAL_MS:-200}"
