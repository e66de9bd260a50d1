#!/usr/bin/env bash
# Side by side, in one run on this machine, against the same throwaway PostgreSQL cluster, for
# each workload and client count:
#   - the reference (bench/reference/, a copy of ../shared/bench-reference/): the least
#     database work that does the job in outline, run by pgbench on its own database;
#   - pgbench doing chatledger's database work directly (one function call per transaction,
#     bench/*.sql);
#   - chatledger doing it over HTTP (target/release/chatledger-bench);
# then the LangChain peers (bench/peers/: chatledger's history, langchain-postgres, Redis) on
# the same cluster and server. Prints markdown tables and writes them to
# bench/results/latest.md and bench/results/peers-latest.md (every cell and point also as one
# JSON line in the .jsonl beside each).
#
#   bench/compare.sh                        # ~15 minutes with the defaults
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
#   BENCH_PEERS (1)         0: skip the peers (then nothing is installed)
#   BENCH_PEERS_SECONDS (8), BENCH_REPEAT (2), BENCH_WORKERS (1,8,32), BENCH_MODES (sync,async)
#                           the peers' settings (bench/peers/run.sh)
#
# The cluster has default settings (fsync and synchronous_commit on) except that it listens
# only on a unix socket in its temp dir; as root it runs as the postgres account. It, the
# server and the temp dir are removed on exit, whatever happens.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
# shellcheck source=bench/peers/lib.sh
source "$(dirname "$0")/peers/lib.sh"
REFERENCE="$BENCH_DIR/reference"

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

# indexed_note WHO RATE: WHO's last cell, RATE, counted until its appends were indexed
# (bench_wait_for_index just ran).
indexed_note() {
    local rate
    rate="$(caught_up_rate "$2" "$S" "$INDEX_DRAIN_S")"
    echo "$1 counted until indexed ($INDEX_DRAIN_S s after the cell): $rate/s, $(ratio "$rate" "$REF_TPS") of the reference"
}

# join_notes NOTE...: the non-empty notes, separated by "; ".
join_notes() {
    local note joined=""
    for note in "$@"; do
        [[ -n "$note" ]] && joined="${joined:+$joined; }$note"
    done
    echo "$joined"
}

ROWS=()
row() { ROWS+=("| $(IFS='|'; echo "$*" | sed 's/|/ | /g') |"); }

# reference_cell NAME SCRIPT CLIENTS: pgbench with the reference's SCRIPT on its database, as
# its owner (no keys, tenants or row-level security there); sets REF_TPS REF_P50 REF_P99
# REF_CPU REF_ERR.
reference_cell() {
    pgbench_cell "$1" "$REFERENCE/$2" "$3" - "$SESSIONS" owner reference
    REF_TPS="$PG_TPS" REF_P50="$PG_P50" REF_P99="$PG_P99" REF_CPU="$PG_CPU" REF_ERR="${PG_ERR:+reference: $PG_ERR }"
}

# ---- the run ----

bench_build
[[ "${BENCH_PEERS:-1}" == 1 ]] && peers_install
step "Sampling the machine's load for 2 s before starting"
BUSY_BEFORE="$(machine_busy_percent 2)"
note "machine busy: $BUSY_BEFORE% of $((NPROC * 100))%"
bench_start_cluster
[[ "${BENCH_PEERS:-1}" == 1 ]] && trap peers_cleanup EXIT
bench_prepare_database
"${PG_OWNER[@]}" -f "$BENCH_DIR/raw_setup.sql"
if has_workload append || has_workload context; then
    step "The reference: database 'reference', $SESSIONS sessions of 20 messages (bench/reference/load.sql)"
    "${PG_SUPER[@]}" -d postgres -c "CREATE DATABASE reference OWNER chatledger_owner"
    REF_PSQL=("$PG_PSQL" -h "$PG_SOCK" -U chatledger_owner -d reference -X -q -v ON_ERROR_STOP=1)
    "${REF_PSQL[@]}" -f "$REFERENCE/schema.sql" -f "$REFERENCE/func.sql" >/dev/null
    "${REF_PSQL[@]}" -v nsessions="$SESSIONS" -v permsg=20 -f "$REFERENCE/load.sql" >/dev/null
fi
bench_start_server
rm -f "$JSONL.tmp"

