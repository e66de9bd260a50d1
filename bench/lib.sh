# Shared by bench/compare.sh and bench/scale.sh (sourced, not run): a throwaway PostgreSQL
# cluster (scripts/cluster.sh, fsync on), a prepared chatledger database, a chatledger server on
# loopback, CPU accounting from /proc, and clean-up of all of it on exit.
# shellcheck shell=bash

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"
CLK_TCK="$(getconf CLK_TCK)"
NPROC="$(nproc)"

# shellcheck source=scripts/cluster.sh
source "$REPO_DIR/scripts/cluster.sh"
# shellcheck source=scripts/cargo-bin.sh
source "$REPO_DIR/scripts/cargo-bin.sh"

step() { printf '\n==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Sets CHATLEDGER_BIN and BENCH_BIN (release builds) unless the environment sets them
# (CHATLEDGER_BIN, CHATLEDGER_BENCH_BIN): built now, or with BENCH_BUILD=0 already built where
# cargo puts them.
bench_build() {
    local server bench
    if [[ "${BENCH_BUILD:-1}" == 1 ]]; then
        step "cargo build --release --bin chatledger --bin chatledger-bench"
        server="$(cargo_bin chatledger --release --bin chatledger-bench)"
        bench="$(cargo_bin chatledger-bench --release)"
    else
        server="$(cargo_target_dir)/release/chatledger"
        bench="$(cargo_target_dir)/release/chatledger-bench"
    fi
    CHATLEDGER_BIN="${CHATLEDGER_BIN:-$server}"
    BENCH_BIN="${CHATLEDGER_BENCH_BIN:-$bench}"
    [[ -x "$CHATLEDGER_BIN" ]] || die "no $CHATLEDGER_BIN (set CHATLEDGER_BIN or BENCH_BUILD=1)"
    [[ -x "$BENCH_BIN" ]] || die "no $BENCH_BIN (set CHATLEDGER_BENCH_BIN or BENCH_BUILD=1)"
}

BENCH_TMP=""
SERVER_PID=""
SERVER_LOG=""

bench_cleanup() {
    local status=$?
    trap - EXIT INT TERM
    bench_stop_server
    CLUSTER_KEEP="${BENCH_KEEP_TMP:-${CLUSTER_KEEP:-0}}" cluster_stop
    exit "$status"
}

# Starts the cluster: default settings (fsync, synchronous_commit, shared_buffers and
# max_connections included) except a unix socket in the temp dir and no TCP. The temp dir is
# BENCH_TMP, also home to the benchmark's own files (work/, server logs, admin.key).
bench_start_cluster() {
    PG_PGBENCH="$(find_pg_tool pgbench)" || die "pgbench not found"
    cluster_start chatledger
    trap bench_cleanup EXIT
    BENCH_TMP="$CLUSTER_DIR"
    mkdir -p "$BENCH_TMP/work"
    PG_SOCK="$CLUSTER_SOCKET"
    PG_PSQL="$CLUSTER_PSQL"
    PG_SUPER=("$PG_PSQL" -h "$PG_SOCK" -U postgres -X -q -v ON_ERROR_STOP=1)
    DATABASE_URL="$(cluster_url chatledger_owner chatledger)"
    # shellcheck disable=SC2034 # used by compare.sh
    PG_OWNER=("$PG_PSQL" -h "$PG_SOCK" -U chatledger_owner -d chatledger -X -q -v ON_ERROR_STOP=1)
}

# Migrates, then creates the tenant "bench" with a writer and an auditor key. Sets WRITER_KEY,
# AUDITOR_KEY, and WRITER_TENANT_ID and WRITER_KEY_ID: what the server passes the ledger
# functions once it has authenticated the key (its tenant's id and the key's id).
bench_prepare_database() {
    step "Migrating and creating tenant 'bench' with a writer and an auditor key"
    "$CHATLEDGER_BIN" migrate --database-url "$DATABASE_URL" >&2
    "$CHATLEDGER_BIN" tenants create bench --database-url "$DATABASE_URL" >&2
    WRITER_KEY="$("$CHATLEDGER_BIN" keys create --tenant bench --role writer --label bench \
        --database-url "$DATABASE_URL" 2>/dev/null)"
    AUDITOR_KEY="$("$CHATLEDGER_BIN" keys create --tenant bench --role auditor --label bench \
        --database-url "$DATABASE_URL" 2>/dev/null)"
    [[ "$WRITER_KEY" == clk_* && "$AUDITOR_KEY" == clk_* ]] || die "could not create keys"
    local digest
    digest="$(printf '%s' "$WRITER_KEY" | sha256sum | cut -d' ' -f1)"
    read -r WRITER_TENANT_ID WRITER_KEY_ID < <("${PG_SUPER[@]}" -d chatledger -At -F ' ' -c \
        "SELECT tenant_id, id FROM api_keys WHERE digest = decode('$digest', 'hex')")
    [[ -n "${WRITER_KEY_ID:-}" ]] || die "the writer key's digest is not in api_keys"
    printf '%s\n' "$(head -c 48 /dev/urandom | base64 | tr -d '/+=\n')" >"$BENCH_TMP/admin.key"
    chmod 0600 "$BENCH_TMP/admin.key"
}

# Starts `chatledger serve` on a free loopback port; sets SERVER_PID and BENCH_URL.
bench_start_server() {
    local pool="${BENCH_POOL_SIZE:-16}" port attempt
    # The checkpoint signing key every server of the deployment shares.
    if [[ ! -f "$BENCH_TMP/checkpoint.key" ]]; then
        "$CHATLEDGER_BIN" checkpoint-key --generate "$BENCH_TMP/checkpoint.key" \
            --name chatledger/bench >/dev/null
    fi
    for attempt in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 20000))
        SERVER_LOG="$BENCH_TMP/server.$port.log"
        RUST_LOG="${RUST_LOG:-warn}" "$CHATLEDGER_BIN" serve --database-url "$DATABASE_URL" \
            --admin-key-file "$BENCH_TMP/admin.key" --listen "127.0.0.1:$port" \
            --checkpoint-key-file "$BENCH_TMP/checkpoint.key" \
            --pool-size "$pool" >"$SERVER_LOG" 2>&1 &
        SERVER_PID=$!
        BENCH_URL="http://127.0.0.1:$port"
        local i
        for i in $(seq 1 100); do
            if curl -fsS -o /dev/null "$BENCH_URL/readyz" 2>/dev/null; then
                note "chatledger serve pid $SERVER_PID on $BENCH_URL (pool size $pool)"
                return 0
            fi
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        bench_stop_server
    done
    cat "$SERVER_LOG" >&2
    die "chatledger serve did not become ready"
}

