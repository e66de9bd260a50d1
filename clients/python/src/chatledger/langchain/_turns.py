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

__all__ = ["MAX_CONFLICT_ROUNDS", "OnConflict", "PARALLEL_PAGES", "STALE_KEY", "TurnWrite", "WindowRead"]

logger = logging.getLogger("chatledger.langchain")

OnConflict = Literal["append", "raise"]

PAGE = 1000  # the API's largest context and messages page
#: How many pages of a long window are fetched at once.
PARALLEL_PAGES = 4
#: How many times an ``on_conflict="append"`` turn chases a session that keeps moving.
MAX_CONFLICT_ROUNDS = 50
#: The metadata key chatledger's adapters own on every entry they write.
STALE_KEY = "chatledger"


class WindowRead:
    """Reads the context window (every message after the latest reset, or its last
    ``window``) at one head.

    The context call gives the newest page, the head and where the window starts. Seqs have
    no gaps, so the rest of a longer window is known at once: the entries between the reset
    and that first page, in pages of at most 1000, which the drivers fetch concurrently
    (:data:`PARALLEL_PAGES` at a time). Never past the reset, never beyond that head, every
    entry once; a page the server cut short (its 8 MiB cap) or non-message entries (erasure
    records) in a bounded window are followed up by further pages. Entries come in
    ``view=chat``.
    """

    __slots__ = ("session_id", "window", "limit", "head", "start", "first", "pages", "lowest", "_asked")

    def __init__(self, session_id: str, window: int | None) -> None:
        self.session_id = session_id
        self.window = window
        self.limit = min(window or PAGE, PAGE)
        self.head: int | None = None
        self.start = 0
        self.first: list[dict[str, Any]] = []
        #: Message entries of the older pages, ascending, by the ``before_seq`` of each page.
        self.pages: dict[int, list[dict[str, Any]]] = {}
        #: The lowest seq read so far (everything from it up to the head is read).
        self.lowest = 0
        self._asked: dict[int, int] = {}

    def first_call(self) -> _Call[Any]:
        return context_json_call(self.session_id, self.limit, "chat")

    def _have(self) -> int:
        return len(self.first) + sum(len(p) for p in self.pages.values())

    def _range(self, before: int, down_to: int, wanted: int | None = None) -> list[tuple[int, _Call[Any]]]:
        """Calls for the seqs ``down_to`` .. ``before - 1`` (at most ``wanted`` of them)."""
        calls = []
        while before > down_to and (wanted is None or wanted > 0):
            limit = min(PAGE, before - down_to)
            if wanted is not None:
                limit = min(limit, wanted)
                wanted -= limit
            calls.append((before, messages_json_call(self.session_id, "desc", before, limit, "chat")))
            self._asked[before] = limit
            before -= limit
            self.lowest = min(self.lowest, before)
        return calls

    def _wanted(self) -> int | None:
        return None if self.window is None else self.window - self._have()

    def feed_first(self, data: dict[str, Any]) -> list[tuple[int, _Call[Any]]]:
        """The context answer; returns the page calls still needed (``(before_seq, call)``)."""
        self.head = data["last_seq"]
        self.start = data.get("context_start_seq", 0)
        self.first = data["entries"]
        if len(self.first) < self.limit or not self.first:
            return []
        self.lowest = self.first[0]["seq"]
        return self._range(self.lowest, self.start + 1, self._wanted())

    def feed_pages(self, answers: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, _Call[Any]]]:
        """Answers to page calls; returns the follow-up calls: the rest of a page the server
        cut short, or more pages for a bounded window that met non-message entries."""
        calls: list[tuple[int, _Call[Any]]] = []
        for before, data in answers:
            asked_low = before - self._asked.pop(before)
            entries = data["entries"]  # descending
            page = [e for e in entries if e["seq"] > self.start and e["kind"] == "message"]
            page.reverse()
            self.pages[before] = page
            covered_low = entries[-1]["seq"] if entries else asked_low
            if covered_low > asked_low and data.get("next_before_seq") is not None:
                calls += self._range(covered_low, asked_low)
        if not calls and self.window is not None:
            wanted = self._wanted()
            if wanted and self.lowest - 1 > self.start:
                calls = self._range(self.lowest, self.start + 1, wanted)
        return calls

    def not_found(self) -> None:
        """The session does not exist: an empty window at head 0."""
        self.head = 0
        self.first = []
        self.pages = {}

    def entries(self) -> list[dict[str, Any]]:
        """The window's message entries, ascending."""
        if not self.pages:
            return self.first
        out: list[dict[str, Any]] = []
        for before in sorted(self.pages):
            out.extend(self.pages[before])
        out.extend(self.first)
        if self.window is not None and len(out) > self.window:
            out = out[len(out) - self.window :]
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
