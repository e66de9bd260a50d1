//! One dedicated connection per server that LISTENs for the database's notifications and hands
//! them to subscribers. Notifications are hints: whoever relies on one is told when the
//! connection is lost and when it is back, so that it can catch up on what it may have missed.
//! `LISTEN` needs a session-level connection: it does not work through a transaction-pooling
//! PgBouncer. It follows the runtime pool: each (re)connection goes where the pool's connections
//! go now, so after a failover it listens on the new primary.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::oneshot;

/// Something that acts on notifications.
pub trait Subscriber: Send + Sync + 'static {
    /// The channels it wants.
    fn channels(&self) -> &'static [&'static str];
    /// Listening (again): notifications from now on arrive; earlier ones may have been missed.
    fn connected(&self);
    /// The connection is gone: notifications may be missed until `connected` is called again.
    fn lost(&self);
    fn notified(&self, channel: &str, payload: &str);
}

/// The running listener; dropping it stops it.
#[derive(Debug)]
pub struct Listener {
    _stop: oneshot::Sender<()>,
}

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);
/// How long one attempt to connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a session checks whether the runtime pool moved to another host.
const MOVE_CHECK: Duration = Duration::from_millis(250);

impl Listener {
    /// Starts listening on a connection of its own, made with the current options of `runtime`
    /// (the runtime pool). Subscribers are held weakly: the listener never keeps one alive.
    pub fn spawn(runtime: PgPool, subscribers: Vec<Weak<dyn Subscriber>>) -> Self {
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(run(runtime, subscribers, stopped));
        Listener { _stop: stop }
    }
}

async fn run(
    runtime: PgPool,
    subscribers: Vec<Weak<dyn Subscriber>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut retry = FIRST_RETRY;
    loop {
        // A pool of one per session, never reaped (PgListener wants a pool), made with the
        // runtime pool's options of the moment: a session never outlives the host it was opened
        // on, and no connection to an old host is handed to the next session.
        let options = runtime.connect_options();
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with((*options).clone());
        let session = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            // A lost connection ends the session here, rather than being reconnected inside
            // PgListener to the host it had.
            listener.eager_reconnect(false);
            let channels: Vec<&str> = live(&subscribers)
                .iter()
                .flat_map(|subscriber| subscriber.channels().iter().copied())
                .collect();
            listener.listen_all(channels).await?;
            for subscriber in live(&subscribers) {
                subscriber.connected();
            }
            tracing::debug!("listening for notifications");
            loop {
                // `None`: the connection was lost.
                let Some(notification) = listener.try_recv().await? else {
                    return Ok::<(), sqlx::Error>(());
                };
                for subscriber in live(&subscribers) {
                    if subscriber.channels().contains(&notification.channel()) {
                        subscriber.notified(notification.channel(), notification.payload());
                    }
                }
            }
        };
        // The runtime pool moved to another host (a failover): what is heard here may no longer
        // be all there is, even if this connection is still up.
        let moved = async {
            loop {
                tokio::time::sleep(MOVE_CHECK).await;
                if !Arc::ptr_eq(&runtime.connect_options(), &options) {
                    return;
                }
            }
        };
        let outcome = tokio::select! {
            _ = &mut stopped => return,
            outcome = session => outcome,
            () = moved => {
                tracing::info!("the database primary moved; listening there");
                Ok(())
            }
        };
        for subscriber in live(&subscribers) {
            subscriber.lost();
        }
        // Best effort: the old host may be gone.
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, pool.close()).await;
        match outcome {
            Ok(()) => {
                tracing::warn!("lost the notification connection; reconnecting");
                retry = FIRST_RETRY;
            }
            Err(error) => {
                tracing::warn!(%error, retry_ms = retry.as_millis() as u64, "cannot listen for notifications");
            }
        }
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(LAST_RETRY);
    }
}

fn live(subscribers: &[Weak<dyn Subscriber>]) -> Vec<Arc<dyn Subscriber>> {
    subscribers.iter().filter_map(Weak::upgrade).collect()
}
