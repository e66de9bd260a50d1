"""The database goes away under a running server: writes fail loudly, after bounded
retries, and everything works again once it is back, without restarting chatledger.

Runs chatledger on its embedded default (its own cluster in <data-dir>/pg) so that the test
can stop and start that cluster with pg_ctl.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.runnables import RunnableLambda
from langchain_core.language_models.fake_chat_models import FakeListChatModel

import chatledger
from chatledger import Retry
from chatledger.langchain import ChatLedgerMessageHistory, HistoryWriteFailed

from _server import Admin, ServerProcess, make_world_traversable_tmpdir, pg_bindir, run_cluster_cmd, start_embedded
from chains import Recorder, config, prompt_chain
from conftest import Ledger

# Give up after about three seconds of 503s (each attempt may itself wait up to the server's
# two-second acquire timeout).
FAST = Retry(attempts=50, initial_backoff=0.05, max_backoff=0.5, total_timeout=3.0)


@dataclass
class Embedded:
    server: ServerProcess
    data_dir: Path
    ledger: Ledger

    def pg_ctl(self, *args: str) -> None:
        result = run_cluster_cmd([str(pg_bindir() / "pg_ctl"), "-D", str(self.data_dir / "pg"), *args])
        assert result.returncode == 0, result.stderr

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.server.url + "/readyz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)  # bounded polling for readiness, not a race fix
        raise AssertionError("chatledger did not become ready again")

    @contextmanager
    def database_down(self) -> Iterator[None]:
        self.pg_ctl("stop", "-m", "immediate", "-w")
        try:
            yield
        finally:
            self.bring_database_back()

    def bring_database_back(self) -> None:
        if not (self.data_dir / "pg" / "postmaster.pid").exists():
            self.pg_ctl("-l", str(self.data_dir / "pg" / "log" / "postgres.log"), "-w", "-t", "60", "start")
        self.wait_ready()


@pytest.fixture(scope="module")
def embedded() -> Iterator[Embedded]:
    data_dir = make_world_traversable_tmpdir("chatledger-pytest-embedded.")
    server = start_embedded(data_dir)
    try:
        admin_key = (data_dir / "admin.key").read_text().strip()
        keys = Admin(server.url, admin_key).tenant_with_keys()
        ledger = Ledger(server.url, keys["tenant"], keys["writer"], keys["reader"], keys["auditor"])
        yield Embedded(server, data_dir, ledger)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def history(embedded: Embedded, session_id: str, **kwargs: Any) -> ChatLedgerMessageHistory:
    return ChatLedgerMessageHistory(session_id, url=embedded.ledger.url, api_key=embedded.ledger.writer_key, retry=FAST, **kwargs)


def test_a_write_during_an_outage_raises_unavailable_after_bounded_retries(embedded: Embedded, session_id: str) -> None:
    client = embedded.ledger.client(retry=FAST)
    client.append(session_id, [{"role": "user", "content": "before"}])
    with embedded.database_down():
        started = time.monotonic()
        with pytest.raises(chatledger.Unavailable) as caught:
            client.append(session_id, [{"role": "user", "content": "during"}])
        elapsed = time.monotonic() - started
        assert caught.value.status == 503 and caught.value.code == "unavailable"
        assert caught.value.attempts >= 2, "it retried"
        assert elapsed < FAST.total_timeout + 5, "within the retry budget plus one attempt"
        with pytest.raises(chatledger.Unavailable):  # reads fail loudly too, never as []
            history(embedded, session_id).messages
        seen: list[HistoryWriteFailed] = []
        direct = history(embedded, session_id, on_write_error=seen.append)
        with pytest.raises(chatledger.Unavailable):
            direct.add_user_message("during, through the history")
        assert len(seen) == 1 and isinstance(seen[0].error, chatledger.Unavailable)
        assert direct.pending_failures == [], "its caller got it: nothing is kept"
    # Back: the same client and server work again, and nothing of the failed writes is there.
    assert [e.content for e in client.messages(session_id)] == ["before"]
    client.append(session_id, [{"role": "user", "content": "after"}])
    assert [e.content for e in client.messages(session_id)] == ["before", "after"]
    client.close()


@pytest.mark.anyio
async def test_an_async_write_during_an_outage_raises(embedded: Embedded, session_id: str) -> None:
    h = history(embedded, session_id)
    await h.aadd_user_message("before")
    with embedded.database_down():
        with pytest.raises(chatledger.Unavailable):
            await h.aadd_ai_message("during")
    # Its caller got the exception: the next read raises nothing and shows what is stored.
    assert [m.content for m in await h.aget_messages()] == ["before"]
    assert [m.content for m in await history(embedded, session_id).aget_messages()] == ["before"]


def test_an_outage_mid_turn_in_runnable_with_message_history(embedded: Embedded, session_id: str) -> None:
    """The database dies while the model is thinking. LangChain swallows the failed write;
    the callback hears of it at once, the next turn raises it, and resending stores the lost
    turn exactly once, all without restarting chatledger."""
    failures: list[HistoryWriteFailed] = []
    get = lambda sid: history(embedded, sid, on_write_error=failures.append)  # noqa: E731
    prompt_chain(["Hello!"], get).invoke({"question": "Hi"}, config=config(session_id))

    def database_dies(value: Any) -> Any:
        embedded.pg_ctl("stop", "-m", "immediate", "-w")
        return value

    try:
        model = RunnableLambda(database_dies) | FakeListChatModel(responses=["Order 8892 shipped."])
        reply = prompt_chain([], get, model=model).invoke({"question": "Where is 8892?"}, config=config(session_id))
        assert reply.content == "Order 8892 shipped."  # LangChain returned as if all was well
        assert len(failures) == 1, "the callback ran before invoke returned"
        assert isinstance(failures[0].error, chatledger.Unavailable)
        assert [m.content for m in failures[0].messages] == ["Where is 8892?", "Order 8892 shipped."]
    finally:
        embedded.bring_database_back()

    recorder = Recorder()
    chain = prompt_chain(["You're welcome."], get, recorder=recorder)
    with pytest.raises(HistoryWriteFailed) as caught:
        chain.invoke({"question": "Thanks"}, config=config(session_id))
    assert caught.value is failures[0]
    assert recorder.prompts == [], "the turn stopped before the model"
    h = get(session_id)
    first = h.retry_failed_write(caught.value)
    again = h.retry_failed_write(caught.value)  # idempotent: never stored twice
    assert again.replayed and again.first_seq == first.first_seq == 3
    chain.invoke({"question": "Thanks"}, config=config(session_id))
    assert recorder.last == ["You are a support bot.", "Hi", "Hello!", "Where is 8892?", "Order 8892 shipped.", "Thanks"]
    with embedded.ledger.client(embedded.ledger.reader_key) as reader:
        assert [e.seq for e in reader.messages(session_id)] == [1, 2, 3, 4, 5, 6]


class _RetrySeen(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "retry" in record.getMessage():
            self.seen.set()


def test_a_write_retrying_through_the_outage_lands_once_when_the_database_returns(
    embedded: Embedded, session_id: str
) -> None:
    patient = embedded.ledger.client(retry=Retry(attempts=200, initial_backoff=0.05, max_backoff=0.5, total_timeout=90))
    patient.append(session_id, [{"role": "user", "content": "before"}])
    handler = _RetrySeen()
    logger = logging.getLogger("chatledger")
    logger.addHandler(handler)
    outcome: list[Any] = []
    try:
        embedded.pg_ctl("stop", "-m", "immediate", "-w")
        writer = threading.Thread(
            target=lambda: outcome.append(patient.append(session_id, [{"role": "user", "content": "patient"}]))
        )
        writer.start()
        assert handler.seen.wait(30), "the client met the outage and is retrying"
    finally:
        embedded.bring_database_back()
        logger.removeHandler(handler)
    writer.join(90)
    assert len(outcome) == 1 and outcome[0].first_seq == 2
    assert [e.content for e in patient.messages(session_id)] == ["before", "patient"]
    patient.close()
