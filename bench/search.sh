#!/usr/bin/env bash
# Audit search and the access log at scale, in one run on this machine against a throwaway
# PostgreSQL cluster (as bench/compare.sh): a tenant with 1,000,000 messages in 10,000
# sessions (English, German and Chinese text, spread over 90 days), searched through the API.
#
#   bench/search.sh                                  # ~10 minutes with the defaults
#   SEARCH_SESSIONS=1000 BENCH_SECONDS=3 bench/search.sh
#
# It measures:
#   - GET /v1/audit/search latency (p50, p95, max of SEARCH_QUERIES sequential requests, an
#     auditor key, each request also writing its access record) for a rare term of 3+
#     characters, a common word, a 2-character Chinese term, and a common word within 7 days;
#   - the size of the searchable copy (search_docs) and its trigram index beside the table;
#   - append throughput (pgbench, bench/append.sql, the server's one function call, 32 clients)
#     with the search text (queued by the append, indexed by the server meanwhile: how much it
#     had not caught up with at the end of the cell, and how long that took, is reported, and the
#     ratio counted until it had) and without it (for that cell the head's queueing trigger
#     feeds the transparency log only);
#   - what the access log costs a context read (chatledger-bench, 8 clients): a writer key with
#     the tenant's log_writer_reads off (not recorded), on (recorded), and a reader key (always
#     recorded).
# The messages are written with SQL as the superuser, not through the API (their chain is not
# valid: search does not read it; they are queued for the index and indexed in one go after the
# load); the trigram index
# is built once after the load, as CREATE INDEX, from its definition in the migrated schema.
#
# Settings: SEARCH_SESSIONS (10000), SEARCH_PER_SESSION (100), SEARCH_QUERIES (40),
# BENCH_SECONDS (10), BENCH_WARMUP (1), BENCH_POOL_SIZE (16), BENCH_BUILD (1),
# BENCH_KEEP_TMP (0), BENCH_RESULTS (bench/results/search-latest.md).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

S="${BENCH_SECONDS:-10}"
W="${BENCH_WARMUP:-1}"
[[ "$S" =~ ^[1-9][0-9]*$ && "$W" =~ ^[0-9]+$ ]] || die "BENCH_SECONDS and BENCH_WARMUP are whole seconds"
SESSIONS="${SEARCH_SESSIONS:-10000}"
PER_SESSION="${SEARCH_PER_SESSION:-100}"
QUERIES="${SEARCH_QUERIES:-40}"
for n in "$SESSIONS" "$PER_SESSION" "$QUERIES"; do
    [[ "$n" =~ ^[1-9][0-9]*$ && "$n" -le 1000000 ]] || die "settings are whole numbers, 1 to 1000000"
done
RESULTS="${BENCH_RESULTS:-$BENCH_DIR/results/search-latest.md}"
JSONL="${RESULTS%.md}.jsonl"
ROWS=()
row() { ROWS+=("| $(IFS='|'; echo "$*" | sed 's/|/ | /g') |"); }

bench_build
bench_start_cluster
bench_prepare_database
bench_start_server
rm -f "$JSONL.tmp"
AUDITOR="$AUDITOR_KEY"
READER_KEY="$("$CHATLEDGER_BIN" keys create --tenant bench --role reader --label bench \
    --database-url "$DATABASE_URL" 2>/dev/null)"
PSQL_DB=("${PG_SUPER[@]}" -d chatledger)

MESSAGES=$((SESSIONS * PER_SESSION))
step "Loading $MESSAGES messages in $SESSIONS sessions with SQL (search index dropped for the load)"
INDEX_DEF="$("${PSQL_DB[@]}" -At -c "SELECT pg_get_indexdef('search_docs_text'::regclass)")"
[[ "$INDEX_DEF" == CREATE\ INDEX* ]] || die "no search_docs_text index in the schema"
"${PSQL_DB[@]}" -c "DROP INDEX search_docs_text"
t0="$(now_s)"
"${PSQL_DB[@]}" -v tenant="$WRITER_TENANT_ID" -v author="$WRITER_KEY_ID" \
    -v sessions="$SESSIONS" -v per="$PER_SESSION" <<'SQL'
