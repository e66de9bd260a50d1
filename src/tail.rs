//! The live tail's fan-out: this server's listener hears of every advance of a session's head
//! (announced by the server that wrote it, after its commit: `Announcer`) and wakes the streams
//! following that session; a stream then reads the new entries itself. Notifications are hints: whenever some may have been missed (the listener
//! reconnecting), every stream is woken to catch up from its last seq. A stream holds no
//! database connection while it waits, only a receiver here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use sqlx::PgPool;
use tokio::sync::{mpsc, watch};

use crate::db::listen::Subscriber;
use crate::ledger::{Appended, Page};

/// Channel on which the database announces every new entry (migration 0007).
pub const TAIL_CHANNEL: &str = "chatledger_tail";

/// Advances waiting to be announced; beyond, new ones are dropped (and counted): they are hints,
/// and a database that far behind will also have cost the listener its connection, which wakes
/// every stream anyway.
const ANNOUNCE_QUEUE: usize = 65_536;
/// Advances announced by one statement at most.
const ANNOUNCE_BATCH: usize = 1_000;

/// A session's head advanced to `last_seq`, committed.
#[derive(Debug, Clone)]
pub struct Advance {
    pub tenant_id: i64,
    pub session_id: String,
    pub last_seq: i64,
}

impl Advance {
    /// The head `appended` left its session of `tenant_id` at.
    pub fn of(tenant_id: i64, appended: &Appended) -> Self {
        Self {
            tenant_id,
            session_id: appended.session_id.as_str().to_owned(),
            last_seq: appended.last_seq,
        }
    }
}

/// Sends `NOTIFY chatledger_tail` for committed advances, in a transaction of its own. Not in the
/// append's: PostgreSQL serialises the commits of all transactions that notify, holding a lock
/// through the commit's WAL flush, which made appends with fsync on about four times slower at
/// 16 clients (measured with the reference append and a notifying trigger, 1,289 against 302 per
/// second). One task per server sends whatever has queued meanwhile as one statement, so under
/// load one notifying transaction serves many appends.
#[derive(Debug, Clone)]
pub struct Announcer {
    queue: mpsc::Sender<Advance>,
}

impl Announcer {
    /// The announcing task, which lives as long as some `Announcer` does.
    pub fn spawn(pool: PgPool) -> Self {
        let (queue, waiting) = mpsc::channel(ANNOUNCE_QUEUE);
        tokio::spawn(announce_queued(pool, waiting));
        Self { queue }
    }

    /// Queues `advance`; never waits.
    pub fn announce(&self, advance: Advance) {
        if self.queue.try_send(advance).is_err() {
            crate::metrics::tail_announcement_dropped();
        }
    }
}

async fn announce_queued(pool: PgPool, mut waiting: mpsc::Receiver<Advance>) {
    let mut batch = Vec::with_capacity(ANNOUNCE_BATCH);
    while waiting.recv_many(&mut batch, ANNOUNCE_BATCH).await > 0 {
        if let Err(error) = announce(&pool, &batch).await {
            crate::metrics::tail_announcement_dropped();
            tracing::warn!(%error, advances = batch.len(), "could not announce new entries to live tails");
        }
        batch.clear();
    }
}

/// Announces `advances` now.
pub async fn announce<'c>(
    db: impl sqlx::PgExecutor<'c>,
    advances: &[Advance],
) -> Result<(), sqlx::Error> {
    let tenants: Vec<i64> = advances.iter().map(|advance| advance.tenant_id).collect();
    let sessions: Vec<&str> = advances
        .iter()
        .map(|advance| advance.session_id.as_str())
        .collect();
    let seqs: Vec<i64> = advances.iter().map(|advance| advance.last_seq).collect();
    // The payload names no session: chatledger_tail_key (migration 0007).
    sqlx::query(
        "SELECT pg_notify('chatledger_tail',
                          a.tenant_id::text || ' ' || chatledger_tail_key(a.tenant_id, a.session_id)
                          || ' ' || a.last_seq::text)
           FROM unnest($1::int8[], $2::text[], $3::int8[]) AS a (tenant_id, session_id, last_seq)",
    )
    .bind(tenants)
    .bind(sessions)
    .bind(seqs)
    .execute(db)
    .await?;
    Ok(())
}

/// Announces one committed advance now (the command line, whose process may end next, and the
/// retention sweeper), logging rather than failing when it cannot: the change is committed either
/// way, and a tail that missed it gets it with the session's next announced advance.
pub async fn announce_now(pool: &PgPool, advance: Advance) {
    if let Err(error) = announce(pool, std::slice::from_ref(&advance)).await {
        crate::metrics::tail_announcement_dropped();
        tracing::warn!(%error, "committed, but could not tell live tails");
    }
}