bench_stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}

# ---- CPU accounting (clock ticks) ----

# utime + stime of one process.
cpu_ticks_pid() {
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# The whole cluster: the postmaster with its reaped children (cutime + cstime), plus every
# living child; backends that come and go between two readings are counted too.
cpu_ticks_postgres() {
    local pm total child
    pm="$(head -1 "$BENCH_TMP/pg/postmaster.pid")"
    total="$(awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$pm/stat")"
    for child in $(cat "/proc/$pm/task/$pm/children" 2>/dev/null); do
        total=$((total + $(cpu_ticks_pid "$child")))
    done
    echo "$total"
}

# Busy ticks of the whole machine, all CPUs (user nice system irq softirq steal from /proc/stat):
# what our processes do not account for is other load on the machine.
cpu_ticks_machine() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# Busy percent of the machine (of one core) over a short sample, before a run.
machine_busy_percent() {
    local m0 m1
    m0="$(cpu_ticks_machine)"
    sleep "${1:-2}"
    m1="$(cpu_ticks_machine)"
    cpu_percent $((m1 - m0)) "${1:-2}"
}

# The postmaster's children now.
pg_children() {
    local pm
    pm="$(head -1 "$BENCH_TMP/pg/postmaster.pid")"
    cat "/proc/$pm/task/$pm/children" 2>/dev/null || true
}

# Waits (at most 5 s) until every child of the postmaster not in the list BEFORE has been
# reaped, so that the CPU time of backends that just exited is in the postmaster's cutime.
wait_for_reaped() {
    local before=" $1 " i pid pending
    for i in $(seq 1 50); do
        pending=0
        for pid in $(pg_children); do
            [[ "$before" == *" $pid "* ]] || pending=1
        done
        [[ "$pending" == 0 ]] && return 0
        sleep 0.1
    done
}

