#!/usr/bin/env bash
# Scale check, in one run on this machine against a throwaway PostgreSQL cluster (as
# bench/compare.sh): does a read cost the same on a session of 100 entries and on one of
# 1,000,000? And what does exporting a 100,000-entry session cost in time and server memory?
#
#   bench/scale.sh                                   # ~3 minutes with the defaults
#   SCALE_BIG_ENTRIES=200000 BENCH_SECONDS=3 bench/scale.sh
#
# Every session is filled through the HTTP API (batches of 100 messages of 200 and 800
# characters, 4 clients appending blind to the same session), so it is a real ledger with valid
# digests and chain. Reads: context (last 20) and paged (100 entries at a random offset) with
# 1 and 8 clients through chatledger, plus the same function call through pgbench at 1 client.
# Export: `GET /v1/sessions/{id}/export` with an auditor key on a freshly started server,
# timed with curl, peak RSS from /proc/<pid>/status VmHWM (reset with clear_refs before).
#
# Settings: SCALE_SMALL_ENTRIES (100), SCALE_BIG_ENTRIES (1000000), SCALE_EXPORT_ENTRIES
# (100000), SCALE_EXPORT_BIG (0; 1 also exports the big session), BENCH_SECONDS (10),
# BENCH_WARMUP (1), BENCH_POOL_SIZE (16), BENCH_BUILD (1), BENCH_KEEP_TMP (0),
# BENCH_RESULTS (bench/results/scale-latest.md).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

S="${BENCH_SECONDS:-10}"
W="${BENCH_WARMUP:-1}"
[[ "$S" =~ ^[1-9][0-9]*$ && "$W" =~ ^[0-9]+$ ]] || die "BENCH_SECONDS and BENCH_WARMUP are whole seconds"
SMALL="${SCALE_SMALL_ENTRIES:-100}"
BIG="${SCALE_BIG_ENTRIES:-1000000}"
EXPORT_N="${SCALE_EXPORT_ENTRIES:-100000}"
RESULTS="${BENCH_RESULTS:-$BENCH_DIR/results/scale-latest.md}"
JSONL="${RESULTS%.md}.jsonl"
for n in "$SMALL" "$BIG" "$EXPORT_N"; do
    [[ "$n" =~ ^[1-9][0-9]*$ && "$n" -le 10000000 ]] || die "entry counts are 1 to 10000000"
done

ROWS=()
row() { ROWS+=("| $(IFS='|'; echo "$*" | sed 's/|/ | /g') |"); }
LINES=()

# fill NAME ENTRIES: appends ENTRIES messages to session NAME through the API (the session must
# be new or shorter), in batches of 100 from 4 clients, then tops up to exactly ENTRIES.
fill() {
    local name="$1" entries="$2" t0 t1 batches
    batches=$((entries / 100))
    t0="$(now_s)"
    if [[ "$batches" -gt 0 ]]; then
        CHATLEDGER_BENCH_KEY="$WRITER_KEY" "$BENCH_BIN" --url "$BENCH_URL" --workload blind \
            --clients 4 --sessions 1 --session-prefix "$name-" --turn-messages 100 \
            --requests "$batches" --duration 1800 --warmup 0 --timeout 60 >&2 || true
    fi
    # Exactly ENTRIES, whatever the batches left.
    CHATLEDGER_BENCH_KEY="$WRITER_KEY" "$BENCH_BIN" --url "$BENCH_URL" --workload prefill \
        --clients 1 --sessions 1 --session-prefix "$name-" --prefill "$entries" >&2
    t1="$(now_s)"
    local last
    last="$(session_last_seq "$name-1")"
    [[ "$last" -ge "$entries" ]] || die "$name-1 has $last entries, wanted $entries"
    local secs
    secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
    LINES+=("- filled \`$name-1\` with $last entries through the API in $secs s ($(awk -v n="$entries" -v s="$secs" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }') messages/s, 4 clients appending batches of 100 blind to the one session)")
    note "filled $name-1: $last entries in $secs s"
}

session_last_seq() {
    curl -fsS -H "Authorization: Bearer $WRITER_KEY" "$BENCH_URL/v1/sessions/$1" | jq -r .last_seq
}

