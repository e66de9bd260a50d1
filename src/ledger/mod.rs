//! The ledger domain: sessions of hash-chained entries, appended and read through one PostgreSQL
//! function call each. Nothing here knows about HTTP.

mod append;
pub mod audit;
mod error;
pub mod export;
pub mod hash;
mod read;
mod types;
pub mod verify;

pub use append::{AppendRequest, Appended, AppendedEntry, Idempotency, append};
pub use error::{Error, Invalid, InvalidKind};
pub use read::{Entry, Page, Range, RawJson, SessionSummary, entries, session, sessions};
pub use types::{
    AppendBody, EntryKind, IdempotencyKey, Limits, NewEntry, ResetBody, Role, SessionId,
};