# Percent of one core: ticks over seconds.
cpu_percent() { awk -v t="$1" -v s="$2" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", (s > 0 ? 100 * t / hz / s : 0) }'; }

now_s() { date +%s.%N; }

# Waits (at most 300 s) until the server's indexer holds every queued append in the search
# index (search_pending empty, migration 0012); sets INDEX_BACKLOG, the ranges queued when
# called, and INDEX_DRAIN_S, how long that took. An indexer that falls behind during a cell
# defers its cost, it does not save it: the next cell would pay for it.
bench_wait_for_index() {
    local count=("${PG_SUPER[@]}" -d chatledger -At -c "SELECT count(*) FROM search_pending") t0
    INDEX_BACKLOG="$("${count[@]}")"
    t0="$(now_s)"
    while [[ "$("${count[@]}")" != 0 ]]; do
        (( $(awk -v a="$t0" -v b="$(now_s)" 'BEGIN { print (b - a > 300) }') )) && die "the indexer did not catch up in 300 s"
        sleep 0.1
    done
    INDEX_DRAIN_S="$(awk -v a="$t0" -v b="$(now_s)" 'BEGIN { printf "%.1f", b - a }')"
}

# caught_up_rate RATE SECONDS DRAIN: a cell's RATE over SECONDS counted until its appends were
# indexed, DRAIN seconds after it ended.
caught_up_rate() {
    awk -v t="$1" -v s="$2" -v d="$3" 'BEGIN { printf "%.0f", t * s / (s + d) }'
}

# Resident set size peak of a process in KiB (VmHWM).
vm_hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
vm_rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# ---- the machine and the cluster ----

machine_summary() {
    local model cores mem kernel
    model="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    cores="$(nproc)"
    mem="$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    kernel="$(uname -sr)"
    printf '%s cores (%s), %s RAM, %s' "$cores" "${model:-unknown CPU}" "$mem" "$kernel"
}

pg_summary() {
    "${PG_SUPER[@]}" -d chatledger -At -F ' ' -c "SELECT
        split_part(version(), ',', 1),
        'fsync=' || current_setting('fsync'),
        'synchronous_commit=' || current_setting('synchronous_commit'),
        'shared_buffers=' || current_setting('shared_buffers'),
        'max_connections=' || current_setting('max_connections'),
        'wal_sync_method=' || current_setting('wal_sync_method'),
        'full_page_writes=' || current_setting('full_page_writes')"
}

# ---- measuring cells (need S and W: measured and warm-up seconds) ----

# Appends stdin (one JSON line per cell) to "$JSONL.tmp" when JSONL is set.
record_json() {
    if [[ -n "${JSONL:-}" ]]; then cat >>"$JSONL.tmp"; else cat >/dev/null; fi
}

# Realistic contents: prose of 200 and 800 characters, the same for pgbench and (in length and
# kind) what chatledger-bench sends.
prose() {
    awk -v n="$1" -v seed="$2" 'BEGIN {
        srand(seed)
        k = split("the order shipped customer refund account please thanks delivery tracking " \
                  "number invoice payment policy support address package warehouse status " \
                  "update we can you your will be it is a to of and in for on with that this " \
                  "have has been was check again tomorrow today business days email model", w, " ")
        s = ""; cap = 1
        while (length(s) < n) {
            x = w[int(rand() * k) + 1]
            if (cap) x = toupper(substr(x, 1, 1)) substr(x, 2)
            s = s x
            if (rand() < 0.11) { s = s ". "; cap = 1 } else { s = s " "; cap = 0 }
        }
        print substr(s, 1, n - 1) "."
    }'
}
USER_JSON="$(jq -cn --arg s "$(prose 200 1)" '$s')"
ASSISTANT_JSON="$(jq -cn --arg s "$(prose 800 2)" '$s')"

# The reference's contents (../shared/bench-reference/README.md): plain text and metadata.
REF_USER="$(prose 200 1)"
REF_ASSISTANT="$(prose 800 2)"