bench_build
step "Sampling the machine's load for 2 s before starting"
BUSY_BEFORE="$(machine_busy_percent 2)"
note "machine busy: $BUSY_BEFORE% of $((NPROC * 100))%"
bench_start_cluster
bench_prepare_database
bench_start_server
rm -f "$JSONL.tmp"

step "Filling sessions through the API: $SMALL, $BIG and $EXPORT_N entries"
fill scale-small "$SMALL"
fill scale-big "$BIG"
if [[ "$EXPORT_N" != "$BIG" ]]; then
    fill scale-export "$EXPORT_N"
fi
"${PG_SUPER[@]}" -d chatledger -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
DB_SIZE="$("${PG_SUPER[@]}" -d chatledger -At -c "SELECT pg_size_pretty(pg_database_size('chatledger')) || ' database, entries ' || pg_size_pretty(pg_total_relation_size('entries')) || ' with indexes'")"

step "Reads: small ($SMALL) vs big ($BIG) session"
for kind in small big; do
    if [[ "$kind" == small ]]; then n="$SMALL"; else n="$BIG"; fi
    MAX_AFTER=$((n > 100 ? n - 100 : 0))
    pgbench_cell "context-$kind-pgbench" context.sql 1 "scale-$kind-" 1
    row "context read (last 20)" "$n" 1 "pgbench" "$PG_TPS" "$PG_P50" "$PG_P99" "-" "$PG_CPU"
    for c in 1 8; do
        cl_cell "context-$kind-c$c" context "$c" -- --workload context --sessions 1 \
            --session-prefix "scale-$kind-" --prefill 0
        row "context read (last 20)" "$n" "$c" "chatledger" "$CL_OPS" "$CL_P50" "$CL_P99" \
            "$(jq -r '.results[0].latency_ms.max * 100 | round / 100' "$BENCH_TMP/work/context-$kind-c$c/result.json")" "$CL_CPU"
    done
    pgbench_cell "paged-$kind-pgbench" paged.sql 1 "scale-$kind-" 1
    row "paged read (100 at a random offset)" "$n" 1 "pgbench" "$PG_TPS" "$PG_P50" "$PG_P99" "-" "$PG_CPU"
    for c in 1 8; do
        cl_cell "paged-$kind-c$c" paged "$c" -- --workload paged --sessions 1 \
            --session-prefix "scale-$kind-" --prefill 0
        row "paged read (100 at a random offset)" "$n" "$c" "chatledger" "$CL_OPS" "$CL_P50" \
            "$CL_P99" "$(jq -r '.results[0].latency_ms.max * 100 | round / 100' "$BENCH_TMP/work/paged-$kind-c$c/result.json")" "$CL_CPU"
    done
done

