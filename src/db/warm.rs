//! Connections handed from one request straight to the next.
//!
//! sqlx pings every connection it takes back into its pool: one more round trip on a connection
//! that has just answered, for each of the single statements the bots' requests are. The routes
//! that make up nearly all of the load instead hand a connection that finished cleanly to the
//! next such request (the one waiting longest, else the next to come), for at most `LEASE` after
//! it left the pool. Then, or when anything about it is in doubt, it goes back to the pool, which
//! pings it as before. The lease keeps the server's other work (the indexer, audits, admin) from
//! waiting behind connections the hot routes would otherwise keep cycling among themselves, and a
//! primary switch (`failover` gives the pool new connect options) retires every connection leased
//! before it.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::{Connection, Postgres};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::error::Error;

/// How long a connection may go from request to request before it goes back to the pool.
pub const LEASE: Duration = Duration::from_millis(100);

/// A pool with a stack of connections just released by the hot routes in front of it, and
/// the hot requests waiting for one, served in turn.
pub struct Warm {
    pool: PgPool,
    /// One per connection out of the pool here, in use or on the stack: at most the pool's size,
    /// and a request that waits for one waits its turn.
    slots: Arc<Semaphore>,
    hand: Mutex<Hand>,
}

#[derive(Default)]
struct Hand {
    idle: Vec<Leased>,
    waiting: VecDeque<oneshot::Sender<Leased>>,
}

/// A connection out of the pool, for one request at a time.
pub struct Leased {
    connection: PoolConnection<Postgres>,
    since: Instant,
    /// The pool's connect options when it was taken: replaced when the primary moves.
    options: Arc<PgConnectOptions>,
    _slot: OwnedSemaphorePermit,
}

impl Leased {
    /// When it left the pool.
    pub fn since(&self) -> Instant {
        self.since
    }
}

impl Deref for Leased {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.connection
    }
}

impl DerefMut for Leased {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.connection
    }
}

impl Warm {
    /// In front of `pool`; a task returns expired connections to it until the `Warm` is dropped.
    pub fn new(pool: PgPool) -> Arc<Self> {
        let size = pool.options().get_max_connections() as usize;
        let warm = Arc::new(Self {
            pool,
            slots: Arc::new(Semaphore::new(size)),
            hand: Mutex::new(Hand::default()),
        });
        let weak: Weak<Self> = Arc::downgrade(&warm);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(LEASE);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(warm) = weak.upgrade() else { return };
                warm.sweep();
            }
        });
        warm
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The connection released last, if it is still on its lease; else whichever comes first:
    /// one released to this request in its turn, or a turn to take one from the pool.
    pub async fn acquire(&self) -> Result<Leased, sqlx::Error> {
        let mut expired = Vec::new();
        let handed = {
            let Ok(mut hand) = self.hand.lock() else {
                return Err(sqlx::Error::PoolClosed);
            };
            while let Some(leased) = hand.idle.pop() {
                if self.current(&leased) {
                    return Ok(leased);
                }
                expired.push(leased);
            }
            let (sender, receiver) = oneshot::channel();
            hand.waiting.push_back(sender);
            receiver
        };
        drop(expired);
        // Both waits may be given up without loss (a connection handed to a request that took a
        // slot instead goes back to the pool with it). The pool's own acquire is never raced:
        // given up while it pings or opens a connection, it would close that connection.
        // One deadline for the whole wait, the pool's: a request the database cannot serve in
        // time gets its 503 as quickly as through the pool alone.
        let deadline = tokio::time::Instant::now() + self.pool.options().get_acquire_timeout();
        let slot = tokio::select! {
            Ok(leased) = handed => return Ok(leased),
            slot = self.slots.clone().acquire_owned() => slot.map_err(|_| sqlx::Error::PoolClosed)?,
            () = tokio::time::sleep_until(deadline) => return Err(sqlx::Error::PoolTimedOut),
        };
        // Read before acquiring: a switch in between makes the connection look stale, never fresh.
        let options = self.pool.connect_options();
        let connection = tokio::time::timeout_at(deadline, self.pool.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        Ok(Leased {
            connection,
            since: Instant::now(),
            options,
            _slot: slot,
        })
    }

    /// Hands `leased` to the next request when `outcome` says nothing about the connection
    /// (success, or a refusal such as a seq conflict) and it is idle and on its lease; otherwise
    /// it goes back to the pool. A request waiting for a connection gets it first.
    pub fn release<T>(&self, leased: Leased, outcome: &Result<T, Error>) {
        let clean = match outcome {
            Ok(_) => true,
            Err(error) => !error.concerns_the_connection(),
        };
        if !clean || leased.connection.is_in_transaction() || !self.current(&leased) {
            return;
        }
        let Ok(mut hand) = self.hand.lock() else {
            return;
        };
        let mut leased = leased;
        while let Some(waiter) = hand.waiting.pop_front() {
            match waiter.send(leased) {
                Ok(()) => return,
                // It got one from the pool meanwhile.
                Err(back) => leased = back,
            }
        }
        hand.idle.push(leased);
    }

    /// How many connections wait on the stack now.
    pub fn idle(&self) -> usize {
        self.hand.lock().map(|hand| hand.idle.len()).unwrap_or(0)
    }

    /// How many requests wait for a connection now.
    pub fn waiting(&self) -> usize {
        self.hand
            .lock()
            .map(|hand| hand.waiting.iter().filter(|w| !w.is_closed()).count())
            .unwrap_or(0)
    }

    fn current(&self, leased: &Leased) -> bool {
        leased.since.elapsed() < LEASE && Arc::ptr_eq(&leased.options, &self.pool.connect_options())
    }

    /// Returns every connection past its lease to the pool.
    fn sweep(&self) {
        let expired: Vec<Leased> = match self.hand.lock() {
            Ok(mut hand) => {
                let (keep, expired) = hand.idle.drain(..).partition(|leased| self.current(leased));
                hand.idle = keep;
                hand.waiting.retain(|waiter| !waiter.is_closed());
                expired
            }
            Err(_) => return,
        };
        // Dropped outside the lock: each goes back to the pool, which pings it.
        drop(expired);
    }
}
