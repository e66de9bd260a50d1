"""Three LangChain chat histories side by side, driven the way RunnableWithMessageHistory
drives a history: per turn, a new history object for the session, one read of its messages,
then one add of a 2-message turn (a ~200-character question, a ~800-character answer).

    python peers.py --chatledger-url URL --chatledger-key KEY --postgres CONNINFO --redis URL \
        --seconds 8 --workers 1,8,32 --out-md FILE --out-jsonl FILE

Backends: chatledger ``ChatLedgerMessageHistory`` (the adapter's shared pooled client);
langchain-postgres ``PostgresChatMessageHistory`` (a psycopg pool per worker process, a
connection per turn); langchain-community ``RedisChatMessageHistory`` (one redis client per
worker process, set on each history object, as "one client" means there: its constructor
would otherwise build a new connection pool per object).

Workers: ``sync`` points run each worker as its own process (one thread each, like gunicorn
sync workers); ``async`` points run all workers as tasks on one event loop in one process
(like one uvicorn worker). With ``--repeat N`` each point runs N times (fresh sessions each time) and
the table shows the run with the most turns/s (the least disturbed by other load on a shared
machine); every run is in the JSON lines (``turns_run``). Sessions are seeded with 18 messages before the runs and each
point's turns are spread round-robin over fresh sessions (2,000 per point), so a read sees
18 to about 24 messages (the column "msgs/read" reports the mean). Client CPU per turn
is the worker processes' CPU time (user + system) over the measured window divided by the
turns in it. Also measured: reading one 10,000-message history (a new history object, its
``messages``; median of 5).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import random
import statistics
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

warnings.filterwarnings("ignore", category=DeprecationWarning)  # langchain-community's sunset notice

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, message_to_dict

WORDS = (
    "the order shipped customer refund account please thanks delivery tracking number invoice "
    "payment policy support address package warehouse status update we can you your will be it "
    "is a to of and in for on with that this have has been was check again tomorrow today "
    "business days email model"
).split()
SEED_MESSAGES = 18
WARMUP = 1.0
TABLE = "lc_messages"


def prose(n: int, rng: random.Random) -> str:
    out: list[str] = []
    size = 0
    while size < n:
        word = rng.choice(WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)[: n - 1] + "."


def turn_messages(rng: random.Random) -> list[BaseMessage]:
    return [HumanMessage(prose(200, rng)), AIMessage(prose(800, rng))]


# -- backends -------------------------------------------------------------------------------


class Backend:
    name = ""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    # per worker process
    def open(self, workers: int) -> None: ...
    def close(self) -> None: ...
    def turn(self, session_id: str, messages: list[BaseMessage]) -> int: ...
    async def aopen(self, workers: int) -> None: ...
    async def aclose(self) -> None: ...
    async def aturn(self, session_id: str, messages: list[BaseMessage]) -> int: ...
    # in the parent
    def seed(self, sessions: list[str], count: int, rng: random.Random) -> None: ...
    def read(self, session_id: str) -> int: ...
    def settle(self) -> None:
        """Waits until work the backend deferred (chatledger's search indexing) is done, so that
        a point does not pay for the seeding or the point before it."""


class ChatLedger(Backend):
    name = "chatledger"

    def _history(self, session_id: str) -> Any:
        from chatledger.langchain import ChatLedgerMessageHistory

        return ChatLedgerMessageHistory(session_id, url=self.args.chatledger_url, api_key=self.args.chatledger_key)

    def turn(self, session_id: str, messages: list[BaseMessage]) -> int:
        history = self._history(session_id)
        n = len(history.messages)
        history.add_messages(messages)
        return n

    async def aturn(self, session_id: str, messages: list[BaseMessage]) -> int:
        history = self._history(session_id)
        n = len(await history.aget_messages())
        await history.aadd_messages(messages)
        return n

    def seed(self, sessions: list[str], count: int, rng: random.Random) -> None:
        from chatledger import Client
        from chatledger.langchain import message_to_entry

        client = Client(self.args.chatledger_url, self.args.chatledger_key)
        batches = [[message_to_entry(m) for _ in range(count // 2) for m in turn_messages(rng)] for _ in range(8)]

        def one(i: int) -> None:
            entries = batches[i % len(batches)]
            for start in range(0, len(entries), 100):
                client.append(sessions[i], entries[start : start + 100])

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(len(sessions))))
        client.close()

    def read(self, session_id: str) -> int:
        return len(self._history(session_id).messages)

    def settle(self) -> None:
        import psycopg

        deadline = time.monotonic() + 300
        with psycopg.connect(self.args.chatledger_database, autocommit=True) as conn:
            while conn.execute("SELECT count(*) FROM search_pending").fetchone()[0] > 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("chatledger's indexer did not catch up in 300 s")
                time.sleep(0.1)


class Postgres(Backend):
    name = "langchain-postgres"

    def open(self, workers: int) -> None:
        from psycopg_pool import ConnectionPool

        self.pool = ConnectionPool(self.args.postgres, min_size=1, max_size=max(1, workers), open=True)

    def close(self) -> None:
        self.pool.close()

    def turn(self, session_id: str, messages: list[BaseMessage]) -> int:
        from langchain_postgres import PostgresChatMessageHistory

        with self.pool.connection() as conn:
            history = PostgresChatMessageHistory(TABLE, session_id, sync_connection=conn)
            n = len(history.messages)
            history.add_messages(messages)
        return n

    async def aopen(self, workers: int) -> None:
        from psycopg_pool import AsyncConnectionPool

        self.apool = AsyncConnectionPool(self.args.postgres, min_size=1, max_size=max(1, workers), open=False)
        await self.apool.open()

    async def aclose(self) -> None:
        await self.apool.close()

    async def aturn(self, session_id: str, messages: list[BaseMessage]) -> int:
        from langchain_postgres import PostgresChatMessageHistory

        async with self.apool.connection() as conn:
            history = PostgresChatMessageHistory(TABLE, session_id, async_connection=conn)
            n = len(await history.aget_messages())
            await history.aadd_messages(messages)
        return n

    def setup(self) -> None:
        import psycopg
        from langchain_postgres import PostgresChatMessageHistory

        with psycopg.connect(self.args.postgres, autocommit=True) as conn:
            PostgresChatMessageHistory.create_tables(conn, TABLE)

    def seed(self, sessions: list[str], count: int, rng: random.Random) -> None:
        import psycopg

        self.setup()
        rows_of = [[json.dumps(message_to_dict(m)) for _ in range(count // 2) for m in turn_messages(rng)] for _ in range(8)]
        with psycopg.connect(self.args.postgres) as conn:
            with conn.cursor() as cur:
                with cur.copy(f"COPY {TABLE} (session_id, message) FROM STDIN") as copy:
                    for i, sid in enumerate(sessions):
                        for row in rows_of[i % len(rows_of)]:
                            copy.write_row((sid, row))
            conn.commit()

    def read(self, session_id: str) -> int:
        import psycopg
        from langchain_postgres import PostgresChatMessageHistory

        if getattr(self, "_reader", None) is None:
            self._reader = psycopg.connect(self.args.postgres)  # a pooled connection, as in the turns
        return len(PostgresChatMessageHistory(TABLE, session_id, sync_connection=self._reader).messages)


class Redis(Backend):
    name = "langchain-community Redis"

    def _client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.args.redis)

    def _history(self, client: Any, session_id: str) -> Any:
        from langchain_community.chat_message_histories import RedisChatMessageHistory

        history = RedisChatMessageHistory.__new__(RedisChatMessageHistory)
        history.redis_client = client
        history.session_id = session_id
        history.key_prefix = "message_store:"
        history.ttl = None
        return history

    def open(self, workers: int) -> None:
        self.client = self._client()

    def close(self) -> None:
        self.client.close()

    def turn(self, session_id: str, messages: list[BaseMessage]) -> int:
        history = self._history(self.client, session_id)
        n = len(history.messages)
        history.add_messages(messages)
        return n

    async def aopen(self, workers: int) -> None:
        self.client = self._client()

    async def aclose(self) -> None:
        self.client.close()

    async def aturn(self, session_id: str, messages: list[BaseMessage]) -> int:
        # RedisChatMessageHistory has no async methods of its own: LangChain's defaults run the
        # sync ones in the loop's executor, which is what RunnableWithMessageHistory gets.
        history = self._history(self.client, session_id)
        n = len(await history.aget_messages())
        await history.aadd_messages(messages)
        return n

    def seed(self, sessions: list[str], count: int, rng: random.Random) -> None:
        client = self._client()
        rows_of = [[json.dumps(message_to_dict(m)) for _ in range(count // 2) for m in turn_messages(rng)] for _ in range(8)]
        pipe = client.pipeline(transaction=False)
        for i, sid in enumerate(sessions):
            for row in rows_of[i % len(rows_of)]:
                pipe.lpush("message_store:" + sid, row)
            if i % 200 == 199:
                pipe.execute()
        pipe.execute()
        client.close()

    def read(self, session_id: str) -> int:
        if getattr(self, "_reader", None) is None:
            self._reader = self._client()
        return len(self._history(self._reader, session_id).messages)


BACKENDS: dict[str, Callable[[argparse.Namespace], Backend]] = {
    "chatledger": ChatLedger,
    "langchain-postgres": Postgres,
    "redis": Redis,
}


# -- running a point -------------------------------------------------------------------------


@dataclass
class Point:
    backend: str
    mode: str
    workers: int
    turns: int = 0
    turns_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    client_cpu_ms_per_turn: float = 0.0
    msgs_per_read: float = 0.0
    errors: int = 0
    seconds: float = 0.0


def _run_sync_worker(backend: Backend, sessions: list[str], go: Any, t0: float, t1: float, results: Any) -> None:
    rng = random.Random(os.getpid())
    backend.open(1)
    latencies: list[float] = []
    reads: list[int] = []
    errors = 0
    i = 0
    go.wait()
    cpu0 = None
    while True:
        now = time.time()
        if now >= t1:
            break
        if cpu0 is None and now >= t0:
            cpu0 = time.process_time()
        started = time.perf_counter()
        try:
            n = backend.turn(sessions[i % len(sessions)], turn_messages(rng))
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors += 1
            print(f"{backend.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            n = -1
        i += 1
        if now >= t0:
            latencies.append(time.perf_counter() - started)
            reads.append(n)
    cpu1 = time.process_time()
    backend.close()
    results.put((latencies, reads, errors, (cpu1 - cpu0) if cpu0 is not None else 0.0))


async def _run_async_workers(backend: Backend, sessions: list[list[str]], t0: float, t1: float) -> tuple[list[float], list[int], int, float]:
    await backend.aopen(len(sessions))
    latencies: list[float] = []
    reads: list[int] = []
    errors = 0
    cpu0: list[float] = []
    rng = random.Random(1)

    async def worker(mine: list[str]) -> None:
        nonlocal errors
        i = 0
        while True:
            now = time.time()
            if now >= t1:
                return
            if not cpu0 and now >= t0:
                cpu0.append(time.process_time())
            started = time.perf_counter()
            try:
                n = await backend.aturn(mine[i % len(mine)], turn_messages(rng))
            except Exception as exc:  # noqa: BLE001
                errors += 1
                print(f"{backend.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
                n = -1
            i += 1
            if now >= t0:
                latencies.append(time.perf_counter() - started)
                reads.append(n)

    await asyncio.gather(*(worker(mine) for mine in sessions))
    cpu1 = time.process_time()
    await backend.aclose()
    return latencies, reads, errors, cpu1 - (cpu0[0] if cpu0 else cpu1)


def _async_process(backend: Backend, sessions: list[list[str]], t0: float, t1: float, results: Any, go: Any) -> None:
    go.wait()
    results.put(asyncio.run(_run_async_workers(backend, sessions, t0, t1)))


def run_point(backend: Backend, mode: str, workers: int, sessions: list[str], seconds: float) -> Point:
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    go = ctx.Event()
    per_worker = [sessions[w::workers] for w in range(workers)]
    start_at = time.time() + 1.5 + 0.05 * workers  # time for every worker to be ready
    t0 = start_at + WARMUP
    t1 = t0 + seconds
    if mode == "sync":
        procs = [ctx.Process(target=_run_sync_worker, args=(backend, per_worker[w], go, t0, t1, results)) for w in range(workers)]
    else:
        procs = [ctx.Process(target=_async_process, args=(backend, per_worker, t0, t1, results, go))]
    for p in procs:
        p.start()
    while time.time() < start_at:
        time.sleep(0.01)
    go.set()
    collected = [results.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(30)
    latencies = sorted(x for c in collected for x in c[0])
    reads = [x for c in collected for x in c[1] if x >= 0]
    point = Point(backend.name, mode, workers, seconds=seconds)
    point.turns = len(latencies)
    point.errors = sum(c[2] for c in collected)
    if latencies:
        point.turns_per_s = len(latencies) / seconds
        point.p50_ms = 1000 * latencies[len(latencies) // 2]
        point.p99_ms = 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        point.client_cpu_ms_per_turn = 1000 * sum(c[3] for c in collected) / len(latencies)
    point.msgs_per_read = statistics.fmean(reads) if reads else 0.0
    return point


def read_10k(backend: Backend, rng: random.Random, repeat: int = 5) -> dict[str, Any]:
    sid = str(uuid.uuid4())
    backend.seed([sid], 10_000, rng)
    backend.settle()
    walls, cpus = [], []
    n = 0
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        n = backend.read(sid)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return {"kind": "read_10k", "backend": backend.name, "messages": n,
            "p50_ms": 1000 * statistics.median(walls), "client_cpu_ms": 1000 * statistics.median(cpus)}


# -- report ---------------------------------------------------------------------------------


def markdown(points: list[Point], reads: list[dict[str, Any]], header: str) -> str:
    lines = [header, "", "| backend | mode | workers | turns/s | p50 ms | p99 ms | client CPU ms/turn | msgs/read | errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        lines.append(f"| {p.backend} | {p.mode} | {p.workers} | {p.turns_per_s:,.0f} | {p.p50_ms:.1f} | {p.p99_ms:.1f} "
                     f"| {p.client_cpu_ms_per_turn:.2f} | {p.msgs_per_read:.1f} | {p.errors} |")
    lines += ["", "Reading one 10,000-message history (a new history object's `messages`, median of 5):", "",
              "| backend | messages | wall ms | client CPU ms |", "|---|---:|---:|---:|"]
    for r in reads:
        lines.append(f"| {r['backend']} | {r['messages']:,} | {r['p50_ms']:.0f} | {r['client_cpu_ms']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chatledger-url", required=True)
    parser.add_argument("--chatledger-key", required=True)
    parser.add_argument("--chatledger-database", required=True, help="libpq DSN of chatledger's database (its search queue)")
    parser.add_argument("--postgres", required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--workers", default="1,8,32")
    parser.add_argument("--modes", default="sync,async")
    parser.add_argument("--backends", default="chatledger,langchain-postgres,redis")
    parser.add_argument("--sessions-per-point", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per point; the table shows the best")
    parser.add_argument("--out-md", required=True)
    parser.add_argument("--out-jsonl", required=True)
    parser.add_argument("--header", default="")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    modes = args.modes.split(",")
    names = args.backends.split(",")
    rng = random.Random(42)
    points: list[Point] = []
    reads: list[dict[str, Any]] = []
    jsonl = open(args.out_jsonl + ".tmp", "w")
    for name in names:
        backend = BACKENDS[name](args)
        n_points = len(workers) * len(modes) * args.repeat
        pool = [str(uuid.uuid4()) for _ in range(args.sessions_per_point * n_points)]
        print(f"==> {backend.name}: seeding {len(pool):,} sessions of {SEED_MESSAGES} messages", file=sys.stderr)
        started = time.monotonic()
        backend.seed(pool, SEED_MESSAGES, rng)
        print(f"    seeded in {time.monotonic() - started:.1f}s", file=sys.stderr)
        k = 0
        for mode in modes:
            time.sleep(3)  # let the previous mode's load settle (autovacuum, checkpoints)
            for w in workers:
                runs = []
                for _ in range(args.repeat):
                    backend.settle()
                    sessions = pool[k * args.sessions_per_point : (k + 1) * args.sessions_per_point]
                    k += 1
                    runs.append(run_point(backend, mode, w, sessions, args.seconds))
                    jsonl.write(json.dumps({"kind": "turns_run", **asdict(runs[-1])}) + "\n")
                point = max(runs, key=lambda p: p.turns_per_s)
                points.append(point)
                print(f"    {mode:5} {w:>2} workers: {point.turns_per_s:7,.0f} turns/s  p50 {point.p50_ms:6.1f} ms  "
                      f"p99 {point.p99_ms:6.1f} ms  CPU {point.client_cpu_ms_per_turn:.2f} ms/turn  "
                      f"{point.msgs_per_read:.1f} msgs/read  {point.errors} errors", file=sys.stderr)
                jsonl.write(json.dumps({"kind": "turns", **asdict(point)}) + "\n")
                jsonl.flush()
        result = read_10k(backend, rng)
        reads.append(result)
        print(f"    10,000-message read: {result['p50_ms']:.0f} ms ({result['client_cpu_ms']:.0f} ms client CPU)", file=sys.stderr)
        jsonl.write(json.dumps(result) + "\n")
    jsonl.close()
    os.replace(args.out_jsonl + ".tmp", args.out_jsonl)
    header = args.header or f"Peers benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, Python {platform.python_version()}"
    table = markdown(points, reads, header)
    with open(args.out_md, "w") as out:
        out.write(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