# export_session NAME: times the export of NAME on a freshly started server and reports its
# peak RSS; prints "export not available yet" when the route does not exist.
EXPORT_LINES=()
export_session() {
    local id="$1" file="$BENCH_TMP/work/$1.ndjson"
    # A fresh process, so that its peak RSS reflects the export and not the fill or the reads.
    bench_stop_server
    bench_start_server
    curl -fsS -o /dev/null -H "Authorization: Bearer $AUDITOR_KEY" "$BENCH_URL/v1/sessions/$id"
    local base_rss base_hwm
    base_rss="$(vm_rss_kib "$SERVER_PID")"
    base_hwm="$(vm_hwm_kib "$SERVER_PID")"
    # Writing 5 resets VmHWM to the current RSS (Linux >= 4.0); if refused, the peak since start
    # is what we get, which includes start-up.
    echo 5 >"/proc/$SERVER_PID/clear_refs" 2>/dev/null || true
    local reset_hwm
    reset_hwm="$(vm_hwm_kib "$SERVER_PID")"
    local answer code bytes ttfb total
    answer="$(curl -sS -o "$file" -H "Authorization: Bearer $AUDITOR_KEY" \
        -w '%{http_code} %{size_download} %{time_starttransfer} %{time_total}' \
        "$BENCH_URL/v1/sessions/$id/export")"
    read -r code bytes ttfb total <<<"$answer"
    local peak
    peak="$(vm_hwm_kib "$SERVER_PID")"
    if [[ "$code" == 404 ]] && [[ "$(jq -r '.code // empty' "$file" 2>/dev/null)" == not_found ]]; then
        EXPORT_LINES+=("- export of \`$id\`: export not available yet (\`GET /v1/sessions/{id}/export\` answers 404 not_found)")
        note "export not available yet"
        return
    fi
    if [[ "$code" != 200 ]]; then
        EXPORT_LINES+=("- export of \`$id\`: HTTP $code: $(head -c 300 "$file")")
        note "export of $id answered $code"
        return
    fi
    local lines trailer_seq entries_expected
    lines="$(wc -l <"$file")"
    trailer_seq="$(tail -1 "$file" | jq -r '.export_trailer.last_seq // "missing"')"
    entries_expected="$(session_last_seq "$id")"
    local verify_s verify_result
    local v0 v1
    v0="$(now_s)"
    if verify_result="$("$CHATLEDGER_BIN" verify-export "$file" 2>&1)"; then
        verify_result="intact"
    else
        verify_result="verify-export failed: $(tail -1 <<<"$verify_result")"
    fi
    v1="$(now_s)"
    verify_s="$(awk -v a="$v0" -v b="$v1" 'BEGIN { printf "%.2f", b - a }')"
    EXPORT_LINES+=("- export of \`$id\` ($entries_expected entries): HTTP 200, $lines lines ($((lines - 1)) entries + trailer, trailer last_seq $trailer_seq), $(awk -v b="$bytes" 'BEGIN { printf "%.1f MB", b / 1e6 }') in $(awk -v t="$total" 'BEGIN { printf "%.2f", t }') s ($(awk -v b="$bytes" -v t="$total" 'BEGIN { printf "%.0f", b / 1e6 / t }') MB/s, $(awk -v n="$((lines - 1))" -v t="$total" 'BEGIN { printf "%.0f", n / t }') entries/s, first byte after $(awk -v t="$ttfb" 'BEGIN { printf "%.0f", t * 1000 }') ms); server RSS $((base_rss / 1024)) MiB before (peak since start $((base_hwm / 1024)) MiB, reset to $((reset_hwm / 1024)) MiB), peak during the export $((peak / 1024)) MiB (VmHWM); offline \`chatledger verify-export\`: $verify_result in $verify_s s")
    jq -cn --arg id "$id" --argjson entries "$entries_expected" --argjson lines "$lines" \
        --argjson bytes "$bytes" --argjson total "$total" --argjson ttfb "$ttfb" \
        --argjson base_rss_kib "$base_rss" --argjson peak_kib "$peak" --arg verify "$verify_result" \
        '{cell: "export", session: $id, entries: $entries, lines: $lines, bytes: $bytes,
          seconds: $total, first_byte_s: $ttfb, rss_before_kib: $base_rss_kib,
          vm_hwm_during_kib: $peak_kib, verify_export: $verify}' | record_json
    note "export of $id: $lines lines, $bytes bytes in $total s, RSS $base_rss KiB -> peak $peak KiB"
    rm -f "$file"
}

step "Export of a $EXPORT_N-entry session"
if [[ "$EXPORT_N" != "$BIG" ]]; then
    export_session scale-export-1
else
    export_session scale-big-1
fi
if [[ "${SCALE_EXPORT_BIG:-0}" == 1 && "$EXPORT_N" != "$BIG" ]]; then
    export_session scale-big-1
fi

COMMIT="$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$REPO_DIR" status --porcelain 2>/dev/null)" ]]; then COMMIT="$COMMIT (working tree modified)"; fi
{
    echo "# chatledger scale check, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "- machine: $(machine_summary)"
    echo "- PostgreSQL: $(pg_summary)"
    echo "- chatledger: commit $COMMIT, \`serve --pool-size ${BENCH_POOL_SIZE:-16}\`"
    echo "- cells: ${W} s warm-up + ${S} s measured each; $DB_SIZE"
    echo "- other load on the machine: ${BUSY_BEFORE}% busy (of $((NPROC * 100))%) just before the run"
    printf '%s\n' "${LINES[@]}"
    echo
    echo "| read | session entries | clients | via | ops/s | p50 ms | p99 ms | max ms | CPU % of one core: pg / (server /) client / other |"
    echo "|---|---:|---:|---|---:|---:|---:|---:|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    printf '%s\n' "${EXPORT_LINES[@]}"
} >"$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"
[[ -f "$JSONL.tmp" ]] && mv "$JSONL.tmp" "$JSONL"
step "Results (also in ${RESULTS#"$REPO_DIR"/})"
cat "$RESULTS"
