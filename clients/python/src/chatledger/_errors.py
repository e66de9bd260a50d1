"""Exceptions: one class per problem ``code`` of the API, all under :class:`ChatLedgerError`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "AlreadyExists",
    "ChatLedgerError",
    "Forbidden",
    "IdempotencyKeyReused",
    "InvalidIdempotencyKey",
    "InvalidNumber",
    "InvalidParameter",
    "InvalidSessionId",
    "InvalidText",
    "LegalHold",
    "MalformedJson",
    "NetworkError",
    "NotFound",
    "PayloadTooLarge",
    "SeqConflict",
    "SessionClosed",
    "SessionNotFound",
    "TooManyRequests",
    "TruncatedExport",
    "Unauthenticated",
    "UnexpectedResponse",
    "UnknownTenant",
    "Unavailable",
    "UnsupportedMediaType",
    "ValidationFailed",
    "error_for_problem",
]


class ChatLedgerError(Exception):
    """Base class of every error raised by this package.

    Errors that come from an RFC 9457 problem document carry its members: ``status``,
    ``code`` (the stable snake_case identifier), ``title``, ``detail`` and ``problem`` (the
    whole document, including any extra members). Errors raised without a server answer
    (:class:`NetworkError`, :class:`TruncatedExport`) have ``status`` ``None``.
    """

    #: The problem ``code`` this class stands for (``None`` for the base class and for errors
    #: that do not come from a problem document).
    code_for_class: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        title: str | None = None,
        detail: str | None = None,
        problem: Mapping[str, Any] | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code if code is not None else self.code_for_class
        self.title = title
        self.detail = detail
        self.problem: dict[str, Any] = dict(problem or {})
        #: How many HTTP attempts the client made before giving up with this error.
        self.attempts = attempts

    @classmethod
    def from_problem(
        cls, status: int, problem: Mapping[str, Any], *, attempts: int = 1
    ) -> ChatLedgerError:
        code = problem.get("code")
        title = problem.get("title")
        detail = problem.get("detail")
        text = detail or title or f"HTTP {status}"
        return cls(
            f"{code or 'error'} ({status}): {text}",
            status=status,
            code=code if isinstance(code, str) else None,
            title=title if isinstance(title, str) else None,
            detail=detail if isinstance(detail, str) else None,
            problem=problem,
            attempts=attempts,
        )


class MalformedJson(ChatLedgerError):
    """400 ``malformed_json``: the request body was not JSON."""

    code_for_class = "malformed_json"


class InvalidParameter(ChatLedgerError):
    """400 ``invalid_parameter``: a query parameter is out of range (e.g. ``limit``)."""

    code_for_class = "invalid_parameter"


class InvalidSessionId(ChatLedgerError):
    """400 ``invalid_session_id``: 1 to 128 of ``A-Z a-z 0-9 . _ : @ -``, not ``.``/``..``."""

    code_for_class = "invalid_session_id"


class InvalidIdempotencyKey(ChatLedgerError):
    """400 ``invalid_idempotency_key``: 1 to 255 visible ASCII characters."""

    code_for_class = "invalid_idempotency_key"


class Unauthenticated(ChatLedgerError):
    """401 ``unauthenticated``: missing, unknown or revoked API key."""

    code_for_class = "unauthenticated"


class Forbidden(ChatLedgerError):
    """403 ``forbidden``: the key's role may not do this."""

    code_for_class = "forbidden"


class SessionNotFound(ChatLedgerError):
    """404 ``session_not_found``: no such session in this key's tenant."""

    code_for_class = "session_not_found"


class NotFound(ChatLedgerError):
    """404 ``not_found``: no such route or resource."""

    code_for_class = "not_found"


class MethodNotAllowed(ChatLedgerError):
    """405 ``method_not_allowed``: the route exists, not with this method."""

    code_for_class = "method_not_allowed"


class SeqConflict(ChatLedgerError):
    """409 ``seq_conflict``: ``expected_seq`` differs from the session's last seq.

    Nothing was written. ``current_seq`` is the session's last seq (0 for a missing session).
    """

    code_for_class = "seq_conflict"

    @property
    def current_seq(self) -> int | None:
        value = self.problem.get("current_seq")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


