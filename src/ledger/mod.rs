//! The ledger domain: sessions of hash-chained entries, appended and read through one PostgreSQL
//! function call each. Nothing here knows about HTTP.

mod append;
pub mod audit;
pub mod checkpoints;
pub mod erase;
pub mod export;
pub mod hash;
pub mod holds;
pub mod json;
mod read;
pub mod retention;
pub mod search;
mod types;
pub mod verify;

pub use append::{AppendRequest, Appended, AppendedEntry, Idempotency, append};
pub use hash::Timestamp;
pub use read::{
    Entry, Page, PageLimit, Range, RawJson, SessionSummary, entries, session, sessions, tail_key,
};
pub use types::{EntryKind, IdempotencyKey, Limits, MAX_NESTING, MessageRole, NewEntry, SessionId};
