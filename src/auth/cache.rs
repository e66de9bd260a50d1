//! The cache of authenticated keys. It is trusted only while this server's listener is connected
//! (so that it hears of every key change); every change it hears of, and every loss or return of
//! the connection, empties it. A generation counter keeps a lookup that raced an invalidation
//! from putting a stale entry back.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sqlx::PgPool;

use super::{Caller, Credential, lookup};
use crate::db::listen::Subscriber;
use crate::error::Error;

/// Channel on which the database announces any change of an API key (migration 0003).
pub const KEYS_CHANNEL: &str = "chatledger_keys";

/// Entries kept at most; beyond, keys are looked up without being cached.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Default)]
pub struct KeyCache {
    entries: RwLock<HashMap<[u8; 32], Caller>>,
    generation: AtomicU64,
    trusted: AtomicBool,
}

impl KeyCache {
    /// The live key behind `credential`, from the cache when it can be trusted, else from the
    /// database.
    pub async fn authenticate(
        &self,
        pool: &PgPool,
        credential: &Credential,
    ) -> Result<Caller, Error> {
        if self.trusted.load(Ordering::Acquire)
            && let Some(caller) = self.read().get(credential.digest())
        {
            return Ok(caller.clone());
        }
        let generation = self.generation.load(Ordering::Acquire);
        let caller = lookup(pool, credential).await?;
        if self.trusted.load(Ordering::Acquire) {
            let mut entries = self.write();
            if self.generation.load(Ordering::Acquire) == generation && entries.len() < MAX_ENTRIES
            {
                entries.insert(*credential.digest(), caller.clone());
            }
        }
        Ok(caller)
    }

    /// Forgets every key; called at once by a revocation on this server, and on every
    /// notification.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.write().clear();
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<[u8; 32], Caller>> {
        self.entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<[u8; 32], Caller>> {
        self.entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Subscriber for KeyCache {
    fn channels(&self) -> &'static [&'static str] {
        &[KEYS_CHANNEL]
    }

    fn connected(&self) {
        // Whatever changed while nobody listened is unknown: start empty, then trust.
        self.invalidate();
        self.trusted.store(true, Ordering::Release);
    }

    fn lost(&self) {
        self.trusted.store(false, Ordering::Release);
        self.invalidate();
    }

    fn notified(&self, _channel: &str, _payload: &str) {
        self.invalidate();
    }
}
