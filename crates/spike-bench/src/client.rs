//! A bare HTTP/1.1 client for the load tool: one keep-alive connection per load task, as wrk
//! does, so the tool spends its CPU on requests rather than on a connection pool. Also the
//! one-shot JSON calls the set-up makes through the admin API.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use super::BenchError;

/// Where the server under test listens.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header (`127.0.0.1:8080`).
    pub host: HeaderValue,
}

impl Target {
    /// Parses `http://host:port` (no path, no TLS: the tool measures a server on this machine
    /// or behind a plain-HTTP load balancer).
    pub fn parse(url: &str) -> Result<Target, BenchError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| BenchError::Usage(format!("--url must start with http:// (got {url})")))?
            .trim_end_matches('/');
        let addr = std::net::ToSocketAddrs::to_socket_addrs(rest)
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| {
                BenchError::Usage(format!("--url needs host:port we can resolve (got {url})"))
            })?;
        let host = HeaderValue::from_str(rest)
            .map_err(|_| BenchError::Usage(format!("--url has an invalid host: {url}")))?;
        Ok(Target { addr, host })
    }
}

/// One request as the load loop sends it; cheap to build (the path is parsed once and, like the
/// header values, shared).
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: Uri,
    /// `Bearer <token>`, precomputed per buyer.
    pub authorization: Option<HeaderValue>,
    /// `X-Purchase-Token`, fetched per buyer before timing (`--purchase-token`).
    pub purchase_token: Option<HeaderValue>,
    /// `Idempotency-Key`: a buyer who retries after an error sends the same key, so a `202` it
    /// never read is answered again instead of refused as a second purchase.
    pub idempotency_key: Option<HeaderValue>,
    pub body: Option<Bytes>,
}

impl Call {
    pub fn get(path: Uri) -> Call {
        Call {
            method: Method::GET,
            path,
            authorization: None,
            purchase_token: None,
            idempotency_key: None,
            body: None,
        }
    }

    fn into_request(self, host: &HeaderValue) -> Result<Request<Full<Bytes>>, BenchError> {
        let mut builder = Request::builder()
            .method(self.method)
            .uri(self.path)
            .header(HOST, host.clone());
        if let Some(authorization) = self.authorization {
            builder = builder.header(AUTHORIZATION, authorization);
        }
        if let Some(token) = self.purchase_token {
            builder = builder.header("x-purchase-token", token);
        }
        if let Some(key) = self.idempotency_key {
            builder = builder.header("idempotency-key", key);
        }
        let body = match self.body {
            Some(body) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                body
            }
            None => Bytes::new(),
        };
        builder
            .body(Full::new(body))
            .map_err(|error| BenchError::Usage(format!("cannot build a request: {error}")))
    }
}

/// A status and the whole body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    /// `Retry-After`, in seconds, when the answer carries one.
    pub retry_after: Option<u64>,
}

/// One keep-alive connection; reconnects on the next call after a failure.
pub struct Connection {
    target: Target,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    pub fn new(target: Target) -> Connection {
        Connection {
            target,
            sender: None,
        }
    }

    /// A new connection to the same target (the old one is dropped with `self`).
    pub fn fresh(&self) -> Connection {
        Connection::new(self.target.clone())
    }

    /// Sends one request and reads the whole answer. A transport error drops the connection.
    pub async fn send(&mut self, call: Call) -> Result<Answer, BenchError> {
        let result = self.try_send(call).await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn try_send(&mut self, call: Call) -> Result<Answer, BenchError> {
        let request = call.into_request(&self.target.host)?;
        let sender = match &mut self.sender {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.sender.insert(connect(self.target.addr).await?),
        };
        sender.ready().await.map_err(transport)?;
        let response = sender.send_request(request).await.map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(transport)?
            .to_bytes();
        Ok(Answer {
            status,
            body,
            retry_after,
        })
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, BenchError> {
    let stream = TcpStream::connect(addr).await.map_err(transport)?;
    stream.set_nodelay(true).map_err(transport)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(transport)?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the server closes; the next send reconnects.
        let _ = connection.await;
    });
    Ok(sender)
}

fn transport(error: impl std::fmt::Display) -> BenchError {
    BenchError::Transport(error.to_string())
}

/// An origin-form request target (`/api/v1/orders`), parsed once per scenario.
pub fn parse_path(path: &str) -> Result<Uri, BenchError> {
    path.parse()
        .map_err(|_| BenchError::Usage(format!("not a request path: {path}")))
}

/// `Bearer <token>` as a header value.
pub fn bearer(token: &str) -> Result<HeaderValue, BenchError> {
    HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| BenchError::Setup("a minted token is not a valid header value".into()))
}

/// A set-up call through the API: sends JSON, expects `expected_status`, returns the
/// envelope's `data`.
pub async fn call_api(
    target: &Target,
    method: Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
    expected_status: u16,
) -> Result<Value, BenchError> {
    call_api_on(
        &mut Connection::new(target.clone()),
        method,
        path,
        token,
        body,
        expected_status,
    )
    .await
}

/// [`call_api`] on an open connection (set-up steps that make many calls).
pub async fn call_api_on(
    connection: &mut Connection,
    method: Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
    expected_status: u16,
) -> Result<Value, BenchError> {
    let call = Call {
        method: method.clone(),
        path: parse_path(path)?,
        authorization: Some(bearer(token)?),
        purchase_token: None,
        idempotency_key: None,
        body: body.map(|b| Bytes::from(b.to_string())),
    };
    let answer = connection.send(call).await?;
    let text = String::from_utf8_lossy(&answer.body);
    if answer.status != expected_status {
        return Err(BenchError::Setup(format!(
            "{method} {path} answered {} (expected {expected_status}): {text}",
            answer.status
        )));
    }
    let envelope: Value = serde_json::from_slice(&answer.body).map_err(|error| {
        BenchError::Setup(format!(
            "{method} {path} answered no JSON ({error}): {text}"
        ))
    })?;
    Ok(envelope["data"].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_plain_http_host_and_port() {
        let target = Target::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(target.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(target.host, "127.0.0.1:8080");
        assert!(Target::parse("https://127.0.0.1:8080").is_err());
        assert!(
            Target::parse("http://127.0.0.1").is_err(),
            "a port is required"
        );
    }
}
