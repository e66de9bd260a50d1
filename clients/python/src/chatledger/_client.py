"""The HTTP clients: :class:`Client` (sync) and :class:`AsyncClient` (async).

Each API call is described once, as a :class:`_Call` (method, path, body, how to read the
answer, whether it is a quick or a long call). The two clients differ only in how they send
a call and wait between attempts; what to retry and how long to wait is decided by the retry
engine (:mod:`chatledger._retry`), which does no I/O. Adding a route means adding one call
builder and one method on each client.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import json
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import IO, Any, Generic, Literal, TypeVar
from urllib.parse import quote

from ._errors import (
    ChatLedgerError,
    InvalidIdempotencyKey,
    InvalidSessionId,
    NetworkError,
    TruncatedExport,
    Unavailable,
    UnexpectedResponse,
    error_for_problem,
)
from ._http import (
    AsyncHttpxTransport,
    AsyncTransport,
    HttpxTransport,
    Response,
    SyncTransport,
    TransportError,
)
from ._models import (
    AccessRecord,
    AppendResult,
    Hold,
    SearchResult,
    ContextWindow,
    Entry,
    ExportTrailer,
    Message,
    MessagesPage,
    SessionsPage,
    SessionSummary,
    VerifyResult,
)
from ._retry import Attempts, CallKind, Outcome, Retry
from ._settings import Settings, resolve_settings
from ._sse import EventParser

__all__ = ["AsyncClient", "Client"]

logger = logging.getLogger("chatledger")

T = TypeVar("T")

_USER_AGENT = "chatledger-python"
View = Literal["full", "chat"]


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


def _query(params: Mapping[str, Any]) -> str:
    items = [f"{k}={quote(str(v), safe='')}" for k, v in params.items() if v is not None]
    return "?" + "&".join(items) if items else ""


def new_idempotency_key() -> str:
    """A random idempotency key (what the client sends when the caller gives none)."""
    return "clpy-" + secrets.token_urlsafe(24)


_new_idempotency_key = new_idempotency_key


def encode_json(body: Any) -> bytes:
    # allow_nan=False: NaN and Infinity are not JSON; fail here, loudly, before sending.
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


class _Call(Generic[T]):
    """A request and how to read its successful answer."""

    __slots__ = ("method", "path", "parse", "body", "headers", "idempotency_key", "kind", "stream", "timeout")

    def __init__(
        self,
        method: str,
        path: str,
        parse: Callable[[Response], T],
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        kind: CallKind = CallKind.QUICK,
        stream: bool = False,
        timeout: float | None = None,
    ) -> None:
        self.timeout = timeout
        self.method = method
        self.path = path
        self.parse = parse
        self.body = body
        self.headers = headers
        self.idempotency_key = idempotency_key
        self.kind = kind
        self.stream = stream


def json_of(response: Response) -> Any:
    try:
        return json.loads(response.body or b"")
    except ValueError as exc:
        raise UnexpectedResponse(
            f"HTTP {response.status}: the body is not JSON", status=response.status
        ) from exc


def _retry_after(response: Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: not sent by chatledger; fall back to our own backoff
    return max(0.0, seconds)


def _error_of(response: Response) -> ChatLedgerError:
    problem: Any = None
    try:
        problem = json.loads(response.body or b"")
    except ValueError:
        pass
    if isinstance(problem, dict) and isinstance(problem.get("code"), str):
        error = error_for_problem(response.status, problem)
    elif response.status == 503:
        # A proxy or load balancer in front of the server: unavailable all the same.
        error = Unavailable(
            "unavailable (503) without a problem document (a proxy in front of the server?)",
            status=503,
        )
    else:
        text = (response.body or b"")[:200].decode("utf-8", "replace")
        error = UnexpectedResponse(
            f"HTTP {response.status} without a problem document: {text!r}", status=response.status
        )
    if isinstance(error, Unavailable):
        error.retry_after = _retry_after(response)
    return error


# -- the calls -------------------------------------------------------------------------------


def _write_call(path: str, body: dict[str, Any], idempotency_key: str | None) -> _Call[AppendResult]:
    key = idempotency_key if idempotency_key is not None else new_idempotency_key()
    if not 1 <= len(key) <= 255 or not all("!" <= c <= "~" for c in key):
        # Refused here, as the server would (API.md): a CR or LF would split the request's
        # head, and a key the server never saw makes no retry safe.
        raise InvalidIdempotencyKey(
            "invalid_idempotency_key: an Idempotency-Key is 1 to 255 visible ASCII characters",
            status=None,
        )

    def parse(response: Response) -> AppendResult:
        replayed = response.headers.get("idempotent-replayed", "").lower() == "true"
        return AppendResult.from_json(json_of(response), replayed=replayed, idempotency_key=key)

    return _Call(
        "POST",
        path,
        parse,
        body=encode_json(body),
        headers={"Idempotency-Key": key, "Content-Type": "application/json"},
        idempotency_key=key,
    )


def append_call(
    session_id: str,
    messages: Iterable[Message | Mapping[str, Any]],
    expected_seq: int | None,
    idempotency_key: str | None,
) -> _Call[AppendResult]:
    body: dict[str, Any] = {"messages": [m if isinstance(m, dict) else dict(m) for m in messages]}
    if expected_seq is not None:
        body["expected_seq"] = expected_seq
    return _write_call(_session_path(session_id, "/messages"), body, idempotency_key)


def reset_call(
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


def messages_json_call(
    session_id: str,
    order: Literal["asc", "desc"],
    cursor: int | None,
    limit: int,
    view: View = "full",
) -> _Call[Any]:
    """A page of ``messages`` as parsed JSON."""
    params: dict[str, Any] = {"limit": limit, "order": order}
    if order == "asc":
        params["after_seq"] = cursor if cursor is not None else 0
    elif order == "desc":
        params["before_seq"] = cursor
    else:
        raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
    if view != "full":
        params["view"] = view
    return _Call("GET", _session_path(session_id, "/messages") + _query(params), json_of)


def _messages_call(
    session_id: str, order: Literal["asc", "desc"], cursor: int | None, limit: int, view: View
) -> _Call[MessagesPage]:
    call = messages_json_call(session_id, order, cursor, limit, view)
    field = "next_after_seq" if order == "asc" else "next_before_seq"
    call.parse = lambda r: MessagesPage.from_json(json_of(r), cursor_field=field)
    return call


def context_json_call(session_id: str, limit: int, view: View = "full") -> _Call[Any]:
    """The context window as parsed JSON."""
    params: dict[str, Any] = {"limit": limit}
    if view != "full":
        params["view"] = view
    return _Call("GET", _session_path(session_id, "/context") + _query(params), json_of)


def _context_call(session_id: str, limit: int, view: View) -> _Call[ContextWindow]:
    call = context_json_call(session_id, limit, view)
    call.parse = lambda r: ContextWindow.from_json(json_of(r))
    return call


def _session_call(session_id: str) -> _Call[SessionSummary]:
    return _Call("GET", _session_path(session_id), lambda r: SessionSummary.from_json(json_of(r)))


def _sessions_call(after: str | None, limit: int) -> _Call[SessionsPage]:
    return _Call(
        "GET",
        "/v1/sessions" + _query({"limit": limit, "after": after}),
        lambda r: SessionsPage.from_json(json_of(r)),
    )


def _verify_call(session_id: str) -> _Call[VerifyResult]:
    return _Call(
        "GET",
        _session_path(session_id, "/verify"),
        lambda r: VerifyResult.from_json(json_of(r)),
        kind=CallKind.LONG,
    )


def _export_call(session_id: str) -> _Call[Response]:
    return _Call(
        "GET",
        _session_path(session_id, "/export"),
        lambda r: r,
        headers={"Accept": "application/x-ndjson"},
        kind=CallKind.LONG,
        stream=True,
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


def _truncated(exc: TransportError) -> TruncatedExport:
    error = TruncatedExport(f"the export stream broke off: {exc}")
    error.__cause__ = exc.__cause__ or exc
    return error


# -- compliance routes -----------------------------------------------------------------------

#: Seconds a live tail waits for the next byte (the server sends a comment at least every 15 s).
TAIL_TIMEOUT = 45.0


def _search_call(
    q: str | None,
    filters: dict[str, Any],
    after: str | None,
    limit: int,
) -> _Call[tuple[tuple[SearchResult, ...], str | None]]:
    params: dict[str, Any] = {"q": q, **filters, "after": after, "limit": limit}
    if isinstance(params.get("metadata"), Mapping):
        params["metadata"] = json.dumps(params["metadata"], separators=(",", ":"))

    def parse(response: Response) -> tuple[tuple[SearchResult, ...], str | None]:
        data = json_of(response)
        return tuple(SearchResult.from_json(r) for r in data.get("results", [])), data.get("next")

    return _Call("GET", "/v1/audit/search" + _query(params), parse, kind=CallKind.LONG)


def _access_call(filters: dict[str, Any], after_id: int | None, limit: int) -> _Call[tuple[tuple[AccessRecord, ...], int | None]]:
    def parse(response: Response) -> tuple[tuple[AccessRecord, ...], int | None]:
        data = json_of(response)
        return tuple(AccessRecord.from_json(r) for r in data.get("records", [])), data.get("next_after_id")

    return _Call("GET", "/v1/audit/access" + _query({**filters, "after_id": after_id, "limit": limit}), parse)


def _hold_of(response: Response) -> Hold | None:
    if not response.body:
        return None
    data = json_of(response)
    return Hold.from_json(data) if isinstance(data, dict) and "id" in data else None


def _holds_call() -> _Call[list[Hold]]:
    return _Call("GET", "/v1/holds", lambda r: [Hold.from_json(h) for h in json_of(r).get("holds", [])])


def _place_hold_call(name: str, reason: str, session_ids: Iterable[str]) -> _Call[Hold]:
    body: dict[str, Any] = {"name": name, "reason": reason, "session_ids": list(session_ids)}
    return _Call(
        "POST", "/v1/holds", lambda r: Hold.from_json(json_of(r)), body=encode_json(body),
        headers={"Content-Type": "application/json"}, kind=CallKind.ONCE,
    )


def _hold_path(hold_id: Any, suffix: str = "") -> str:
    return f"/v1/holds/{quote(str(hold_id), safe='')}{suffix}"


def _add_to_hold_call(hold_id: Any, session_ids: Iterable[str]) -> _Call[Hold | None]:
    body = {"session_ids": list(session_ids)}
    return _Call(
        "POST", _hold_path(hold_id, "/sessions"), _hold_of, body=encode_json(body),
        headers={"Content-Type": "application/json"},
    )


def _release_hold_call(hold_id: Any) -> _Call[None]:
    return _Call("DELETE", _hold_path(hold_id), lambda r: None)


def _erase_call(session_id: str, reason: str, through_seq: int | None) -> _Call[AppendResult]:
    body: dict[str, Any] = {"reason": reason}
    if through_seq is not None:
        body["through_seq"] = through_seq
    return _Call(
        "POST", _session_path(session_id, "/erasure"),
        lambda r: AppendResult.from_json(json_of(r), replayed=False, idempotency_key=""),
        body=encode_json(body), headers={"Content-Type": "application/json"}, kind=CallKind.ONCE,
    )


def _events_call(session_id: str, after_seq: int, last_event_id: str | None) -> _Call[Response]:
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    return _Call(
        "GET", _session_path(session_id, "/events") + _query({"after_seq": after_seq}), lambda r: r,
        headers=headers, stream=True, timeout=TAIL_TIMEOUT,
    )


class _Tail:
    """Where a live tail is: the last event id seen, and its reconnection budget (sans I/O)."""

    def __init__(self, retry: Retry, after_seq: int) -> None:
        self.retry = retry
        self.after_seq = after_seq
        self.last_id: str | None = None
        self.attempts: Attempts | None = None

    def call(self, session_id: str) -> _Call[Response]:
        return _events_call(session_id, self.after_seq, self.last_id)

    def entries(self, parser: EventParser, chunk: bytes) -> list[Entry]:
        out = []
        for event in parser.feed(chunk):
            if event.event != "entry":
                continue
            entry = Entry.from_json(json.loads(event.data))
            self.last_id = event.id if event.id is not None else str(entry.seq)
            self.after_seq = entry.seq
            self.attempts = None  # progress: a fresh budget for the next break
            out.append(entry)
        return out

    def broke(self, error: TransportError) -> float:
        """The wait before reconnecting, or raises when the budget is spent."""
        if self.attempts is None:
            self.attempts = Attempts(self.retry, CallKind.QUICK, started=time.monotonic())
        decision = self.attempts.after(error.outcome, time.monotonic())
        if not decision.retry:
            failure = NetworkError(f"the live tail broke off and could not reconnect: {error}")
            failure.__cause__ = error.__cause__ or error
            raise failure
        return decision.delay


# -- the clients -----------------------------------------------------------------------------


class _Base:
    _shared_lock = threading.Lock()

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        *,
        retry: Retry | None,
        timeout: float | None,
        long_timeout: float | None,
        settings: Settings | None,
    ) -> None:
        if settings is None:
            settings = resolve_settings(
                base_url, api_key, retry=retry, timeout=timeout, long_timeout=long_timeout
            )
        elif base_url or api_key or retry or timeout or long_timeout:
            settings = resolve_settings(
                base_url, api_key, base=settings, retry=retry, timeout=timeout, long_timeout=long_timeout
            )
        #: The client's :class:`~chatledger.Settings` (URL, key, retry, timeouts): the one
        #: public way for other components to build a client like this one.
        self.settings = settings
        self._shared = False

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    @property
    def retry(self) -> Retry:
        return self.settings.retry

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings.base_url!r})"

    def _fixed_headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.settings.api_key}",
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
        }

    def _timeout(self, call: _Call[Any]) -> float:
        if call.timeout is not None:
            return call.timeout
        return self.settings.long_timeout if call.kind is CallKind.LONG else self.settings.timeout

    def _decide(
        self, call: _Call[Any], attempts: Attempts, error: BaseException
    ) -> float:
        """The wait before the next attempt, or raises the error to give up."""
        if isinstance(error, TransportError):
            decision = attempts.after(error.outcome, time.monotonic())
        else:
            assert isinstance(error, ChatLedgerError)
            decision = attempts.after(
                Outcome.STATUS,
                time.monotonic(),
                status=error.status,
                retry_after=getattr(error, "retry_after", None),
            )
        if not decision.retry:
            raise self._give_up(call, error, attempts.count, decision.reason)
        logger.warning(
            "chatledger %s %s failed (%s); retry %d in %.2fs",
            call.method,
            # Without the query: a search's terms and filters may be personal data.
            call.path.partition("?")[0],
            _describe(error),
            attempts.count - 1,
            decision.delay,
        )
        return decision.delay

    def _give_up(
        self, call: _Call[Any], error: BaseException, attempts: int, reason: str | None
    ) -> ChatLedgerError:
        if isinstance(error, ChatLedgerError):
            error.attempts = attempts
            return error
        failure = NetworkError(
            f"{call.method} {call.path}: {error} "
            f"(after {attempts} attempt{'s' if attempts != 1 else ''}; {reason})",
            attempts=attempts,
        )
        failure.idempotency_key = call.idempotency_key
        failure.__cause__ = error.__cause__ or error
        return failure


def _describe(error: BaseException) -> str:
    if isinstance(error, ChatLedgerError):
        return f"{error.status} {error.code}"
    if isinstance(error, TransportError):
        return error.outcome.value
    return type(error).__name__


class Client(_Base):
    """Synchronous chatledger client.

    ``Client(url, api_key)``, or ``Client()`` with ``$CHATLEDGER_URL`` and
    ``$CHATLEDGER_API_KEY``. Thread-safe, with one pool of keep-alive connections; use it
    as a context manager or call :meth:`close`. ``timeout`` bounds each attempt of an append,
    reset or read (10 s), ``long_timeout`` each attempt of a verify or export (600 s);
    :class:`Retry` bounds the attempts. :meth:`shared` gives the process-wide client for a
    set of settings (what the LangChain adapters use). Pass ``http_client`` (an
    ``httpx.Client``) to send through httpx instead (proxies, custom TLS or transports);
    its own timeouts then apply.
    """

    _registry: dict[Settings, Client] = {}

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        retry: Retry | None = None,
        timeout: float | None = None,
        long_timeout: float | None = None,
        settings: Settings | None = None,
        http_client: Any = None,
    ) -> None:
        super().__init__(
            base_url, api_key, retry=retry, timeout=timeout, long_timeout=long_timeout, settings=settings
        )
        if http_client is not None:
            self._transport: Any = HttpxTransport(http_client, self.settings.base_url, self._fixed_headers())
        else:
            self._transport = SyncTransport(self.settings.base_url, self._fixed_headers())

    @classmethod
    def shared(
        cls,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        retry: Retry | None = None,
        timeout: float | None = None,
        long_timeout: float | None = None,
        settings: Settings | None = None,
    ) -> Client:
        """The process-wide client for these settings, made on first use and reused by
        every caller (its connection pool too). Closed at exit; :meth:`close` retires it."""
        if settings is None or base_url or api_key or retry or timeout or long_timeout:
            settings = resolve_settings(
                base_url, api_key, base=settings, retry=retry, timeout=timeout, long_timeout=long_timeout
            )
        client = cls._registry.get(settings)
        if client is None:
            with cls._shared_lock:
                client = cls._registry.get(settings)
                if client is None:
                    client = cls(settings=settings)
                    client._shared = True
                    cls._registry[settings] = client
        return client

    def close(self) -> None:
        """Closes the connection pool (a client passed as ``http_client`` stays open)."""
        if self._shared:
            with self._shared_lock:
                if self._registry.get(self.settings) is self:
                    del self._registry[self.settings]
        self._transport.close()

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
        return self._execute(append_call(session_id, messages, expected_seq, idempotency_key))

    def reset(
        self,
        session_id: str,
        expected_seq: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Appends a ``context_reset`` entry: the context window starts after it. Erases
        nothing. Raises :class:`SessionNotFound` for a session that does not exist."""
        return self._execute(reset_call(session_id, expected_seq, metadata, idempotency_key))

    # -- reading ---------------------------------------------------------------------------

    def messages(
        self,
        session_id: str,
        *,
        after_seq: int = 0,
        order: Literal["asc", "desc"] = "asc",
        before_seq: int | None = None,
        page_size: int = 1000,
        view: View = "full",
    ) -> Iterator[Entry]:
        """Every entry of the session (messages, resets, erasures), fetching pages as needed.

        Ascending from ``after_seq`` by default; ``order="desc"`` walks backwards from
        ``before_seq`` (default: the end). ``view="chat"`` leaves out the chain fields.
        Raises :class:`SessionNotFound` on the first page.
        """
        cursor: int | None = after_seq if order == "asc" else before_seq
        while True:
            page = self._execute(_messages_call(session_id, order, cursor, page_size, view))
            yield from page.entries
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def context(self, session_id: str, limit: int = 50, *, view: View = "full") -> ContextWindow:
        """The context window: the last ``limit`` (1 to 1000) messages after the latest reset."""
        return self._execute(_context_call(session_id, limit, view))

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
        """Has the server recompute the session's hash chain (role auditor). A long call:
        ``long_timeout`` per attempt, never resent once the server may have started it."""
        return self._execute(_verify_call(session_id))

    def export(self, session_id: str) -> Iterator[dict[str, Any]]:
        """Streams the session's export (role auditor): one dict per entry, in seq order,
        then the ``{"export_trailer": {...}}`` dict. Raises :class:`TruncatedExport` if the
        stream ends without the trailer. Memory use is constant."""
        reader = _ExportReader()
        for chunk in self._export_chunks(session_id):
            yield from reader.feed(chunk)
        yield from reader.finish()

    def export_to(self, session_id: str, fp: IO[bytes]) -> ExportTrailer:
        """Writes the session's export, byte for byte as served (NDJSON), to ``fp`` and
        returns its trailer. Raises :class:`TruncatedExport` if the trailer is missing."""
        reader = _ExportReader()
        for chunk in self._export_chunks(session_id):
            fp.write(chunk)
            reader.feed(chunk)
        reader.finish()
        assert reader.trailer is not None
        return reader.trailer

    # -- compliance (role auditor) ---------------------------------------------------------

    def search(
        self,
        q: str | None = None,
        *,
        session_id: str | None = None,
        role: str | None = None,
        author: str | None = None,
        from_: str | None = None,
        to: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        page_size: int = 50,
    ) -> Iterator[SearchResult]:
        """Audit search across the tenant's messages, newest first, every page: ``q`` (terms,
        ``"quoted phrases"``, case-insensitive, any script) and/or filters (``metadata``: an
        object the entry's metadata must contain). A long call (see :class:`CallKind`)."""
        filters = {"session_id": session_id, "role": role, "author": author, "from": from_, "to": to,
                   "metadata": metadata}
        after: str | None = None
        while True:
            results, after = self._execute(_search_call(q, filters, after, page_size))
            yield from results
            if after is None:
                return

    def access_log(
        self,
        *,
        session_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        from_: str | None = None,
        to: str | None = None,
        after_id: int | None = None,
        page_size: int = 100,
    ) -> Iterator[AccessRecord]:
        """The tenant's access records (who read or changed what), ascending by id."""
        filters = {"session_id": session_id, "actor": actor, "action": action, "from": from_, "to": to}
        while True:
            records, after_id = self._execute(_access_call(filters, after_id, page_size))
            yield from records
            if after_id is None:
                return

    def holds(self) -> list[Hold]:
        """The tenant's legal holds, released ones included."""
        return self._execute(_holds_call())

    def place_hold(self, name: str, session_ids: Iterable[str], reason: str) -> Hold:
        """Places a legal hold on sessions: they cannot be erased until it is released. Not
        resent once it may have reached the server (no idempotency key for holds)."""
        return self._execute(_place_hold_call(name, reason, session_ids))

    def add_to_hold(self, hold_id: Any, session_ids: Iterable[str]) -> Hold | None:
        """Adds sessions to a hold (the hold as the server then answers, if it does)."""
        return self._execute(_add_to_hold_call(hold_id, session_ids))

    def release_hold(self, hold_id: Any) -> None:
        """Releases a hold (it is kept, with ``released_at``)."""
        self._execute(_release_hold_call(hold_id))

    def erase(self, session_id: str, reason: str, through_seq: int | None = None) -> AppendResult:
        """Erases the payload of every message up to ``through_seq`` (default: the whole
        session, which also closes it) and appends an ``erasure`` record. Raises
        :class:`LegalHold` for a session under a hold. Not resent once it may have reached the
        server."""
        return self._execute(_erase_call(session_id, reason, through_seq))

    def tail(self, session_id: str, *, after_seq: int = 0) -> Iterator[Entry]:
        """The live tail: every entry after ``after_seq``, then each new one as it is
        committed, for as long as you iterate. A broken stream reconnects with
        ``Last-Event-ID`` (no gap, no duplicate) within the retry budget, which every received
        entry renews. A session that does not exist yet is waited for."""
        tail = _Tail(self.settings.retry, after_seq)
        while True:
            response = self._execute(tail.call(session_id))
            parser = EventParser()
            try:
                for chunk in response.iter_chunks():
                    yield from tail.entries(parser, chunk)
            except TransportError as exc:
                time.sleep(tail.broke(exc))
            finally:
                response.close()

    def _export_chunks(self, session_id: str) -> Iterator[bytes]:
        response = self._execute(_export_call(session_id))
        try:
            yield from response.iter_chunks()
        except TransportError as exc:
            raise _truncated(exc) from None
        finally:
            response.close()

    # -- plumbing --------------------------------------------------------------------------

    def _execute(self, call: _Call[T]) -> T:
        started = time.monotonic()
        attempts: Attempts | None = None
        timeout = self._timeout(call)
        while True:
            try:
                response = self._transport.request(
                    call.method, call.path, call.headers, call.body, timeout, call.stream,
                    fresh=call.kind is not CallKind.QUICK,
                )
            except TransportError as exc:
                error: BaseException = exc
            else:
                if 200 <= response.status < 300:
                    return call.parse(response)
                error = _error_of(response)
            if attempts is None:
                attempts = Attempts(self.settings.retry, call.kind, started=started)
            time.sleep(self._decide(call, attempts, error))


