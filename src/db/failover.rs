//! Following the primary among several database hosts.
//!
//! The runtime pool connects only to the host that accepts writes. A monitor keeps one small
//! connection to it and asks every [`PROBE_INTERVAL`] whether it still does; when that
//! connection fails or the host turns read-only, the monitor probes every host until one
//! accepts writes and points the pool at it (`Pool::set_connect_options`), without a restart.
//! Connections the pool opened before that switch are discarded when next acquired or released,
//! so no request keeps talking to a demoted or dead host; a new connection that lands on a host
//! in recovery is refused, which makes the request a 503 that the client retries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::{ConnectOptions, Connection};

use super::DbError;

/// How often the monitor asks the primary whether it still accepts writes: the longest a
/// promotion goes unnoticed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// How long one probe (connect and query) may take before the host counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// True when the session cannot write: the host is a standby, or read-only by configuration
/// (libpq's `target_session_attrs=read-write` asks the same).
pub(crate) const READ_ONLY: &str =
    "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool";

/// Whether the connected host accepts writes.
pub(crate) async fn accepts_writes(connection: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let read_only: bool = sqlx::query_scalar(READ_ONLY)
        .fetch_one(&mut *connection)
        .await?;
    Ok(!read_only)
}

/// A connection to `options` if its host accepts writes within the probe timeout.
async fn writable(options: &PgConnectOptions) -> Option<PgConnection> {
    let probe = async {
        let mut connection = options.connect().await.ok()?;
        match accepts_writes(&mut connection).await {
            Ok(true) => Some(connection),
            _ => {
                let _ = connection.close().await;
                None
            }
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .ok()
        .flatten()
}

/// The index of the first of `hosts` that accepts writes, and a connection to it.
async fn find(hosts: &[PgConnectOptions], first: usize) -> Option<(usize, PgConnection)> {
    for offset in 0..hosts.len() {
        let index = (first + offset) % hosts.len();
        if let Some(connection) = writable(&hosts[index]).await {
            return Some((index, connection));
        }
    }
    None
}

/// The owner options of the host that accepts writes, for migrations and commands.
pub async fn primary_of(hosts: &[PgConnectOptions]) -> Result<PgConnectOptions, DbError> {
    match find(hosts, 0).await {
        Some((index, connection)) => {
            let _ = connection.close().await;
            if hosts.len() > 1 {
                tracing::info!(
                    host = index + 1,
                    of = hosts.len(),
                    "the primary database host"
                );
            }
            Ok(hosts[index].clone())
        }
        None => Err(DbError::NoPrimary(hosts.len())),
    }
}

/// When the pool last switched hosts; connections older than that belong to the old host.
#[derive(Debug, Default)]
pub struct Switches(std::sync::RwLock<Option<Instant>>);

impl Switches {
    fn record(&self, at: Instant) {
        if let Ok(mut last) = self.0.write() {
            *last = Some(at);
        }
    }

    /// True when a connection opened `age` ago was opened after the last switch.
    pub fn current(&self, age: Duration) -> bool {
        self.current_at(age, Instant::now())
    }

    fn current_at(&self, age: Duration, now: Instant) -> bool {
        match self.0.read().ok().and_then(|last| *last) {
            None => true,
            Some(switched) => now.saturating_duration_since(switched) > age,
        }
    }
}

/// Watches the primary for `pool` until the pool is closed. `runtime` holds the pool's options
/// for every host, `current` the index of the one it connects to now.
pub fn spawn_monitor(
    pool: PgPool,
    runtime: Vec<PgConnectOptions>,
    current: usize,
    switches: Arc<Switches>,
) {
    // Its own application name keeps the monitor apart from the pool in pg_stat_activity.
    let hosts: Vec<PgConnectOptions> = runtime
        .iter()
        .map(|host| host.clone().application_name("chatledger-monitor"))
        .collect();
    tokio::spawn(async move {
        let mut current = current;
        let mut connection: Option<PgConnection> = None;
        let mut ticks = tokio::time::interval(PROBE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut down_since: Option<Instant> = None;
        while !pool.is_closed() {
            ticks.tick().await;
            let healthy = match connection.as_mut() {
                Some(held) => matches!(
                    tokio::time::timeout(PROBE_TIMEOUT, accepts_writes(held)).await,
                    Ok(Ok(true))
                ),
                None => false,
            };
            if healthy {
                continue;
            }
            if let Some(old) = connection.take() {
                // The old host may be gone: do not wait for a goodbye.
                drop(old);
            }
            let down = *down_since.get_or_insert_with(Instant::now);
            // The current host first: a blip of its own is not a reason to move.
            match find(&hosts, current).await {
                Some((index, held)) => {
                    if index != current {
                        pool.set_connect_options(runtime[index].clone());
                        switches.record(Instant::now());
                        crate::metrics::primary_switched();
                        tracing::warn!(
                            from = current + 1,
                            to = index + 1,
                            of = hosts.len(),
                            after_ms = down.elapsed().as_millis() as u64,
                            "the primary moved; the pool now connects to the new primary"
                        );
                        current = index;
                    }
                    connection = Some(held);
                    down_since = None;
                }
                None => {
                    if down.elapsed() < PROBE_INTERVAL * 2 {
                        tracing::warn!(of = hosts.len(), "no database host accepts writes");
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_opened_before_a_switch_are_not_current() {
        let switches = Switches::default();
        assert!(switches.current(Duration::from_secs(3600)), "no switch yet");
        let switched = Instant::now();
        switches.record(switched);
        let later = switched + Duration::from_secs(10);
        assert!(
            !switches.current_at(Duration::from_secs(11), later),
            "opened before"
        );
        assert!(
            switches.current_at(Duration::from_secs(9), later),
            "opened since"
        );
    }
}
