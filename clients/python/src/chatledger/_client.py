"""The HTTP clients: :class:`Client` (sync) and :class:`AsyncClient` (async), both on httpx.

Both share one description of every call (:class:`_Call`) and differ only in how they send
it and wait between retries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx

from ._errors import (
    ChatLedgerError,
    InvalidSessionId,
    NetworkError,
    TruncatedExport,
    Unavailable,
    UnexpectedResponse,
    error_for_problem,
)
from ._models import (
    AppendResult,
    ContextWindow,
    Entry,
    ExportTrailer,
    Message,
    MessagesPage,
    SessionsPage,
    SessionSummary,
    VerifyResult,
)

__all__ = ["AsyncClient", "Client", "Retry"]

logger = logging.getLogger("chatledger")

T = TypeVar("T")

_USER_AGENT = "chatledger-python"


@dataclass(frozen=True)
class Retry:
    """When and how long the client retries.

    A request is retried when the connection fails (connect errors, timeouts, a dropped
    connection) or the server answers one of ``statuses`` (503 ``unavailable`` from
    chatledger; 502/504 from a proxy in front of it). Waits grow exponentially from
    ``initial_backoff`` to ``max_backoff`` (with jitter), and are at least the server's
    ``Retry-After``. At most ``attempts`` attempts are made, and none starts after
    ``total_timeout`` seconds have passed since the first: then the last error is raised.

    Appends and resets always carry an idempotency key, the same on every attempt, so a
    retry can never write twice.
    """

    attempts: int = 8
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0
    total_timeout: float = 30.0
    statuses: frozenset[int] = field(default_factory=lambda: frozenset({502, 503, 504}))

    @classmethod
    def none(cls) -> Retry:
        """One attempt, no retry."""
        return cls(attempts=1)

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        wait = base / 2 + random.uniform(0, base / 2)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_backoff))
        return wait


def _session_path(session_id: str, suffix: str = "") -> str:
    if not isinstance(session_id, str) or not session_id:
        raise InvalidSessionId(
            f"invalid_session_id: {session_id!r} is not a session id "
            "(1 to 128 of A-Z a-z 0-9 . _ : @ -)",
            status=None,
        )
    # Dot segments would be normalised away by URL handling; send them escaped so that the
    # server sees (and refuses) them.
    encoded = "%2E" * len(session_id) if session_id in (".", "..") else quote(session_id, safe="")
    return f"/v1/sessions/{encoded}{suffix}"


def _new_idempotency_key() -> str:
    return "clpy-" + secrets.token_urlsafe(24)


def _encode_json(body: Any) -> bytes:
    # allow_nan=False: NaN and Infinity are not JSON; fail here, loudly, before sending.
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(
        "utf-8"
    )


@dataclass
class _Call(Generic[T]):
    """A request and how to read its successful answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None


def _json_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise UnexpectedResponse(
            f"HTTP {response.status_code}: the body is not JSON", status=response.status_code
        ) from exc


def _error_of(response: httpx.Response, attempts: int) -> ChatLedgerError:
    problem: Any = None
    try:
        problem = response.json()
    except ValueError:
        pass
    if isinstance(problem, dict) and isinstance(problem.get("code"), str):
        error = error_for_problem(response.status_code, problem, attempts=attempts)
    else:
        text = response.text[:200] if response.content else ""
        error = UnexpectedResponse(
            f"HTTP {response.status_code} without a problem document: {text!r}",
            status=response.status_code,
            attempts=attempts,
        )
    if isinstance(error, Unavailable):
        error.retry_after = _retry_after(response)
    return error


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: not sent by chatledger; fall back to our own backoff
    return max(0.0, seconds)


def _append_call(
    session_id: str,
    messages: Iterable[Message | Mapping[str, Any]],
    expected_seq: int | None,
    idempotency_key: str | None,
) -> _Call[AppendResult]:
    body: dict[str, Any] = {"messages": [dict(m) for m in messages]}
    if expected_seq is not None:
        body["expected_seq"] = expected_seq
    return _write_call(_session_path(session_id, "/messages"), body, idempotency_key)


