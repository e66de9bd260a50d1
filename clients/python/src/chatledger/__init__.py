"""Python client of chatledger, the append-only, tamper-evident ledger for LLM conversations.

``chatledger.Client`` (sync) and ``chatledger.AsyncClient`` (async) speak the HTTP API over
a lean built-in HTTP/1.1 transport (no third-party dependency);
every error is a :class:`ChatLedgerError`, with one subclass per problem ``code``.
The LangChain integration lives in :mod:`chatledger.langchain` (``pip install
chatledger[langchain]``); this module imports nothing from LangChain.
"""

from ._client import AsyncClient, Client, new_idempotency_key
from ._errors import (
    AlreadyExists,
    ChatLedgerError,
    Forbidden,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    InvalidNumber,
    InvalidParameter,
    InvalidSessionId,
    InvalidText,
    LegalHold,
    MalformedJson,
    MethodNotAllowed,
    NetworkError,
    NotFound,
    PayloadTooLarge,
    SeqConflict,
    SessionClosed,
    SessionNotFound,
    TooManyRequests,
    TruncatedExport,
    Unauthenticated,
    UnexpectedResponse,
    UnknownTenant,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from ._models import (
    AccessRecord,
    AppendResult,
    ContextWindow,
    Entry,
    EntryReceipt,
    ExportTrailer,
    Hold,
    Message,
    Role,
    SearchResult,
    SessionSummary,
    VerifyResult,
)
from ._retry import Attempts, CallKind, Decision, Outcome, Retry
from ._settings import Settings, resolve_settings

__version__ = "0.2.0"

__all__ = [
    "AccessRecord",
    "AlreadyExists",
    "AppendResult",
    "AsyncClient",
    "Attempts",
    "CallKind",
    "ChatLedgerError",
    "Client",
    "ContextWindow",
    "Decision",
    "Entry",
    "EntryReceipt",
    "ExportTrailer",
    "Forbidden",
    "Hold",
    "IdempotencyKeyReused",
    "InvalidIdempotencyKey",
    "InvalidNumber",
    "InvalidParameter",
    "InvalidSessionId",
    "InvalidText",
    "LegalHold",
    "MalformedJson",
    "Message",
    "MethodNotAllowed",
    "NetworkError",
    "NotFound",
    "Outcome",
    "PayloadTooLarge",
    "Retry",
    "Role",
    "SearchResult",
    "SeqConflict",
    "SessionClosed",
    "SessionNotFound",
    "SessionSummary",
    "Settings",
    "TooManyRequests",
    "TruncatedExport",
    "Unauthenticated",
    "UnexpectedResponse",
    "UnknownTenant",
    "Unavailable",
    "UnsupportedMediaType",
    "ValidationFailed",
    "VerifyResult",
    "__version__",
    "new_idempotency_key",
    "resolve_settings",
]
