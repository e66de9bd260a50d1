"""Typed results of the API (immutable dataclasses built from its JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypedDict

from typing_extensions import NotRequired

__all__ = [
    "AppendResult",
    "ContextWindow",
    "Entry",
    "EntryReceipt",
    "ExportTrailer",
    "Message",
    "Role",
    "AccessRecord",
    "Hold",
    "SearchResult",
    "SessionSummary",
    "VerifyResult",
]

Role = Literal["system", "user", "assistant", "tool"]


class Message(TypedDict):
    """One message to append: ``role``, ``content`` (a string, or a list of content blocks
    that are objects or strings) and optional ``metadata`` (a JSON object)."""

    role: Role
    content: str | list[Any]
    metadata: NotRequired[dict[str, Any]]


def parse_timestamp(value: str) -> datetime:
    """Parses the API's RFC 3339 UTC timestamps (``2026-11-21T10:15:30.123456Z``)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Entry:
    """One row of a session's ledger. ``created_at`` is kept exactly as the server spelled it
    (the hash chain covers that spelling); :attr:`created_at_datetime` parses it.

    Entries read with ``view="chat"`` carry only what a prompt needs (``seq``, ``kind``,
    ``role``, ``content``, ``metadata``, ``created_at``, ``erased``); their chain fields
    (``idempotency_key``, ``author``, ``salt``, ``payload_digest``, ``prev_hash``, ``hash``)
    are then ``None``. An erased entry has ``erased`` true and ``content`` ``None``.
    """

    seq: int
    kind: Literal["message", "context_reset", "erasure"]
    role: Role | None
    content: str | list[Any] | None
    metadata: dict[str, Any]
    created_at: str
    idempotency_key: str | None = None
    author: str | None = None
    salt: str | None = None
    payload_digest: str | None = None
    prev_hash: str | None = None
    hash: str | None = None
    erased: bool = False
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def created_at_datetime(self) -> datetime:
        return parse_timestamp(self.created_at)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        metadata = data.get("metadata")
        return cls(
            seq=data["seq"],
            kind=data["kind"],
            role=data.get("role"),
            content=data.get("content"),
            metadata=metadata if isinstance(metadata, dict) else {},
            created_at=data["created_at"],
            idempotency_key=data.get("idempotency_key"),
            author=data.get("author"),
            salt=data.get("salt"),
            payload_digest=data.get("payload_digest"),
            prev_hash=data.get("prev_hash"),
            hash=data.get("hash"),
            erased=bool(data.get("erased", False)),
            raw=data,
        )


@dataclass(frozen=True)
class EntryReceipt:
    """What an append returns for each entry it wrote."""

    seq: int
    created_at: str
    hash: str


@dataclass(frozen=True)
class AppendResult:
    """The 201 answer of an append or a reset.

    ``replayed`` is true when the server recognised the idempotency key and returned the
    original answer (nothing new was written). ``idempotency_key`` is the key that was sent
    (the caller's, or the one the client generated). ``head_hash`` is a receipt: an export's
    chain can later be checked to reach it.
    """

    session_id: str
    first_seq: int
    last_seq: int
    head_hash: str
    entries: tuple[EntryReceipt, ...]
    replayed: bool
    idempotency_key: str

    @classmethod
    def from_json(cls, data: dict[str, Any], *, replayed: bool, idempotency_key: str) -> AppendResult:
        return cls(
            session_id=data["session_id"],
            first_seq=data["first_seq"],
            last_seq=data["last_seq"],
            head_hash=data["head_hash"],
            entries=tuple(
                EntryReceipt(seq=e["seq"], created_at=e["created_at"], hash=e["hash"])
                for e in data.get("entries", [])
            ),
            replayed=replayed,
            idempotency_key=idempotency_key,
        )


