#!/usr/bin/env bash
# Side by side, in one run on this machine: pgbench doing chatledger's database work directly
# (one function call per transaction, bench/*.sql) and chatledger doing it over HTTP
# (target/release/chatledger-bench), against the same throwaway PostgreSQL cluster, for each
# workload and client count. Prints a markdown table and writes it to bench/results/latest.md
# (and every cell as one JSON line to bench/results/latest.jsonl).
#
#   bench/compare.sh                        # ~7 minutes with the defaults
#   BENCH_SECONDS=3 BENCH_WARMUP=1 bench/compare.sh
#   BENCH_CLIENTS="8 32" BENCH_WORKLOADS="append context" bench/compare.sh
#
# Settings (environment):
#   BENCH_SECONDS (10)      measured seconds per cell (integer)
#   BENCH_WARMUP (1)        unmeasured seconds before each cell's measurement (integer)
#   BENCH_CLIENTS ("1 8 32 64")  client counts
#   BENCH_WORKLOADS ("append context paged hot raw")
#   BENCH_SESSIONS (10000)  sessions of the append and context cells (chosen at random)
#   BENCH_CONTEXT_PREFILL (40)  entries per session before the context cells
#   BENCH_PAGED_SESSIONS (100), BENCH_PAGED_ENTRIES (500)  sessions of the paged cells
#   BENCH_HOT_CLIENTS (32), BENCH_HOT_SESSIONS (10)        the hot mix
#   BENCH_POOL_SIZE (16)    chatledger's --pool-size
#   BENCH_BUILD (1)         0: do not run cargo build (then CHATLEDGER_BIN and
#                           CHATLEDGER_BENCH_BIN may point at prebuilt binaries)
#   BENCH_RESULTS (bench/results/latest.md)
#   BENCH_KEEP_TMP (0)      1: keep the temp dir (cluster, logs) for inspection
#
# The cluster has default settings (fsync and synchronous_commit on) except that it listens
# only on a unix socket in its temp dir; as root it runs as the postgres account. It, the
# server and the temp dir are removed on exit, whatever happens.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

S="${BENCH_SECONDS:-10}"
W="${BENCH_WARMUP:-1}"
[[ "$S" =~ ^[1-9][0-9]*$ && "$W" =~ ^[0-9]+$ ]] || die "BENCH_SECONDS and BENCH_WARMUP are whole seconds"
read -r -a CLIENT_COUNTS <<<"${BENCH_CLIENTS:-1 8 32 64}"
read -r -a WORKLOADS <<<"${BENCH_WORKLOADS:-append context paged hot raw}"
SESSIONS="${BENCH_SESSIONS:-10000}"
CONTEXT_PREFILL="${BENCH_CONTEXT_PREFILL:-40}"
PAGED_SESSIONS="${BENCH_PAGED_SESSIONS:-100}"
PAGED_ENTRIES="${BENCH_PAGED_ENTRIES:-500}"
MAX_AFTER=$((PAGED_ENTRIES > 100 ? PAGED_ENTRIES - 100 : 0))
HOT_CLIENTS="${BENCH_HOT_CLIENTS:-32}"
HOT_SESSIONS="${BENCH_HOT_SESSIONS:-10}"
RESULTS="${BENCH_RESULTS:-$BENCH_DIR/results/latest.md}"
JSONL="${RESULTS%.md}.jsonl"

has_workload() {
    local w
    for w in "${WORKLOADS[@]}"; do [[ "$w" == "$1" ]] && return 0; done
    return 1
}
for w in "${WORKLOADS[@]}"; do
    case "$w" in append | context | paged | hot | raw) ;; *) die "unknown workload $w" ;; esac
done

ROWS=()
row() { ROWS+=("| $(IFS='|'; echo "$*" | sed 's/|/ | /g') |"); }

# ---- the run ----

bench_build
step "Sampling the machine's load for 2 s before starting"
BUSY_BEFORE="$(machine_busy_percent 2)"
note "machine busy: $BUSY_BEFORE% of $((NPROC * 100))%"
bench_start_cluster
bench_prepare_database
"${PG_OWNER[@]}" -f "$BENCH_DIR/raw_setup.sql"
bench_start_server
rm -f "$JSONL.tmp"

