//! Extractors whose rejections are API envelopes instead of axum's plain-text bodies.

use axum::extract::FromRequest;

use super::error::ApiError;

/// `axum::Json`, but malformed JSON, a wrong content type and an oversized body answer
/// 400/10001, 400/10001 and 413/10010 in the envelope.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);
