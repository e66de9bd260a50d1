"""``ChatLedgerMessageHistory``: a LangChain chat message history stored in chatledger."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import httpx
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from .._client import AsyncClient, Client, Retry, _new_idempotency_key
from .._errors import ChatLedgerError, SeqConflict, SessionNotFound
from .._models import AppendResult, Entry
from ._convert import entry_to_message, message_to_entry

__all__ = ["ChatLedgerMessageHistory", "HistoryWriteFailed", "OnConflict"]

logger = logging.getLogger("chatledger.langchain")

OnConflict = Literal["raise", "append"]

_CONTEXT_PAGE = 1000  # the API's largest context/messages page


class HistoryWriteFailed(ChatLedgerError):
    """A write of a chat history failed, so its messages are not in the ledger.

    Passed at once to the history's ``on_write_error`` callback, and raised by the next read
    or write of the same session through any :class:`ChatLedgerMessageHistory` of this
    process (``RunnableWithMessageHistory`` only logs the exceptions of its writes, so
    without this a failed write would vanish). The original exception is ``error`` (and
    ``__cause__``); ``messages`` are the LangChain messages that were not stored (empty for a
    failed ``clear``). :meth:`ChatLedgerMessageHistory.retry_failed_write` resends the very
    same request (same idempotency key), which can never store them twice.
    """

    def __init__(
        self,
        *,
        session_id: str,
        operation: Literal["add_messages", "clear"],
        messages: list[BaseMessage],
        error: BaseException,
        request: dict[str, Any] | None,
    ) -> None:
        text = f"{operation} of chat history {session_id!r} failed"
        if messages:
            text += f"; {len(messages)} message(s) not stored"
        text += f": {type(error).__name__}: {error}"
        super().__init__(
            text,
            status=getattr(error, "status", None),
            code=getattr(error, "code", None),
            problem=getattr(error, "problem", None),
        )
        self.session_id = session_id
        self.operation = operation
        self.messages = messages
        self.error = error
        #: The request that failed: ``wire`` (messages as sent), ``expected_seq`` and
        #: ``idempotency_key``; ``None`` when it failed before it could be built.
        self.request = request
        self.__cause__ = error


# Failures not yet raised, per (server, key, session): shared by every history object of
# the process, because RunnableWithMessageHistory makes a new one for each call.
_pending: dict[tuple[str, str, str], list[HistoryWriteFailed]] = {}
_pending_lock = threading.Lock()

_shared_clients: dict[tuple[str, str, str, str], Client] = {}
_shared_lock = threading.Lock()


def _key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()[:32]


def shared_client(
    url: str, api_key: str, retry: Retry | None, timeout: float | httpx.Timeout
) -> Client:
    """One sync :class:`Client` (one connection pool) per server, key and settings for the
    whole process: history objects are made per call, their pools should not be."""
    key = (url.rstrip("/"), _key_digest(api_key), repr(retry), repr(timeout))
    with _shared_lock:
        client = _shared_clients.get(key)
        if client is None:
            client = Client(url, api_key, retry=retry, timeout=timeout)
            _shared_clients[key] = client
        return client


class ChatLedgerMessageHistory(BaseChatMessageHistory):
    """A LangChain chat message history stored in a chatledger session.

    ``ChatLedgerMessageHistory(session_id, url="http://127.0.0.1:8080", api_key=KEY)``
    (``url`` and ``api_key`` default to ``$CHATLEDGER_URL`` and ``$CHATLEDGER_API_KEY``).

    - ``messages`` / ``aget_messages()``: the context window, i.e. every message after the
      latest ``clear()`` (or its last ``window`` messages when ``window`` is set), exactly as
      they were added: type, content, ids, names, tool calls, chunks, usage, kwargs.
    - ``add_messages`` / ``aadd_messages``: one atomic append (contiguous seqs) per call,
      with a fresh idempotency key that the client's retries reuse.
    - ``clear`` / ``aclear``: appends a ``context_reset``; nothing is erased.

    **Concurrency.** With ``optimistic=True`` (default) a write states the session's last
    seq as this object saw it (``expected_seq``): the ``last_seq`` of the first read after
    this object's previous write (the read its turn is based on), or of its previous write.
    Later reads before the write do not move it: ``RunnableWithMessageHistory`` reads the
    history a second time after the model call, and a session that grew in between would
    otherwise make it drop the new input messages without a word. An object that never read
    appends at the end. If another writer got there first, ``on_conflict`` decides:
    ``"raise"`` (default) stores nothing and raises :class:`chatledger.SeqConflict`;
    ``"append"`` appends the turn after the other writer's entries anyway (each turn stays
    one contiguous run) and logs a warning. ``clear()`` never checks: it resets whatever is
    there. Detection is per object, so make one object per request (the usual
    ``get_session_history`` factory), not one shared by concurrent requests.

    **Failures are never silent.** A failed write raises its exception, calls
    ``on_write_error`` at once with a :class:`HistoryWriteFailed`, and leaves that
    :class:`HistoryWriteFailed` pending: the next read or write of the same session through
    any history object of this process raises it (once). If you handled the original
    exception yourself, call :meth:`acknowledge_failures` to drop what is pending.
    """

    def __init__(
        self,
        session_id: str,
        *,
        url: str | None = None,
        api_key: str | None = None,
        client: Client | None = None,
        async_client: AsyncClient | None = None,
        window: int | None = None,
        optimistic: bool = True,
        on_conflict: OnConflict = "raise",
        on_write_error: Callable[[HistoryWriteFailed], Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        retry: Retry | None = None,
        timeout: float | httpx.Timeout = 10.0,
    ) -> None:
        super().__init__()
        if on_conflict not in ("raise", "append"):
            raise ValueError(f"on_conflict must be 'raise' or 'append', not {on_conflict!r}")
        if window is not None and window < 1:
            raise ValueError("window must be at least 1")
        known = client or async_client
        url = url or (known.base_url if known else None) or os.environ.get("CHATLEDGER_URL")
        api_key = (
            api_key
            or (known._api_key if known else None)
            or os.environ.get("CHATLEDGER_API_KEY")
        )
        if not url or not api_key:
            raise ValueError(
                "ChatLedgerMessageHistory needs url and api_key (or a client, or "
                "$CHATLEDGER_URL and $CHATLEDGER_API_KEY)"
            )
        self.session_id = session_id
        self.url = url.rstrip("/")
        self.window = window
        self.optimistic = optimistic
        self.on_conflict: OnConflict = on_conflict
        self.on_write_error = on_write_error
        self.metadata = dict(metadata) if metadata else None
        self._api_key = api_key
        self._client = client
        self._async_client = async_client
        self._retry = retry
        self._timeout = timeout
        self._pending_key = (self.url, _key_digest(api_key), session_id)
        self._lock = threading.Lock()
        self._base_seq: int | None = None
        self._read_since_write = False

    def __repr__(self) -> str:
        return f"ChatLedgerMessageHistory({self.session_id!r}, url={self.url!r})"

    # -- clients ---------------------------------------------------------------------------

    def _sync_client(self) -> Client:
        if self._client is None:
            self._client = shared_client(self.url, self._api_key, self._retry, self._timeout)
        return self._client

    def _new_async_client(self) -> AsyncClient:
        return AsyncClient(self.url, self._api_key, retry=self._retry, timeout=self._timeout)

    # -- failures --------------------------------------------------------------------------

    def _raise_pending(self) -> None:
        with _pending_lock:
            failures = _pending.get(self._pending_key)
            if not failures:
                return
            failure = failures.pop(0)
            if not failures:
                del _pending[self._pending_key]
        raise failure

    @property
    def pending_failures(self) -> list[HistoryWriteFailed]:
        """Failed writes of this session not yet raised (oldest first)."""
        with _pending_lock:
            return list(_pending.get(self._pending_key, []))

    def acknowledge_failures(self) -> list[HistoryWriteFailed]:
        """Removes and returns the pending failures of this session, so that the next read
        or write does not raise them (for code that handled the original exception)."""
        with _pending_lock:
            return _pending.pop(self._pending_key, [])

    def _record_failure(
        self,
        operation: Literal["add_messages", "clear"],
        messages: list[BaseMessage],
        error: BaseException,
        request: dict[str, Any] | None,
    ) -> HistoryWriteFailed:
        failure = HistoryWriteFailed(
            session_id=self.session_id,
            operation=operation,
            messages=messages,
            error=error,
            request=request,
        )
        with _pending_lock:
            _pending.setdefault(self._pending_key, []).append(failure)
        logger.error("%s", failure)
        if self.on_write_error is not None:
            try:
                self.on_write_error(failure)
            except Exception:
                logger.exception("the on_write_error callback of %r raised", self)
        return failure

    # -- sequence bookkeeping --------------------------------------------------------------

    def _observe_read(self, last_seq: int) -> None:
        with self._lock:
            if not self._read_since_write:
                self._base_seq = last_seq
                self._read_since_write = True

    def _observe_write(self, last_seq: int | None) -> None:
        with self._lock:
            if last_seq is not None:
                self._base_seq = last_seq
            self._read_since_write = False

    def _expected_seq(self) -> int | None:
        with self._lock:
            return self._base_seq if self.optimistic else None

    # -- reading ---------------------------------------------------------------------------

    def _window_limit(self) -> int:
        return min(self.window or _CONTEXT_PAGE, _CONTEXT_PAGE)

    def _complete(self, window_entries: Sequence[Entry], rest: Sequence[Entry]) -> list[BaseMessage]:
        entries = list(rest) if rest else list(window_entries)
        if self.window is not None:
            entries = entries[-self.window :]
        return [entry_to_message(e) for e in entries]

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The context window (see the class documentation). Raises a pending
        :class:`HistoryWriteFailed` first, if there is one."""
        self._raise_pending()
        client = self._sync_client()
        try:
            window = client.context(self.session_id, limit=self._window_limit())
        except SessionNotFound:
            self._observe_read(0)
            return []
        rest: list[Entry] = []
        if len(window.entries) == _CONTEXT_PAGE and self.window != _CONTEXT_PAGE:
            # Longer than one page: read the whole window at the same head.
            for entry in client.messages(self.session_id, after_seq=window.context_start_seq):
                if entry.seq > window.last_seq:
                    break
                if entry.kind == "message":
                    rest.append(entry)
        result = self._complete(window.entries, rest)
        self._observe_read(window.last_seq)
        return result

    async def aget_messages(self) -> list[BaseMessage]:
        """Async :attr:`messages`."""
        self._raise_pending()
        if self._async_client is not None:
            return await self._aread(self._async_client)
        async with self._new_async_client() as client:
            return await self._aread(client)

    async def _aread(self, client: AsyncClient) -> list[BaseMessage]:
        try:
            window = await client.context(self.session_id, limit=self._window_limit())
        except SessionNotFound:
            self._observe_read(0)
            return []
        rest: list[Entry] = []
        if len(window.entries) == _CONTEXT_PAGE and self.window != _CONTEXT_PAGE:
            async for entry in client.messages(
                self.session_id, after_seq=window.context_start_seq
            ):
                if entry.seq > window.last_seq:
                    break
                if entry.kind == "message":
                    rest.append(entry)
        result = self._complete(window.entries, rest)
        self._observe_read(window.last_seq)
        return result

    # -- writing ---------------------------------------------------------------------------

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Appends the messages as one atomic run. Raises on failure, after recording it
        (see the class documentation)."""
        self._raise_pending()
        batch = list(messages)
        if not batch:
            return
        request: dict[str, Any] | None = None
        try:
            request = self._build_request(batch)
            client = self._sync_client()
            try:
                result = client.append(
                    self.session_id,
                    request["wire"],
                    expected_seq=request["expected_seq"],
                    idempotency_key=request["idempotency_key"],
                )
            except SeqConflict as conflict:
                if self.on_conflict != "append":
                    raise
                request = self._fallback_request(request, conflict)
                result = client.append(
                    self.session_id, request["wire"], idempotency_key=request["idempotency_key"]
                )
        except Exception as exc:
            self._observe_write(None)
            self._record_failure("add_messages", batch, exc, request)
            raise
        self._observe_write(result.last_seq)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Async :meth:`add_messages`."""
        self._raise_pending()
        batch = list(messages)
        if not batch:
            return
        request: dict[str, Any] | None = None
        try:
            request = self._build_request(batch)
            if self._async_client is not None:
                result = await self._aappend(self._async_client, request)
            else:
                async with self._new_async_client() as client:
                    result = await self._aappend(client, request)
        except Exception as exc:
            self._observe_write(None)
            self._record_failure("add_messages", batch, exc, request)
            raise
        self._observe_write(result.last_seq)

    async def _aappend(self, client: AsyncClient, request: dict[str, Any]) -> AppendResult:
        try:
            return await client.append(
                self.session_id,
                request["wire"],
                expected_seq=request["expected_seq"],
                idempotency_key=request["idempotency_key"],
            )
        except SeqConflict as conflict:
            if self.on_conflict != "append":
                raise
            fallback = self._fallback_request(request, conflict)
            request.update(fallback)
            return await client.append(
                self.session_id, request["wire"], idempotency_key=request["idempotency_key"]
            )

    def _build_request(self, batch: list[BaseMessage]) -> dict[str, Any]:
        return {
            "wire": [message_to_entry(m, self.metadata) for m in batch],
            "expected_seq": self._expected_seq(),
            "idempotency_key": _new_idempotency_key(),
        }

    def _fallback_request(self, request: dict[str, Any], conflict: SeqConflict) -> dict[str, Any]:
        logger.warning(
            "chat history %r: expected seq %s but the session is at %s; on_conflict='append' "
            "appends this turn after the other writer's entries",
            self.session_id,
            request["expected_seq"],
            conflict.current_seq,
        )
        return {
            "wire": request["wire"],
            "expected_seq": None,
            # Another body needs another key; nothing was written under the first one.
            "idempotency_key": request["idempotency_key"] + "-append",
        }

    def add_user_message(self, message: HumanMessage | str) -> None:
        """Appends a :class:`HumanMessage` (a string becomes one)."""
        self.add_messages([message if isinstance(message, HumanMessage) else HumanMessage(content=message)])

    def add_ai_message(self, message: AIMessage | str) -> None:
        """Appends an :class:`AIMessage` (a string becomes one)."""
        self.add_messages([message if isinstance(message, AIMessage) else AIMessage(content=message)])

    async def aadd_user_message(self, message: HumanMessage | str) -> None:
        """Async :meth:`add_user_message` (as community histories offer)."""
        await self.aadd_messages(
            [message if isinstance(message, HumanMessage) else HumanMessage(content=message)]
        )

    async def aadd_ai_message(self, message: AIMessage | str) -> None:
        """Async :meth:`add_ai_message` (as community histories offer)."""
        await self.aadd_messages(
            [message if isinstance(message, AIMessage) else AIMessage(content=message)]
        )

    def clear(self) -> None:
        """Appends a ``context_reset``: ``messages`` is empty afterwards, and the ledger
        keeps everything. Clearing a session that does not exist yet does nothing."""
        self._raise_pending()
        try:
            result = self._sync_client().reset(self.session_id, metadata=self.metadata)
        except SessionNotFound:
            self._observe_write(0)
            return
        except Exception as exc:
            self._observe_write(None)
            self._record_failure("clear", [], exc, None)
            raise
        self._observe_write(result.last_seq)

    async def aclear(self) -> None:
        """Async :meth:`clear`."""
        self._raise_pending()
        try:
            if self._async_client is not None:
                result = await self._async_client.reset(self.session_id, metadata=self.metadata)
            else:
                async with self._new_async_client() as client:
                    result = await client.reset(self.session_id, metadata=self.metadata)
        except SessionNotFound:
            self._observe_write(0)
            return
        except Exception as exc:
            self._observe_write(None)
            self._record_failure("clear", [], exc, None)
            raise
        self._observe_write(result.last_seq)

    # -- recovery --------------------------------------------------------------------------

    def retry_failed_write(self, failure: HistoryWriteFailed) -> AppendResult:
        """Resends the exact request of a failed ``add_messages`` (same body, same
        idempotency key) and removes ``failure`` from the pending ones.

        If the first attempt was stored after all (a connection that broke after the
        commit), this returns its original result and writes nothing; if it was not, this
        writes it now, or raises :class:`chatledger.SeqConflict` when the session has moved
        on (then ``add_messages(failure.messages)`` appends the messages at the end).
        """
        request = self._request_of(failure)
        result = self._sync_client().append(
            self.session_id,
            request["wire"],
            expected_seq=request["expected_seq"],
            idempotency_key=request["idempotency_key"],
        )
        self._forget(failure)
        self._observe_write(result.last_seq)
        return result

    async def aretry_failed_write(self, failure: HistoryWriteFailed) -> AppendResult:
        """Async :meth:`retry_failed_write`."""
        request = self._request_of(failure)
        if self._async_client is not None:
            client = self._async_client
            result = await client.append(
                self.session_id,
                request["wire"],
                expected_seq=request["expected_seq"],
                idempotency_key=request["idempotency_key"],
            )
        else:
            async with self._new_async_client() as client:
                result = await client.append(
                    self.session_id,
                    request["wire"],
                    expected_seq=request["expected_seq"],
                    idempotency_key=request["idempotency_key"],
                )
        self._forget(failure)
        self._observe_write(result.last_seq)
        return result

    def _request_of(self, failure: HistoryWriteFailed) -> dict[str, Any]:
        if failure.session_id != self.session_id:
            raise ValueError("that failure belongs to another session")
        if failure.operation != "add_messages" or failure.request is None:
            raise ValueError("only a failed add_messages with a built request can be resent")
        return failure.request

    def _forget(self, failure: HistoryWriteFailed) -> None:
        with _pending_lock:
            failures = _pending.get(self._pending_key)
            if failures and failure in failures:
                failures.remove(failure)
                if not failures:
                    del _pending[self._pending_key]
