"""Retries on the wire: the real server behind a fault-injecting proxy (tests/_faults.py)
that drops, stalls and refuses requests, or answers in the server's stead as a load
balancer would. Which failures are resent, with which idempotency key, for how long; the
rules themselves are tested without a network in test_engine.py."""

from __future__ import annotations

import json
import time

import pytest

import chatledger
from chatledger import AsyncClient, Client, Retry

from _faults import FaultProxy, closed_port_url
from conftest import Ledger

UNAVAILABLE = json.dumps({"type": "urn:chatledger:problem:unavailable", "title": "Unavailable", "status": 503,
                          "detail": "database unavailable", "code": "unavailable"}).encode()
PROBLEM = {"content-type": "application/problem+json"}
QUICK = Retry(attempts=5, initial_backoff=0.01, max_backoff=0.02, total_timeout=5)
MSG = [{"role": "user", "content": "x"}]


def unavailable(retry_after: str = "0") -> tuple[str, int, dict[str, str], bytes]:
    return ("answer", 503, {**PROBLEM, "Retry-After": retry_after}, UNAVAILABLE)


def test_503_lost_connections_and_timeouts_are_retried_with_the_same_key(ledger: Ledger, session_id: str) -> None:
    with FaultProxy(ledger.url, [unavailable(), "reset", "stall", "drop"]) as proxy:
        client = Client(proxy.url, ledger.writer_key, retry=QUICK, timeout=0.5)
        result = client.append(session_id, MSG)
    # The fourth attempt was committed but its answer lost; the fifth got the original back.
    assert len(proxy.seen) == 5 and result.replayed and result.last_seq == 1
    assert len(set(proxy.keys)) == 1 and proxy.keys[0] == result.idempotency_key
    assert len({s.body for s in proxy.seen}) == 1, "the same body every time"
    with ledger.client() as check:
        assert [e.content for e in check.messages(session_id)] == ["x"]


def test_the_callers_key_is_sent(ledger: Ledger, session_id: str) -> None:
    with FaultProxy(ledger.url) as proxy:
        client = Client(proxy.url, ledger.writer_key, retry=QUICK)
        client.append(session_id, MSG, idempotency_key="turn-7")
        result = client.append(session_id, MSG, idempotency_key="turn-7")
    assert proxy.keys == ["turn-7", "turn-7"] and result.replayed and result.idempotency_key == "turn-7"


def test_other_errors_are_not_retried(ledger: Ledger, session_id: str) -> None:
    with ledger.client() as direct:
        direct.append(session_id, MSG)
    with FaultProxy(ledger.url) as proxy:
        with pytest.raises(chatledger.SeqConflict) as caught:
            Client(proxy.url, ledger.writer_key, retry=QUICK).append(session_id, MSG, expected_seq=3)
    assert caught.value.current_seq == 1 and len(proxy.seen) == 1


def test_the_budget_is_bounded_by_attempts(ledger: Ledger, session_id: str) -> None:
    with FaultProxy(ledger.url, [unavailable()] * 10) as proxy:
        with pytest.raises(chatledger.Unavailable) as caught:
            Client(proxy.url, ledger.writer_key, retry=QUICK).append(session_id, MSG)
    assert caught.value.attempts == 5 and len(proxy.seen) == 5 and caught.value.retry_after == 0


def test_the_budget_is_bounded_by_time_and_retry_after_is_honoured(ledger: Ledger, session_id: str) -> None:
    retry = Retry(attempts=1000, initial_backoff=0.01, max_backoff=0.02, total_timeout=0.5)
    with FaultProxy(ledger.url, [unavailable("0.2")] * 50) as proxy:
        started = time.monotonic()
        with pytest.raises(chatledger.Unavailable):
            Client(proxy.url, ledger.writer_key, retry=retry).session(session_id)
        elapsed = time.monotonic() - started
    assert elapsed < 2.0
    # Attempts at about 0, 0.2 and 0.4 s: never sooner than Retry-After, none after 0.5 s.
    assert 2 <= len(proxy.seen) <= 3


def test_a_server_that_refuses_connections_ends_as_network_error_with_the_key() -> None:
    client = Client(closed_port_url(), "k", retry=QUICK)
    with pytest.raises(chatledger.NetworkError) as caught:
        client.append("s", MSG)
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    assert caught.value.idempotency_key is not None and caught.value.attempts == 5


