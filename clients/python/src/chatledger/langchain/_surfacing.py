"""Where a failed history write goes when LangChain swallows it.

``RunnableWithMessageHistory`` writes the turn from an ``on_end`` listener, and LangChain's
callback machinery logs whatever a listener raises and carries on: ``invoke`` returns the
answer as if it had been stored. So a history has to tell apart two callers of
``add_messages`` / ``aadd_messages`` / ``clear``:

- **Code that called it directly** gets the exception, and that is the end of it: the
  failure is never raised again anywhere.
- **LangChain's listener** (the exception is swallowed): the failure goes to the turn scope
  of the :class:`~chatledger.langchain.RunnableWithLedgerHistory` running this turn, whose
  ``invoke``/``ainvoke``/``stream``/``astream`` then raises it (the recommended wiring).
  Without that wrapper, it is kept for the next read or write of the same session in this
  process, which raises it once (the fallback).

Which caller it is, is read from the stack at the moment of the failure (only then): a frame
of ``RunnableWithMessageHistory._exit_history`` / ``_aexit_history``, or of LangChain's
callback manager, means the exception is about to be swallowed.
"""

from __future__ import annotations

import sys
import threading
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._history import HistoryWriteFailed

__all__ = ["TurnScope", "current_scope", "swallowed_by_langchain"]

_MAX_DEPTH = 64


def _listener_codes() -> frozenset[Any]:
    try:
        from langchain_core.runnables.history import RunnableWithMessageHistory
    except ImportError:  # pragma: no cover - langchain-core is a dependency of this module
        return frozenset()
    codes = set()
    for name in ("_exit_history", "_aexit_history"):
        function = getattr(RunnableWithMessageHistory, name, None)
        code = getattr(function, "__code__", None)
        if code is not None:
            codes.add(code)
    return frozenset(codes)


_LISTENER_CODES = _listener_codes()
_EXIT_READ_CODES = _LISTENER_CODES  # the second read LangChain makes is inside the listener too
_SWALLOWING_MODULES = ("langchain_core.callbacks.manager", "langchain_core.tracers.")


def _frames_from(depth: int) -> Any:
    try:
        return sys._getframe(depth)
    except ValueError:  # pragma: no cover
        return None


def swallowed_by_langchain(depth: int = 2) -> bool:
    """True when the running ``add_messages``/``clear`` was called by a LangChain listener
    or callback, whose exceptions LangChain logs instead of raising."""
    frame = _frames_from(depth)
    for _ in range(_MAX_DEPTH):
        if frame is None:
            return False
        if frame.f_code in _LISTENER_CODES:
            return True
        module = frame.f_globals.get("__name__", "")
        if module.startswith(_SWALLOWING_MODULES):
            return True
        frame = frame.f_back
    return False


def inside_exit_listener(depth: int = 2) -> bool:
    """True when the running read is ``RunnableWithMessageHistory``'s second read of the
    history, the one it makes after the model call to tell history from new input."""
    frame = _frames_from(depth)
    for _ in range(8):
        if frame is None:
            return False
        if frame.f_code in _EXIT_READ_CODES:
            return True
        frame = frame.f_back
    return False


class TurnScope:
    """The failures swallowed during one ``RunnableWithLedgerHistory`` call."""

    __slots__ = ("failures",)

    def __init__(self) -> None:
        self.failures: list[HistoryWriteFailed] = []


_scope: ContextVar[TurnScope | None] = ContextVar("chatledger_turn_scope", default=None)


def current_scope() -> TurnScope | None:
    return _scope.get()


def enter_scope() -> tuple[TurnScope, Any]:
    scope = TurnScope()
    return scope, _scope.set(scope)


def leave_scope(token: Any) -> None:
    try:
        _scope.reset(token)
    except ValueError:
        # Reset from another context (a generator finished elsewhere): clear it instead.
        _scope.set(None)


# -- the fallback: swallowed outside any turn scope, raised once by the next use -------------

_unreported: dict[tuple[str, str, str], list[HistoryWriteFailed]] = {}
_unreported_lock = threading.Lock()


def keep_for_next_use(key: tuple[str, str, str], failure: HistoryWriteFailed) -> None:
    with _unreported_lock:
        _unreported.setdefault(key, []).append(failure)


def take_unreported(key: tuple[str, str, str]) -> HistoryWriteFailed | None:
    if not _unreported:
        return None
    with _unreported_lock:
        failures = _unreported.get(key)
        if not failures:
            return None
        failure = failures.pop(0)
        if not failures:
            del _unreported[key]
        return failure


def peek_unreported(key: tuple[str, str, str]) -> list[HistoryWriteFailed]:
    with _unreported_lock:
        return list(_unreported.get(key, []))


def drop_unreported(key: tuple[str, str, str], failure: HistoryWriteFailed | None = None) -> list[HistoryWriteFailed]:
    with _unreported_lock:
        if failure is None:
            return _unreported.pop(key, [])
        failures = _unreported.get(key)
        if failures and failure in failures:
            failures.remove(failure)
            if not failures:
                del _unreported[key]
            return [failure]
        return []


def clear_all() -> None:
    """Forgets every kept failure (for tests)."""
    with _unreported_lock:
        _unreported.clear()