cells=0
for w in "${WORKLOADS[@]}"; do
    case "$w" in
    append) cells=$((cells + 4 * ${#CLIENT_COUNTS[@]})) ;;
    context) cells=$((cells + 3 * ${#CLIENT_COUNTS[@]})) ;;
    paged) cells=$((cells + 2 * ${#CLIENT_COUNTS[@]})) ;;
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

if has_workload context || has_workload paged; then
    step "Waiting for the server's indexer to index the prefill"
    bench_wait_for_index
    note "$INDEX_BACKLOG appends indexed in $INDEX_DRAIN_S s"
fi

# After each cell that appends (both ledgers' appends are queued for the search index), the next
# cell waits until they are indexed; the cell's rate counted until then is in its notes.
for w in "${WORKLOADS[@]}"; do
    case "$w" in
    append)
        for c in "${CLIENT_COUNTS[@]}"; do
            step "append, $c clients"
            reference_cell "append-reference-c$c" append_func.sql "$c"
            pgbench_cell "append-pgbench-c$c" append.sql "$c" bench- "$SESSIONS"
            bench_wait_for_index
            pg_indexed="$(indexed_note "own SQL" "$PG_TPS")"
            cl_cell "blind-chatledger-c$c" blind "$c" -- --workload blind \
                --sessions "$SESSIONS" --session-prefix bench-
            bench_wait_for_index
            row "blind append (2 msgs)" "$c" "$REF_TPS" "$REF_P50 / $REF_P99" "$PG_TPS" \
                "$PG_P50 / $PG_P99" "$CL_OPS" "$CL_P50 / $CL_P99" "$(ratio "$CL_OPS" "$PG_TPS")" \
                "$(ratio "$CL_OPS" "$REF_TPS")" "$REF_CPU" "$PG_CPU" "$CL_CPU" \
                "$(join_notes "$pg_indexed" "$(indexed_note chatledger "$CL_OPS")" "$REF_ERR" "$PG_ERR" "$CL_ERR")"
            cl_cell "append-chatledger-c$c" append "$c" -- --workload append \
                --sessions "$SESSIONS" --session-prefix bench-
            bench_wait_for_index
            row "append with expected_seq" "$c" "($REF_TPS)" "($REF_P50 / $REF_P99)" "($PG_TPS)" \
                "($PG_P50 / $PG_P99)" "$CL_OPS" "$CL_P50 / $CL_P99" "$(ratio "$CL_OPS" "$PG_TPS")" \
                "$(ratio "$CL_OPS" "$REF_TPS")" "" "" "$CL_CPU" \
                "$(join_notes "reference and pgbench: the blind figures above" "409s: $CL_CONFLICTS" "$(indexed_note chatledger "$CL_OPS")" "$CL_ERR")"
        done
        ;;
    context)
        for c in "${CLIENT_COUNTS[@]}"; do
            step "context, $c clients"
            reference_cell "context-reference-c$c" read_last20.sql "$c"
            pgbench_cell "context-pgbench-c$c" context.sql "$c" bench- "$SESSIONS"
            cl_cell "context-chatledger-c$c" context "$c" -- --workload context \
                --sessions "$SESSIONS" --session-prefix bench- --prefill 0
            row "context read (last 20)" "$c" "$REF_TPS" "$REF_P50 / $REF_P99" "$PG_TPS" \
                "$PG_P50 / $PG_P99" "$CL_OPS" "$CL_P50 / $CL_P99" "$(ratio "$CL_OPS" "$PG_TPS")" \
                "$(ratio "$CL_OPS" "$REF_TPS")" "$REF_CPU" "$PG_CPU" "$CL_CPU" "${REF_ERR}${PG_ERR}${CL_ERR}"
        done
        ;;
    paged)
        for c in "${CLIENT_COUNTS[@]}"; do
            step "paged, $c clients"
            pgbench_cell "paged-pgbench-c$c" paged.sql "$c" paged- "$PAGED_SESSIONS"
            cl_cell "paged-chatledger-c$c" paged "$c" -- --workload paged \
                --sessions "$PAGED_SESSIONS" --session-prefix paged- --prefill 0
            row "paged read (100 entries)" "$c" "-" "-" "$PG_TPS" "$PG_P50 / $PG_P99" "$CL_OPS" \
                "$CL_P50 / $CL_P99" "$(ratio "$CL_OPS" "$PG_TPS")" "-" "" "$PG_CPU" "$CL_CPU" \
                "${PG_ERR}${CL_ERR}"
        done
        ;;
    hot)
        step "hot mix, $HOT_CLIENTS clients on $HOT_SESSIONS sessions"
        pgbench_cell "hot-pgbench-c$HOT_CLIENTS" hot.sql "$HOT_CLIENTS" hot- "$HOT_SESSIONS"
        bench_wait_for_index
        cl_cell "hot-chatledger-c$HOT_CLIENTS" hot_append "$HOT_CLIENTS" -- --workload hot \
            --sessions "$HOT_SESSIONS" --session-prefix hot- --prefill 0
        bench_wait_for_index
        row "hot turn (read + append) on $HOT_SESSIONS sessions" "$HOT_CLIENTS" "-" "-" "$PG_TPS" \
            "$PG_P50 / $PG_P99" "$CL_OPS" "$CL_P50 / $CL_P99" "$(ratio "$CL_OPS" "$PG_TPS")" "-" \
            "" "$PG_CPU" "$CL_CPU" \
            "$(join_notes "pgbench: blind" "chatledger: expected_seq, latency of its appends, 409s retried: $CL_CONFLICTS" "$PG_ERR" "$CL_ERR")"
        ;;
    raw)
        for c in "${CLIENT_COUNTS[@]}"; do
            step "raw INSERT ceiling, $c clients"
            pgbench_cell "raw-pgbench-c$c" raw.sql "$c" raw- "$SESSIONS" owner
            row "raw INSERT of 2 rows (ceiling)" "$c" "-" "-" "$PG_TPS" "$PG_P50 / $PG_P99" "-" "-" "-" \
                "-" "" "$PG_CPU" "" "$(join_notes "one plain statement, no chatledger" "$PG_ERR")"
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
    echo "| workload | clients | reference tx/s | reference p50 / p99 ms | own SQL (pgbench) tx/s | own SQL p50 / p99 ms | chatledger ops/s | chatledger p50 / p99 ms | chatledger / own SQL | chatledger / reference | CPU during reference: pg / client / other | CPU during own SQL: pg / client / other | CPU during chatledger: pg / server / client / other | notes |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "How to read it:"
    echo "- reference: bench/reference/ (a copy of ../shared/bench-reference/), the least database work that does the job in outline (one round trip, row lock, expected-seq check, SHA-256 link, insert, advance, durable commit; a last-20 read by primary key), on its own database of $SESSIONS sessions of 20 messages, as its owner. *chatledger / reference* is what the design costs: keys, tenants, row-level security, idempotency, canonical JSON, the access log and the search index."
    echo "- own SQL: pgbench runs bench/*.sql: each transaction is the one function call chatledger makes for that request (\`chatledger_append\` / \`chatledger_entries\` with the writer key's tenant and id, as the runtime role \`chatledger_app\`, prepared statements), on sessions chosen at random; so *chatledger / own SQL* is the cost of HTTP, authentication, JSON, payload digests (SHA-256 over RFC 8785 JSON in Rust) and the pool, on top of the same database work."
    echo "- appends are turns of 2 messages (200 and 800 characters); ops/s are turns per second (messages per second are twice that)."
    echo "- pgbench cannot track the head a client last saw, so it appends blind (\`expected_seq\` NULL): its figure is the ceiling for both chatledger rows; chatledger's append with expected_seq tracks each session's head from its 201 answers (each client owns its sessions, so 409s arise only in the hot mix)."
    echo "- the search index: both ledgers' appends are queued for it and the server's indexer indexes them in the background (migration 0012). Every cell starts once the index holds everything appended before it (the prefill included); a cell that appends has the time its appends took to be indexed after it ended, and its rate counted until then, in its notes (the reference indexes nothing)."
    echo "- latency: pgbench from its per-transaction log, chatledger-bench per HTTP request (409 answers included), both over the measured window only."
    echo "- CPU: percent of one core (the machine has ${NPROC}: $((NPROC * 100))% is all of it) over the whole cell, from /proc (PostgreSQL: postmaster with all backends, reaped ones included; server: its process; client: pgbench or chatledger-bench; other: the machine's busy time from /proc/stat that none of these accounts for, i.e. anything else running on the machine). Figures taken while *other* is high are disturbed by it."
} >"$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"
mv "$JSONL.tmp" "$JSONL"
step "Results (also in ${RESULTS#"$REPO_DIR"/} and ${JSONL#"$REPO_DIR"/})"
cat "$RESULTS"

if [[ "${BENCH_PEERS:-1}" == 1 ]]; then
    peers_start_redis
    peers_run "$(dirname "$RESULTS")/peers-latest.md"
    cat "$(dirname "$RESULTS")/peers-latest.md"
fi