cells=0
for w in "${WORKLOADS[@]}"; do
    case "$w" in
    append) cells=$((cells + 3 * ${#CLIENT_COUNTS[@]})) ;;
    context | paged) cells=$((cells + 2 * ${#CLIENT_COUNTS[@]})) ;;
    raw) cells=$((cells + ${#CLIENT_COUNTS[@]})) ;;
    hot) cells=$((cells + 2)) ;;
    esac
done
step "Measuring $cells cells of ${W}+${S} s (about $((cells * (S + W + 1) / 60 + 1)) minutes plus the prefill)"

if has_workload context; then
    step "Prefill: $SESSIONS sessions to $CONTEXT_PREFILL entries each (through the API)"
    CHATLEDGER_BENCH_KEY="$WRITER_KEY" "$BENCH_BIN" --url "$BENCH_URL" --workload prefill \
        --clients 8 --sessions "$SESSIONS" --session-prefix bench- --prefill "$CONTEXT_PREFILL" >&2
fi
if has_workload paged; then
    step "Prefill: $PAGED_SESSIONS sessions to $PAGED_ENTRIES entries each (through the API)"
    CHATLEDGER_BENCH_KEY="$WRITER_KEY" "$BENCH_BIN" --url "$BENCH_URL" --workload prefill \
        --clients 8 --sessions "$PAGED_SESSIONS" --session-prefix paged- --prefill "$PAGED_ENTRIES" >&2
fi

for w in "${WORKLOADS[@]}"; do
    case "$w" in
    append)
        for c in "${CLIENT_COUNTS[@]}"; do
            step "append, $c clients"
            pgbench_cell "append-pgbench-c$c" append.sql "$c" bench- "$SESSIONS"
            cl_cell "blind-chatledger-c$c" blind "$c" -- --workload blind \
                --sessions "$SESSIONS" --session-prefix bench-
            row "blind append (2 msgs)" "$c" "$PG_TPS" "$PG_P50 / $PG_P99" "$CL_OPS" \
                "$CL_P50 / $CL_P99" "$(ratio "$CL_OPS" "$PG_TPS")" "$PG_CPU" "$CL_CPU" \
                "${PG_ERR}${CL_ERR}"
            cl_cell "append-chatledger-c$c" append "$c" -- --workload append \
                --sessions "$SESSIONS" --session-prefix bench-
            row "append with expected_seq" "$c" "($PG_TPS)" "($PG_P50 / $PG_P99)" "$CL_OPS" \
                "$CL_P50 / $CL_P99" "$(ratio "$CL_OPS" "$PG_TPS")" "" "$CL_CPU" \
                "pgbench: the blind ceiling above; 409s: $CL_CONFLICTS ${CL_ERR}"
        done
        ;;
    context)
        for c in "${CLIENT_COUNTS[@]}"; do
            step "context, $c clients"
            pgbench_cell "context-pgbench-c$c" context.sql "$c" bench- "$SESSIONS"
            cl_cell "context-chatledger-c$c" context "$c" -- --workload context \
                --sessions "$SESSIONS" --session-prefix bench- --prefill 0
            row "context read (last 20)" "$c" "$PG_TPS" "$PG_P50 / $PG_P99" "$CL_OPS" \
                "$CL_P50 / $CL_P99" "$(ratio "$CL_OPS" "$PG_TPS")" "$PG_CPU" "$CL_CPU" \
                "${PG_ERR}${CL_ERR}"
        done
        ;;
    paged)
        for c in "${CLIENT_COUNTS[@]}"; do
            step "paged, $c clients"
            pgbench_cell "paged-pgbench-c$c" paged.sql "$c" paged- "$PAGED_SESSIONS"
            cl_cell "paged-chatledger-c$c" paged "$c" -- --workload paged \
                --sessions "$PAGED_SESSIONS" --session-prefix paged- --prefill 0
            row "paged read (100 entries)" "$c" "$PG_TPS" "$PG_P50 / $PG_P99" "$CL_OPS" \
                "$CL_P50 / $CL_P99" "$(ratio "$CL_OPS" "$PG_TPS")" "$PG_CPU" "$CL_CPU" \
                "${PG_ERR}${CL_ERR}"
        done
        ;;
    hot)
        step "hot mix, $HOT_CLIENTS clients on $HOT_SESSIONS sessions"
        pgbench_cell "hot-pgbench-c$HOT_CLIENTS" hot.sql "$HOT_CLIENTS" hot- "$HOT_SESSIONS"
        cl_cell "hot-chatledger-c$HOT_CLIENTS" hot_append "$HOT_CLIENTS" -- --workload hot \
            --sessions "$HOT_SESSIONS" --session-prefix hot- --prefill 0
        row "hot turn (read + append) on $HOT_SESSIONS sessions" "$HOT_CLIENTS" "$PG_TPS" \
            "$PG_P50 / $PG_P99" "$CL_OPS" "$CL_P50 / $CL_P99" "$(ratio "$CL_OPS" "$PG_TPS")" \
            "$PG_CPU" "$CL_CPU" \
            "pgbench: blind; chatledger: expected_seq, latency of its appends, 409s retried: $CL_CONFLICTS ${PG_ERR}${CL_ERR}"
        ;;
    raw)
        for c in "${CLIENT_COUNTS[@]}"; do
            step "raw INSERT ceiling, $c clients"
            pgbench_cell "raw-pgbench-c$c" raw.sql "$c" raw- "$SESSIONS" owner
            row "raw INSERT of 2 rows (ceiling)" "$c" "$PG_TPS" "$PG_P50 / $PG_P99" "-" "-" "-" \
                "$PG_CPU" "" "one plain statement, no chatledger ${PG_ERR}"
        done
        ;;
    esac
done

# ---- the report ----

BUSY_AFTER="$(machine_busy_percent 2)"
ENTRIES="$("${PG_SUPER[@]}" -d chatledger -At -c "SELECT count(*) || ' entries in ' || (SELECT count(*) FROM sessions) || ' sessions, ' || pg_size_pretty(pg_database_size('chatledger')) FROM entries")"
COMMIT="$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$REPO_DIR" status --porcelain 2>/dev/null)" ]]; then COMMIT="$COMMIT (working tree modified)"; fi
{
    echo "# chatledger vs pgbench, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "- machine: $(machine_summary)"
    echo "- PostgreSQL: $(pg_summary)"
    echo "- chatledger: commit $COMMIT, \`serve --pool-size ${BENCH_POOL_SIZE:-16}\`, over HTTP/1.1 keep-alive from chatledger-bench (one connection per client)"
    echo "- cells: ${W} s warm-up + ${S} s measured each; server, PostgreSQL and both load generators share the machine"
    echo "- database at the end: $ENTRIES"
    echo "- other load on the machine: ${BUSY_BEFORE}% busy (of $((NPROC * 100))%) just before the run, ${BUSY_AFTER}% just after it (our cluster and server idle); see the *other* CPU in each cell"
    echo
    echo "| workload | clients | pgbench tx/s | pgbench p50 / p99 ms | chatledger ops/s | chatledger p50 / p99 ms | chatledger / pgbench | CPU during pgbench: pg / client / other | CPU during chatledger: pg / server / client / other | notes |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "How to read it:"
    echo "- pgbench runs bench/*.sql: each transaction is the one function call chatledger makes for that request (\`chatledger_append\` / \`chatledger_entries\` with a writer key digest, as the runtime role \`chatledger_app\`, prepared statements), on sessions chosen at random; so the ratio is the cost of HTTP, JSON, payload digests (SHA-256 over RFC 8785 JSON in Rust) and the pool, on top of the same database work."
    echo "- appends are turns of 2 messages (200 and 800 characters); ops/s are turns per second (messages per second are twice that)."
    echo "- pgbench cannot track the head a client last saw, so it appends blind (\`expected_seq\` NULL): its figure is the ceiling for both chatledger rows; chatledger's append with expected_seq tracks each session's head from its 201 answers (each client owns its sessions, so 409s arise only in the hot mix)."
    echo "- latency: pgbench from its per-transaction log, chatledger-bench per HTTP request (409 answers included), both over the measured window only."
    echo "- CPU: percent of one core (the machine has ${NPROC}: $((NPROC * 100))% is all of it) over the whole cell, from /proc (PostgreSQL: postmaster with all backends, reaped ones included; server: its process; client: pgbench or chatledger-bench; other: the machine's busy time from /proc/stat that none of these accounts for, i.e. anything else running on the machine). Figures taken while *other* is high are disturbed by it."
} >"$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"
mv "$JSONL.tmp" "$JSONL"
step "Results (also in ${RESULTS#"$REPO_DIR"/} and ${JSONL#"$REPO_DIR"/})"
cat "$RESULTS"
