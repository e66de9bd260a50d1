//! The live tail (API.md "Live tail"): Server-Sent Events, the backlog after `after_seq` or
//! `Last-Event-ID`, then each new entry as the listener hears of it. A stream reads its entries
//! itself, a page at a time, under its key's tenant binding, and holds no database connection
//! while it waits.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgConnection;
use utoipa::IntoParams;

use super::AppState;
use super::extract::{Query, Reader, SessionPath, bounded};
use super::problem::{ApiError, TailProblems};
use super::views::{EntryView, View};
use crate::access::{Action, Outcome, Recorded};
use crate::auth::{Caller, Credential, Scope};
use crate::error::{Error, Invalid};
use crate::ledger::{self, Entry, Page, PageLimit, Range, SessionId};
use crate::tail::{Follow, SharedRead, Wake};

/// A comment line at least this often, so that proxies and clients see a live connection.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Entries one read of a stream takes at most.
const PAGE_ENTRIES: i64 = 100;

/// Another stream's read of the same entries is taken while younger than this and while no newer
/// head has been heard of (an erasure, say, appends an entry and so moves the head).
const SHARED_FRESH: Duration = Duration::from_secs(1);

/// How long a stream keeps trying to read before it ends (the client then resumes with
/// `Last-Event-ID`).
const READ_RETRIES: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// The parameters of a live tail.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TailQuery {
    /// Entries after this seq (default 0); a `Last-Event-ID` header wins over it.
    #[param(minimum = 0)]
    after_seq: Option<i64>,
}

