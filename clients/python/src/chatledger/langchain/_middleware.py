"""``ChatLedgerMiddleware``: chatledger as the memory of a LangChain 1.x ``create_agent``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from langchain.agents.middleware import AgentMiddleware, AgentState
from langchain.agents.middleware.types import PrivateStateAttr
from langchain_core.messages import BaseMessage, RemoveMessage
from langgraph.graph.message import REMOVE_ALL_MESSAGES
from langgraph.runtime import Runtime
from typing_extensions import NotRequired

from .._client import AsyncClient, Client, context_json_call, new_idempotency_key
from .._errors import SeqConflict, SessionNotFound
from .._models import AppendResult
from .._retry import Retry
from .._settings import Settings, resolve_settings
from ._convert import message_of_entry, message_to_entry
from ._turns import OnConflict, TurnWrite

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
      nothing is swallowed. When another writer appended to the session during the turn,
      ``on_conflict="append"`` (default) records the turn anyway, right after the other
      writer's entries, flagged ``{"chatledger": {"stale_context": {"expected_seq": e,
      "current_seq": c}}}`` in each entry's metadata, and logs a warning; ``"raise"``
      raises :class:`chatledger.SeqConflict` and stores nothing.

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
        on_conflict: OnConflict = "append",
        metadata: Mapping[str, Any] | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        if on_conflict not in ("append", "raise"):
            raise ValueError(f"on_conflict must be 'append' or 'raise', not {on_conflict!r}")
        if not 1 <= context_limit <= 1000:
            raise ValueError("context_limit must be between 1 and 1000")
        known = client or async_client
        settings = resolve_settings(
            url, api_key, base=known.settings if known else None, retry=retry, timeout=timeout
        )
        self.settings: Settings = settings
        self._client = client if client is not None and client.settings == settings else None
        self._async_client = (
            async_client if async_client is not None and async_client.settings == settings else None
        )
        self._session_id = session_id
        self.context_limit = context_limit
        self.on_conflict: OnConflict = on_conflict
        self.metadata = dict(metadata) if metadata else None
        self.tools = []

    def _sync(self) -> Client:
        if self._client is None:
            self._client = Client.shared(settings=self.settings)
        return self._client

    def _async(self) -> AsyncClient:
        if self._async_client is None:
            self._async_client = AsyncClient.shared(settings=self.settings)
        return self._async_client

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
        self, session_id: str, window: dict[str, Any] | None, state: ChatLedgerState
    ) -> dict[str, Any]:
        history: list[BaseMessage] = []
        if window is not None:
            for entry in window["entries"]:
                message = message_of_entry(entry)
                if message.id is None:
                    message.id = f"chatledger-{session_id}-{entry['seq']}"
                history.append(message)
        return {
            "messages": [RemoveMessage(id=REMOVE_ALL_MESSAGES), *history, *state["messages"]],
            "chatledger_session_id": session_id,
            "chatledger_base_seq": window["last_seq"] if window is not None else 0,
            "chatledger_history_ids": [m.id for m in history],
        }

    def _turn(self, state: ChatLedgerState) -> TurnWrite | None:
        if "chatledger_session_id" not in state:
            raise RuntimeError("ChatLedgerMiddleware: after_agent ran without before_agent")
        known = set(state.get("chatledger_history_ids", []))
        turn = [m for m in state["messages"] if m.id not in known]
        if not turn:
            return None
        wire = [message_to_entry(m, self.metadata) for m in turn]
        return TurnWrite(
            state["chatledger_session_id"],
            wire,
            state.get("chatledger_base_seq", 0),
            new_idempotency_key(),
            self.on_conflict,
        )

    def before_agent(self, state: ChatLedgerState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        session_id = self._resolve_session_id(runtime)
        try:
            window: dict[str, Any] | None = self._sync()._execute(
                context_json_call(session_id, self.context_limit, "chat")
            )
        except SessionNotFound:
            window = None
        return self._loaded(session_id, window, state)

    async def abefore_agent(
        self, state: ChatLedgerState, runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        session_id = self._resolve_session_id(runtime)
        try:
            window: dict[str, Any] | None = await self._async()._execute(
                context_json_call(session_id, self.context_limit, "chat")
            )
        except SessionNotFound:
            window = None
        return self._loaded(session_id, window, state)

    def after_agent(self, state: ChatLedgerState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        plan = self._turn(state)
        if plan is None:
            return None
        client = self._sync()
        call = plan.first()
        while True:
            try:
                return self._written(client._execute(call))
            except SeqConflict as conflict:
                call = plan.conflict(conflict)

    async def aafter_agent(
        self, state: ChatLedgerState, runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        plan = self._turn(state)
        if plan is None:
            return None
        client = self._async()
        call = plan.first()
        while True:
            try:
                return self._written(await client._execute(call))
            except SeqConflict as conflict:
                call = plan.conflict(conflict)

    def _written(self, result: AppendResult) -> dict[str, Any]:
        return {"chatledger_base_seq": result.last_seq}
