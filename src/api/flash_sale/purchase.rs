//! Buying one unit of an event, and the buyer's result.

use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::AppState;
use crate::api::error::{ApiError, ErrorEnvelope};
use crate::api::extract::{IdempotencyKey, PathId, TokenUser};
use crate::api::request_id::current_request_id;
use crate::api::response::{ApiResponse, Envelope};
use crate::service::flash_sale::{BuyRequest, BuyResult};

/// Where a buy request carries its purchase token.
pub const PURCHASE_TOKEN_HEADER: &str = "x-purchase-token";
/// Where a purchase-token request carries the answer of a human check.
pub const HUMAN_CHECK_HEADER: &str = "x-human-check";

#[derive(Debug, Serialize, ToSchema)]
pub struct QueuedView {
    #[schema(example = "queued")]
    pub status: &'static str,
    /// Identifies this purchase attempt.
    pub ticket: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResultView {
    /// `queued`, `success`, `failed` or `none`.
    #[schema(example = "success")]
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<BuyResult> for ResultView {
    fn from(result: BuyResult) -> ResultView {
        let (status, order_id, reason) = match result {
            BuyResult::Queued => ("queued", None, None),
            BuyResult::Success { order_id } => ("success", Some(order_id), None),
            BuyResult::Failed { reason } => ("failed", None, Some(reason.to_string())),
            BuyResult::None => ("none", None, None),
        };
        ResultView {
            status,
            order_id,
            reason,
        }
    }
}

/// Buy one unit: reserved in Redis and queued; poll `/result` for the order.
#[utoipa::path(
    post,
    path = "/spike/events/{id}/orders",
    tag = "flash sale",
    security(("bearer" = [])),
    params(
        ("id" = u64, Path, description = "event id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 128, description = "1 to 128 ASCII characters; a retry with the key answers with the first request's ticket"),
        ("X-Purchase-Token" = Option<String>, Header, description = "from `GET /spike/events/{id}/purchase-token`; required when the deployment sets SPIKE_FLASH_SALE_REQUIRE_PURCHASE_TOKEN"),
    ),
    responses(
        (status = 202, description = "queued", body = Envelope<QueuedView>),
        (status = 403, description = "purchase token required and missing, expired, or not this buyer's for this event (10003)", body = ErrorEnvelope),
        (status = 404, description = "no such event (50001)", body = ErrorEnvelope),
        (status = 409, description = "not started (50002), ended (50003), sold out (50004), already bought (50005)", body = ErrorEnvelope),
        (status = 409, description = "the Idempotency-Key's first request is still in progress (10005)", body = ErrorEnvelope),
        (status = 429, description = "rate limited, see Retry-After (10006)", body = ErrorEnvelope),
        (status = 503, description = "not ready or queue unavailable; nothing reserved (10008)", body = ErrorEnvelope),
    )
)]
pub async fn buy(
    State(state): State<AppState>,
    TokenUser(user): TokenUser,
    PathId(id): PathId,
    IdempotencyKey(key): IdempotencyKey,
    headers: HeaderMap,
) -> Result<ApiResponse<QueuedView>, ApiError> {
    let request_id = current_request_id();
    let queued = state
        .flash_sale
        .buy
        .buy(BuyRequest {
            event_id: id,
            user_id: user.id,
            idempotency_key: key.as_deref(),
            request_id: &request_id,
            purchase_token: headers
                .get(PURCHASE_TOKEN_HEADER)
                .and_then(|value| value.to_str().ok()),
        })
        .await?;
    Ok(ApiResponse::accepted(QueuedView {
        status: "queued",
        ticket: queued.ticket,
    })
    .replayed(queued.replayed))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurchaseTokenView {
    /// Send it as `X-Purchase-Token` on the buy request.
    pub token: String,
    /// Seconds the token stays valid.
    #[schema(example = 60)]
    pub expires_in: u64,
}

/// A short-lived token for buying in this event, bound to the caller; issued only while the
/// event is active. Deployments that require it (`SPIKE_FLASH_SALE_REQUIRE_PURCHASE_TOKEN`)
/// refuse a buy without it.
#[utoipa::path(
    get,
    path = "/spike/events/{id}/purchase-token",
    tag = "flash sale",
    security(("bearer" = [])),
    params(
        ("id" = u64, Path, description = "event id"),
        ("X-Human-Check" = Option<String>, Header, description = "the answer of a human check, when the deployment plugs one in"),
    ),
    responses(
        (status = 200, description = "the token", body = Envelope<PurchaseTokenView>),
        (status = 403, description = "the human check was not passed (10003)", body = ErrorEnvelope),
        (status = 404, description = "no such event (50001)", body = ErrorEnvelope),
        (status = 409, description = "not started (50002) or ended (50003)", body = ErrorEnvelope),
        (status = 429, description = "rate limited, see Retry-After (10006)", body = ErrorEnvelope),
    )
)]
pub async fn purchase_token(
    State(state): State<AppState>,
    TokenUser(user): TokenUser,
    PathId(id): PathId,
    headers: HeaderMap,
) -> Result<ApiResponse<PurchaseTokenView>, ApiError> {
    let proof = headers
        .get(HUMAN_CHECK_HEADER)
        .and_then(|value| value.to_str().ok());
    let issued = state
        .flash_sale
        .purchase_tokens
        .issue(id, user.id, proof)
        .await?;
    Ok(ApiResponse::ok(PurchaseTokenView {
        token: issued.token,
        expires_in: issued.expires_in.as_secs(),
    }))
}

/// The caller's outcome in an event.
#[utoipa::path(
    get,
    path = "/spike/events/{id}/result",
    tag = "flash sale",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "event id")),
    responses(
        (status = 200, description = "the outcome", body = Envelope<ResultView>),
        (status = 404, description = "no such event (50001)", body = ErrorEnvelope),
    )
)]
pub async fn buy_result(
    State(state): State<AppState>,
    TokenUser(user): TokenUser,
    PathId(id): PathId,
) -> Result<ApiResponse<ResultView>, ApiError> {
    Ok(ApiResponse::ok(
        state.flash_sale.results.of(id, user.id).await?.into(),
    ))
}
