"""``ChatLedgerMessageHistory``: a LangChain chat message history stored in chatledger."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from .._client import AsyncClient, Client, append_call, new_idempotency_key, reset_call
from .._errors import ChatLedgerError, SeqConflict, SessionNotFound
from .._models import AppendResult
from .._retry import Retry
from .._settings import Settings, resolve_settings
from . import _surfacing
from ._convert import message_of_entry, message_to_entry
from ._turns import PARALLEL_PAGES, OnConflict, TurnWrite, WindowRead

__all__ = ["ChatLedgerMessageHistory", "HistoryWriteFailed", "OnConflict"]

logger = logging.getLogger("chatledger.langchain")


_pages: ThreadPoolExecutor | None = None
_pages_lock = threading.Lock()


def _page_executor() -> ThreadPoolExecutor:
    """Threads that fetch the pages of a long window concurrently (shared by the process)."""
    global _pages
    if _pages is None:
        with _pages_lock:
            if _pages is None:
                _pages = ThreadPoolExecutor(PARALLEL_PAGES, thread_name_prefix="chatledger-pages")
    return _pages


def _forget_page_threads() -> None:
    global _pages
    _pages = None  # a forked child has none of the parent's threads


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_page_threads)


class HistoryWriteFailed(ChatLedgerError):
    """A write of a chat history failed, so its messages are not in the ledger.

    Raised by :class:`RunnableWithLedgerHistory` from the very ``invoke``/``ainvoke`` whose
    write failed (``RunnableWithMessageHistory`` alone would only log it), and, as a
    fallback without that wrapper, by the next read or write of the same session in this
    process (once). Also handed at once to the history's ``on_write_error`` callback. Code
    that calls ``add_messages`` itself gets the original exception instead, and never this.

    ``error`` is the original exception (also ``__cause__``); ``messages`` are the LangChain
    messages that were not stored (empty for a failed ``clear``); ``request`` is the request
    that failed. :meth:`ChatLedgerMessageHistory.retry_failed_write` resends that very
    request (same idempotency key), which can never store the turn twice.
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


