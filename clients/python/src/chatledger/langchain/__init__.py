"""LangChain integration of chatledger (``pip install chatledger[langchain]``).

- :class:`ChatLedgerMessageHistory`: a ``BaseChatMessageHistory`` (for
  ``RunnableWithMessageHistory`` and code written against the Redis, Postgres or in-memory
  histories), lossless for every message type, recording every turn.
- :class:`RunnableWithLedgerHistory`: ``RunnableWithMessageHistory`` whose ``invoke`` fails
  when the turn could not be stored (LangChain alone logs that and answers anyway). The
  recommended wiring.
- :class:`ChatLedgerMiddleware`: agent middleware for LangChain 1.x ``create_agent``, the
  forward path (imported lazily: it needs the ``langchain`` package).
- :func:`message_to_entry` / :func:`entry_to_message`: the mapping both use.
"""

from typing import TYPE_CHECKING, Any

from ._convert import (
    METADATA_KEY,
    MessageEncodingError,
    entry_to_message,
    message_of_entry,
    message_to_entry,
)
from ._history import ChatLedgerMessageHistory, HistoryWriteFailed
from ._runnable import RunnableWithLedgerHistory
from ._turns import MAX_CONFLICT_ROUNDS, STALE_KEY, OnConflict

if TYPE_CHECKING:
    from ._middleware import ChatLedgerMiddleware, ChatLedgerState

__all__ = [
    "MAX_CONFLICT_ROUNDS",
    "METADATA_KEY",
    "STALE_KEY",
    "ChatLedgerMessageHistory",
    "ChatLedgerMiddleware",
    "ChatLedgerState",
    "HistoryWriteFailed",
    "MessageEncodingError",
    "OnConflict",
    "RunnableWithLedgerHistory",
    "entry_to_message",
    "message_of_entry",
    "message_to_entry",
]


def __getattr__(name: str) -> Any:
    if name in ("ChatLedgerMiddleware", "ChatLedgerState"):
        from . import _middleware

        return getattr(_middleware, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
