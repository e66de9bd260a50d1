#!/usr/bin/env bash
# Live-tail benchmark, on this machine against a throwaway PostgreSQL cluster (as
# bench/compare.sh): commit-to-event latency p50/p99 with 100 and 1,000 open streams on one
# session, and the server's memory per open stream (RSS delta / streams). Prints figures; it is
# not a test and asserts nothing beyond every event arriving.
#
#   bench/tail.sh                                  # ~1 minute with the defaults
#   TAIL_STREAMS=100,1000,2000 TAIL_APPENDS=50 bench/tail.sh
#
# Settings: TAIL_STREAMS (100,1000), TAIL_APPENDS (30 single-message appends per phase),
# TAIL_INTERVAL (0.2 s between appends), BENCH_POOL_SIZE (16), BENCH_BUILD (1: build the release
# binary; 0: use target/release/chatledger or CHATLEDGER_BIN), BENCH_KEEP_TMP (0).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

if [[ "${BENCH_BUILD:-1}" == 1 ]]; then
    step "cargo build --release --bin chatledger"
    CHATLEDGER_BIN="${CHATLEDGER_BIN:-$(cargo_bin chatledger --release)}"
else
    CHATLEDGER_BIN="${CHATLEDGER_BIN:-$(cargo_target_dir)/release/chatledger}"
fi
[[ -x "$CHATLEDGER_BIN" ]] || die "no $CHATLEDGER_BIN (set CHATLEDGER_BIN or BENCH_BUILD=1)"

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
python3 "$BENCH_DIR/tail_bench.py" --url "$BENCH_URL" --writer-key "$WRITER_KEY" \
    --reader-key "$READER_KEY" --server-pid "$SERVER_PID" --streams "${TAIL_STREAMS:-100,1000}" \
    --appends "${TAIL_APPENDS:-30}" --interval "${TAIL_INTERVAL:-0.2}" --json