/// Open streams per key by default (`--max-streams-per-key`).
pub const DEFAULT_STREAMS_PER_KEY: usize = 100;

/// A session as notifications name it: the tenant's id and the session key that
/// `chatledger_tail_key` computes, so that no name travels through the database's channel.
pub type SessionKey = (i64, u64);

/// Every stream of this server, and what wakes them.
#[derive(Debug)]
pub struct Hub {
    /// Per followed session: the highest last seq heard of, and the latest read of it.
    sessions: Mutex<HashMap<SessionKey, Followed>>,
    /// Bumped whenever notifications may have been missed.
    epoch: watch::Sender<u64>,
    /// True once the server is shutting down: every stream ends.
    closing: watch::Sender<bool>,
    /// Open streams per key id.
    streams: Mutex<HashMap<Arc<str>, usize>>,
    max_per_key: AtomicUsize,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new(DEFAULT_STREAMS_PER_KEY)
    }
}

/// One followed session.
#[derive(Debug)]
struct Followed {
    head: watch::Sender<i64>,
    shared: Arc<tokio::sync::Mutex<Option<SharedRead>>>,
}

/// The latest read of a session's entries on this server, which its other streams at the same
/// place take instead of reading the same entries again: one read per new entry and server,
/// not one per stream. Whoever reads holds the lock, so the others wait for its page.
#[derive(Debug)]
pub struct SharedRead {
    /// The session read (the session key alone might, however unlikely, name two).
    pub session_id: String,
    /// The page holds the entries after this seq.
    pub after_seq: i64,
    pub read_at: Instant,
    pub page: Arc<Page>,
}

/// What a stream listens to; dropping it gives its slot back and forgets a session that no
/// one follows any more.
#[derive(Debug)]
pub struct Follow {
    hub: Arc<Hub>,
    key: SessionKey,
    key_id: Arc<str>,
    head: watch::Receiver<i64>,
    shared: Arc<tokio::sync::Mutex<Option<SharedRead>>>,
    epoch: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
}

/// Why a stream wakes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Entries beyond the stream's last seq may exist: read them.
    Read,
    /// The server is shutting down.
    Close,
}

/// The key already has its maximum of open streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyStreams(pub usize);

impl Hub {
    pub fn new(max_per_key: usize) -> Self {
        Self {
            sessions: Mutex::default(),
            epoch: watch::Sender::new(0),
            closing: watch::Sender::new(false),
            streams: Mutex::default(),
            max_per_key: AtomicUsize::new(max_per_key),
        }
    }

    /// A slot for one more stream of `key_id`, or `TooManyStreams`.
    pub fn reserve(self: &Arc<Self>, key_id: &Arc<str>) -> Result<Slot, TooManyStreams> {
        let mut streams = lock(&self.streams);
        let open = streams.entry(key_id.clone()).or_insert(0);
        let max = self.max_per_key.load(Ordering::Relaxed);
        if *open >= max {
            return Err(TooManyStreams(max));
        }
        *open += 1;
        crate::metrics::tail_streams(streams.values().sum());
        Ok(Slot {
            hub: Some(self.clone()),
            key_id: key_id.clone(),
        })
    }

    /// Starts following `key` with the slot reserved for it. Follow before reading, so that
    /// nothing committed in between goes unnoticed.
    pub fn follow(self: &Arc<Self>, mut slot: Slot, key: SessionKey) -> Follow {
        let (head, shared) = {
            let mut sessions = lock(&self.sessions);
            let followed = sessions.entry(key).or_insert_with(|| Followed {
                head: watch::Sender::new(0),
                shared: Arc::default(),
            });
            (followed.head.subscribe(), followed.shared.clone())
        };
        // The slot's release moves to the Follow.
        slot.hub = None;
        Follow {
            hub: self.clone(),
            key,
            key_id: slot.key_id.clone(),
            head,
            shared,
            epoch: self.epoch.subscribe(),
            closing: self.closing.subscribe(),
        }
    }

    /// At most `max` open streams per key from now on.
    pub fn set_max_per_key(&self, max: usize) {
        self.max_per_key.store(max, Ordering::Relaxed);
    }

    /// Ends every stream, now and from now on.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        lock(&self.streams).values().sum()
    }

    fn release(&self, key_id: &Arc<str>) {
        let mut streams = lock(&self.streams);
        if let Some(open) = streams.get_mut(key_id) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                streams.remove(key_id);
            }
        }
        crate::metrics::tail_streams(streams.values().sum());
    }

    /// The payload of a notification: "<tenant id> <session key hex> <last seq>".
    fn parse(payload: &str) -> Option<(SessionKey, i64)> {
        let mut parts = payload.split(' ');
        let tenant = parts.next()?.parse().ok()?;
        let key = u64::from_str_radix(parts.next()?, 16).ok()?;
        let last_seq = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(((tenant, key), last_seq))
    }
}

