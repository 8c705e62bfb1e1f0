//! The request id: accepted from `X-Request-Id` when sane or made up, echoed on the response,
//! and available to any code running inside the request (the error envelope, log spans) through
//! a task-local. A leaf module: the middleware installs it, the envelope reads it. The same
//! outermost step decides whether the request is traced (`telemetry::traces::decide`), before
//! any span of it exists.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::telemetry::traces;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Client-supplied ids longer than this (or with odd characters) are replaced by a fresh one.
const MAX_REQUEST_ID_LEN: usize = 128;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled, or an empty string outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// Accepts the client's `X-Request-Id` when it is sane, else makes one; echoes it on the response.
pub(super) async fn assign_request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_acceptable_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(fresh_request_id);
    let header_value = HeaderValue::from_str(&id).expect("request ids are visible ASCII");
    request
        .headers_mut()
        .insert(REQUEST_ID_HEADER, header_value.clone());
    let decision = traces::decide(|name| {
        let value = request.headers().get(name)?.to_str().ok()?;
        Some(value.to_owned())
    });
    let mut response = traces::in_scope(decision, REQUEST_ID.scope(id, next.run(request))).await;
    response
        .headers_mut()
        .insert(REQUEST_ID_HEADER, header_value);
    response
}

/// A random (version 4) UUID from a fast thread-local generator: a request id must be unique,
/// not unguessable, and the operating system's generator (`Uuid::new_v4`) costs a system call
/// per request (`getrandom`, ~1 % of a refused buy's CPU in a profile).
fn fresh_request_id() -> String {
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes())
        .into_uuid()
        .to_string()
}

fn is_acceptable_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_request_ids_are_distinct_version_4_uuids() {
        let ids: std::collections::HashSet<String> =
            (0..1000).map(|_| fresh_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in ids.iter().take(10) {
            let uuid = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(uuid.get_version_num(), 4, "{id}");
            assert!(is_acceptable_request_id(id));
        }
    }

    #[test]
    fn request_ids_are_bounded_and_plain() {
        assert!(is_acceptable_request_id("abc-123_x.y:z"));
        assert!(!is_acceptable_request_id(""));
        assert!(!is_acceptable_request_id("has space"));
        assert!(!is_acceptable_request_id(&"a".repeat(129)));
    }
}
