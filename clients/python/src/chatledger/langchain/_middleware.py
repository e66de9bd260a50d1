"""``ChatLedgerMiddleware``: chatledger as the memory of a LangChain 1.x ``create_agent``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import httpx
from langchain.agents.middleware import AgentMiddleware, AgentState
from langchain.agents.middleware.types import PrivateStateAttr
from langchain_core.messages import BaseMessage, RemoveMessage
from langgraph.graph.message import REMOVE_ALL_MESSAGES
from langgraph.runtime import Runtime
from typing_extensions import NotRequired

from .._client import AsyncClient, Client, Retry, _new_idempotency_key
from .._errors import SeqConflict, SessionNotFound
from .._models import AppendResult, ContextWindow
from ._convert import entry_to_message, message_to_entry
from ._history import OnConflict, shared_client

__all__ = ["ChatLedgerMiddleware", "ChatLedgerState"]

logger = logging.getLogger("chatledger.langchain")


class ChatLedgerState(AgentState):  # type: ignore[type-arg]
    """Agent state with what the middleware remembers between its two hooks."""

    chatledger_session_id: NotRequired[Annotated[str, PrivateStateAttr]]
    chatledger_base_seq: NotRequired[Annotated[int, PrivateStateAttr]]
    chatledger_history_ids: NotRequired[Annotated[list[str], PrivateStateAttr]]


SessionIdSource = str | Callable[[Runtime[Any]], str] | None


class ChatLedgerMiddleware(AgentMiddleware[ChatLedgerState, Any]):
    """Loads the session's context window before the agent runs and appends the turn after.

    ``create_agent(model, tools, middleware=[ChatLedgerMiddleware(url=..., api_key=...)])``,
    then ``agent.invoke({"messages": [HumanMessage("hi")]}, config={"configurable":
    {"session_id": "user-42"}})`` (or ``thread_id``; or a runtime ``context`` with a
    ``session_id`` attribute or key; or pass ``session_id`` here: a string or a function of
    the runtime).

    - ``before_agent``: reads the last ``context_limit`` messages after the latest reset and
      puts them before the invocation's input messages, so the model sees the conversation.
    - ``after_agent``: appends the turn (the input messages and everything the agent added:
      AI messages, tool calls, tool results) as one atomic run, with ``expected_seq`` set to
      the seq the history was read at. A failure raises out of ``invoke``/``ainvoke``:
      nothing is swallowed. On a :class:`chatledger.SeqConflict` (another writer appended to
      the session during the turn), ``on_conflict="raise"`` (default) raises it and stores
      nothing, ``"append"`` appends the turn after the other writer's entries.

    chatledger is then the agent's conversation memory: do not also keep messages in a
    checkpointer for the same thread, or the history would be loaded twice.
    """

    state_schema = ChatLedgerState

    def __init__(
        self,
        *,
        url: str | None = None,
        api_key: str | None = None,
        client: Client | None = None,
        async_client: AsyncClient | None = None,
        session_id: SessionIdSource = None,
        context_limit: int = 50,
        on_conflict: OnConflict = "raise",
        metadata: Mapping[str, Any] | None = None,
        retry: Retry | None = None,
        timeout: float | httpx.Timeout = 10.0,
    ) -> None:
        super().__init__()
        if on_conflict not in ("raise", "append"):
            raise ValueError(f"on_conflict must be 'raise' or 'append', not {on_conflict!r}")
        if not 1 <= context_limit <= 1000:
            raise ValueError("context_limit must be between 1 and 1000")
        known = client or async_client
        url = url or (known.base_url if known else None)
        api_key = api_key or (known._api_key if known else None)
        if not url or not api_key:
            raise ValueError("ChatLedgerMiddleware needs url and api_key, or a client")
        self._url = url
        self._api_key = api_key
        self._retry = retry
        self._timeout = timeout
        self._client = client or shared_client(url, api_key, retry, timeout)
        self._async_client = async_client
        self._session_id = session_id
        self.context_limit = context_limit
        self.on_conflict: OnConflict = on_conflict
        self.metadata = dict(metadata) if metadata else None
        self.tools = []

    # -- session id ------------------------------------------------------------------------

    def _resolve_session_id(self, runtime: Runtime[Any]) -> str:
        source = self._session_id
        if isinstance(source, str):
            return source
        if callable(source):
            return source(runtime)
        context = getattr(runtime, "context", None)
        found = getattr(context, "session_id", None)
        if found is None and isinstance(context, Mapping):
            found = context.get("session_id")
        if found is None:
            from langgraph.config import get_config

            try:
                configurable = get_config().get("configurable", {})
            except RuntimeError:
                configurable = {}
            found = configurable.get("session_id") or configurable.get("thread_id")
        if not isinstance(found, str) or not found:
            raise ValueError(
                "ChatLedgerMiddleware: no session id; pass config={'configurable': "
                "{'session_id': ...}}, a runtime context with session_id, or session_id=..."
            )
        return found

    # -- hooks -----------------------------------------------------------------------------

    def _loaded(
        self, session_id: str, window: ContextWindow | None, state: ChatLedgerState
    ) -> dict[str, Any]:
        history: list[BaseMessage] = []
        if window is not None:
            for entry in window.entries:
                message = entry_to_message(entry)
                if message.id is None:
                    message.id = f"chatledger-{session_id}-{entry.seq}"
                history.append(message)
        return {
            "messages": [RemoveMessage(id=REMOVE_ALL_MESSAGES), *history, *state["messages"]],
            "chatledger_session_id": session_id,
            "chatledger_base_seq": window.last_seq if window is not None else 0,
            "chatledger_history_ids": [m.id for m in history],
        }

    def _turn(self, state: ChatLedgerState) -> tuple[str, int, list[dict[str, Any]]]:
        if "chatledger_session_id" not in state:
            raise RuntimeError("ChatLedgerMiddleware: after_agent ran without before_agent")
        known = set(state.get("chatledger_history_ids", []))
        turn = [m for m in state["messages"] if m.id not in known]
        wire = [message_to_entry(m, self.metadata) for m in turn]
        return state["chatledger_session_id"], state.get("chatledger_base_seq", 0), wire

    def before_agent(self, state: ChatLedgerState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        session_id = self._resolve_session_id(runtime)
        try:
            window: ContextWindow | None = self._client.context(
                session_id, limit=self.context_limit
            )
        except SessionNotFound:
            window = None
        return self._loaded(session_id, window, state)

    async def abefore_agent(
        self, state: ChatLedgerState, runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        session_id = self._resolve_session_id(runtime)
        try:
            if self._async_client is not None:
                window: ContextWindow | None = await self._async_client.context(
                    session_id, limit=self.context_limit
                )
            else:
                async with self._new_async_client() as client:
                    window = await client.context(session_id, limit=self.context_limit)
        except SessionNotFound:
            window = None
        return self._loaded(session_id, window, state)

    def after_agent(self, state: ChatLedgerState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        session_id, base_seq, wire = self._turn(state)
        if not wire:
            return None
        key = _new_idempotency_key()
        try:
            result = self._client.append(session_id, wire, expected_seq=base_seq, idempotency_key=key)
        except SeqConflict as conflict:
            if self.on_conflict != "append":
                raise
            self._warn_conflict(session_id, base_seq, conflict)
            result = self._client.append(session_id, wire, idempotency_key=key + "-append")
        return self._written(result)

    async def aafter_agent(
        self, state: ChatLedgerState, runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        session_id, base_seq, wire = self._turn(state)
        if not wire:
            return None
        if self._async_client is not None:
            result = await self._aappend(self._async_client, session_id, base_seq, wire)
        else:
            async with self._new_async_client() as client:
                result = await self._aappend(client, session_id, base_seq, wire)
        return self._written(result)

    async def _aappend(
        self, client: AsyncClient, session_id: str, base_seq: int, wire: list[dict[str, Any]]
    ) -> AppendResult:
        key = _new_idempotency_key()
        try:
            return await client.append(session_id, wire, expected_seq=base_seq, idempotency_key=key)
        except SeqConflict as conflict:
            if self.on_conflict != "append":
                raise
            self._warn_conflict(session_id, base_seq, conflict)
            return await client.append(session_id, wire, idempotency_key=key + "-append")

    def _written(self, result: AppendResult) -> dict[str, Any]:
        return {"chatledger_base_seq": result.last_seq}

    def _warn_conflict(self, session_id: str, base_seq: int, conflict: SeqConflict) -> None:
        logger.warning(
            "session %r: read at seq %s but now at %s; on_conflict='append' appends the turn "
            "after the other writer's entries",
            session_id,
            base_seq,
            conflict.current_seq,
        )

    def _new_async_client(self) -> AsyncClient:
        return AsyncClient(self._url, self._api_key, retry=self._retry, timeout=self._timeout)
