//! The HTTP server: where it listens, how big and how slow a request may be, who may call it.

use std::net::SocketAddr;
use std::time::Duration;

use super::Environment;
use super::reader::Reader;
use super::values::CorsOrigins;

/// The smallest head limit hyper takes (its read buffer's floor).
const HEAD_LIMIT_MIN: usize = 8192;

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    /// The internal listener every role opens: `/healthz`, `/readyz` and `/metrics`, for
    /// probes and scrapes; never exposed publicly (`/metrics` is not on `addr`).
    pub internal_addr: SocketAddr,
    /// Largest accepted request body in bytes (larger → 413/10010).
    pub body_limit: usize,
    /// A request still running after this answers 503/10008.
    pub request_timeout: Duration,
    /// A request body not fully received within this answers 408/10001.
    pub body_timeout: Duration,
    /// A connection that has not sent a complete request head within this is closed (also the
    /// idle timeout of keep-alive connections).
    pub header_timeout: Duration,
    /// Open client connections at most; more wait in the listen backlog.
    pub max_connections: usize,
    /// Open connections of one client address (an IPv6 /64) at most; more are refused at once.
    pub max_connections_per_ip: usize,
    /// Largest request head (request line and headers) in bytes; larger → 431, no body.
    pub head_limit: usize,
    pub cors_origins: CorsOrigins,
    /// How long shutdown waits for in-flight work before giving up.
    pub shutdown_grace: Duration,
    /// Reverse proxies in front of the service that append to `X-Forwarded-For`; 0 trusts no
    /// header and uses the socket's peer address as the client IP.
    pub trusted_proxy_hops: usize,
}

impl HttpSettings {
    pub(super) fn read(r: &mut Reader<'_>, _env: Environment) -> Option<HttpSettings> {
        r.section("HTTP server");
        let addr =
            r.parsed::<SocketAddr>("http_addr", "listen address", ([0, 0, 0, 0], 8080).into());
        let internal_addr = r.parsed::<SocketAddr>(
            "internal_http_addr",
            "the internal listener every role (`serve`, `worker`, `all`) opens for `/healthz`, `/readyz` and `/metrics`; keep it off the public network (`/metrics` is not served on `http_addr`). Was `SPIKE_WORKER_HTTP_ADDR` (still read, with a warning, until 0.4)",
            ([0, 0, 0, 0], 8081).into(),
        );
        let body_limit = r.parsed::<usize>(
            "http_body_limit",
            "largest request body in bytes (413 / `10010` above)",
            64 * 1024,
        );
        let request_timeout = r.duration(
            "http_request_timeout",
            "longer requests answer 503 / `10008`",
            Duration::from_secs(10),
        );
        let body_timeout = r.duration(
            "http_body_timeout",
            "a request body not fully received within this answers 408 / `10001` (counted before `http_request_timeout` starts)",
            Duration::from_secs(10),
        );
        let header_timeout = r.duration(
            "http_header_timeout",
            "a connection that sends no complete request head within this is closed; also the keep-alive idle timeout",
            Duration::from_secs(30),
        );
        let max_connections = r.at_least::<usize>(
            "http_max_connections",
            "open client connections at most (more wait in the listen backlog); lowered at start-up to fit the open-file limit",
            10_000,
            1,
        );
        let max_connections_per_ip = r.at_least::<usize>(
            "http_max_connections_per_ip",
            "open connections of one client address (IPv6: one /64) at most; beyond it a new connection is refused at once (`429`, no body), so one client cannot take every connection. Behind a load balancer every client shares its address (docs/reliability.md)",
            max_connections.map_or(1, |max| (max / 8).max(1)),
            1,
        );
        r.default_is("`http_max_connections` / 8 (1250)", "1250");
        let head_limit = r.at_least::<usize>(
            "http_head_limit",
            "largest request head (request line and headers) in bytes; a larger one answers `431` with no body and the connection closes. At most this much is buffered per connection (16 KiB × 10,000 connections = 160 MiB)",
            16 * 1024,
            HEAD_LIMIT_MIN,
        );
        // Unlike other keys, an empty value is meaningful here: no browser origin at all.
        let cors_origins = match r.raw_even_if_empty(
            "cors_origins",
            "comma-separated browser origins allowed by CORS; `*` for any, empty for none (prod.toml)",
            "*",
        ) {
            None | Some("*") => CorsOrigins::Any,
            Some(list) => CorsOrigins::List(
                list.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect(),
            ),
        };
        let shutdown_grace = r.duration(
            "shutdown_grace",
            "time in-flight requests get after SIGTERM",
            Duration::from_secs(30),
        );
        let trusted_proxy_hops = r.parsed::<usize>(
            "trusted_proxy_hops",
            "reverse proxies in front that append to `X-Forwarded-For`; 0 uses the socket peer as client IP",
            0,
        );
        Some(HttpSettings {
            addr: addr?,
            internal_addr: internal_addr?,
            body_limit: body_limit?,
            request_timeout: request_timeout?,
            body_timeout: body_timeout?,
            header_timeout: header_timeout?,
            max_connections: max_connections?,
            max_connections_per_ip: max_connections_per_ip?,
            head_limit: head_limit?,
            cors_origins,
            shutdown_grace: shutdown_grace?,
            trusted_proxy_hops: trusted_proxy_hops?,
        })
    }
}
