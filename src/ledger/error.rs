//! The one error type of the ledger; the HTTP layer maps it to problem documents in one place.

use std::fmt;

/// Everything a ledger operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's input is not acceptable; nothing was written.
    #[error("{0}")]
    Invalid(Invalid),
    /// The key is missing, unknown or revoked.
    #[error("unknown or revoked API key")]
    Unauthenticated,
    /// The key's role may not do this.
    #[error("the API key's role may not do this")]
    Forbidden,
    /// The session does not exist (or belongs to another tenant).
    #[error("session not found")]
    SessionNotFound,
    /// `expected_seq` did not match the session's last seq; nothing was written.
    #[error("expected_seq does not match the session's last seq {current_seq}")]
    SeqConflict { current_seq: i64 },
    /// The thing to create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The named tenant does not exist.
    #[error("no such tenant")]
    UnknownTenant,
    /// The named resource (such as an API key) does not exist.
    #[error("not found")]
    NotFound,
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
        let code = match &error {
            sqlx::Error::Database(db) => db.code().map(|code| code.into_owned()),
            _ => None,
        };
        // Raised by chatledger_authenticate.
        match code.as_deref() {
            Some("CL401") => return Error::Unauthenticated,
            Some("CL403") => return Error::Forbidden,
            _ => {}
        }
        if crate::db::is_unavailable(&error) {
            metrics::counter!("chatledger_db_errors_total", "kind" => "unavailable").increment(1);
            Error::Unavailable(error)
        } else {
            metrics::counter!("chatledger_db_errors_total", "kind" => "error").increment(1);
            Error::Database(error)
        }
    }
}

impl std::error::Error for Invalid {}