class AlreadyExists(ChatLedgerError):
    """409 ``already_exists`` (admin API)."""

    code_for_class = "already_exists"


class SessionClosed(ChatLedgerError):
    """409 ``session_closed``: the whole session was erased; it takes no more appends."""

    code_for_class = "session_closed"


class LegalHold(ChatLedgerError):
    """409 ``legal_hold``: the session is under a legal hold and cannot be erased;
    ``hold_ids`` lists the holds."""

    code_for_class = "legal_hold"

    @property
    def hold_ids(self) -> list[Any]:
        for name in ("hold_ids", "holds"):
            value = self.problem.get(name)
            if isinstance(value, list):
                return value
        return []


class TooManyRequests(ChatLedgerError):
    """429 ``too_many_requests``: e.g. more live-tail streams open than the key may have."""

    code_for_class = "too_many_requests"


class PayloadTooLarge(ChatLedgerError):
    """413 ``payload_too_large``: request body or one message above the server's limit."""

    code_for_class = "payload_too_large"


class UnsupportedMediaType(ChatLedgerError):
    """415 ``unsupported_media_type``."""

    code_for_class = "unsupported_media_type"


class ValidationFailed(ChatLedgerError):
    """422 ``validation_failed``: ``detail`` names the offending field. Nothing was written."""

    code_for_class = "validation_failed"


class InvalidText(ChatLedgerError):
    """422 ``invalid_text``: a ``\\u0000`` in content or metadata (PostgreSQL cannot store it)."""

    code_for_class = "invalid_text"


class InvalidNumber(ChatLedgerError):
    """422 ``invalid_number``: a number beyond ±(2^53-1) or not finite; send it as a string."""

    code_for_class = "invalid_number"


class IdempotencyKeyReused(ChatLedgerError):
    """422 ``idempotency_key_reused``: the key was used with another endpoint or body."""

    code_for_class = "idempotency_key_reused"


class UnknownTenant(ChatLedgerError):
    """422 ``unknown_tenant`` (admin API)."""

    code_for_class = "unknown_tenant"


class Unavailable(ChatLedgerError):
    """503 ``unavailable``: the database is unreachable or the pool exhausted.

    Raised once the client's retry budget is spent. Nothing was written by the refused
    attempts. ``retry_after`` is the server's last ``Retry-After`` in seconds, if any.
    """

    code_for_class = "unavailable"
    retry_after: float | None = None


class NetworkError(ChatLedgerError):
    """The server could not be reached or the connection failed, after all retries.

    The underlying exception (an ``OSError``, or an ``httpx`` error when the client sends
    through httpx) is the ``__cause__``. For an append this outcome is
    ambiguous (the last attempt may have been committed before the connection broke):
    resend with the same idempotency key (``idempotency_key`` attribute) to find out without
    writing twice.
    """

    idempotency_key: str | None = None


class UnexpectedResponse(ChatLedgerError):
    """The server answered something that is not part of the contract (e.g. an HTML 502)."""


class TruncatedExport(ChatLedgerError):
    """An export stream ended without its ``export_trailer`` line."""


_BY_CODE: dict[str, type[ChatLedgerError]] = {
    cls.code_for_class: cls
    for cls in (
        MalformedJson,
        InvalidParameter,
        InvalidSessionId,
        InvalidIdempotencyKey,
        Unauthenticated,
        Forbidden,
        SessionNotFound,
        NotFound,
        MethodNotAllowed,
        SeqConflict,
        AlreadyExists,
        SessionClosed,
        LegalHold,
        TooManyRequests,
        PayloadTooLarge,
        UnsupportedMediaType,
        ValidationFailed,
        InvalidText,
        InvalidNumber,
        IdempotencyKeyReused,
        UnknownTenant,
        Unavailable,
    )
    if cls.code_for_class is not None
}


def error_for_problem(
    status: int, problem: Mapping[str, Any], *, attempts: int = 1
) -> ChatLedgerError:
    """The exception for a problem document: the class of its ``code``, else the base class."""
    code = problem.get("code")
    cls = _BY_CODE.get(code, ChatLedgerError) if isinstance(code, str) else ChatLedgerError
    return cls.from_problem(status, problem, attempts=attempts)