def test_no_retry() -> None:
    with pytest.raises(chatledger.NetworkError) as caught:
        Client(closed_port_url(), "k", retry=Retry.none()).session("s")
    assert caught.value.attempts == 1


def test_a_non_problem_error_is_an_unexpected_response(ledger: Ledger, session_id: str) -> None:
    page = ("answer", 500, {"content-type": "text/html"}, b"<html>oops</html>")
    with FaultProxy(ledger.url, [page]) as proxy:
        with pytest.raises(chatledger.UnexpectedResponse) as caught:
            Client(proxy.url, ledger.writer_key, retry=QUICK).session(session_id)
    assert caught.value.status == 500 and len(proxy.seen) == 1


def test_a_proxys_bare_503_is_unavailable(ledger: Ledger, session_id: str) -> None:
    page = ("answer", 503, {"content-type": "text/html"}, b"<html>upstream unavailable</html>")
    with FaultProxy(ledger.url, [page]) as proxy:
        with pytest.raises(chatledger.Unavailable) as caught:
            Client(proxy.url, ledger.writer_key, retry=Retry.none()).session(session_id)
    assert caught.value.status == 503 and len(proxy.seen) == 1


def test_an_export_cut_off_before_its_trailer_is_truncated(ledger: Ledger, session_id: str) -> None:
    with ledger.client() as writer:
        writer.append(session_id, [{"role": "user", "content": f"m{i}"} for i in range(20)])
    with FaultProxy(ledger.url, [("cut", 2000)]) as proxy:
        with pytest.raises(chatledger.TruncatedExport):
            list(Client(proxy.url, ledger.auditor_key, retry=QUICK).export(session_id))
    assert len(proxy.seen) == 1, "a stream that broke off is not resent"


def test_verify_and_export_are_not_resent_once_the_server_may_have_started(
    ledger: Ledger, session_id: str
) -> None:
    """Long calls: a timeout or a proxy's 504 after the request went out would restart the
    whole job on the server if resent; they are raised at once. What certainly started
    nothing (a 503, a refused connection) is retried."""
    with ledger.client() as writer:
        writer.append(session_id, MSG)
    with FaultProxy(ledger.url, ["stall", "stall"]) as proxy:
        auditor = Client(proxy.url, ledger.auditor_key, retry=QUICK, long_timeout=0.5)
        with pytest.raises(chatledger.NetworkError):
            auditor.verify(session_id)
        assert len(proxy.seen) == 1
    gateway_timeout = ("answer", 504, {"content-type": "text/html"}, b"<html>504</html>")
    with FaultProxy(ledger.url, [gateway_timeout]) as proxy:
        with pytest.raises(chatledger.UnexpectedResponse):
            list(Client(proxy.url, ledger.auditor_key, retry=QUICK).export(session_id))
        assert len(proxy.seen) == 1
    with FaultProxy(ledger.url, [unavailable(), unavailable()]) as proxy:
        result = Client(proxy.url, ledger.auditor_key, retry=QUICK).verify(session_id)
        assert result.ok and len(proxy.seen) == 3
    # And the defaults leave a long job room: minutes per attempt, not the 10 s of a read.
    assert Client("http://x", "k").settings.long_timeout >= 300
    assert Client("http://x", "k").settings.timeout == 10


@pytest.mark.anyio
async def test_async_retries_with_the_same_key(ledger: Ledger, session_id: str) -> None:
    with FaultProxy(ledger.url, [unavailable(), "reset", "stall", "drop"]) as proxy:
        async with AsyncClient(proxy.url, ledger.writer_key, retry=QUICK, timeout=0.5) as client:
            result = await client.append(session_id, MSG)
    assert result.replayed and result.last_seq == 1 and len(proxy.seen) == 5 and len(set(proxy.keys)) == 1


@pytest.mark.anyio
async def test_async_long_calls_are_not_resent_after_a_timeout(ledger: Ledger, session_id: str) -> None:
    async with ledger.async_client() as writer:
        await writer.append(session_id, MSG)
    with FaultProxy(ledger.url, ["stall"]) as proxy:
        async with AsyncClient(proxy.url, ledger.auditor_key, retry=QUICK, long_timeout=0.5) as auditor:
            with pytest.raises(chatledger.NetworkError):
                await auditor.verify(session_id)
    assert len(proxy.seen) == 1