class ChatLedgerMessageHistory(BaseChatMessageHistory):
    """A LangChain chat message history stored in a chatledger session.

    ``ChatLedgerMessageHistory(session_id, url="http://127.0.0.1:8080", api_key=KEY)``;
    ``url`` and ``api_key`` default to those of ``client`` if one is given, then to
    ``$CHATLEDGER_URL`` and ``$CHATLEDGER_API_KEY``. Objects are cheap: they share one
    pooled client per server, key and settings (and, for async, per event loop), so make one
    per request as ``get_session_history`` factories do.

    - ``messages`` / ``aget_messages()``: the context window, i.e. every message after the
      latest ``clear()`` (or its last ``window`` messages), exactly as they were added: type,
      content, ids, names, tool calls, chunks, usage, kwargs. One request for up to 1000
      messages; longer windows are read backwards in pages at the same head.
    - ``add_messages`` / ``aadd_messages``: one atomic append (contiguous seqs) per call,
      with a fresh idempotency key that the client's retries reuse.
    - ``clear`` / ``aclear``: appends a ``context_reset``; nothing is erased.

    **Concurrency.** With ``optimistic=True`` (default) a write states the session's last
    seq as this object saw it (``expected_seq``): the ``last_seq`` of the first read after
    this object's previous write (the read its turn is based on), or of its previous write.
    If another writer got there first, ``on_conflict`` decides: ``"append"`` (default)
    records the turn anyway, right after the other writer's entries, flagged in each
    entry's metadata as ``{"chatledger": {"stale_context": {"expected_seq": e,
    "current_seq": c}}}``, and logs a warning; ``"raise"`` stores nothing and raises
    :class:`chatledger.SeqConflict`. ``clear()`` never checks. An object that never read
    appends at the end.

    **Failures are never silent, and never raised twice.** A failed write raises its
    exception to whoever called it and calls ``on_write_error`` at once. When the caller is
    LangChain's ``RunnableWithMessageHistory`` (which logs the exceptions of its writes and
    returns the answer anyway), :class:`RunnableWithLedgerHistory` raises it from that very
    ``invoke``; without the wrapper, the next read or write of the same session in this
    process raises it once as :class:`HistoryWriteFailed`.
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
        on_conflict: OnConflict = "append",
        on_write_error: Callable[[HistoryWriteFailed], Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
    ) -> None:
        if on_conflict not in ("append", "raise"):
            raise ValueError(f"on_conflict must be 'append' or 'raise', not {on_conflict!r}")
        if window is not None and window < 1:
            raise ValueError("window must be at least 1")
        known = client or async_client
        settings = resolve_settings(
            url, api_key, base=known.settings if known else None, retry=retry, timeout=timeout
        )
        self.session_id = session_id
        self.window = window
        self.optimistic = optimistic
        self.on_conflict: OnConflict = on_conflict
        self.on_write_error = on_write_error
        self.metadata = dict(metadata) if metadata else None
        self._settings = settings
        self._client = client if client is not None and client.settings == settings else None
        self._async_client = (
            async_client if async_client is not None and async_client.settings == settings else None
        )
        self._lock = threading.Lock()
        self._base_seq: int | None = None
        self._read_since_write = False
        self._snapshot: list[BaseMessage] | None = None

    @property
    def url(self) -> str:
        return self._settings.base_url

    @property
    def settings(self) -> Settings:
        """The settings of the clients this history uses."""
        return self._settings

    def __repr__(self) -> str:
        return f"ChatLedgerMessageHistory({self.session_id!r}, url={self.url!r})"

    @property
    def _key(self) -> tuple[str, str, str]:
        return (self._settings.base_url, self._settings.api_key, self.session_id)

    # -- clients ---------------------------------------------------------------------------

    def _sync(self) -> Client:
        if self._client is None:
            self._client = Client.shared(settings=self._settings)
        return self._client

    def _async(self) -> AsyncClient:
        if self._async_client is None:
            self._async_client = AsyncClient.shared(settings=self._settings)
        return self._async_client

    # -- failures --------------------------------------------------------------------------

    def _raise_unreported(self) -> None:
        failure = _surfacing.take_unreported(self._key)
        if failure is not None:
            raise failure

    def _raise_unreported_before_writing(self) -> None:
        # A write that LangChain itself makes (after a turn) would have the kept failure
        # swallowed again, and its own turn lost with it: it writes, and leaves the failure
        # to the next read, which runs in the caller's code.
        if not _surfacing.swallowed_by_langchain(depth=4):
            self._raise_unreported()

    @property
    def pending_failures(self) -> list[HistoryWriteFailed]:
        """Writes of this session that ``RunnableWithMessageHistory`` swallowed outside a
        :class:`RunnableWithLedgerHistory`, not yet raised (oldest first)."""
        return _surfacing.peek_unreported(self._key)

    def acknowledge_failures(self) -> list[HistoryWriteFailed]:
        """Removes and returns :attr:`pending_failures`, so that the next read or write does
        not raise them (for code that learnt of them through ``on_write_error``)."""
        return _surfacing.drop_unreported(self._key)

    def _failed(
        self,
        operation: Literal["add_messages", "clear"],
        messages: list[BaseMessage],
        error: BaseException,
        request: dict[str, Any] | None,
    ) -> None:
        with self._lock:
            self._read_since_write = False
            self._snapshot = None
        failure = HistoryWriteFailed(
            session_id=self.session_id,
            operation=operation,
            messages=messages,
            error=error,
            request=request,
        )
        if _surfacing.swallowed_by_langchain(depth=3):
            logger.error("%s", failure)
            scope = _surfacing.current_scope()
            if scope is not None:
                scope.failures.append(failure)
            else:
                _surfacing.keep_for_next_use(self._key, failure)
        if self.on_write_error is not None:
            try:
                self.on_write_error(failure)
            except Exception:
                logger.exception("the on_write_error callback of %r raised", self)

    # -- sequence bookkeeping --------------------------------------------------------------

    def _observe_read(self, last_seq: int, messages: list[BaseMessage]) -> None:
        with self._lock:
            if not self._read_since_write:
                self._base_seq = last_seq
                self._read_since_write = True
                self._snapshot = list(messages)

    def _observe_write(self, last_seq: int | None) -> None:
        with self._lock:
            if last_seq is not None:
                self._base_seq = last_seq
            self._read_since_write = False
            self._snapshot = None

    def _expected_seq(self) -> int | None:
        with self._lock:
            return self._base_seq if self.optimistic else None

    def _cached_second_read(self) -> list[BaseMessage] | None:
        # RunnableWithMessageHistory without history_messages_key reads the history again
        # after the model call and cuts that many messages off the turn's input; answering
        # that read from the first one keeps the new input whole even when the session grew.
        snapshot = self._snapshot
        if snapshot is not None and _surfacing.inside_exit_listener(depth=3):
            return list(snapshot)
        return None

    # -- reading ---------------------------------------------------------------------------

    def _finish_read(self, plan: WindowRead) -> list[BaseMessage]:
        messages = [message_of_entry(e) for e in plan.entries()]
        self._observe_read(plan.head or 0, messages)
        return messages

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The context window (see the class documentation). Raises a kept
        :class:`HistoryWriteFailed` first, if there is one."""
        self._raise_unreported()
        cached = self._cached_second_read()
        if cached is not None:
            return cached
        client = self._sync()
        plan = WindowRead(self.session_id, self.window)
        try:
            calls = plan.feed_first(client._execute(plan.first_call()))
            while calls:
                if len(calls) == 1:
                    before, call = calls[0]
                    answers = [(before, client._execute(call))]
                else:
                    pages = _page_executor().map(lambda bc: (bc[0], client._execute(bc[1])), calls)
                    answers = list(pages)
                calls = plan.feed_pages(answers)
        except SessionNotFound:
            plan.not_found()
        return self._finish_read(plan)

    async def aget_messages(self) -> list[BaseMessage]:
        """Async :attr:`messages`."""
        self._raise_unreported()
        cached = self._cached_second_read()
        if cached is not None:
            return cached
        client = self._async()
        plan = WindowRead(self.session_id, self.window)
        try:
            calls = plan.feed_first(await client._execute(plan.first_call()))
            while calls:
                limit = asyncio.Semaphore(PARALLEL_PAGES)

                async def page(before: int, call: Any) -> tuple[int, Any]:
                    async with limit:
                        return before, await client._execute(call)

                answers = list(await asyncio.gather(*(page(b, c) for b, c in calls)))
                calls = plan.feed_pages(answers)
        except SessionNotFound:
            plan.not_found()
        return self._finish_read(plan)

    # -- writing ---------------------------------------------------------------------------

    def _plan(self, batch: list[BaseMessage]) -> TurnWrite:
        wire = [message_to_entry(m, self.metadata) for m in batch]
        return TurnWrite(self.session_id, wire, self._expected_seq(), new_idempotency_key(), self.on_conflict)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Appends the messages as one atomic run (see the class documentation)."""
        self._raise_unreported_before_writing()
        batch = list(messages)
        if not batch:
            return
        plan: TurnWrite | None = None
        try:
            plan = self._plan(batch)
            client = self._sync()
            call = plan.first()
            while True:
                try:
                    result = client._execute(call)
                    break
                except SeqConflict as conflict:
                    call = plan.conflict(conflict)
        except Exception as exc:
            self._failed("add_messages", batch, exc, plan.current if plan else None)
            raise
        self._observe_write(result.last_seq)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Async :meth:`add_messages`."""
        self._raise_unreported_before_writing()
        batch = list(messages)
        if not batch:
            return
        plan: TurnWrite | None = None
        try:
            plan = self._plan(batch)
            client = self._async()
            call = plan.first()
            while True:
                try:
                    result = await client._execute(call)
                    break
                except SeqConflict as conflict:
                    call = plan.conflict(conflict)
        except Exception as exc:
            self._failed("add_messages", batch, exc, plan.current if plan else None)
            raise
        self._observe_write(result.last_seq)

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
        self._raise_unreported()
        try:
            result = self._sync()._execute(reset_call(self.session_id, None, self.metadata, None))
        except SessionNotFound:
            self._observe_write(0)
            return
        except Exception as exc:
            self._failed("clear", [], exc, None)
            raise
        self._observe_write(result.last_seq)

    async def aclear(self) -> None:
        """Async :meth:`clear`."""
        self._raise_unreported()
        try:
            result = await self._async()._execute(reset_call(self.session_id, None, self.metadata, None))
        except SessionNotFound:
            self._observe_write(0)
            return
        except Exception as exc:
            self._failed("clear", [], exc, None)
            raise
        self._observe_write(result.last_seq)

    # -- recovery --------------------------------------------------------------------------

    def retry_failed_write(self, failure: HistoryWriteFailed) -> AppendResult:
        """Resends the exact request of a failed ``add_messages`` (same body, same
        idempotency key) and forgets ``failure`` if it was kept for the next use.

        If the first attempt was stored after all (a connection that broke after the
        commit), this returns its original result and writes nothing; if it was not, this
        writes it now, or raises :class:`chatledger.SeqConflict` when the session has moved
        on (then ``add_messages(failure.messages)`` appends the messages at the end).
        """
        request = self._request_of(failure)
        result = self._sync()._execute(
            append_call(self.session_id, request["wire"], request["expected_seq"], request["idempotency_key"])
        )
        _surfacing.drop_unreported(self._key, failure)
        self._observe_write(result.last_seq)
        return result

    async def aretry_failed_write(self, failure: HistoryWriteFailed) -> AppendResult:
        """Async :meth:`retry_failed_write`."""
        request = self._request_of(failure)
        result = await self._async()._execute(
            append_call(self.session_id, request["wire"], request["expected_seq"], request["idempotency_key"])
        )
        _surfacing.drop_unreported(self._key, failure)
        self._observe_write(result.last_seq)
        return result

    def _request_of(self, failure: HistoryWriteFailed) -> dict[str, Any]:
        if failure.session_id != self.session_id:
            raise ValueError("that failure belongs to another session")
        if failure.operation != "add_messages" or failure.request is None:
            raise ValueError("only a failed add_messages with a built request can be resent")
        return failure.request
