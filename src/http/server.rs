//! Serving connections: hyper with a timer, so a client that sends half a request header (or
//! idles on a kept-alive connection) is dropped after the header-read timeout; a cap on open
//! connections, past which a small reserve still answers the probes (and 503 to everything
//! else) and further connections wait in the kernel's queue; and a graceful shutdown bounded by
//! a drain limit.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

/// How connections are served.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// A request's headers must arrive within this, and a kept-alive connection's next request
    /// must begin within it.
    pub header_read_timeout: Duration,
    /// Open connections served in full.
    pub max_connections: usize,
    /// Connections beyond the cap that still get an answer: the probes, or 503.
    pub overflow_connections: usize,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub drain_timeout: Duration,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
            overflow_connections: 64,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Marks a request that came on a connection beyond the cap.
#[derive(Debug, Clone, Copy)]
pub struct Overflow;

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// for at most the drain limit.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    settings: ServeSettings,
) -> std::io::Result<()> {
    let full = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let overflow = Arc::new(Semaphore::new(settings.overflow_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(settings.header_read_timeout));
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = connection_permit(&full, &overflow) => permit,
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: back off rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY");
        }
        // The permit was taken before the connection came, perhaps while every full one was
        // busy: one that came free meanwhile serves it in full, or an idle server would answer
        // the first client after a burst 503.
        let (permit, overflowed) = match permit {
            (reserve, true) => match full.clone().try_acquire_owned() {
                Ok(permit) => {
                    drop(reserve);
                    (permit, false)
                }
                Err(_) => (reserve, true),
            },
            permit => permit,
        };
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                if overflowed {
                    request.extensions_mut().insert(Overflow);
                }
                request
            });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let open = graceful.count();
    tokio::select! {
        () = graceful.shutdown() => tracing::info!(connections = open, "all connections finished"),
        () = tokio::time::sleep(settings.drain_timeout) => {
            tracing::warn!(drain_ms = settings.drain_timeout.as_millis() as u64,
                           "drain limit reached; closing the connections still open");
        }
    }
    Ok(())
}

/// A permit for the next connection: a full one when there is one, else an overflow one, else
/// the first of either to come free. The flag says whether it is an overflow permit.
async fn connection_permit(
    full: &Arc<Semaphore>,
    overflow: &Arc<Semaphore>,
) -> (OwnedSemaphorePermit, bool) {
    if let Ok(permit) = full.clone().try_acquire_owned() {
        return (permit, false);
    }
    if let Ok(permit) = overflow.clone().try_acquire_owned() {
        return (permit, true);
    }
    tokio::select! {
        Ok(permit) = full.clone().acquire_owned() => (permit, false),
        Ok(permit) = overflow.clone().acquire_owned() => (permit, true),
    }
}

/// Raises the soft limit on open files to the hard limit, so the connection cap, not the
/// descriptor limit, is what bounds a busy server.
pub fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(%error, soft, hard, "cannot raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read the open-file limit"),
    }
}
