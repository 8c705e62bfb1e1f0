//! RabbitMQ policies through the management HTTP API: the order queue's length bound and its
//! overflow behaviour live in a policy instead of `x-*` arguments fixed at declaration, so a new
//! `SPIKE_FLASH_SALE_QUEUE_MAX_LENGTH` takes effect at the next start instead of failing it with
//! PRECONDITION_FAILED (docs/scale-out.md).
//!
//! A plain HTTP/1.1 request on hyper's connection API: one PUT at start-up needs no client pool.

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Topology;
use crate::config::management_url_parts;
use crate::repo::{Dependency, RepoError};

/// A management API endpoint, parsed from `http://user:password@host:port`.
#[derive(Clone)]
pub struct Management {
    /// `host:port`.
    address: String,
    /// The `Authorization` header's value.
    authorization: String,
}

impl Management {
    /// Parses `url` (`http://user:password@host:port`, no path). `None` for anything else; the
    /// configuration checks the form before it gets here.
    pub fn parse(url: &str) -> Option<Management> {
        let (credentials, address) = management_url_parts(url)?;
        let token = base64::engine::general_purpose::STANDARD.encode(credentials);
        Some(Management {
            address: address.to_owned(),
            authorization: format!("Basic {token}"),
        })
    }

    /// Creates or replaces the policy that bounds `topology`'s order queue in `vhost`.
    pub async fn apply_order_queue_bound(
        &self,
        vhost: &str,
        topology: &Topology,
    ) -> Result<(), RepoError> {
        let (name, body) = topology.order_queue_bound_policy();
        let path = format!(
            "/api/policies/{}/{}",
            encode_path_segment(vhost),
            encode_path_segment(&name)
        );
        let status = self.put(&path, body.to_string()).await?;
        if status.is_success() {
            tracing::info!(
                policy = name,
                "order queue bound applied as a RabbitMQ policy"
            );
            Ok(())
        } else {
            Err(RepoError::Management(format!(
                "PUT {path} answered {status}"
            )))
        }
    }

    async fn put(&self, path: &str, body: String) -> Result<hyper::StatusCode, RepoError> {
        let failed = |error: &dyn std::fmt::Display| {
            RepoError::Management(format!("{}: {error}", self.address))
        };
        let stream = TcpStream::connect(&self.address)
            .await
            .map_err(|error| failed(&error))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| failed(&error))?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(Method::PUT)
            .uri(path)
            .header(hyper::header::HOST, &self.address)
            .header(hyper::header::AUTHORIZATION, &self.authorization)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| failed(&error))?;
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            sender.send_request(request),
        )
        .await
        .map_err(|_| RepoError::Timeout(Dependency::Rabbitmq, std::time::Duration::from_secs(10)))?
        .map_err(|error| failed(&error))?;
        let status = response.status();
        // Drain the body so the connection ends cleanly.
        let _ = response.into_body().collect().await;
        Ok(status)
    }
}

/// Percent-encodes one path segment (a vhost is often `/`).
fn encode_path_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// `text` as a regular expression that matches exactly it.
pub(super) fn exact_pattern(text: &str) -> String {
    let mut pattern = String::from("^");
    for c in text.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('$');
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_management_url_gives_the_address_and_basic_credentials() {
        let management = Management::parse("http://guest:guest@127.0.0.1:15672/").unwrap();
        assert_eq!(management.address, "127.0.0.1:15672");
        assert_eq!(management.authorization, "Basic Z3Vlc3Q6Z3Vlc3Q=");
        assert!(
            Management::parse("http://127.0.0.1:15672").is_none(),
            "no credentials"
        );
        assert!(
            Management::parse("https://u:p@host:15671").is_none(),
            "no TLS client"
        );
        assert!(
            Management::parse("http://u:p@host:15672/api").is_none(),
            "a path"
        );
    }

    #[test]
    fn vhosts_and_names_are_encoded_and_patterns_match_one_queue() {
        assert_eq!(encode_path_segment("/"), "%2F");
        assert_eq!(encode_path_segment("shop.a-1"), "shop.a-1");
        assert_eq!(
            exact_pattern("t1.spike.order.create"),
            r"^t1\.spike\.order\.create$"
        );
    }
}
