//! The HTTP/1.1 server loop: accepts connections and serves the router on each with hyper.
//!
//! `axum::serve` has no knobs for what a public endpoint needs, so the loop is ours:
//! - **a cap on open connections** (`SPIKE_HTTP_MAX_CONNECTIONS`): at the cap the loop stops
//!   accepting and new clients wait in the kernel's backlog, so idle sockets can never use up the
//!   process's file descriptors and starve the stores' pools (see [`raise_file_limit`]);
//! - **a cap per client address** (`SPIKE_HTTP_MAX_CONNECTIONS_PER_IP`, an eighth of the cap by
//!   default): a client already holding that many connections has a new one refused at accept
//!   time (a bare `429` and close), so one address opening thousands of unfinished requests
//!   cannot take every slot while other clients wait in the backlog. The count is touched when a
//!   connection opens and closes, never per request;
//! - **a header-read timeout** (`SPIKE_HTTP_HEADER_TIMEOUT`): a connection that has not sent a
//!   complete request head within it is closed. hyper starts that clock both on a new connection
//!   and whenever a keep-alive connection falls idle, so the same bound reaps slow-header clients
//!   and idle keep-alive connections;
//! - **a head size limit** (`SPIKE_HTTP_HEAD_LIMIT`): hyper buffers at most that much of a
//!   request head and answers a larger one `431` (no body) and closes; hyper's own default let
//!   each connection buffer ~400 KB;
//! - **graceful shutdown**: on cancellation the loop stops accepting, every connection finishes
//!   the request it is serving and closes.
//!
//! Request bodies are read by the body-reading layer (`BufferBodyLayer` in `middleware.rs`),
//! with their own timeout.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
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

/// What a client over its per-address cap reads before the connection closes: no request was
/// read, so there is no route and no envelope, only the status (as for a `431`).
const TOO_MANY_CONNECTIONS: &[u8] =
    b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Limits of the connection loop.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// Connections of one client address at most.
    pub max_per_address: usize,
    pub header_timeout: Duration,
    /// Largest request head hyper buffers (`max_buf_size`; at least 8 KiB).
    pub head_limit: usize,
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
    let per_address = Arc::new(AddressCounts::new(limits.max_per_address));
    let connections = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.head_limit)
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
        let Some(address_slot) = per_address.admit(peer.ip()) else {
            // The socket is new and its buffer empty: the short answer fits without waiting.
            let _ = stream.try_write(TOO_MANY_CONNECTIONS);
            tracing::debug!(%peer, "connection refused: this address holds its share");
            continue;
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
            drop(address_slot);
            drop(slot);
        });
    }
    drop(listener);
    connections.shutdown().await;
}

/// Open connections per client address, for the per-address cap. A mutex over a map, taken
/// twice per connection (open, close) by the accept loop and the closing task: never per
/// request, and short.
struct AddressCounts {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl AddressCounts {
    fn new(max: usize) -> AddressCounts {
        AddressCounts {
            max: max.max(1),
            open: Mutex::default(),
        }
    }

    /// Counts a new connection of `peer`, or `None` when its address holds its share already.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<AddressSlot> {
        let address = client_address(peer);
        let mut open = self.open.lock().expect("address counts poisoned");
        let count = open.entry(address).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            counts: self.clone(),
            address,
        })
    }
}

/// One counted connection; dropping it uncounts it.
struct AddressSlot {
    counts: Arc<AddressCounts>,
    address: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().expect("address counts poisoned");
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// The address a client is counted under: an IPv4 address (also when it arrives IPv4-mapped on
/// a dual-stack socket) or an IPv6 /64, the block one subscriber usually holds whole.
fn client_address(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !u128::from(u64::MAX);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_share_and_gets_it_back_as_connections_close() {
        let counts = Arc::new(AddressCounts::new(2));
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let first = counts.admit(one).unwrap();
        let _second = counts.admit(one).unwrap();
        assert!(counts.admit(one).is_none());
        assert!(
            counts.admit(other).is_some(),
            "another address is not affected"
        );
        drop(first);
        assert!(counts.admit(one).is_some());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_address(a), client_address(b));
        assert_ne!(client_address(a), client_address(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            client_address(mapped),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }
}