SET synchronous_commit = off;
-- Words of three languages; every message draws 12 to 40 of them. Rare markers: one message
-- in about 50,000 holds 'zq8892', one in 100 the Chinese '退货' (return an item), and 'refund'
-- is among the common words.
CREATE TEMP TABLE words AS SELECT ARRAY[
    'the','order','shipped','customer','refund','account','please','thanks','delivery',
    'tracking','number','invoice','payment','policy','support','address','package','status',
    'Bestellung','Rückerstattung','Überweisung','Lieferung','Konto','bitte','danke','Rechnung',
    'Zahlung','Adresse','Paket','heute','morgen','我的','订单','号码','发货','付款','地址',
    '包裹','今天','明天','谢谢','请','账户','发票','查询','快递'] AS w;
INSERT INTO sessions (tenant_id, session_id, created_at, updated_at, last_seq, head_hash,
                      message_count, context_start_seq)
SELECT :tenant, 'search-' || s, now() - interval '90 days', now(), :per,
       sha256(int8send(s)), :per, 0
  FROM generate_series(1, :sessions) s;
INSERT INTO entries (tenant_id, session_pk, seq, kind, role, content, metadata, created_at,
                     author, salt, payload_digest, prev_hash, hash, payload_bytes)
SELECT :tenant, p.id, q, 'message', CASE WHEN q % 2 = 1 THEN 'user' ELSE 'assistant' END,
       to_jsonb(t.text), '{}'::jsonb,
       now() - interval '90 days' + (q + (s - 1) * :per) * (interval '90 days' / (:sessions * :per)),
       :'author', substr(sha256(int8send(s * 1000 + q)), 1, 16), sha256(int8send(s * 1000 + q + 1)),
       sha256(int8send(s * 1000 + q - 1)), sha256(int8send(s * 1000 + q)), 200
  FROM generate_series(1, :sessions) s
  JOIN sessions p ON p.tenant_id = :tenant AND p.session_id = 'search-' || s
 CROSS JOIN generate_series(1, :per) q
 CROSS JOIN LATERAL (
       SELECT concat_ws(' ',
                  (SELECT string_agg(w.w[1 + floor(random() * cardinality(w.w))::int], ' ')
                     FROM words w, generate_series(1, 12 + (q * 7 + s) % 29) g
                    WHERE g > 0 * q),
                  CASE WHEN random() < 0.00002 THEN 'order zq8892' END,
                  CASE WHEN random() < 0.01 THEN '我想退货' END) AS text) t;
ANALYZE entries;
-- Queue the loaded sessions for the search index, as each head's advance would have (migration
-- 0013), and index them in one go.
INSERT INTO search_pending (tenant_id, session_pk, first_seq, last_seq)
SELECT tenant_id, id, 1, last_seq FROM sessions WHERE tenant_id = :tenant;
SELECT chatledger_index_pending(:tenant, NULL) AS sessions_indexed;
ANALYZE search_docs;
SQL
t1="$(now_s)"
LOAD_SECS="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }')"
t0="$(now_s)"
"${PSQL_DB[@]}" -c "$INDEX_DEF"
t1="$(now_s)"
BUILD_SECS="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }')"
SIZES="$("${PSQL_DB[@]}" -At -F '|' -c "SELECT pg_size_pretty(pg_relation_size('entries')),
    pg_size_pretty(pg_total_relation_size('entries') - pg_relation_size('entries')),
    pg_size_pretty(pg_total_relation_size('search_docs') - pg_relation_size('search_docs_text')),
    pg_size_pretty(pg_relation_size('search_docs_text'))")"
IFS='|' read -r TABLE_SIZE OTHER_INDEXES DOCS_SIZE INDEX_SIZE <<<"$SIZES"
note "loaded in $LOAD_SECS s, index built in $BUILD_SECS s: entries $TABLE_SIZE (+ $OTHER_INDEXES indexes and TOAST), search_docs $DOCS_SIZE, trigram index $INDEX_SIZE"

