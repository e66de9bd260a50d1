//! The one domain error of chatledger; the HTTP layer maps it to problem documents in one place
//! (`http::problem`), the command line prints it.

use std::fmt;

/// Everything a ledger, auth or admin operation can fail with.
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
    /// The session was erased whole: it takes no more appends or resets.
    #[error("the session was erased and is closed")]
    SessionClosed,
    /// Legal holds cover the session: it cannot be erased.
    #[error("the session is under legal hold {holds:?}")]
    LegalHold { holds: Vec<i64> },
    /// A limit on concurrent work is reached; the caller may retry shortly.
    #[error("{0}")]
    TooManyRequests(String),
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
    /// The access record of a request could not be written, so the request returns nothing.
    #[error("the access record could not be written: {0}")]
    RecordNotWritten(#[source] sqlx::Error),
    /// The read replica has not yet replayed the key the primary accepted for this request (a
    /// key created moments ago); the caller may retry.
    #[error("the read replica has not caught up with this key yet")]
    ReplicaBehind,
    /// An unexpected database error.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Stored data is not in the form chatledger writes.
    #[error("corrupt stored data: {0}")]
    Corrupt(&'static str),
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
    /// JSON that is not JSON text after all (a lone surrogate escape): 400 `malformed_json`.
    Malformed,
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

    /// A `validation_failed` problem.
    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(InvalidKind::Validation, detail)
    }

    /// An `invalid_parameter` problem.
    pub fn parameter(detail: impl Into<String>) -> Self {
        Self::new(InvalidKind::Parameter, detail)
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for Invalid {}

impl From<Invalid> for Error {
    fn from(invalid: Invalid) -> Self {
        Error::Invalid(invalid)
    }
}

impl Error {
    /// Whether the connection that gave this error may be unfit for another request: it failed,
    /// a statement on it failed, or it returned what chatledger never writes. A refusal (a seq
    /// conflict, an unknown session) leaves it as good as a success does.
    pub fn concerns_the_connection(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_)
                | Error::RecordNotWritten(_)
                | Error::Database(_)
                | Error::Corrupt(_)
        )
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        // Raised by chatledger_bind for a key revoked since this server cached it.
        if let sqlx::Error::Database(db) = &error
            && db.code().as_deref() == Some("CL401")
        {
            return Error::Unauthenticated;
        }
        if crate::db::is_unavailable(&error) {
            Error::Unavailable(error)
        } else {
            Error::Database(error)
        }
    }
}

impl Error {
    /// This error of a read on the replica, in a request whose key the primary accepted: a key
    /// the replica does not know is one it has not replayed yet, not a bad key.
    pub fn on_replica(self) -> Self {
        match self {
            Error::Unauthenticated => Error::ReplicaBehind,
            other => other,
        }
    }

    /// `Some("unavailable" | "error")` for database trouble, the label of its metric.
    pub fn database_trouble(&self) -> Option<&'static str> {
        match self {
            Error::Unavailable(_) | Error::RecordNotWritten(_) | Error::ReplicaBehind => {
                Some("unavailable")
            }
            Error::Database(_) | Error::Corrupt(_) => Some("error"),
            _ => None,
        }
    }
}
