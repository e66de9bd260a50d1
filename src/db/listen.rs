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
    // A pool of one, never reaped: PgListener wants a pool, and this one is ours alone.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with((*runtime.connect_options()).clone());
    let mut retry = FIRST_RETRY;
    loop {
        pool.set_connect_options((*runtime.connect_options()).clone());
        let session = async {
            let mut listener = PgListener::connect_with(&pool).await?;
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
        let outcome = tokio::select! {
            _ = &mut stopped => return,
            outcome = session => outcome,
        };
        for subscriber in live(&subscribers) {
            subscriber.lost();
        }
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