# ---- one pgbench cell ----
# pgbench_cell NAME SCRIPT CLIENTS PREFIX SESSIONS [ROLE [DATABASE]]: sets PG_TPS PG_P50 PG_P99
# PG_CPU PG_ERR. SCRIPT is a path, or a file name in bench/. ROLE app (the default) enters the
# runtime role like the server's pool; owner stays the schema owner.
# The run lasts W+S seconds; its per-transaction log gives the throughput and latency of the
# transactions completed in [start+W, start+W+S), measured like chatledger-bench's window.
pgbench_cell() {
    local name="$1" script="$2" clients="$3" prefix="$4" sessions="$5" role="${6:-app}"
    local database="${7:-chatledger}"
    [[ "$script" == /* ]] || script="$BENCH_DIR/$script"
    local dir="$BENCH_TMP/work/$name" jobs=$((clients < NPROC ? clients : NPROC))
    local options="-c statement_timeout=5000"
    # chatledger's pool enters the runtime role on every connection (src/db/mod.rs); so does
    # pgbench, so that row-level security and privileges cost the same.
    [[ "$role" == app ]] && options="-c role=chatledger_app $options"
    mkdir -p "$dir"
    local pg0 pg1 m0 m1 w0 w1 status=0 children
    children="$(pg_children | tr '\n' ' ')"
    pg0="$(cpu_ticks_postgres)"
    m0="$(cpu_ticks_machine)"
    w0="$(now_s)"
    (
        cd "$dir"
        TIMEFORMAT='%U %S'
        { time PGOPTIONS="$options" "$PG_PGBENCH" -h "$PG_SOCK" -U chatledger_owner -n \
            -M prepared -c "$clients" -j "$jobs" -T $((W + S)) -f "$script" \
            -D tenant_id="$WRITER_TENANT_ID" -D key_id="$WRITER_KEY_ID" -D prefix="$prefix" -D sessions="$sessions" \
            -D max_after="${MAX_AFTER:-0}" \
            -D user_content="$USER_JSON" -D assistant_content="$ASSISTANT_JSON" \
            -D nsessions="$sessions" -D uc="$REF_USER" -D ac="$REF_ASSISTANT" \
            -D um='{"source":"web"}' -D am='{"model":"some-llm"}' \
            -l --log-prefix="$dir/log" "$database" >"$dir/out" 2>&1; } 2>"$dir/time"
    ) || status=$?
    w1="$(now_s)"
    m1="$(cpu_ticks_machine)"
    wait_for_reaped "$children"
    pg1="$(cpu_ticks_postgres)"
    PG_ERR=""
    if [[ "$status" != 0 ]] || grep -q "aborted" "$dir/out"; then
        PG_ERR="pgbench failed: $(grep -m1 -E 'error|aborted' "$dir/out" || echo "exit $status")"
    fi
    cat "$dir"/log.* 2>/dev/null | awk -v w="$W" -v s="$S" -v out="$dir/window" '
        { done = $5 + $6 / 1e6; start = done - $3 / 1e6; n++; d[n] = done; l[n] = $3
          if (n == 1 || start < t0) t0 = start; if (done > last) last = done }
        END {
            lo = t0 + w; hi = t0 + w + s; if (last < hi) hi = last
            for (i = 1; i <= n; i++) if (d[i] >= lo && d[i] < hi) print l[i] > out
            printf "%.6f\n", (hi > lo ? hi - lo : 0) > (out ".span")
        }' || true
    touch "$dir/window" "$dir/window.span"
    sort -n -o "$dir/window" "$dir/window"
    local count span
    count="$(wc -l <"$dir/window")"
    span="$(cat "$dir/window.span")"
    PG_TPS="$(awk -v c="$count" -v s="$span" 'BEGIN { printf "%.1f", (s > 0 ? c / s : 0) }')"
    PG_P50="$(percentile_ms "$dir/window" "$count" 50)"
    PG_P99="$(percentile_ms "$dir/window" "$count" 99)"
    local user sys span client
    read -r user sys <"$dir/time" || true
    span="$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')"
    client="$(awk -v u="${user:-0}" -v s="${sys:-0}" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", (u + s) * hz }')"
    PG_CPU="$(cpu_split "$span" $((m1 - m0)) $((pg1 - pg0)) "$client")"
    jq -cn --arg cell "$name" --arg tool pgbench --arg script "${script#"$REPO_DIR"/}" --argjson clients "$clients" \
        --argjson tps "$PG_TPS" --argjson p50 "${PG_P50:-0}" --argjson p99 "${PG_P99:-0}" \
        --argjson count "$count" --arg cpu "$PG_CPU" --arg error "$PG_ERR" \
        '{cell: $cell, tool: $tool, script: $script, clients: $clients, tx_per_s: $tps,
          p50_ms: $p50, p99_ms: $p99, transactions: $count, cpu_pg_client: $cpu, error: $error}' \
        | record_json
    note "pgbench    $name: $PG_TPS tx/s, p50 $PG_P50 ms, p99 $PG_P99 ms, CPU pg/client $PG_CPU ${PG_ERR}"
}

# Nearest-rank percentile of a sorted file of microseconds, in ms.
percentile_ms() {
    local file="$1" count="$2" p="$3"
    [[ "$count" -gt 0 ]] || {
        echo 0
        return
    }
    local rank
    rank="$(awk -v c="$count" -v p="$p" 'BEGIN { r = p / 100 * c; i = int(r); if (i < r) i++; if (i < 1) i = 1; print i }')"
    awk -v r="$rank" 'NR == r { printf "%.2f\n", $1 / 1000; exit }' "$file"
}

# ---- one chatledger cell ----
# cl_cell NAME OP CLIENTS -- chatledger-bench args...: sets CL_OPS CL_P50 CL_P99 CL_CPU CL_CONFLICTS
# CL_ERR, for the result row of operation OP.
cl_cell() {
    local name="$1" op="$2" clients="$3"
    shift 4
    local dir="$BENCH_TMP/work/$name"
    mkdir -p "$dir"
    local pg0 pg1 sv0 sv1 m0 m1 w0 w1 status=0
    pg0="$(cpu_ticks_postgres)"
    sv0="$(cpu_ticks_pid "$SERVER_PID")"
    m0="$(cpu_ticks_machine)"
    w0="$(now_s)"
    (
        TIMEFORMAT='%U %S'
        { time CHATLEDGER_BENCH_KEY="$WRITER_KEY" "$BENCH_BIN" --url "$BENCH_URL" \
            --clients "$clients" --duration "$S" --warmup "$W" --json "$@" \
            >"$dir/result.json" 2>"$dir/stderr"; } 2>"$dir/time"
    ) || status=$?
    w1="$(now_s)"
    pg1="$(cpu_ticks_postgres)"
    sv1="$(cpu_ticks_pid "$SERVER_PID")"
    m1="$(cpu_ticks_machine)"
    CL_ERR=""
    if [[ "$status" == 2 ]] || ! jq -e . "$dir/result.json" >/dev/null 2>&1; then
        CL_ERR="chatledger-bench failed: $(tail -1 "$dir/stderr")"
        CL_OPS=0 CL_P50=0 CL_P99=0 CL_CONFLICTS=0 CL_CPU="-"
        note "chatledger $name: $CL_ERR"
        return
    fi
    local row
    row="$(jq -c --arg op "$op" '.results[] | select(.op == $op)' "$dir/result.json")"
    [[ -n "$row" ]] || row='{"ok_per_s":0,"latency_ms":{"p50":0,"p99":0},"conflicts":0,"errors":0}'
    CL_OPS="$(jq -r '.ok_per_s * 10 | round / 10' <<<"$row")"
    CL_P50="$(jq -r '.latency_ms.p50 * 100 | round / 100' <<<"$row")"
    CL_P99="$(jq -r '.latency_ms.p99 * 100 | round / 100' <<<"$row")"
    CL_CONFLICTS="$(jq -r '.conflicts' <<<"$row")"
    local errors
    errors="$(jq -r '[.results[].errors] | add // 0' "$dir/result.json")"
    [[ "$errors" == 0 ]] || CL_ERR="$errors errors: $(jq -r '[.results[] | .statuses | to_entries[] | select(.key | test("^(2|409)") | not) | "\(.key)x\(.value)"] | join(" ")' "$dir/result.json")"
    local user sys span client
    read -r user sys <"$dir/time" || true
    span="$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')"
    client="$(awk -v u="${user:-0}" -v s="${sys:-0}" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", (u + s) * hz }')"
    CL_CPU="$(cpu_split "$span" $((m1 - m0)) $((pg1 - pg0)) $((sv1 - sv0)) "$client")"
    jq -c --arg cell "$name" --arg cpu "$CL_CPU" --arg error "$CL_ERR" \
        '{cell: $cell, tool: "chatledger-bench", cpu_pg_server_client: $cpu, error: $error} + .' \
        "$dir/result.json" | record_json
    note "chatledger $name: $CL_OPS ops/s, p50 $CL_P50 ms, p99 $CL_P99 ms, 409s $CL_CONFLICTS, CPU pg/server/client $CL_CPU ${CL_ERR}"
}

# cpu_split SECONDS MACHINE_TICKS TICKS...: "a / b / ... / other" in percent of one core, where
# other is the machine's busy time that none of the listed processes accounts for.
cpu_split() {
    local span="$1" machine="$2" sum=0 out="" t
    shift 2
    for t in "$@"; do
        out+="$(cpu_percent "$t" "$span")% / "
        sum=$((sum + t))
    done
    local other=$((machine - sum))
    [[ "$other" -ge 0 ]] || other=0
    printf '%sother %s%%' "$out" "$(cpu_percent "$other" "$span")"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

