//! The one error type of the ledger; the HTTP layer maps it to problem documents in one place.

use std::fmt;

/// Everything a ledger operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's input is not acceptable; nothing was written.
    #[error("{0}")]
    Invalid(Invalid),
    /// The session does not exist (or belongs to another tenant).
    #[error("session not found")]
    SessionNotFound,
    /// `expected_seq` did not match the session's last seq; nothing was written.
    #[error("expected_seq does not match the session's last seq {current_seq}")]
    SeqConflict { current_seq: i64 },
    /// The idempotency key was used before with another endpoint or body.
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyReused,
    /// The database cannot be reached or is overloaded; the caller may retry.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// An unexpected database error.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

/// What is wrong with a piece of input, and which input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub kind: InvalidKind,
    pub detail: String,
}

/// The class of an input problem; each has its own stable problem code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidKind {
    SessionId,
    IdempotencyKey,
    Parameter,
    Validation,
    Text,
    Number,
    TooLarge,
}

impl Invalid {
    pub fn new(kind: InvalidKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl From<Invalid> for Error {
    fn from(invalid: Invalid) -> Self {
        Error::Invalid(invalid)
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&error) {
            Error::Unavailable(error)
        } else {
            Error::Database(error)
        }
    }
}
