//! The error half of the API envelope: the code table of docs/api.md and the one place where
//! service errors and framework rejections become HTTP responses.
//!
//! Handlers return `Result<_, ApiError>`; `?` converts a [`ServiceError`] through
//! `From<ServiceError>`, which is the only mapping from business failures to codes. Internal
//! details are logged here and never sent to the client.

use std::collections::BTreeMap;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::request_id::current_request_id;
use crate::service::ServiceError;
use crate::service::flash_sale::Refusal;

/// Every error code of docs/api.md, with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumIter)]
pub enum ErrorCode {
    InvalidArgument,
    Unauthenticated,
    Forbidden,
    NotFound,
    Conflict,
    TooManyRequests,
    Internal,
    Unavailable,
    IdempotencyKeyReused,
    PayloadTooLarge,
    /// Not in docs/api.md's table: a known path with the wrong method. HTTP 405 with code 10001 (the
    /// request is invalid), documented in docs/api-notes.md.
    MethodNotAllowed,
    /// Not in docs/api.md's table either: the request body did not arrive within
    /// `SPIKE_HTTP_BODY_TIMEOUT`. HTTP 408 with code 10001, as for 405 (docs/api-notes.md).
    RequestTimeout,
    EmailTaken,
    WrongCredentials,
    RefreshTokenInvalid,
    ProductNotFound,
    InsufficientStock,
    OrderNotFound,
    OrderStateConflict,
    EventNotFound,
    EventNotStarted,
    EventEnded,
    SoldOut,
    AlreadyPurchased,
}

impl ErrorCode {
    /// The numeric code, its HTTP status and the default message.
    pub fn parts(self) -> (u32, StatusCode, &'static str) {
        use ErrorCode::*;
        match self {
            InvalidArgument => (10001, StatusCode::BAD_REQUEST, "invalid argument"),
            Unauthenticated => (10002, StatusCode::UNAUTHORIZED, "unauthenticated"),
            Forbidden => (10003, StatusCode::FORBIDDEN, "forbidden"),
            NotFound => (10004, StatusCode::NOT_FOUND, "not found"),
            Conflict => (10005, StatusCode::CONFLICT, "conflict"),
            TooManyRequests => (10006, StatusCode::TOO_MANY_REQUESTS, "too many requests"),
            Internal => (10007, StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
            Unavailable => (
                10008,
                StatusCode::SERVICE_UNAVAILABLE,
                "dependency unavailable, retry later",
            ),
            IdempotencyKeyReused => (
                10009,
                StatusCode::CONFLICT,
                "idempotency key reused with a different request",
            ),
            PayloadTooLarge => (
                10010,
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            ),
            MethodNotAllowed => (10001, StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            RequestTimeout => (
                10001,
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            ),
            EmailTaken => (20001, StatusCode::CONFLICT, "email already registered"),
            WrongCredentials => (20002, StatusCode::UNAUTHORIZED, "wrong email or password"),
            RefreshTokenInvalid => (
                20003,
                StatusCode::UNAUTHORIZED,
                "refresh token invalid, expired, revoked or reused",
            ),
            ProductNotFound => (30001, StatusCode::NOT_FOUND, "product not found"),
            InsufficientStock => (30002, StatusCode::CONFLICT, "insufficient stock"),
            OrderNotFound => (40001, StatusCode::NOT_FOUND, "order not found"),
            OrderStateConflict => (
                40002,
                StatusCode::CONFLICT,
                "order state does not allow this",
            ),
            EventNotFound => (50001, StatusCode::NOT_FOUND, "flash-sale event not found"),
            EventNotStarted => (50002, StatusCode::CONFLICT, "event not started"),
            EventEnded => (50003, StatusCode::CONFLICT, "event ended"),
            SoldOut => (50004, StatusCode::CONFLICT, "sold out"),
            AlreadyPurchased => (
                50005,
                StatusCode::CONFLICT,
                "already purchased or queued in this event",
            ),
        }
    }

    pub fn code(self) -> u32 {
        self.parts().0
    }

    pub fn status(self) -> StatusCode {
        self.parts().1
    }
}

/// An error answer: envelope code, message, optional details, optional `Retry-After`.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<Value>,
    pub retry_after_secs: Option<u64>,
}

/// The envelope as sent for errors (documented in OpenAPI).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// Error code from the table in docs/api.md.
    #[schema(example = 10001)]
    pub code: u32,
    #[schema(example = "invalid argument")]
    pub message: String,
    /// `null`, or details such as `{"fields": {"email": "invalid email"}}`.
    pub data: Option<Value>,
    pub request_id: String,
}

impl ApiError {
    /// An error with the code's default message.
    pub fn new(code: ErrorCode) -> ApiError {
        ApiError {
            code,
            message: code.parts().2.to_owned(),
            details: None,
            retry_after_secs: None,
        }
    }

    pub fn with_message(mut self, message: impl Into<String>) -> ApiError {
        self.message = message.into();
        self
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after_secs = Some(seconds.max(1));
        self
    }

    /// 400/10001 naming the invalid fields: `data = {"fields": {name: problem}}`.
    pub fn invalid_fields(fields: BTreeMap<String, String>) -> ApiError {
        let summary = fields
            .iter()
            .map(|(field, problem)| format!("{field}: {problem}"))
            .collect::<Vec<_>>()
            .join("; ");
        ApiError::new(ErrorCode::InvalidArgument)
            .with_message(summary)
            .with_details(serde_json::json!({ "fields": fields }))
    }