def _reset_call(
    session_id: str,
    expected_seq: int | None,
    metadata: Mapping[str, Any] | None,
    idempotency_key: str | None,
) -> _Call[AppendResult]:
    body: dict[str, Any] = {}
    if expected_seq is not None:
        body["expected_seq"] = expected_seq
    if metadata is not None:
        body["metadata"] = dict(metadata)
    return _write_call(_session_path(session_id, "/reset"), body, idempotency_key)


def _write_call(path: str, body: dict[str, Any], idempotency_key: str | None) -> _Call[AppendResult]:
    key = idempotency_key if idempotency_key is not None else _new_idempotency_key()

    def parse(response: httpx.Response) -> AppendResult:
        replayed = response.headers.get("idempotent-replayed", "").lower() == "true"
        return AppendResult.from_json(_json_of(response), replayed=replayed, idempotency_key=key)

    return _Call(
        "POST",
        path,
        parse,
        body=_encode_json(body),
        headers={"Idempotency-Key": key, "Content-Type": "application/json"},
        idempotency_key=key,
    )


def _messages_call(
    session_id: str, order: Literal["asc", "desc"], cursor: int | None, limit: int
) -> _Call[MessagesPage]:
    params: dict[str, Any] = {"limit": limit, "order": order}
    if order == "asc":
        params["after_seq"] = cursor if cursor is not None else 0
        cursor_field = "next_after_seq"
    elif order == "desc":
        if cursor is not None:
            params["before_seq"] = cursor
        cursor_field = "next_before_seq"
    else:
        raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
    return _Call(
        "GET",
        _session_path(session_id, "/messages"),
        lambda r: MessagesPage.from_json(_json_of(r), cursor_field=cursor_field),
        params=params,
    )


def _context_call(session_id: str, limit: int) -> _Call[ContextWindow]:
    return _Call(
        "GET",
        _session_path(session_id, "/context"),
        lambda r: ContextWindow.from_json(_json_of(r)),
        params={"limit": limit},
    )


def _session_call(session_id: str) -> _Call[SessionSummary]:
    return _Call(
        "GET", _session_path(session_id), lambda r: SessionSummary.from_json(_json_of(r))
    )


def _sessions_call(after: str | None, limit: int) -> _Call[SessionsPage]:
    params: dict[str, Any] = {"limit": limit}
    if after is not None:
        params["after"] = after
    return _Call("GET", "/v1/sessions", lambda r: SessionsPage.from_json(_json_of(r)), params=params)


def _verify_call(session_id: str) -> _Call[VerifyResult]:
    return _Call(
        "GET", _session_path(session_id, "/verify"), lambda r: VerifyResult.from_json(_json_of(r))
    )


def _export_line(line: bytes) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise UnexpectedResponse(f"export line is not JSON: {line[:200]!r}") from exc
    if not isinstance(value, dict):
        raise UnexpectedResponse(f"export line is not a JSON object: {line[:200]!r}")
    return value


class _ExportReader:
    """Splits an export's bytes into lines and checks that the trailer comes last."""

    def __init__(self) -> None:
        self.trailer: ExportTrailer | None = None
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        return [self._line(line) for line in lines if line.strip()]

    def finish(self) -> list[dict[str, Any]]:
        out = [self._line(self._buffer)] if self._buffer.strip() else []
        self._buffer = b""
        if self.trailer is None:
            raise TruncatedExport("the export ended without its export_trailer line")
        return out

    def _line(self, line: bytes) -> dict[str, Any]:
        if self.trailer is not None:
            raise UnexpectedResponse("the export has lines after its export_trailer")
        value = _export_line(line)
        trailer = value.get("export_trailer")
        if isinstance(trailer, dict):
            self.trailer = ExportTrailer.from_json(trailer)
        return value