# search_cell LABEL QUERY-STRING: QUERIES sequential searches; adds a row.
search_cell() {
    local label="$1" query="$2" dir="$BENCH_TMP/work/search-$RANDOM" i code hits=""
    mkdir -p "$dir"
    for i in $(seq 1 "$QUERIES"); do
        code="$(curl -sS -o "$dir/body" -w '%{http_code} %{time_total}\n' \
            -H "Authorization: Bearer $AUDITOR" "$BENCH_URL/v1/audit/search?$query")"
        [[ "${code%% *}" == 200 ]] || die "search $query answered ${code%% *}: $(head -c 300 "$dir/body")"
        echo "${code#* }" >>"$dir/times"
        [[ -n "$hits" ]] || hits="$(jq '.results | length' "$dir/body")"
    done
    sort -n "$dir/times" | awk '{ print $1 * 1000000 }' >"$dir/sorted"
    local p50 p95 max
    p50="$(percentile_ms "$dir/sorted" "$QUERIES" 50)"
    p95="$(percentile_ms "$dir/sorted" "$QUERIES" 95)"
    max="$(percentile_ms "$dir/sorted" "$QUERIES" 100)"
    row "$label" "\`$query\`" "$hits" "$p50" "$p95" "$max"
    jq -cn --arg cell "search" --arg name "$label" --arg query "$query" --argjson hits "$hits" \
        --argjson p50 "$p50" --argjson p95 "$p95" --argjson max "$max" \
        '{cell: $cell, name: $name, query: $query, first_page_hits: $hits, p50_ms: $p50, p95_ms: $p95, max_ms: $max}' |
        record_json
    note "search $label: p50 $p50 ms, p95 $p95 ms, max $max ms ($hits hits on the first page)"
}

step "Searching ($QUERIES requests per query, one at a time)"
WEEK_AGO="$(date -u -d '7 days ago' +%Y-%m-%dT%H:%M:%SZ)"
search_cell "rare term (6 characters)" "q=zq8892"
search_cell "common word" "q=refund"
search_cell "2-character Chinese term" "q=%E9%80%80%E8%B4%A7"
search_cell "common word, last 7 days" "q=refund&from=$WEEK_AGO"
search_cell "German word, any case" "q=%C3%9Cberweisung"

step "Appends with and without the search text (pgbench, bench/append.sql, 32 clients, twice each, alternating)"
# With: appends queue their messages and the server's indexer indexes them meanwhile
# (migration 0012); what it has not caught up with at the end is reported, with how long it took.
# Without: the head's queueing trigger feeds the transparency log only, as it did before search
# existed, so nothing is queued for search_docs and the indexer idles. The cells alternate (with,
# without, with, without) so that neither gains from running later on a warmer cluster.
QUEUE_FN="$("${PSQL_DB[@]}" -At -c "SELECT pg_get_functiondef('chatledger_queue_append_leaf'::regproc)")"
[[ "$QUEUE_FN" == *search_pending* ]] || die "chatledger_queue_append_leaf does not queue for search"
LOG_ONLY_QUEUE_FN="$(cat <<'SQL'
CREATE OR REPLACE FUNCTION chatledger_queue_append_leaf() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    INSERT INTO tlog_pending (tenant_id, session_id, first_seq, last_seq, head_hash)
    VALUES (NEW.tenant_id, NEW.session_id, OLD.last_seq + 1, NEW.last_seq, NEW.head_hash);
    RETURN NULL;
END
$$;
SQL
)"
APPEND_ROWS=()
WITH_SUM=0 WITHOUT_SUM=0 CAUGHT_UP_SUM=0 BACKLOGS=()
for round in 1 2; do
    pgbench_cell "append-indexed-$round" append.sql 32 search- "$SESSIONS"
    APPEND_ROWS+=("| with the search text (queued, indexed by the server meanwhile), run $round | $PG_TPS | $PG_P50 / $PG_P99 $PG_ERR |")
    WITH_SUM="$(awk -v a="$WITH_SUM" -v b="$PG_TPS" 'BEGIN { print a + b }')"
    bench_wait_for_index
    CAUGHT_UP_SUM="$(awk -v a="$CAUGHT_UP_SUM" -v b="$(caught_up_rate "$PG_TPS" "$S" "$INDEX_DRAIN_S")" \
        'BEGIN { print a + b }')"
    BACKLOGS+=("$INDEX_BACKLOG appends, indexed $INDEX_DRAIN_S s later (run $round)")
    note "search queue at the end of the cell: $INDEX_BACKLOG appends, indexed $INDEX_DRAIN_S s later"
    "${PSQL_DB[@]}" -c "$LOG_ONLY_QUEUE_FN"
    pgbench_cell "append-unindexed-$round" append.sql 32 search- "$SESSIONS"
    APPEND_ROWS+=("| without it (nothing queued for search), run $round | $PG_TPS | $PG_P50 / $PG_P99 $PG_ERR |")
    WITHOUT_SUM="$(awk -v a="$WITHOUT_SUM" -v b="$PG_TPS" 'BEGIN { print a + b }')"
    "${PSQL_DB[@]}" -c "$QUEUE_FN"
