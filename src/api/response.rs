//! The success half of the API envelope: `{"code": 0, "message": "OK", "data": …, "request_id": …}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::request_id::current_request_id;

/// A successful answer: the status (200, 201 or 202) and the `data` of the envelope.
#[derive(Debug)]
pub struct ApiResponse<T> {
    status: StatusCode,
    data: T,
    /// Answers a retry with an `Idempotency-Key` (header `Idempotent-Replayed: true`).
    replayed: bool,
}

/// The envelope of a successful answer (documented in OpenAPI as `Envelope<T>`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    /// Always 0 on success.
    #[schema(example = 0)]
    pub code: u32,
    #[schema(example = "OK")]
    pub message: String,
    pub data: T,
    pub request_id: String,
}

/// One page of a list: `{"items": [...], "page": 1, "page_size": 20, "total": 137}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageView<T> {
    pub items: Vec<T>,
    pub page: u32,
    pub page_size: u32,
    /// Number of matching items over all pages.
    pub total: u64,
}

impl<T: Serialize> ApiResponse<T> {
    /// `200 OK`
    pub fn ok(data: T) -> ApiResponse<T> {
        ApiResponse {
            status: StatusCode::OK,
            data,
            replayed: false,
        }
    }

    /// `201 Created`
    pub fn created(data: T) -> ApiResponse<T> {
        ApiResponse {
            status: StatusCode::CREATED,
            data,
            replayed: false,
        }
    }

    /// `202 Accepted`
    pub fn accepted(data: T) -> ApiResponse<T> {
        ApiResponse {
            status: StatusCode::ACCEPTED,
            data,
            replayed: false,
        }
    }

    /// Marks the answer as the replay of an earlier request with the same `Idempotency-Key`.
    pub fn replayed(mut self, replayed: bool) -> ApiResponse<T> {
        self.replayed = replayed;
        self
    }
}

impl<T: Serialize> IntoResponse for ApiResponse<T> {
    fn into_response(self) -> Response {
        let body = Envelope {
            code: 0,
            message: "OK".to_owned(),
            data: self.data,
            request_id: current_request_id(),
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.replayed {
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }
}
