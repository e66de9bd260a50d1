#!/usr/bin/env bash
# The three LangChain chat histories side by side, in one run on this machine:
#   chatledger ChatLedgerMessageHistory, langchain-postgres PostgresChatMessageHistory and
#   langchain-community RedisChatMessageHistory, driven as RunnableWithMessageHistory drives
#   a history (read, then add a 2-message turn of ~200 and ~800 characters, sessions of
#   about 20 messages), at 1, 8 and 32 workers, sync (a process per worker) and async (all
#   workers as tasks on one event loop), plus one 10,000-message read each.
#   bench/compare.sh runs the same in its run; this runs only the peers.
#
#   bench/peers/run.sh                       # about 10 minutes
#   BENCH_PEERS_SECONDS=3 BENCH_WORKERS=1,8 bench/peers/run.sh
#
# It installs what it needs (bench/peers/lib.sh): a venv (in the cargo target dir) with this
# repository's client, langchain-postgres + psycopg, langchain-community + redis;
# redis-server from Debian's packages when missing. It starts a throwaway PostgreSQL cluster
# (bench/lib.sh: default settings, fsync on, unix socket) shared by chatledger and
# langchain-postgres, a redis-server on a loopback port (no persistence, as a cache is run),
# and a release chatledger server on the cluster; all of them are stopped on exit, whatever
# happens.
#
# Output: a markdown table on stdout and in bench/results/peers-latest.md, and every point
# as one JSON line in bench/results/peers-latest.jsonl.
#
# Settings (environment):
#   BENCH_PEERS_SECONDS (8)    measured seconds per point (after 1 s of warm-up)
#   BENCH_REPEAT (2)           runs per point; the table shows the best, the JSON lines all
#   BENCH_WORKERS (1,8,32)     worker counts
#   BENCH_MODES (sync,async)
#   BENCH_BACKENDS (chatledger,langchain-postgres,redis)
#   BENCH_BUILD (1)            0: do not run cargo build (CHATLEDGER_BIN must exist)
#   BENCH_POOL_SIZE (16)       chatledger's --pool-size
#   BENCH_RESULTS (bench/results/peers-latest.md), its .jsonl beside it
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/../lib.sh"
# shellcheck source=bench/peers/lib.sh
source "$(dirname "$0")/lib.sh"

bench_build
peers_install
bench_start_cluster
trap peers_cleanup EXIT
bench_prepare_database
bench_start_server
peers_start_redis
peers_run "${BENCH_RESULTS:-$REPO_DIR/bench/results/peers-latest.md}"
