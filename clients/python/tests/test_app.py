"""The done-when scenario of issue 12, in real processes: a FastAPI bot (tests/app/chat_app.py,
RunnableWithLedgerHistory over ChatLedgerMessageHistory) under gunicorn with three uvicorn
workers. It answers an error for every turn whose write the server refused, and stores every
turn it answered, including double-sent ones that race on one session."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Ledger

APP_DIR = Path(__file__).resolve().parent / "app"
WORKERS = 3


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


class Gunicorn:
    def __init__(self, ledger: Ledger) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="chatledger-app."))
        self.socket = self.dir / "app.sock"
        env = {**os.environ, "CHATLEDGER_URL": ledger.url, "CHATLEDGER_API_KEY": ledger.writer_key}
        self.log = open(self.dir / "gunicorn.log", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", str(WORKERS), "--worker-class",
             "uvicorn_worker.UvicornWorker", "--bind", f"unix:{self.socket}", "--graceful-timeout", "10",
             "chat_app:app"],
            cwd=APP_DIR, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://app", timeout=60)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not start:\n" + self.logs())
            # Only once the socket accepts does httpx connect: its failed connects to a socket
            # file nobody listens on yet leave a socket for the garbage collector, which pytest
            # reports as an error of this test.
            if self.socket.exists() and _accepts(self.socket):
                try:
                    if self.http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
            time.sleep(0.1)  # bounded polling for readiness, not a race fix

    def logs(self) -> str:
        self.log.flush()
        return (self.dir / "gunicorn.log").read_text()[-4000:]

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def chat(self, session_id: str, question: str) -> httpx.Response:
        return self.http.post("/chat", json={"session_id": session_id, "question": question})

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def app(ledger: Ledger) -> Iterator[Gunicorn]:
    server = Gunicorn(ledger)
    try:
        yield server
    finally:
        server.stop()


def test_the_app_answers_an_error_for_an_unstored_turn_and_stores_every_turn_it_answered(
    app: Gunicorn, ledger: Ledger, session_id: str
) -> None:
    assert len(app.worker_pids()) == WORKERS, "several worker processes"
    answers: list[tuple[str, str, httpx.Response]] = []
    lock = threading.Lock()

    def ask(sid: str, question: str) -> None:
        response = app.chat(sid, question)
        with lock:
            answers.append((sid, question, response))

    def conversation(k: int) -> None:
        sid = f"{session_id}-{k}"
        for t in range(4):
            ask(sid, f"s{k} turn {t} nul" if (k < 2 and t == 2) else f"s{k} turn {t}")

    def double_send(k: int) -> None:
        sid = f"{session_id}-{k}"
        barrier = threading.Barrier(2)

        def one(tag: str) -> None:
            barrier.wait(30)
            ask(sid, f"s{k} double {tag}")

        pair = [threading.Thread(target=one, args=(tag,)) for tag in "ab"]
        for thread in pair:
            thread.start()
        for thread in pair:
            thread.join(120)

    threads = [threading.Thread(target=conversation, args=(k,)) for k in range(6)]
    threads += [threading.Thread(target=double_send, args=(k,)) for k in (2, 3, 6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert len(answers) == 6 * 4 + 3 * 2, app.logs()

    refused = [(sid, q, r) for sid, q, r in answers if "nul" in q]
    assert len(refused) == 2
    for _, _, response in refused:
        assert response.status_code == 503 and response.json()["error"] == "invalid_text"
    answered = [(sid, q, r) for sid, q, r in answers if "nul" not in q]
    for _, q, response in answered:
        assert response.status_code == 200, response.text
        assert response.json()["answer"] == f"answer to {q}"

    with ledger.client(ledger.reader_key) as reader:
        sessions = {s.session_id for s in reader.sessions()}
        stored_turns = 0
        for sid in sessions:
            entries = list(reader.messages(sid))
            assert len(entries) % 2 == 0
            pairs = [(entries[i], entries[i + 1]) for i in range(0, len(entries), 2)]
            for user, assistant in pairs:
                assert (user.role, assistant.role) == ("user", "assistant"), "each turn is whole"
                assert assistant.content == f"answer to {user.content}"
                assert user.metadata.get("chatledger") == assistant.metadata.get("chatledger")
            stored_turns += len(pairs)
            contents = [e.content for e in entries]
            for s, q, _ in answered:
                if s == sid:
                    assert q in contents, f"answered turn {q!r} is not stored"
            for s, q, _ in refused:
                assert q not in contents
    assert stored_turns == len(answered)
    pids = {r.json()["pid"] for _, _, r in answered}
    assert pids <= set(app.worker_pids())
