"""The core client against the real server."""

from __future__ import annotations

import math
import threading

import httpx
import pytest

import chatledger
from chatledger import Client, Retry

from conftest import Ledger


def test_append_and_read_back(ledger: Ledger, session_id: str) -> None:
    with ledger.client() as client:
        result = client.append(
            session_id,
            [
                {"role": "user", "content": "My order number is 8892"},
                {"role": "assistant", "content": ["Looking it up", {"type": "text", "text": "é ✓"}],
                 "metadata": {"model": "gpt-x", "tokens": 2**53 - 1}},
            ],
            expected_seq=0,
        )
        assert (result.first_seq, result.last_seq) == (1, 2)
        assert result.session_id == session_id
        assert not result.replayed
        assert result.idempotency_key.startswith("clpy-")
        assert [e.seq for e in result.entries] == [1, 2]
        assert result.head_hash == result.entries[-1].hash

        entries = list(client.messages(session_id))
        assert [e.seq for e in entries] == [1, 2]
        assert entries[0].role == "user" and entries[0].content == "My order number is 8892"
        assert entries[1].content == ["Looking it up", {"type": "text", "text": "é ✓"}]
        assert entries[1].metadata == {"model": "gpt-x", "tokens": 2**53 - 1}
        assert entries[0].idempotency_key == result.idempotency_key
        assert entries[1].prev_hash == entries[0].hash
        assert entries[0].created_at_datetime.tzinfo is not None

        summary = client.session(session_id)
        assert summary.last_seq == 2 and summary.message_count == 2
        assert summary.head_hash == result.head_hash


def test_messages_iterates_every_page_both_ways(ledger: Ledger, session_id: str) -> None:
    with ledger.client() as client:
        for i in range(7):
            client.append(session_id, [{"role": "user", "content": str(i)}])
        assert [e.seq for e in client.messages(session_id, page_size=2)] == list(range(1, 8))
        assert [e.seq for e in client.messages(session_id, page_size=3, after_seq=4)] == [5, 6, 7]
        assert [e.seq for e in client.messages(session_id, order="desc", page_size=2)] == list(
            range(7, 0, -1)
        )


def test_seq_conflict_carries_current_seq_and_writes_nothing(
    ledger: Ledger, session_id: str
) -> None:
    with ledger.client() as client:
        client.append(session_id, [{"role": "user", "content": "one"}])
        with pytest.raises(chatledger.SeqConflict) as caught:
            client.append(session_id, [{"role": "user", "content": "two"}], expected_seq=0)
        assert caught.value.current_seq == 1
        assert caught.value.status == 409 and caught.value.code == "seq_conflict"
        assert client.session(session_id).last_seq == 1


def test_idempotency_key_replays_instead_of_writing_twice(ledger: Ledger, session_id: str) -> None:
    with ledger.client() as client:
        msgs = [{"role": "user", "content": "once"}]
        first = client.append(session_id, msgs, idempotency_key="turn-1")
        again = client.append(session_id, msgs, idempotency_key="turn-1")
        assert again.replayed and not first.replayed
        assert (again.first_seq, again.head_hash) == (first.first_seq, first.head_hash)
        with pytest.raises(chatledger.IdempotencyKeyReused):
            client.append(session_id, [{"role": "user", "content": "other"}], idempotency_key="turn-1")
        assert client.session(session_id).last_seq == 1
        # Without a caller's key, each call gets its own.
        a = client.append(session_id, msgs)
        b = client.append(session_id, msgs)
        assert a.idempotency_key != b.idempotency_key and b.last_seq == 3