/// Follow a session: every entry after `after_seq` (or `Last-Event-ID`), then each new one.
#[utoipa::path(
    get, path = "/v1/sessions/{session_id}/events", tag = "sessions",
    params(
        ("session_id" = String, Path, description = "1 to 128 of A-Z a-z 0-9 . _ : @ -"),
        ("Last-Event-ID" = Option<String>, Header, description = "The seq of the last entry seen; wins over after_seq"),
        TailQuery,
    ),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
         description = "`id: <seq>`, `event: entry`, `data: <entry JSON>` per entry, and a comment line at least every 15 s. A session that does not exist (yet) is waited for."),
        TailProblems,
    ),
    security(("bearer" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    authed: Reader,
    SessionPath(session_id): SessionPath,
    Query(query): Query<TailQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let after_seq = match headers.get("last-event-id") {
        Some(value) => last_event_id(value.as_bytes())?,
        None => None,
    };
    let after_seq = match after_seq {
        Some(seq) => seq,
        None => bounded("after_seq", query.after_seq, 0, 0, i64::MAX)?,
    };
    let slot = state.tail.reserve(&authed.caller.key_id).map_err(|full| {
        Error::TooManyRequests(format!(
            "this key has {} live tails open on this server already",
            full.0
        ))
    })?;
    let accessor = authed.accessor();
    let authed_credential = authed.credential;
    let caller = authed.caller;
    let open = OpenTail {
        session_id: session_id.clone(),
        after_seq,
    };
    let key = state.recorded(caller.clone(), accessor, open).await?;
    let follow = state.tail.follow(slot, (caller.tenant.id, key));
    let mut tail = Tail {
        state: state.clone(),
        caller,
        session_id,
        follow,
        last_seq: after_seq,
        pending: VecDeque::new(),
        behind: false,
        credential: authed_credential,
    };
    // The first page is read before answering, so that a database in trouble is a 503.
    let page = tail.read().await?;
    tail.take(page);
    Ok(Sse::new(tail.into_stream())
        .keep_alive(KeepAlive::new().interval(HEARTBEAT))
        .into_response())
}

/// `Last-Event-ID`: a seq, or empty (which a browser sends after an event without an id).
fn last_event_id(value: &[u8]) -> Result<Option<i64>, Invalid> {
    let text = std::str::from_utf8(value).unwrap_or("x").trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<i64>() {
        Ok(seq) if seq >= 0 => Ok(Some(seq)),
        _ => Err(Invalid::parameter(
            "Last-Event-ID must be the seq of an entry (a non-negative integer)",
        )),
    }
}

/// Opening a stream: the session's key in notifications, and the stream's access record.
struct OpenTail {
    session_id: SessionId,
    after_seq: i64,
}

impl Recorded for OpenTail {
    type Output = u64;

    fn action(&self) -> Action {
        Action::Tail
    }

    fn session_id(&self) -> Option<&str> {
        Some(self.session_id.as_str())
    }

    async fn run(&self, db: &mut PgConnection, scope: Scope<'_>) -> Result<u64, Error> {
        ledger::tail_key(db, scope, &self.session_id).await
    }

    fn outcome(&self, _key: &u64) -> Outcome {
        Outcome::ok(json!({"after_seq": self.after_seq}))
    }
}

/// One open stream.
struct Tail {
    state: AppState,
    caller: Caller,
    session_id: SessionId,
    follow: Follow,
    /// The seq of the last entry sent (or the one the stream started after).
    last_seq: i64,
    /// Entries read and not yet sent.
    pending: VecDeque<Entry>,
    /// The last read stopped before the head: read on without waiting.
    behind: bool,
    /// The stream's key, checked before each shared read (against the key cache, which every
    /// revocation empties), so that a revoked key's stream ends rather than living on other
    /// streams' reads.
    credential: Credential,
}

impl Tail {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        futures_util::stream::unfold(self, |mut tail| async move {
            let event = tail.next().await?;
            Some((Ok(event), tail))
        })
    }

    /// The next event, or None when the stream ends.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(entry) = self.pending.pop_front() {
                self.last_seq = entry.seq;
                return match Event::default()
                    .id(entry.seq.to_string())
                    .event("entry")
                    .json_data(EntryView::new(&entry, View::Full))
                {
                    Ok(event) => Some(event),
                    Err(error) => {
                        tracing::error!(%error, "cannot serialize an entry for a live tail");
                        None
                    }
                };
            }
            if self.follow.closing() {
                return None;
            }
            if !self.behind && self.wait().await != Some(Wake::Read) {
                return None;
            }
            let page = self.read_with_retries().await?;
            self.take(page);
        }
    }

    /// Waits for entries beyond `last_seq`. Every `HEARTBEAT` without any it checks the stream's
    /// key (against the key cache, which every revocation empties): None ends the stream of a
    /// key revoked while its session was quiet. A check the database cannot answer now waits on.
    async fn wait(&mut self) -> Option<Wake> {
        loop {
            match tokio::time::timeout(HEARTBEAT, self.follow.wait(self.last_seq)).await {
                Ok(wake) => return Some(wake),
                Err(_quiet) => {
                    if let Err(ApiError::Domain(Error::Unauthenticated)) =
                        self.state.authenticate(&self.credential).await
                    {
                        return None;
                    }
                }
            }
        }
    }

    /// Reads on after `last_seq`, trying again a few times while the database is in trouble.
    async fn read_with_retries(&self) -> Option<Option<Page>> {
        let mut retries = READ_RETRIES.iter();
        loop {
            match self.read().await {
                Ok(page) => return Some(page),
                Err(error) => match retries.next() {
                    Some(pause) if !self.follow.closing() && is_transient(&error) => {
                        tokio::time::sleep(*pause).await
                    }
                    _ => {
                        tracing::warn!(error = %error, "a live tail ends: its entries cannot be read");
                        return None;
                    }
                },
            }
        }
    }

    /// The next page after `last_seq`, from another stream's read of the same entries when
    /// there is a fresh one; None while the session does not exist (for this tenant).
    async fn read(&self) -> Result<Option<Page>, ApiError> {
        let follow_shared = self.follow.shared();
        let mut shared = follow_shared.lock().await;
        if let Some(read) = shared.as_ref().filter(|read| {
            read.after_seq == self.last_seq
                && read.session_id == self.session_id.as_str()
                && read.read_at.elapsed() < SHARED_FRESH
                && read.page.last_seq >= self.follow.heard()
        }) {
            let page = Page::clone(&read.page);
            drop(shared);
            self.state.authenticate(&self.credential).await?;
            return Ok(Some(page));
        }
        let read_at = Instant::now();
        let page = self.read_own().await?;
        if let Some(page) = &page {
            *shared = Some(SharedRead {
                session_id: self.session_id.as_str().to_owned(),
                after_seq: self.last_seq,
                read_at,
                page: Arc::new(page.clone()),
            });
        }
        Ok(page)
    }

    /// The next page after `last_seq`, read under this stream's key.
    async fn read_own(&self) -> Result<Option<Page>, ApiError> {
        let caller = self.caller.clone();
        let session_id = self.session_id.clone();
        let range = Range::After(self.last_seq);
        let limit = PageLimit {
            entries: PAGE_ENTRIES,
            bytes: self.state.limits.max_page_bytes as i64,
        };
        self.state
            .run(move |pool| async move {
                let mut db = pool.acquire().await?;
                match ledger::entries(&mut db, caller.scope(), &session_id, range, limit).await {
                    Ok(page) => Ok(Some(page)),
                    Err(Error::SessionNotFound) => Ok(None),
                    Err(error) => Err(error),
                }
            })
            .await
    }

    fn take(&mut self, page: Option<Page>) {
        let Some(page) = page else {
            self.behind = false;
            return;
        };
        let edge = page.entries.last().map_or(self.last_seq, |entry| entry.seq);
        self.behind = edge < page.last_seq;
        self.pending.extend(page.entries);
    }
}

/// The database being away or overloaded, which may pass.
fn is_transient(error: &ApiError) -> bool {
    matches!(
        error,
        ApiError::Domain(Error::Unavailable(_) | Error::Database(_))
    )
}
