"""Sans-I/O plans shared by the history and the middleware, sync and async alike: how to read
a context window at one head, and how to append a turn under ``on_conflict``.

Each plan hands out :class:`~chatledger._client._Call` objects and is fed their answers (or
their :class:`~chatledger.SeqConflict`); the sync and async drivers only execute calls.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from .._client import _Call, append_call, context_json_call, messages_json_call
from .._errors import SeqConflict
from .._models import AppendResult

__all__ = ["MAX_CONFLICT_ROUNDS", "OnConflict", "STALE_KEY", "TurnWrite", "WindowRead"]

logger = logging.getLogger("chatledger.langchain")

OnConflict = Literal["append", "raise"]

PAGE = 1000  # the API's largest context and messages page
#: How many times an ``on_conflict="append"`` turn chases a session that keeps moving.
MAX_CONFLICT_ROUNDS = 50
#: The metadata key chatledger's adapters own on every entry they write.
STALE_KEY = "chatledger"


class WindowRead:
    """Reads the context window (every message after the latest reset, or its last
    ``window``), at one head: the context call gives the newest page and the head; longer
    windows continue backwards from there in pages of at most 1000, never past the reset,
    never beyond that head, never reading an entry twice. Entries come in ``view=chat``."""

    __slots__ = ("session_id", "window", "limit", "head", "start", "pages", "have", "_done")

    def __init__(self, session_id: str, window: int | None) -> None:
        self.session_id = session_id
        self.window = window
        self.limit = min(window or PAGE, PAGE)
        self.head: int | None = None
        self.start = 0
        self.pages: list[list[dict[str, Any]]] = []
        self.have = 0
        self._done = False

    def first(self) -> _Call[Any]:
        return context_json_call(self.session_id, self.limit, "chat")

    def _wanted(self) -> int | None:
        return None if self.window is None else self.window - self.have

    def feed(self, data: dict[str, Any]) -> _Call[Any] | None:
        """The answer to the last call; returns the next call, or ``None`` when complete."""
        if self.head is None:
            self.head = data["last_seq"]
            self.start = data.get("context_start_seq", 0)
            entries = data["entries"]
            self.pages.append(entries)
            self.have = len(entries)
            if len(entries) < self.limit or not entries:
                return None
            return self._next(entries[0]["seq"])
        entries = data["entries"]
        page = []
        reached_start = False
        for entry in entries:  # descending
            if entry["seq"] <= self.start:
                reached_start = True
                break
            if entry["kind"] == "message":
                page.append(entry)
        page.reverse()
        wanted = self._wanted()
        if wanted is not None and len(page) > wanted:
            page = page[len(page) - wanted :]
        self.pages.append(page)
        self.have += len(page)
        cursor = data.get("next_before_seq")
        if reached_start or cursor is None:
            return None
        return self._next(cursor)

    def _next(self, before_seq: int) -> _Call[Any] | None:
        wanted = self._wanted()
        if wanted is not None and wanted <= 0:
            return None
        between = before_seq - self.start - 1  # entries of any kind after the reset
        if between <= 0:
            return None
        limit = min(PAGE, between)
        return messages_json_call(self.session_id, "desc", before_seq, limit, "chat")

    def not_found(self) -> None:
        """The session does not exist: an empty window at head 0."""
        self.head = 0
        self.pages = []

    def entries(self) -> list[dict[str, Any]]:
        """The window's message entries, ascending."""
        if not self.pages:
            return []
        if len(self.pages) == 1:
            return self.pages[0]
        out: list[dict[str, Any]] = []
        for page in reversed(self.pages[1:]):
            out.extend(page)
        out.extend(self.pages[0])
        return out


def _flagged(wire: list[dict[str, Any]], expected_seq: int, current_seq: int) -> list[dict[str, Any]]:
    flag = {"stale_context": {"expected_seq": expected_seq, "current_seq": current_seq}}
    out = []
    for entry in wire:
        metadata = dict(entry.get("metadata") or {})
        own = metadata.get(STALE_KEY)
        metadata[STALE_KEY] = {**own, **flag} if isinstance(own, dict) else flag
        out.append({**entry, "metadata": metadata})
    return out


class TurnWrite:
    """Appends one turn (one atomic run of entries) with ``expected_seq``.

    On a :class:`~chatledger.SeqConflict` (another writer appended since the turn's context
    was read): ``on_conflict="raise"`` gives up, nothing stored; ``"append"`` (default) writes
    the turn right after the other writer's entries, each entry's metadata flagged
    ``{"chatledger": {"stale_context": {"expected_seq": e, "current_seq": c}}}`` (``e``: the
    seq the turn's context was read at; ``c``: the session's last seq just before the
    turn), logs a warning, and chases a session that keeps moving for at most
    :data:`MAX_CONFLICT_ROUNDS` rounds. Each round is its own request with its own
    idempotency key, derived from the turn's, so a retried round is still written at most
    once.
    """

    __slots__ = ("session_id", "wire", "expected_seq", "key", "on_conflict", "rounds", "current")

    def __init__(
        self,
        session_id: str,
        wire: list[dict[str, Any]],
        expected_seq: int | None,
        key: str,
        on_conflict: OnConflict,
    ) -> None:
        self.session_id = session_id
        self.wire = wire
        self.expected_seq = expected_seq
        self.key = key
        self.on_conflict = on_conflict
        self.rounds = 0
        #: What the last call sent: ``wire``, ``expected_seq`` and ``idempotency_key``.
        self.current: dict[str, Any] = {"wire": wire, "expected_seq": expected_seq, "idempotency_key": key}

    def first(self) -> _Call[AppendResult]:
        return append_call(self.session_id, self.wire, self.expected_seq, self.key)

    def conflict(self, error: SeqConflict) -> _Call[AppendResult]:
        """The next call after ``error``; re-raises it when the turn must not be appended."""
        if self.on_conflict != "append" or self.expected_seq is None:
            raise error
        current = error.current_seq
        self.rounds += 1
        if current is None or self.rounds > MAX_CONFLICT_ROUNDS:
            raise error
        if self.rounds == 1:
            logger.warning(
                "session %r: the turn was based on seq %s but the session is at %s; "
                "on_conflict='append' appends it after the other writer's entries, flagged "
                "stale_context in its metadata",
                self.session_id,
                self.expected_seq,
                current,
            )
        wire = _flagged(self.wire, self.expected_seq, current)
        key = f"{self.key}-stale-{current}"
        self.current = {"wire": wire, "expected_seq": current, "idempotency_key": key}
        return append_call(self.session_id, wire, current, key)
