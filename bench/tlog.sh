#!/usr/bin/env bash
# The transparency log's cost, in one run on this machine against a throwaway PostgreSQL
# cluster (as bench/compare.sh):
#   - append throughput with the log on and off, in alternating runs of 32 clients. "Off" is
#     the same server with the trigger that queues append leaves disabled by the schema owner
#     (`ALTER TABLE sessions DISABLE TRIGGER sessions_queue_leaf`): nothing is queued, the
#     sequencer idles. There is no server switch for it on purpose: a log that can be turned
#     off is not a log;
#   - the time from an append's leaf being queued (inside its transaction, before the 201) to
#     the first signed checkpoint covering it, p50/p99/max, from the database's own clocks,
#     over every append leaf of the "on" runs;
#   - proof, checkpoint and consistency latency, sequential, with curl;
#   - the log's size per million appends (leaf rows and stored hashes, with their indexes),
#     extrapolated from the measured count.
#
#   bench/tlog.sh                           # ~2 minutes with the defaults
#   TLOG_PAIRS=2 BENCH_SECONDS=5 bench/tlog.sh
#
# Settings: TLOG_PAIRS (3: on/off pairs), TLOG_CLIENTS (32), BENCH_SECONDS (8), BENCH_WARMUP
# (1), BENCH_POOL_SIZE (16), BENCH_BUILD (1), BENCH_KEEP_TMP (0), CHATLEDGER_BIN and
# CHATLEDGER_BENCH_BIN (instead of the release builds), BENCH_RESULTS
# (bench/results/tlog-latest.md).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

S="${BENCH_SECONDS:-8}"
W="${BENCH_WARMUP:-1}"
PAIRS="${TLOG_PAIRS:-3}"
CLIENTS="${TLOG_CLIENTS:-32}"
RESULTS="${BENCH_RESULTS:-$BENCH_DIR/results/tlog-latest.md}"
for n in "$S" "$PAIRS" "$CLIENTS"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS, TLOG_PAIRS and TLOG_CLIENTS are whole numbers"
done

bench_build
bench_start_cluster
bench_prepare_database
bench_start_server
owner() { "${PG_OWNER[@]}" -At -c "$1"; }

run_append() {
    "$BENCH_BIN" --url "$BENCH_URL" --key "$WRITER_KEY" --workload append --clients "$CLIENTS" \
        --sessions 100 --duration "$S" --warmup "$W" --json 2>/dev/null \
        | jq -r '.results[] | select(.op == "append") | "\(.ok_per_s | round) \(.latency_ms.p50 | round) \(.latency_ms.p99 | round)"'
}

declare -a ON OFF
for pair in $(seq 1 "$PAIRS"); do
    for mode in on off; do
        if [[ "$mode" == on ]]; then
            owner "ALTER TABLE sessions ENABLE TRIGGER sessions_queue_leaf" >/dev/null
        else
            owner "ALTER TABLE sessions DISABLE TRIGGER sessions_queue_leaf" >/dev/null
        fi
        result="$(run_append)"
        note "pair $pair, log $mode: appends/s p50 p99 (ms) = $result"
        if [[ "$mode" == on ]]; then ON+=("$result"); else OFF+=("$result"); fi
    done
done
owner "ALTER TABLE sessions ENABLE TRIGGER sessions_queue_leaf" >/dev/null
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
on_rate="$(printf '%s\n' "${ON[@]}" | cut -d' ' -f1 | median)"
off_rate="$(printf '%s\n' "${OFF[@]}" | cut -d' ' -f1 | median)"

# Let the sequencer cover the last appends, then read the coverage times.
sleep 2
coverage="$(owner "
WITH l AS (
  SELECT l.queued_at, (SELECT c.signed_at FROM tlog_checkpoints c WHERE c.tree_size > l.leaf_index
                        ORDER BY c.tree_size LIMIT 1) AS covered_at
    FROM tlog_leaves l WHERE l.session_id IS NOT NULL)
SELECT count(*),
       round(1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM covered_at - queued_at))::numeric, 1),
       round(1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM covered_at - queued_at))::numeric, 1),
       round(1000 * max(extract(epoch FROM covered_at - queued_at))::numeric, 1)
  FROM l WHERE covered_at IS NOT NULL" | tr '|' ' ')"
read -r leaves cov_p50 cov_p99 cov_max <<<"$coverage"

latency() { # path, count: p50 and p99 in ms of sequential GETs
    local i
    for i in $(seq 1 "$2"); do
        curl -s -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $AUDITOR_KEY" \
            "$BENCH_URL$(eval "echo \"$1\"")"
    done | sort -n | awk '{ a[NR] = $1 * 1000 } END { printf "%.1f %.1f", a[int((NR + 1) / 2)], a[int(NR * 0.99)] }'
}
proof="$(latency '/v1/sessions/bench-$((RANDOM % 100 + 1))/proof?seq=1' 200)"
checkpoint="$(latency '/v1/checkpoint' 200)"
size="$(owner "SELECT max(tree_size) FROM tlog_checkpoints")"
consistency="$(latency "/v1/checkpoint/consistency?from=\$((RANDOM % ($size - 1) + 1))&to=$size" 100)"

sizes="$(owner "SELECT (SELECT count(*) FROM tlog_leaves), pg_total_relation_size('tlog_leaves'),
                       pg_total_relation_size('tlog_hashes'), (SELECT count(*) FROM tlog_checkpoints),
                       pg_total_relation_size('tlog_checkpoints')" | tr '|' ' ')"
read -r all_leaves leaf_bytes hash_bytes checkpoints checkpoint_bytes <<<"$sizes"
per_million="$(awk -v l="$leaf_bytes" -v h="$hash_bytes" -v n="$all_leaves" 'BEGIN { printf "%.0f", (l + h) / n }')"

mkdir -p "$(dirname "$RESULTS")"
{
    echo "# Transparency log cost ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    machine_summary
    echo
    echo
    echo "Binaries: $CHATLEDGER_BIN, $BENCH_BIN. Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "| measure | value |"
    echo "|---|---|"
    echo "| appends/s, log on (median of $PAIRS runs of ${S}s, $CLIENTS clients) | $on_rate |"
    echo "| appends/s, log off (trigger disabled) | $off_rate |"
    echo "| on / off | $(ratio "$on_rate" "$off_rate") |"
    echo "| runs on (appends/s p50 p99 ms) | $(IFS=';'; echo "${ON[*]}") |"
    echo "| runs off | $(IFS=';'; echo "${OFF[*]}") |"
    echo "| queued-to-checkpoint over $leaves append leaves: p50 / p99 / max ms | $cov_p50 / $cov_p99 / $cov_max |"
    echo "| proof p50 / p99 ms (sequential, recorded) | ${proof/ / \/ } |"
    echo "| checkpoint p50 / p99 ms | ${checkpoint/ / \/ } |"
    echo "| consistency p50 / p99 ms (tree of $size) | ${consistency/ / \/ } |"
    echo "| log bytes per leaf (leaves + stored hashes, with indexes) | $per_million |"
    echo "| log size per million appends | $(awk -v b="$per_million" 'BEGIN { printf "%.0f MB", b }') |"
    echo "| checkpoints stored ($checkpoints, one per round, not per append) | $checkpoint_bytes bytes |"
} | tee "$RESULTS"