@dataclass(frozen=True)
class SessionSummary:
    """``GET /v1/sessions/{id}``: ``context_start_seq`` is the latest reset's seq, or 0."""

    session_id: str
    created_at: str
    updated_at: str
    last_seq: int
    head_hash: str
    message_count: int
    context_start_seq: int
    #: True once the whole session was erased (appends then get 409 ``session_closed``).
    closed: bool = False
    #: Ids of the legal holds the session is in.
    holds: tuple[Any, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionSummary:
        return cls(
            session_id=data["session_id"],
            created_at=data["created_at"],
            updated_at=data["updated_at"],
            last_seq=data["last_seq"],
            head_hash=data["head_hash"],
            message_count=data["message_count"],
            context_start_seq=data["context_start_seq"],
            closed=bool(data.get("closed", False)),
            holds=tuple(data.get("holds") or ()),
        )


@dataclass(frozen=True)
class ContextWindow:
    """The LLM context window: the last ``limit`` message entries after the latest reset,
    in ascending seq order, read at ``last_seq``."""

    session_id: str
    last_seq: int
    context_start_seq: int
    entries: tuple[Entry, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContextWindow:
        return cls(
            session_id=data["session_id"],
            last_seq=data["last_seq"],
            context_start_seq=data["context_start_seq"],
            entries=tuple(Entry.from_json(e) for e in data.get("entries", [])),
        )


@dataclass(frozen=True)
class MessagesPage:
    """One page of ``GET /v1/sessions/{id}/messages``."""

    session_id: str
    last_seq: int
    entries: tuple[Entry, ...]
    next_cursor: int | None

    @classmethod
    def from_json(cls, data: dict[str, Any], *, cursor_field: str) -> MessagesPage:
        return cls(
            session_id=data["session_id"],
            last_seq=data["last_seq"],
            entries=tuple(Entry.from_json(e) for e in data.get("entries", [])),
            next_cursor=data.get(cursor_field),
        )


@dataclass(frozen=True)
class SessionsPage:
    sessions: tuple[SessionSummary, ...]
    next_after: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionsPage:
        return cls(
            sessions=tuple(SessionSummary.from_json(s) for s in data.get("sessions", [])),
            next_after=data.get("next_after"),
        )


@dataclass(frozen=True)
class VerifyResult:
    """``GET /v1/sessions/{id}/verify``: ``ok`` with ``verified_through_seq`` and
    ``head_hash``, or not ``ok`` with ``first_bad_seq`` and ``reason``."""

    ok: bool
    verified_through_seq: int | None = None
    head_hash: str | None = None
    first_bad_seq: int | None = None
    reason: str | None = None
    #: Entries whose payload was erased: their digests were taken as stored.
    erased_entries: int = 0

    def __bool__(self) -> bool:
        return self.ok

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VerifyResult:
        return cls(
            ok=bool(data["ok"]),
            verified_through_seq=data.get("verified_through_seq"),
            head_hash=data.get("head_hash"),
            first_bad_seq=data.get("first_bad_seq"),
            reason=data.get("reason"),
            erased_entries=data.get("erased_entries") or 0,
        )


@dataclass(frozen=True)
class ExportTrailer:
    """The last line of an export; its absence means the export was truncated."""

    tenant: str
    session_id: str
    last_seq: int
    head_hash: str
    exported_at: str
    #: The signed checkpoint note that covers the head, and the head leaf's proof against it.
    checkpoint: str | None = None
    inclusion_path: tuple[str, ...] = ()
    #: The head's leaf in the checkpoint log (its JSON object) and its index there.
    leaf: dict[str, Any] | None = field(default=None, compare=False)
    leaf_index: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportTrailer:
        return cls(
            tenant=data["tenant"],
            session_id=data["session_id"],
            last_seq=data["last_seq"],
            head_hash=data["head_hash"],
            exported_at=data["exported_at"],
            checkpoint=data.get("checkpoint"),
            inclusion_path=tuple(data.get("inclusion_path") or ()),
            leaf=data.get("leaf"),
            leaf_index=data.get("leaf_index"),
        )


@dataclass(frozen=True)
class SearchResult:
    """One hit of the audit search: where, who, and a snippet with each match in ``[[ ]]``."""

    session_id: str
    seq: int
    created_at: str
    role: str | None
    author: str | None
    snippet: str
    entry: Entry

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchResult:
        return cls(
            session_id=data["session_id"],
            seq=data["seq"],
            created_at=data["created_at"],
            role=data.get("role"),
            author=data.get("author"),
            snippet=data.get("snippet", ""),
            entry=Entry.from_json(data["entry"]) if isinstance(data.get("entry"), dict) else Entry(
                seq=data["seq"], kind="message", role=data.get("role"), content=None, metadata={},
                created_at=data["created_at"],
            ),
        )


@dataclass(frozen=True)
class AccessRecord:
    """One record of the access log: who read or changed what, when, with what result."""

    id: int
    at: str
    tenant: str | None
    actor: str
    role: str | None
    action: str
    session_id: str | None
    detail: dict[str, Any]
    request_id: str | None
    client_addr: str | None
    status: int | None
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AccessRecord:
        detail = data.get("detail")
        return cls(
            id=data["id"],
            at=data["at"],
            tenant=data.get("tenant"),
            actor=data.get("actor", ""),
            role=data.get("role"),
            action=data.get("action", ""),
            session_id=data.get("session_id"),
            detail=detail if isinstance(detail, dict) else {},
            request_id=data.get("request_id"),
            client_addr=data.get("client_addr"),
            status=data.get("status"),
            raw=data,
        )


@dataclass(frozen=True)
class Hold:
    """A legal hold: sessions that cannot be erased (nor swept by retention) until released."""

    id: Any
    name: str
    reason: str | None
    session_ids: tuple[str, ...]
    placed_by: str | None
    placed_at: str | None
    released_at: str | None

    @property
    def active(self) -> bool:
        return self.released_at is None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Hold:
        return cls(
            id=data["id"],
            name=data.get("name", ""),
            reason=data.get("reason"),
            session_ids=tuple(data.get("session_ids") or ()),
            placed_by=data.get("placed_by"),
            placed_at=data.get("placed_at"),
            released_at=data.get("released_at"),
        )
