"""Retry behaviour, with a scripted transport (no server): which answers are retried, with
which idempotency key, for how long."""

from __future__ import annotations

import time

import httpx
import pytest

import chatledger
from chatledger import AsyncClient, Client, Retry

CREATED = {"session_id": "s", "first_seq": 1, "last_seq": 1, "head_hash": "h",
           "entries": [{"seq": 1, "created_at": "2026-11-21T10:15:30.123456Z", "hash": "h"}]}
UNAVAILABLE = {"type": "urn:chatledger:problem:unavailable", "title": "Unavailable", "status": 503,
               "detail": "database unavailable", "code": "unavailable"}
QUICK = Retry(attempts=5, initial_backoff=0.01, max_backoff=0.02, total_timeout=5)


class Script:
    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, httpx.Response)
        return answer

    @property
    def keys(self) -> list[str | None]:
        return [r.headers.get("idempotency-key") for r in self.requests]


def problem(status: int, body: dict, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json", **headers})


def client_for(script: Script, retry: Retry = QUICK) -> Client:
    return Client("http://ledger.test", "k", retry=retry, http_client=httpx.Client(transport=httpx.MockTransport(script)))


def test_503_and_connection_errors_are_retried_with_the_same_key() -> None:
    script = Script(
        problem(503, UNAVAILABLE, **{"retry-after": "0"}),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.Response(201, json=CREATED),
    )
    result = client_for(script).append("s", [{"role": "user", "content": "x"}])
    assert result.last_seq == 1 and len(script.requests) == 4
    assert len(set(script.keys)) == 1 and script.keys[0] == result.idempotency_key
    assert len({r.content for r in script.requests}) == 1, "the same body every time"


def test_the_callers_key_is_sent() -> None:
    script = Script(httpx.Response(201, json=CREATED, headers={"idempotent-replayed": "true"}))
    result = client_for(script).append("s", [{"role": "user", "content": "x"}], idempotency_key="turn-7")
    assert script.keys == ["turn-7"] and result.replayed and result.idempotency_key == "turn-7"


def test_other_errors_are_not_retried() -> None:
    script = Script(problem(409, {"status": 409, "code": "seq_conflict", "current_seq": 9}))
    with pytest.raises(chatledger.SeqConflict) as caught:
        client_for(script).append("s", [{"role": "user", "content": "x"}], expected_seq=3)
    assert caught.value.current_seq == 9 and len(script.requests) == 1


def test_the_budget_is_bounded_by_attempts() -> None:
    script = Script(problem(503, UNAVAILABLE, **{"retry-after": "0"}))
    with pytest.raises(chatledger.Unavailable) as caught:
        client_for(script).append("s", [{"role": "user", "content": "x"}])
    assert caught.value.attempts == 5 and len(script.requests) == 5 and caught.value.retry_after == 0


def test_the_budget_is_bounded_by_time() -> None:
    script = Script(problem(503, UNAVAILABLE, **{"retry-after": "1"}))
    retry = Retry(attempts=1000, initial_backoff=0.05, max_backoff=0.2, total_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(chatledger.Unavailable):
        client_for(script, retry).session("s")
    assert time.monotonic() - started < 2.0
    assert 2 <= len(script.requests) <= 5


def test_network_errors_end_as_network_error_with_the_key() -> None:
    script = Script(httpx.ConnectError("refused"))
    with pytest.raises(chatledger.NetworkError) as caught:
        client_for(script).append("s", [{"role": "user", "content": "x"}])
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert caught.value.idempotency_key == script.keys[0] and caught.value.attempts == 5


def test_no_retry() -> None:
    script = Script(httpx.ConnectError("refused"))
    with pytest.raises(chatledger.NetworkError):
        client_for(script, Retry.none()).session("s")
    assert len(script.requests) == 1


def test_a_non_problem_error_is_an_unexpected_response() -> None:
    script = Script(httpx.Response(500, text="<html>oops</html>"))
    with pytest.raises(chatledger.UnexpectedResponse) as caught:
        client_for(script).session("s")
    assert caught.value.status == 500


def test_an_export_without_its_trailer_is_truncated() -> None:
    script = Script(httpx.Response(200, content=b'{"seq": 1}\n{"seq": 2}\n'))
    with pytest.raises(chatledger.TruncatedExport):
        list(client_for(script).export("s"))


@pytest.mark.anyio
async def test_async_retries_with_the_same_key() -> None:
    script = Script(problem(503, UNAVAILABLE), httpx.ConnectError("refused"), httpx.Response(201, json=CREATED))
    async with AsyncClient("http://ledger.test", "k", retry=QUICK,
                           http_client=httpx.AsyncClient(transport=httpx.MockTransport(script))) as client:
        result = await client.append("s", [{"role": "user", "content": "x"}])
    assert result.last_seq == 1 and len(script.requests) == 3 and len(set(script.keys)) == 1
