#!/usr/bin/env python3
"""Live-tail benchmark (bench/tail.sh runs it): commit-to-event latency with N open streams, and
the server's memory per open stream. Standard library only.

For each N in --streams: opens N streams of one reader key on one session (every stream follows
the same session, the worst case of fan-out: each append wakes all N), reads the server's RSS
before and after, then appends --appends single messages --interval seconds apart and records,
for every stream and entry, the time the event arrived minus the entry's created_at (the
database's clock at commit, the same host clock). Prints one line per N and, with --json, JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import urllib.request
from datetime import datetime
from urllib.parse import urlsplit


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def created_at(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Stream:
    """One SSE connection, its chunked body decoded, recording when each event id arrived."""

    def __init__(self) -> None:
        self.arrivals: dict[int, float] = {}
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def run(self, host: str, port: int, key: str, session: str) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            (f"GET /v1/sessions/{session}/events HTTP/1.1\r\nHost: {host}\r\n"
             f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n").encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode(errors="replace"))
        self.ready.set()
        pending = b""
        while True:
            size = int((await reader.readline()).strip() or b"0", 16)
            if size == 0:
                return
            pending += await reader.readexactly(size)
            await reader.readexactly(2)
            now = time.time()
            while b"\n\n" in pending:
                event, pending = pending.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if line.startswith(b"id: "):
                        self.arrivals[int(line[4:])] = now


def append(url: str, key: str, session: str, text: str) -> dict:
    request = urllib.request.Request(
        f"{url}/v1/sessions/{session}/messages",
        data=json.dumps({"messages": [{"role": "user", "content": text}]}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


async def phase(args: argparse.Namespace, count: int) -> dict:
    parts = urlsplit(args.url)
    session = f"tail-bench-{count}-{int(time.time())}"
    loop = asyncio.get_running_loop()
    # The session exists first, so that the streams open on its backlog of one entry.
    first = await loop.run_in_executor(None, append, args.url, args.writer_key, session, "start")
    before = rss_kib(args.server_pid)
    streams = [Stream() for _ in range(count)]
    for i, stream in enumerate(streams):
        stream.task = asyncio.create_task(stream.run(parts.hostname, parts.port, args.reader_key, session))
        if i % 50 == 49:
            await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in streams[: i + 1])), 60)
    await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in streams)), 60)
    deadline = time.time() + 60
    while not all(first["last_seq"] in s.arrivals for s in streams):
        if time.time() > deadline:
            raise RuntimeError("the backlog did not reach every stream")
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # let allocations settle before reading RSS
    after = rss_kib(args.server_pid)

    commits: dict[int, float] = {}
    for i in range(args.appends):
        answer = await loop.run_in_executor(None, append, args.url, args.writer_key, session, f"m{i}")
        commits[answer["last_seq"]] = created_at(answer["entries"][0]["created_at"])
        await asyncio.sleep(args.interval)
    deadline = time.time() + 30
    while not all(seq in s.arrivals for s in streams for seq in commits):
        if time.time() > deadline:
            break
        await asyncio.sleep(0.05)
    latencies = [
        (s.arrivals[seq] - at) * 1000
        for s in streams for seq, at in commits.items() if seq in s.arrivals
    ]
    missing = count * len(commits) - len(latencies)
    for stream in streams:
        if stream.task is not None:
            stream.task.cancel()
    await asyncio.gather(*(s.task for s in streams if s.task is not None), return_exceptions=True)
    return {
        "streams": count,
        "appends": len(commits),
        "events": len(latencies),
        "missing": missing,
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(max(latencies), 2),
        "mean_ms": round(statistics.fmean(latencies), 2),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_stream": round((after - before) / count, 1),
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--writer-key", required=True)
    parser.add_argument("--reader-key", required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--streams", default="100,1000")
    parser.add_argument("--appends", type=int, default=30)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    for count in (int(n) for n in args.streams.split(",")):
        result = await phase(args, count)
        results.append(result)
        print(f"{result['streams']:>5} streams: commit-to-event p50 {result['p50_ms']} ms, "
              f"p99 {result['p99_ms']} ms, max {result['max_ms']} ms over {result['events']} events "
              f"({result['missing']} missing); server RSS +{result['rss_after_kib'] - result['rss_before_kib']} KiB, "
              f"{result['kib_per_stream']} KiB per stream", file=sys.stderr)
    if args.json:
        print(json.dumps(results))
    return 1 if any(r["missing"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