    pub fn internal() -> ApiError {
        ApiError::new(ErrorCode::Internal)
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> ApiError {
        match error {
            ServiceError::Unavailable(dependency, source) => {
                tracing::warn!(%dependency, error = %source, "dependency unavailable");
                ApiError::new(ErrorCode::Unavailable)
                    .with_message(format!("{dependency} unavailable, retry later"))
                    .with_retry_after(1)
            }
            ServiceError::Internal(source) => {
                tracing::error!(error = %source, "internal error");
                ApiError::internal()
            }
            ServiceError::RateLimited { retry_after } => {
                let seconds = retry_after.as_secs_f64().ceil() as u64;
                ApiError::new(ErrorCode::TooManyRequests).with_retry_after(seconds)
            }
            ServiceError::EmailTaken => ApiError::new(ErrorCode::EmailTaken),
            ServiceError::ProductNotFound(id) => ApiError::new(ErrorCode::ProductNotFound)
                .with_message(format!("product {id} not found")),
            ServiceError::InsufficientStock { product_id } => {
                ApiError::new(ErrorCode::InsufficientStock)
                    .with_message(format!("insufficient stock for product {product_id}"))
                    .with_details(serde_json::json!({ "product_id": product_id }))
            }
            ServiceError::IdempotencyKeyReused => ApiError::new(ErrorCode::IdempotencyKeyReused),
            ServiceError::OrderNotFound => ApiError::new(ErrorCode::OrderNotFound),
            ServiceError::EventNotFound => ApiError::new(ErrorCode::EventNotFound),
            ServiceError::Refused(refusal) => refusal.into(),
            ServiceError::Retryable(message) => ApiError::new(ErrorCode::Unavailable)
                .with_message(message)
                .with_retry_after(1),
            ServiceError::Conflict(message) => {
                ApiError::new(ErrorCode::Conflict).with_message(message)
            }
            ServiceError::OrderStateConflict(message) => {
                ApiError::new(ErrorCode::OrderStateConflict).with_message(message)
            }
            ServiceError::InvalidArgument(message) => {
                ApiError::new(ErrorCode::InvalidArgument).with_message(message)
            }
            ServiceError::InvalidField { field, problem } => {
                ApiError::invalid_fields(BTreeMap::from([(field.to_owned(), problem)]))
            }
            ServiceError::WrongCredentials => ApiError::new(ErrorCode::WrongCredentials),
            ServiceError::RefreshTokenInvalid => ApiError::new(ErrorCode::RefreshTokenInvalid),
            ServiceError::Unauthenticated(reason) => {
                tracing::debug!(reason, "unauthenticated");
                ApiError::new(ErrorCode::Unauthenticated)
            }
        }
    }
}

impl From<Refusal> for ApiError {
    /// The one table of flash-sale refusals.
    fn from(refusal: Refusal) -> ApiError {
        match refusal {
            Refusal::RateLimited { retry_after } => ApiError::new(ErrorCode::TooManyRequests)
                .with_retry_after(retry_after.as_secs_f64().ceil() as u64),
            Refusal::PurchaseToken(_) | Refusal::HumanCheckFailed => {
                ApiError::new(ErrorCode::Forbidden).with_message(refusal.to_string())
            }
            Refusal::UnknownEvent => ApiError::new(ErrorCode::EventNotFound),
            Refusal::NotStarted => ApiError::new(ErrorCode::EventNotStarted),
            Refusal::Ended => ApiError::new(ErrorCode::EventEnded),
            Refusal::SoldOut => ApiError::new(ErrorCode::SoldOut),
            Refusal::AlreadyPurchased => ApiError::new(ErrorCode::AlreadyPurchased),
            Refusal::IdempotencyKeyInProgress => {
                ApiError::new(ErrorCode::Conflict).with_message(refusal.to_string())
            }
            Refusal::NotReady | Refusal::QueueUnavailable => ApiError::new(ErrorCode::Unavailable)
                .with_message(refusal.to_string())
                .with_retry_after(1),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(ErrorCode::PayloadTooLarge),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(ErrorCode::InvalidArgument)
                .with_message("expected a body with Content-Type: application/json"),
            _ => ApiError::new(ErrorCode::InvalidArgument)
                .with_message(format!("malformed JSON body: {}", rejection.body_text())),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::new(ErrorCode::InvalidArgument)
            .with_message(format!("invalid path parameter: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::new(ErrorCode::InvalidArgument)
            .with_message(format!("invalid query string: {}", rejection.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, status, _) = self.code.parts();
        let body = ErrorEnvelope {
            code,
            message: self.message,
            data: self.details,
            request_id: current_request_id(),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_api_table() {
        let table: Vec<(u32, u16)> = <ErrorCode as strum::IntoEnumIterator>::iter()
            .map(|c| (c.code(), c.status().as_u16()))
            .collect();
        assert_eq!(
            table,
            vec![
                (10001, 400),
                (10002, 401),
                (10003, 403),
                (10004, 404),
                (10005, 409),
                (10006, 429),
                (10007, 500),
                (10008, 503),
                (10009, 409),
                (10010, 413),
                (10001, 405),
                (10001, 408),
                (20001, 409),
                (20002, 401),
                (20003, 401),
                (30001, 404),
                (30002, 409),
                (40001, 404),
                (40002, 409),
                (50001, 404),
                (50002, 409),
                (50003, 409),
                (50004, 409),
                (50005, 409),
            ]
        );
    }

    #[test]
    fn retry_after_is_set_and_at_least_one_second() {
        let response = ApiError::new(ErrorCode::TooManyRequests)
            .with_retry_after(0)
            .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn invalid_fields_lists_each_field() {
        let mut fields = BTreeMap::new();
        fields.insert("email".to_string(), "invalid email".to_string());
        let error = ApiError::invalid_fields(fields);
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        assert_eq!(
            error.details,
            Some(serde_json::json!({"fields": {"email": "invalid email"}}))
        );
    }
}