class _Base:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        retry: Retry | None,
        timeout: float | httpx.Timeout,
    ) -> None:
        if not base_url:
            raise ValueError("base_url is required (e.g. http://127.0.0.1:8080)")
        if not api_key:
            raise ValueError("api_key is required")
        self.base_url = base_url.rstrip("/")
        self.retry = retry if retry is not None else Retry()
        self._api_key = api_key

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def _headers(self, call: _Call[Any]) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._api_key}",
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
            **call.headers,
        }

    def _should_retry(
        self, attempt: int, started: float, wait: float
    ) -> bool:
        if attempt >= self.retry.attempts:
            return False
        return time.monotonic() + wait - started < self.retry.total_timeout

    def _give_up(self, call: _Call[Any], error: BaseException, attempts: int) -> ChatLedgerError:
        if isinstance(error, ChatLedgerError):
            error.attempts = attempts
            return error
        failure = NetworkError(
            f"{call.method} {call.path}: {type(error).__name__}: {error} "
            f"(after {attempts} attempt{'s' if attempts != 1 else ''})",
            attempts=attempts,
        )
        failure.idempotency_key = call.idempotency_key
        failure.__cause__ = error
        return failure


class Client(_Base):
    """Synchronous chatledger client.

    ``Client("http://127.0.0.1:8080", api_key)``; use it as a context manager or call
    :meth:`close`. It is thread-safe (one httpx connection pool). ``timeout`` (seconds, or an
    ``httpx.Timeout``) bounds each attempt; :class:`Retry` bounds them all. Pass
    ``http_client`` to bring your own ``httpx.Client`` (proxies, TLS, transports); its own
    timeouts then apply and its ``base_url`` is not used.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        retry: Retry | None = None,
        timeout: float | httpx.Timeout = 10.0,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, api_key, retry=retry, timeout=timeout)
        self._own_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client(timeout=timeout)

    def close(self) -> None:
        """Closes the connection pool (unless it was passed in)."""
        if self._own_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    def append(
        self,
        session_id: str,
        messages: Iterable[Message | Mapping[str, Any]],
        expected_seq: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Appends 1 to 100 messages as one contiguous run of seqs (one transaction).

        ``expected_seq``: the seq of the last entry you have seen (0: the session must be
        new); if the session's last seq differs, nothing is written and :class:`SeqConflict`
        (with ``current_seq``) is raised. ``idempotency_key``: sent on every attempt; when
        omitted the client generates a random one for this call, so its retries can never
        write twice. The key used is in the result's ``idempotency_key``.
        """
        return self._execute(_append_call(session_id, messages, expected_seq, idempotency_key))

    def reset(
        self,
        session_id: str,
        expected_seq: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Appends a ``context_reset`` entry: the context window starts after it. Erases
        nothing. Raises :class:`SessionNotFound` for a session that does not exist."""
        return self._execute(_reset_call(session_id, expected_seq, metadata, idempotency_key))

    # -- reading ---------------------------------------------------------------------------

    def messages(
        self,
        session_id: str,
        *,
        after_seq: int = 0,
        order: Literal["asc", "desc"] = "asc",
        before_seq: int | None = None,
        page_size: int = 1000,
    ) -> Iterator[Entry]:
        """Every entry of the session (messages and resets), fetching pages as needed.

        Ascending from ``after_seq`` by default; ``order="desc"`` walks backwards from
        ``before_seq`` (default: the end). Raises :class:`SessionNotFound` on the first page.
        """
        cursor: int | None = after_seq if order == "asc" else before_seq
        while True:
            page = self._execute(_messages_call(session_id, order, cursor, page_size))
            yield from page.entries
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def context(self, session_id: str, limit: int = 50) -> ContextWindow:
        """The context window: the last ``limit`` (1 to 1000) messages after the latest reset."""
        return self._execute(_context_call(session_id, limit))

    def session(self, session_id: str) -> SessionSummary:
        """The session's summary (``last_seq``, ``head_hash``, counts, times)."""
        return self._execute(_session_call(session_id))

    def sessions(self, *, after: str | None = None, page_size: int = 100) -> Iterator[SessionSummary]:
        """Every session of the key's tenant, in byte order of their ids, page by page."""
        while True:
            page = self._execute(_sessions_call(after, page_size))
            yield from page.sessions
            if page.next_after is None:
                return
            after = page.next_after

    # -- auditing --------------------------------------------------------------------------

    def verify(self, session_id: str) -> VerifyResult:
        """Has the server recompute the session's hash chain (role auditor)."""
        return self._execute(_verify_call(session_id))

    def export(self, session_id: str) -> Iterator[dict[str, Any]]:
        """Streams the session's export (role auditor): one dict per entry, in seq order,
        then the ``{"export_trailer": {...}}`` dict. Raises :class:`TruncatedExport` if the
        stream ends without the trailer. Memory use is constant."""
        reader = _ExportReader()
        response = self._open_stream(session_id)
        try:
            for chunk in _sync_chunks(response):
                yield from reader.feed(chunk)
        finally:
            response.close()
        yield from reader.finish()

    def export_to(self, session_id: str, fp: IO[bytes]) -> ExportTrailer:
        """Writes the session's export, byte for byte as served (NDJSON), to ``fp`` and
        returns its trailer. Raises :class:`TruncatedExport` if the trailer is missing."""
        reader = _ExportReader()
        response = self._open_stream(session_id)
        try:
            for chunk in _sync_chunks(response):
                fp.write(chunk)
                reader.feed(chunk)
        finally:
            response.close()
        reader.finish()
        assert reader.trailer is not None
        return reader.trailer

    # -- plumbing --------------------------------------------------------------------------

    def _open_stream(self, session_id: str) -> httpx.Response:
        call: _Call[None] = _Call("GET", _session_path(session_id, "/export"), lambda r: None)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                request = self._http.build_request(
                    call.method,
                    self.base_url + call.path,
                    headers={**self._headers(call), "Accept": "application/x-ndjson"},
                )
                response = self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                error: BaseException = exc
                retryable, retry_after = True, None
            else:
                if response.status_code == 200:
                    return response
                response.read()
                response.close()
                error = _error_of(response, attempt)
                retryable = response.status_code in self.retry.statuses
                retry_after = _retry_after(response)
            wait = self.retry.backoff(attempt, retry_after)
            if not retryable or not self._should_retry(attempt, started, wait):
                raise self._give_up(call, error, attempt)
            time.sleep(wait)

    def _execute(self, call: _Call[T]) -> T:
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(
                    call.method,
                    self.base_url + call.path,
                    params=call.params,
                    content=call.body,
                    headers=self._headers(call),
                )
            except httpx.TransportError as exc:
                error: BaseException = exc
                retry_after = None
            else:
                if 200 <= response.status_code < 300:
                    return call.parse(response)
                error = _error_of(response, attempt)
                if response.status_code not in self.retry.statuses:
                    raise error
                retry_after = _retry_after(response)
            wait = self.retry.backoff(attempt, retry_after)
            if not self._should_retry(attempt, started, wait):
                raise self._give_up(call, error, attempt)
            logger.warning(
                "chatledger %s %s failed (%s); retry %d in %.2fs",
                call.method,
                call.path,
                _describe(error),
                attempt,
                wait,
            )
            time.sleep(wait)


class AsyncClient(_Base):
    """Asynchronous chatledger client; the same methods as :class:`Client`, awaited
    (``messages``, ``sessions`` and ``export`` are async iterators). Use ``async with`` or
    call :meth:`aclose`. Pass ``http_client`` to bring your own ``httpx.AsyncClient``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        retry: Retry | None = None,
        timeout: float | httpx.Timeout = 10.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, api_key, retry=retry, timeout=timeout)
        self._own_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient(timeout=timeout)

    async def aclose(self) -> None:
        """Closes the connection pool (unless it was passed in)."""
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def append(
        self,
        session_id: str,
        messages: Iterable[Message | Mapping[str, Any]],
        expected_seq: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """See :meth:`Client.append`."""
        return await self._execute(_append_call(session_id, messages, expected_seq, idempotency_key))

    async def reset(
        self,
        session_id: str,
        expected_seq: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """See :meth:`Client.reset`."""
        return await self._execute(_reset_call(session_id, expected_seq, metadata, idempotency_key))

    async def messages(
        self,
        session_id: str,
        *,
        after_seq: int = 0,
        order: Literal["asc", "desc"] = "asc",
        before_seq: int | None = None,
        page_size: int = 1000,
    ) -> AsyncIterator[Entry]:
        """See :meth:`Client.messages`."""
        cursor: int | None = after_seq if order == "asc" else before_seq
        while True:
            page = await self._execute(_messages_call(session_id, order, cursor, page_size))
            for entry in page.entries:
                yield entry
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def context(self, session_id: str, limit: int = 50) -> ContextWindow:
        """See :meth:`Client.context`."""
        return await self._execute(_context_call(session_id, limit))

    async def session(self, session_id: str) -> SessionSummary:
        """See :meth:`Client.session`."""
        return await self._execute(_session_call(session_id))

    async def sessions(
        self, *, after: str | None = None, page_size: int = 100
    ) -> AsyncIterator[SessionSummary]:
        """See :meth:`Client.sessions`."""
        while True:
            page = await self._execute(_sessions_call(after, page_size))
            for summary in page.sessions:
                yield summary
            if page.next_after is None:
                return
            after = page.next_after

    async def verify(self, session_id: str) -> VerifyResult:
        """See :meth:`Client.verify`."""
        return await self._execute(_verify_call(session_id))

    async def export(self, session_id: str) -> AsyncIterator[dict[str, Any]]:
        """See :meth:`Client.export`."""
        reader = _ExportReader()
        response = await self._open_stream(session_id)
        try:
            async for chunk in _async_chunks(response):
                for line in reader.feed(chunk):
                    yield line
        finally:
            await response.aclose()
        for line in reader.finish():
            yield line

    async def export_to(self, session_id: str, fp: IO[bytes]) -> ExportTrailer:
        """See :meth:`Client.export_to` (``fp`` is written synchronously)."""
        reader = _ExportReader()
        response = await self._open_stream(session_id)
        try:
            async for chunk in _async_chunks(response):
                fp.write(chunk)
                reader.feed(chunk)
        finally:
            await response.aclose()
        reader.finish()
        assert reader.trailer is not None
        return reader.trailer

    async def _open_stream(self, session_id: str) -> httpx.Response:
        call: _Call[None] = _Call("GET", _session_path(session_id, "/export"), lambda r: None)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                request = self._http.build_request(
                    call.method,
                    self.base_url + call.path,
                    headers={**self._headers(call), "Accept": "application/x-ndjson"},
                )
                response = await self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                error: BaseException = exc
                retryable, retry_after = True, None
            else:
                if response.status_code == 200:
                    return response
                await response.aread()
                await response.aclose()
                error = _error_of(response, attempt)
                retryable = response.status_code in self.retry.statuses
                retry_after = _retry_after(response)
            wait = self.retry.backoff(attempt, retry_after)
            if not retryable or not self._should_retry(attempt, started, wait):
                raise self._give_up(call, error, attempt)
            await asyncio.sleep(wait)

    async def _execute(self, call: _Call[T]) -> T:
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(
                    call.method,
                    self.base_url + call.path,
                    params=call.params,
                    content=call.body,
                    headers=self._headers(call),
                )
            except httpx.TransportError as exc:
                error: BaseException = exc
                retry_after = None
            else:
                if 200 <= response.status_code < 300:
                    return call.parse(response)
                error = _error_of(response, attempt)
                if response.status_code not in self.retry.statuses:
                    raise error
                retry_after = _retry_after(response)
            wait = self.retry.backoff(attempt, retry_after)
            if not self._should_retry(attempt, started, wait):
                raise self._give_up(call, error, attempt)
            logger.warning(
                "chatledger %s %s failed (%s); retry %d in %.2fs",
                call.method,
                call.path,
                _describe(error),
                attempt,
                wait,
            )
            await asyncio.sleep(wait)


def _describe(error: BaseException) -> str:
    if isinstance(error, ChatLedgerError):
        return f"{error.status} {error.code}"
    return type(error).__name__


def _sync_chunks(response: httpx.Response) -> Iterator[bytes]:
    try:
        yield from response.iter_bytes()
    except httpx.TransportError as exc:
        raise TruncatedExport(f"the export stream broke off: {type(exc).__name__}: {exc}") from exc


async def _async_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_bytes():
            yield chunk
    except httpx.TransportError as exc:
        raise TruncatedExport(f"the export stream broke off: {type(exc).__name__}: {exc}") from exc
