"""``RunnableWithLedgerHistory``: ``RunnableWithMessageHistory`` that raises a failed write."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.history import RunnableWithMessageHistory

from . import _surfacing

__all__ = ["RunnableWithLedgerHistory"]


def _raise_swallowed(scope: _surfacing.TurnScope) -> None:
    if scope.failures:
        raise scope.failures[0]


class RunnableWithLedgerHistory(RunnableWithMessageHistory):
    """``RunnableWithMessageHistory`` whose call fails when its history write failed.

    LangChain's ``RunnableWithMessageHistory`` writes the turn (input and answer) from an
    ``on_end`` listener and only logs what that write raises, so ``invoke`` returns the
    answer even though the turn was never stored: a web app would answer 200 for it. This
    subclass takes the same arguments and behaves the same, except that ``invoke``,
    ``ainvoke``, ``stream``, ``astream``, ``batch`` and ``abatch`` raise
    :class:`~chatledger.langchain.HistoryWriteFailed` (its ``error`` the original exception,
    its ``messages`` the turn) when a :class:`~chatledger.langchain.ChatLedgerMessageHistory`
    write of that very call failed. Nothing is kept for later: the failure is raised once,
    here. ``get_session_history`` defaults to ``ChatLedgerMessageHistory(session_id)``
    configured from ``$CHATLEDGER_URL`` and ``$CHATLEDGER_API_KEY``.
    """

    def __init__(
        self,
        runnable: Runnable[Any, Any],
        get_session_history: Callable[..., BaseChatMessageHistory] | None = None,
        **kwargs: Any,
    ) -> None:
        if get_session_history is None:
            from ._history import ChatLedgerMessageHistory

            def get_session_history(session_id: str) -> BaseChatMessageHistory:
                return ChatLedgerMessageHistory(session_id)

        super().__init__(runnable, get_session_history, **kwargs)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        scope, token = _surfacing.enter_scope()
        try:
            output = super().invoke(input, config, **kwargs)
        finally:
            _surfacing.leave_scope(token)
        _raise_swallowed(scope)
        return output

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        scope, token = _surfacing.enter_scope()
        try:
            output = await super().ainvoke(input, config, **kwargs)
        finally:
            _surfacing.leave_scope(token)
        _raise_swallowed(scope)
        return output

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        scope, token = _surfacing.enter_scope()
        try:
            yield from super().stream(input, config, **kwargs)
        finally:
            _surfacing.leave_scope(token)
        _raise_swallowed(scope)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        scope, token = _surfacing.enter_scope()
        try:
            async for chunk in super().astream(input, config, **kwargs):
                yield chunk
        finally:
            _surfacing.leave_scope(token)
        _raise_swallowed(scope)

    def batch(
        self,
        inputs: list[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        # Runnable's own batch runs invoke per input (a binding would bypass it).
        return Runnable.batch(self, inputs, config, return_exceptions=return_exceptions, **kwargs)

    async def abatch(
        self,
        inputs: list[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        return await Runnable.abatch(self, inputs, config, return_exceptions=return_exceptions, **kwargs)