impl Subscriber for Hub {
    fn channels(&self) -> &'static [&'static str] {
        &[TAIL_CHANNEL]
    }

    fn connected(&self) {
        // Whatever was committed while nobody listened is read now.
        self.epoch.send_modify(|epoch| *epoch += 1);
    }

    fn lost(&self) {}

    fn notified(&self, _channel: &str, payload: &str) {
        let Some((key, last_seq)) = Self::parse(payload) else {
            tracing::warn!(payload, "a tail notification that does not parse");
            return;
        };
        if let Some(followed) = lock(&self.sessions).get(&key) {
            followed.head.send_if_modified(|seen| {
                let newer = last_seq > *seen;
                *seen = (*seen).max(last_seq);
                newer
            });
        }
    }
}

/// One stream's place among a key's open streams, until it follows a session.
#[derive(Debug)]
pub struct Slot {
    hub: Option<Arc<Hub>>,
    key_id: Arc<str>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.take() {
            hub.release(&self.key_id);
        }
    }
}

impl Follow {
    /// Waits until entries after `last_seq` may exist, or the server closes. The first call
    /// returns at once when a notification beyond `last_seq` came in meanwhile.
    pub async fn wait(&mut self, last_seq: i64) -> Wake {
        loop {
            if *self.closing.borrow_and_update() {
                return Wake::Close;
            }
            if *self.head.borrow_and_update() > last_seq {
                return Wake::Read;
            }
            tokio::select! {
                changed = self.closing.changed() => if changed.is_err() { return Wake::Close },
                changed = self.head.changed() => if changed.is_err() { return Wake::Close },
                changed = self.epoch.changed() => {
                    if changed.is_err() { return Wake::Close }
                    self.epoch.borrow_and_update();
                    return Wake::Read;
                }
            }
        }
    }

    /// The highest last seq of the session heard of so far.
    pub fn heard(&self) -> i64 {
        *self.head.borrow()
    }

    /// The session's latest read on this server, shared by its streams.
    pub fn shared(&self) -> &tokio::sync::Mutex<Option<SharedRead>> {
        &self.shared
    }

    /// Whether the server is shutting down.
    pub fn closing(&self) -> bool {
        *self.closing.borrow()
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        {
            let mut sessions = lock(&self.hub.sessions);
            // This receiver is the last: nobody follows the session any more.
            if sessions
                .get(&self.key)
                .is_some_and(|followed| followed.head.receiver_count() <= 1)
            {
                sessions.remove(&self.key);
            }
        }
        self.hub.release(&self.key_id);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_parse_as_tenant_key_and_seq() {
        assert_eq!(
            Hub::parse("7 00ff00ff00ff00ff 42"),
            Some(((7, 0x00ff_00ff_00ff_00ff), 42))
        );
        assert_eq!(Hub::parse("7 00ff 42 extra"), None);
        assert_eq!(Hub::parse("seven 00ff 42"), None);
        assert_eq!(Hub::parse(""), None);
    }

    #[test]
    fn a_key_gets_its_maximum_of_streams_and_its_slots_back() {
        let hub = Arc::new(Hub::new(2));
        let key: Arc<str> = "key_a".into();
        let first = hub.reserve(&key).expect("first");
        let second = hub.follow(hub.reserve(&key).expect("second"), (1, 1));
        assert_eq!(hub.reserve(&key).err(), Some(TooManyStreams(2)));
        assert!(hub.reserve(&"key_b".into()).is_ok());
        drop(first);
        drop(second);
        assert_eq!(hub.open_streams(), 0);
        assert!(lock(&hub.sessions).is_empty());
    }

    #[tokio::test]
    async fn a_stream_wakes_for_its_session_only_and_on_reconnect() {
        let hub = Arc::new(Hub::new(10));
        let key: Arc<str> = "key_a".into();
        let mut mine = hub.follow(hub.reserve(&key).expect("slot"), (1, 5));
        hub.notified(TAIL_CHANNEL, "2 0000000000000005 9");
        hub.notified(TAIL_CHANNEL, "1 0000000000000006 9");
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(20), mine.wait(0)).await;
        assert!(quiet.is_err(), "woken by another session");
        hub.notified(TAIL_CHANNEL, "1 0000000000000005 3");
        assert_eq!(mine.wait(0).await, Wake::Read);
        // Seen already: no wake for seq 3 once the stream is at 3.
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(20), mine.wait(3)).await;
        assert!(quiet.is_err());
        hub.connected();
        assert_eq!(mine.wait(3).await, Wake::Read);
        hub.close();
        assert_eq!(mine.wait(3).await, Wake::Close);
    }
}