done
APPEND_RATIO="$(ratio "$WITH_SUM" "$WITHOUT_SUM")"
CAUGHT_UP_RATIO="$(ratio "$CAUGHT_UP_SUM" "$WITHOUT_SUM")"

step "Context reads and the access log (chatledger-bench, 8 clients)"
policy() {
    curl -fsS -o /dev/null -X PUT -H "Authorization: Bearer $(cat "$BENCH_TMP/admin.key")" \
        -H 'Content-Type: application/json' -d "{\"retention_days\": null, \"log_writer_reads\": $1}" \
        "$BENCH_URL/v1/admin/tenants/bench/policy"
}
context_cell() {
    local name="$1" key="$2"
    WRITER_KEY="$key" cl_cell "$name" context 8 -- --workload context --sessions "$SESSIONS" \
        --session-prefix search- --prefill 0
    CONTEXT_ROWS+=("| $3 | $CL_OPS | $CL_P50 / $CL_P99 | $CL_CPU | ${CL_ERR} |")
}
CONTEXT_ROWS=()
RECORDS0="$("${PSQL_DB[@]}" -At -c "SELECT count(*) FROM access_records")"
policy false
context_cell context-writer-unlogged "$WRITER_KEY" "writer key, log_writer_reads off (not recorded)"
RECORDS1="$("${PSQL_DB[@]}" -At -c "SELECT count(*) FROM access_records")"
policy true
context_cell context-writer-logged "$WRITER_KEY" "writer key, log_writer_reads on (each read recorded)"
policy false
context_cell context-reader "$READER_KEY" "reader key (always recorded)"
RECORDS2="$("${PSQL_DB[@]}" -At -c "SELECT count(*) FROM access_records")"

COMMIT="$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$REPO_DIR" status --porcelain 2>/dev/null)" ]]; then COMMIT="$COMMIT (working tree modified)"; fi
{
    echo "# Audit search and the access log at scale, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "- machine: $(machine_summary)"
    echo "- PostgreSQL: $(pg_summary)"
    echo "- chatledger: commit $COMMIT, \`serve --pool-size ${BENCH_POOL_SIZE:-16}\`"
    echo "- data: $MESSAGES messages in $SESSIONS sessions of one tenant over 90 days, 12 to 40 words each of English, German and Chinese; loaded in $LOAD_SECS s, search index built in $BUILD_SECS s"
    echo "- sizes: entries $TABLE_SIZE (its indexes and TOAST $OTHER_INDEXES); search_docs, the searchable copy, $DOCS_SIZE with its other indexes; its trigram index (GIN, pg_trgm) $INDEX_SIZE"
    echo
    echo "| search | query | hits on the first page | p50 ms | p95 ms | max ms |"
    echo "|---|---|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "| append (pgbench, one function call, 32 clients) | tx/s | p50 / p99 ms |"
    echo "|---|---:|---:|"
    printf '%s\n' "${APPEND_ROWS[@]}"
    echo "| with / without (the sums of both runs) | $APPEND_RATIO | |"
    echo "| with, counted until the index caught up (appends ÷ (cell + catch-up time)) / without | $CAUGHT_UP_RATIO | |"
    echo
    echo "At the end of each indexed cell the search queue held $(IFS=';'; echo "${BACKLOGS[*]}" | sed 's/;/; /g') (a search indexes its own tenant's queue first, so it never misses them)."
    echo
    echo "| context read (last 20, 8 clients over HTTP) | ops/s | p50 / p99 ms | CPU pg / server / client / other | errors |"
    echo "|---|---:|---:|---:|---|"
    printf '%s\n' "${CONTEXT_ROWS[@]}"
    echo
    echo "Access records written: $((RECORDS1 - RECORDS0)) during the unrecorded writer reads, $((RECORDS2 - RECORDS1)) during the other two cells."
    echo "Search latency is per request over HTTP, one at a time, each also writing its access record; a page is at most 50 results (the default limit), newest first."
} >"$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"
mv "$JSONL.tmp" "$JSONL"
step "Results (also in ${RESULTS#"$REPO_DIR"/})"
cat "$RESULTS"