class _LoseFirstResponse(httpx.HTTPTransport):
    """Delivers each POST to the real server, then drops the first response on the floor, as
    a connection that breaks after the commit would."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST":
            self.keys.append(request.headers.get("idempotency-key"))
            if len(self.keys) == 1:
                response.read()
                response.close()
                raise httpx.ReadError("connection reset after the commit", request=request)
        return response


def test_a_retry_after_a_lost_response_does_not_write_twice(ledger: Ledger, session_id: str) -> None:
    transport = _LoseFirstResponse()
    with httpx.Client(transport=transport) as http:
        client = Client(ledger.url, ledger.writer_key, http_client=http,
                        retry=Retry(initial_backoff=0.01))
        result = client.append(session_id, [{"role": "user", "content": "exactly once"}])
    assert len(transport.keys) == 2 and transport.keys[0] == transport.keys[1]
    assert result.replayed and result.first_seq == 1
    with ledger.client() as check:
        assert [e.content for e in check.messages(session_id)] == ["exactly once"]


def test_each_problem_code_raises_its_class(
    ledger: Ledger, session_id: str, make_ledger
) -> None:
    with ledger.client() as client:
        with pytest.raises(chatledger.InvalidSessionId):
            client.append("a/b", [{"role": "user", "content": "x"}])
        with pytest.raises(chatledger.InvalidSessionId):
            client.session("..")
        with pytest.raises(chatledger.SessionNotFound):
            client.session(session_id)
        with pytest.raises(chatledger.SessionNotFound):
            client.reset(session_id)
        with pytest.raises(chatledger.SessionNotFound):
            list(client.messages(session_id))
        with pytest.raises(chatledger.ValidationFailed) as caught:
            client.append(session_id, [{"role": "bot", "content": "x"}])
        assert "role" in (caught.value.detail or "")
        with pytest.raises(chatledger.InvalidNumber):
            client.append(session_id, [{"role": "user", "content": "x", "metadata": {"n": 2**60}}])
        with pytest.raises(chatledger.InvalidText):
            client.append(session_id, [{"role": "user", "content": "nul \u0000 here"}])
        with pytest.raises(chatledger.InvalidIdempotencyKey):
            client.append(session_id, [{"role": "user", "content": "x"}], idempotency_key="sp ace")
        client.append(session_id, [{"role": "user", "content": "x"}])
        with pytest.raises(chatledger.InvalidParameter):
            client.context(session_id, limit=0)
        with pytest.raises(ValueError):
            client.append(session_id, [{"role": "user", "content": "x", "metadata": {"f": math.nan}}])
        assert client.session(session_id).last_seq == 1

    with Client(ledger.url, "clk_not-a-key") as stranger:
        with pytest.raises(chatledger.Unauthenticated):
            stranger.session(session_id)
    with ledger.client(ledger.reader_key) as reader:
        assert reader.session(session_id).last_seq == 1
        with pytest.raises(chatledger.Forbidden):
            reader.append(session_id, [{"role": "user", "content": "x"}])
    other = make_ledger()
    with other.client() as foreign:
        with pytest.raises(chatledger.SessionNotFound):
            foreign.session(session_id)
        assert [s.session_id for s in foreign.sessions()] == []


def test_every_documented_code_has_its_own_class() -> None:
    codes = """malformed_json invalid_parameter invalid_session_id invalid_idempotency_key
    unauthenticated forbidden session_not_found not_found seq_conflict already_exists
    session_closed legal_hold too_many_requests payload_too_large unsupported_media_type validation_failed invalid_text invalid_number
    idempotency_key_reused unknown_tenant unavailable method_not_allowed""".split()
    classes = set()
    for code in codes:
        error = chatledger._errors.error_for_problem(400, {"code": code})
        assert type(error) is not chatledger.ChatLedgerError, code
        assert isinstance(error, chatledger.ChatLedgerError) and error.code == code
        classes.add(type(error))
    assert len(classes) == len(codes)
    unknown = chatledger._errors.error_for_problem(418, {"code": "teapot"})
    assert type(unknown) is chatledger.ChatLedgerError and unknown.code == "teapot"


def test_reset_and_context_window(ledger: Ledger, session_id: str) -> None:
    with ledger.client() as client:
        client.append(session_id, [{"role": "user", "content": str(i)} for i in range(3)])
        reset = client.reset(session_id, metadata={"why": "user asked"})
        assert reset.first_seq == reset.last_seq == 4
        client.append(session_id, [{"role": "user", "content": str(i)} for i in range(3, 8)])
        window = client.context(session_id, limit=3)
        assert window.context_start_seq == 4 and window.last_seq == 9
        assert [e.content for e in window.entries] == ["5", "6", "7"]
        kinds = [e.kind for e in client.messages(session_id)]
        assert kinds.count("context_reset") == 1 and len(kinds) == 9


def test_sessions_lists_the_tenant_in_byte_order_across_pages(ledger: Ledger) -> None:
    ids = ["b-1", "B-2", "a:3", "a@4", "z.5"]
    with ledger.client() as client:
        for sid in ids:
            client.append(sid, [{"role": "user", "content": sid}])
        listed = [s.session_id for s in client.sessions(page_size=2)]
        assert listed == sorted(ids, key=lambda s: s.encode())
        assert all(s.last_seq == 1 for s in client.sessions())


def test_concurrent_blind_and_checked_appends_from_threads(ledger: Ledger, session_id: str) -> None:
    """Eight threads race to create the session with expected_seq=0: exactly one wins."""
    barrier = threading.Barrier(8)
    outcomes: list[object] = []
    lock = threading.Lock()

    def race(i: int) -> None:
        with ledger.client() as client:
            barrier.wait()
            try:
                result: object = client.append(
                    session_id, [{"role": "user", "content": f"w{i}"}, {"role": "assistant", "content": f"r{i}"}],
                    expected_seq=0,
                )
            except chatledger.SeqConflict as exc:
                result = exc
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wins = [o for o in outcomes if isinstance(o, chatledger.AppendResult)]
    conflicts = [o for o in outcomes if isinstance(o, chatledger.SeqConflict)]
    assert len(wins) == 1 and len(conflicts) == 7
    assert all(c.current_seq == 2 for c in conflicts)
    with ledger.client() as client:
        assert client.session(session_id).last_seq == 2


@pytest.mark.anyio
async def test_async_client(ledger: Ledger, session_id: str) -> None:
    async with ledger.async_client() as client:
        result = await client.append(session_id, [{"role": "user", "content": "hi"}], expected_seq=0)
        assert result.last_seq == 1
        with pytest.raises(chatledger.SeqConflict) as caught:
            await client.append(session_id, [{"role": "user", "content": "x"}], expected_seq=0)
        assert caught.value.current_seq == 1
        await client.append(session_id, [{"role": "assistant", "content": str(i)} for i in range(4)])
        assert [e.seq async for e in client.messages(session_id, page_size=2)] == [1, 2, 3, 4, 5]
        await client.reset(session_id)
        window = await client.context(session_id)
        assert window.entries == () and window.context_start_seq == 6
        summary = await client.session(session_id)
        assert summary.last_seq == 6 and summary.message_count == 5
        assert [s.session_id async for s in client.sessions()] == [session_id]
        with pytest.raises(chatledger.SessionNotFound):
            await client.session(session_id + "-nope")
