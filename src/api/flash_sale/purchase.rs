//! Buying one unit of an event, and the buyer's result.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::AppState;
use crate::api::error::{ApiError, ErrorEnvelope};
use crate::api::extract::{ApiQuery, IdempotencyKey, PathId, TokenUser};
use crate::api::request_id::current_request_id;
use crate::api::response::{ApiResponse, Envelope};
use crate::api::validation::FieldErrors;
use crate::service::flash_sale::{Accepted, BuyRequest, BuyResult, MAX_RESULT_WAIT};

/// Where a buy request carries its purchase token.
pub const PURCHASE_TOKEN_HEADER: &str = "x-purchase-token";
/// Where a purchase-token request carries the answer of a human check.
pub const HUMAN_CHECK_HEADER: &str = "x-human-check";

#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedView {
    /// `queued` (a unit is reserved, the order is on its way) or `waiting` (a place in the
    /// event's waiting line; admitted in turn without asking again).
    #[schema(example = "queued")]
    pub status: &'static str,
    /// Identifies this purchase attempt.
    pub ticket: String,
    /// Waiting only: how many buyers are ahead, plus one (1 = next).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResultView {
    /// `waiting`, `queued`, `success`, `failed` or `none`.
    #[schema(example = "success")]
    pub status: &'static str,
    /// Waiting or queued: the purchase attempt's ticket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Waiting: the place in the line (1 = next).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<BuyResult> for ResultView {
    fn from(result: BuyResult) -> ResultView {
        let mut view = ResultView {
            status: "none",
            ticket: None,
            position: None,
            order_id: None,
            reason: None,
        };
        match result {
            BuyResult::Waiting { ticket, position } => {
                view.status = "waiting";
                view.ticket = Some(ticket);
                view.position = Some(position);
            }
            BuyResult::Queued { ticket } => {
                view.status = "queued";
                view.ticket = Some(ticket);
            }
            BuyResult::Success { order_id } => {
                view.status = "success";
                view.order_id = Some(order_id);
            }
            BuyResult::Failed { reason } => {
                view.status = "failed";
                view.reason = Some(reason.to_string());
            }
            BuyResult::None => {}
        }
        view
    }
}

/// `?wait=N`: hold the answer up to N seconds (0 to 30, default 0) until it changes.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ResultParams {
    /// Seconds to hold the answer until the status differs from the one at the time of asking
    /// (or the position reaches the front): 0 to 30, default 0 (answer at once).
    #[param(value_type = Option<u32>, minimum = 0, maximum = 30)]
    pub wait: Option<String>,
}

impl ResultParams {
    fn wait(&self) -> Result<Duration, ApiError> {
        let Some(raw) = self.wait.as_deref() else {
            return Ok(Duration::ZERO);
        };
        let most = MAX_RESULT_WAIT.as_secs();
        match raw.parse::<u64>() {
            Ok(seconds) if seconds <= most => Ok(Duration::from_secs(seconds)),
            _ => {
                let mut errors = FieldErrors::default();
                errors.add(
                    "wait",
                    format!("must be a whole number of seconds, 0 to {most}"),
                );
                Err(errors.into_error())
            }
        }
    }
}

/// Buy one unit: reserved and queued, or a place in the event's waiting line.
///
/// Beyond the event's admission rate the buyer waits in line (`202 waiting`, with `position`)
/// and is admitted in turn; `/result?wait=N` tells the outcome.
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
        (status = 202, description = "queued, or waiting in the event's line (with `position`)", body = Envelope<AcceptedView>),
        (status = 403, description = "purchase token required and missing, expired, or not this buyer's for this event (10003)", body = ErrorEnvelope),
        (status = 404, description = "no such event (50001)", body = ErrorEnvelope),
        (status = 409, description = "not started (50002), ended (50003), sold out (50004), already bought (50005)", body = ErrorEnvelope),
        (status = 409, description = "the Idempotency-Key's first request is still in progress (10005)", body = ErrorEnvelope),
        (status = 429, description = "the waiting line is full, or the buyer's own rate is exceeded; see Retry-After (10006)", body = ErrorEnvelope),
        (status = 503, description = "not ready or queue unavailable; nothing reserved (10008)", body = ErrorEnvelope),
    )
)]
pub async fn buy(
    State(state): State<AppState>,
    TokenUser(user): TokenUser,
    PathId(id): PathId,
    IdempotencyKey(key): IdempotencyKey,
    headers: HeaderMap,
) -> Result<ApiResponse<AcceptedView>, ApiError> {
    let request_id = current_request_id();
    let accepted = state
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
    Ok(match accepted {
        Accepted::Queued { ticket, replayed } => ApiResponse::accepted(AcceptedView {
            status: "queued",
            ticket,
            position: None,
        })
        .replayed(replayed),
        Accepted::Waiting { ticket, position } => ApiResponse::accepted(AcceptedView {
            status: "waiting",
            ticket,
            position: Some(position),
        }),
    })
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

/// The caller's standing in an event; with `wait`, held until it changes.
#[utoipa::path(
    get,
    path = "/spike/events/{id}/result",
    tag = "flash sale",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "event id"), ResultParams),
    responses(
        (status = 200, description = "the standing", body = Envelope<ResultView>),
        (status = 400, description = "`wait` not 0 to 30, or an unknown parameter (10001)", body = ErrorEnvelope),
        (status = 404, description = "no such event (50001)", body = ErrorEnvelope),
    )
)]
pub async fn buy_result(
    State(state): State<AppState>,
    TokenUser(user): TokenUser,
    PathId(id): PathId,
    ApiQuery(params): ApiQuery<ResultParams>,
) -> Result<ApiResponse<ResultView>, ApiError> {
    let wait = params.wait()?;
    Ok(ApiResponse::ok(
        state
            .flash_sale
            .results
            .wait(id, user.id, wait)
            .await?
            .into(),
    ))
}
