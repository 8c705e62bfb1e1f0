//! The HTTP/1.1 server loop: accepts connections and serves the router on each with hyper.
//!
//! `axum::serve` has no knobs for what a public endpoint needs, so the loop is ours:
//! - **a cap on open connections** (`SPIKE_HTTP_MAX_CONNECTIONS`): at the cap the loop stops
//!   accepting and new clients wait in the kernel's backlog, so idle sockets can never use up the
//!   process's file descriptors and starve the stores' pools (see [`raise_file_limit`]);
//! - **a header-read timeout** (`SPIKE_HTTP_HEADER_TIMEOUT`): a connection that has not sent a
//!   complete request head within it is closed. hyper starts that clock both on a new connection
//!   and whenever a keep-alive connection falls idle, so the same bound reaps slow-header clients
//!   and idle keep-alive connections;
//! - **graceful shutdown**: on cancellation the loop stops accepting, every connection finishes
//!   the request it is serving and closes.
//!
//! Request bodies are read by the body-reading layer (`BufferBodyLayer` in `middleware.rs`),
//! with their own timeout.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// File descriptors kept free for everything that is not a client connection: the MySQL, Redis
/// and AMQP connections, log files, the listener itself.
const RESERVED_FILE_DESCRIPTORS: u64 = 256;

/// How long the loop pauses after a failed accept (out of file descriptors, most likely) before
/// trying again, instead of spinning on the error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Limits of the connection loop.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// Raises the soft limit on open files to the hard limit (allowed without privileges) and returns
/// how many client connections fit under it. When `wanted` connections plus a reserve for the
/// stores do not fit, the cap is lowered to what fits and a warning says so.
pub fn raise_file_limit(wanted: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "could not read or raise the open-file limit");
            return wanted;
        }
    };
    let fits = limit.saturating_sub(RESERVED_FILE_DESCRIPTORS).max(1);
    if wanted as u64 > fits {
        tracing::warn!(
            open_file_limit = limit,
            wanted,
            allowed = fits,
            "SPIKE_HTTP_MAX_CONNECTIONS does not fit under the open-file limit; lowered"
        );
        return fits as usize;
    }
    wanted
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets the open connections
/// finish their current request. The caller bounds how long that may take.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Small answers go out at once instead of waiting for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            // Errors here are the client's doing (reset, timed-out head, malformed request).
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    connections.shutdown().await;
}