def _close_shared_clients() -> None:
    # At interpreter exit: the shared clients' idle connections, closed rather than left to
    # the garbage collector (which warns of each under -X dev).
    for client in list(Client._registry.values()):
        client._transport.close()


atexit.register(_close_shared_clients)


class AsyncClient(_Base):
    """Asynchronous chatledger client; the same methods as :class:`Client`, awaited
    (``messages``, ``sessions`` and ``export`` are async iterators). Use ``async with`` or
    call :meth:`aclose`. One client may serve several event loops: it keeps one connection
    pool per loop. :meth:`shared` gives the process-wide client for a set of settings. Pass
    ``http_client`` (an ``httpx.AsyncClient``) to send through httpx instead."""

    _registry: dict[Settings, AsyncClient] = {}

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        retry: Retry | None = None,
        timeout: float | None = None,
        long_timeout: float | None = None,
        settings: Settings | None = None,
        http_client: Any = None,
    ) -> None:
        super().__init__(
            base_url, api_key, retry=retry, timeout=timeout, long_timeout=long_timeout, settings=settings
        )
        if http_client is not None:
            self._transport: Any = AsyncHttpxTransport(
                http_client, self.settings.base_url, self._fixed_headers()
            )
        else:
            self._transport = AsyncTransport(self.settings.base_url, self._fixed_headers())

    @classmethod
    def shared(
        cls,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        retry: Retry | None = None,
        timeout: float | None = None,
        long_timeout: float | None = None,
        settings: Settings | None = None,
    ) -> AsyncClient:
        """See :meth:`Client.shared` (one pool per event loop inside)."""
        if settings is None or base_url or api_key or retry or timeout or long_timeout:
            settings = resolve_settings(
                base_url, api_key, base=settings, retry=retry, timeout=timeout, long_timeout=long_timeout
            )
        client = cls._registry.get(settings)
        if client is None:
            with cls._shared_lock:
                client = cls._registry.get(settings)
                if client is None:
                    client = cls(settings=settings)
                    client._shared = True
                    cls._registry[settings] = client
        return client

    async def aclose(self) -> None:
        """Closes the connection pools (a client passed as ``http_client`` stays open)."""
        if self._shared:
            with self._shared_lock:
                if self._registry.get(self.settings) is self:
                    del self._registry[self.settings]
        await self._transport.aclose()

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
        return await self._execute(append_call(session_id, messages, expected_seq, idempotency_key))

    async def reset(
        self,
        session_id: str,
        expected_seq: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """See :meth:`Client.reset`."""
        return await self._execute(reset_call(session_id, expected_seq, metadata, idempotency_key))

    async def messages(
        self,
        session_id: str,
        *,
        after_seq: int = 0,
        order: Literal["asc", "desc"] = "asc",
        before_seq: int | None = None,
        page_size: int = 1000,
        view: View = "full",
    ) -> AsyncIterator[Entry]:
        """See :meth:`Client.messages`."""
        cursor: int | None = after_seq if order == "asc" else before_seq
        while True:
            page = await self._execute(_messages_call(session_id, order, cursor, page_size, view))
            for entry in page.entries:
                yield entry
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def context(self, session_id: str, limit: int = 50, *, view: View = "full") -> ContextWindow:
        """See :meth:`Client.context`."""
        return await self._execute(_context_call(session_id, limit, view))

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
        async for chunk in self._export_chunks(session_id):
            for line in reader.feed(chunk):
                yield line
        for line in reader.finish():
            yield line

    async def export_to(self, session_id: str, fp: IO[bytes]) -> ExportTrailer:
        """See :meth:`Client.export_to` (``fp`` is written synchronously)."""
        reader = _ExportReader()
        async for chunk in self._export_chunks(session_id):
            fp.write(chunk)
            reader.feed(chunk)
        reader.finish()
        assert reader.trailer is not None
        return reader.trailer

    async def search(
        self,
        q: str | None = None,
        *,
        session_id: str | None = None,
        role: str | None = None,
        author: str | None = None,
        from_: str | None = None,
        to: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        page_size: int = 50,
    ) -> AsyncIterator[SearchResult]:
        """See :meth:`Client.search`."""
        filters = {"session_id": session_id, "role": role, "author": author, "from": from_, "to": to,
                   "metadata": metadata}
        after: str | None = None
        while True:
            results, after = await self._execute(_search_call(q, filters, after, page_size))
            for result in results:
                yield result
            if after is None:
                return

    async def access_log(
        self,
        *,
        session_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        from_: str | None = None,
        to: str | None = None,
        after_id: int | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[AccessRecord]:
        """See :meth:`Client.access_log`."""
        filters = {"session_id": session_id, "actor": actor, "action": action, "from": from_, "to": to}
        while True:
            records, after_id = await self._execute(_access_call(filters, after_id, page_size))
            for record in records:
                yield record
            if after_id is None:
                return

    async def holds(self) -> list[Hold]:
        """See :meth:`Client.holds`."""
        return await self._execute(_holds_call())

    async def place_hold(self, name: str, session_ids: Iterable[str], reason: str) -> Hold:
        """See :meth:`Client.place_hold`."""
        return await self._execute(_place_hold_call(name, reason, session_ids))

    async def add_to_hold(self, hold_id: Any, session_ids: Iterable[str]) -> Hold | None:
        """See :meth:`Client.add_to_hold`."""
        return await self._execute(_add_to_hold_call(hold_id, session_ids))

    async def release_hold(self, hold_id: Any) -> None:
        """See :meth:`Client.release_hold`."""
        await self._execute(_release_hold_call(hold_id))

    async def erase(self, session_id: str, reason: str, through_seq: int | None = None) -> AppendResult:
        """See :meth:`Client.erase`."""
        return await self._execute(_erase_call(session_id, reason, through_seq))

    async def tail(self, session_id: str, *, after_seq: int = 0) -> AsyncIterator[Entry]:
        """See :meth:`Client.tail`."""
        tail = _Tail(self.settings.retry, after_seq)
        while True:
            response = await self._execute(tail.call(session_id))
            parser = EventParser()
            try:
                async for chunk in response.aiter_chunks():
                    for entry in tail.entries(parser, chunk):
                        yield entry
            except TransportError as exc:
                await asyncio.sleep(tail.broke(exc))
            finally:
                closing = response.close()
                if inspect.isawaitable(closing):
                    await closing

    async def _export_chunks(self, session_id: str) -> AsyncIterator[bytes]:
        response = await self._execute(_export_call(session_id))
        try:
            async for chunk in response.aiter_chunks():
                yield chunk
        except TransportError as exc:
            raise _truncated(exc) from None
        finally:
            closing = response.close()
            if inspect.isawaitable(closing):
                await closing

    async def _execute(self, call: _Call[T]) -> T:
        started = time.monotonic()
        attempts: Attempts | None = None
        timeout = self._timeout(call)
        while True:
            try:
                response = await self._transport.request(
                    call.method, call.path, call.headers, call.body, timeout, call.stream,
                    fresh=call.kind is not CallKind.QUICK,
                )
            except TransportError as exc:
                error: BaseException = exc
            else:
                if 200 <= response.status < 300:
                    return call.parse(response)
                error = _error_of(response)
            if attempts is None:
                attempts = Attempts(self.settings.retry, call.kind, started=started)
            await asyncio.sleep(self._decide(call, attempts, error))
