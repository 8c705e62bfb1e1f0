//! `/orders`: placing, reading, paying and cancelling regular orders.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::body::NewOrderBody;
use super::error::{ApiError, ErrorEnvelope};
use super::extract::{ApiJson, ApiQuery, AuthUser, IdempotencyKey, PathId};
use super::response::{ApiResponse, Envelope, PageView};
use super::validation::{self, FieldErrors};
use crate::domain::ID_MAX;
use crate::domain::money::Money;
use crate::domain::order::{Order, OrderRequest, OrderStatus};
use crate::domain::user::Role;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_order, list_orders))
        .routes(routes!(get_order))
        .routes(routes!(pay_order))
        .routes(routes!(cancel_order))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderItemView {
    pub product_id: u64,
    pub quantity: u32,
    /// Unit price when the order was placed.
    #[schema(value_type = String, example = "19.90")]
    pub price: Money,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderView {
    pub id: u64,
    pub user_id: u64,
    /// `pending_payment`, `paid`, `cancelled` or `closed`.
    #[schema(example = "pending_payment")]
    pub status: &'static str,
    /// `regular` or `spike`.
    #[schema(example = "regular")]
    pub kind: &'static str,
    #[schema(value_type = String, example = "39.80")]
    pub total_amount: Money,
    pub items: Vec<OrderItemView>,
    /// Unpaid orders close at this time and their stock returns.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub pay_deadline: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub paid_at: Option<OffsetDateTime>,
    /// When the order was cancelled or closed.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub closed_at: Option<OffsetDateTime>,
}

impl From<Order> for OrderView {
    fn from(order: Order) -> OrderView {
        OrderView {
            id: order.id,
            user_id: order.user_id,
            status: order.status.as_str(),
            kind: order.kind.as_str(),
            total_amount: order.total_amount,
            items: order
                .items
                .into_iter()
                .map(|item| OrderItemView {
                    product_id: item.product_id,
                    quantity: item.quantity,
                    price: item.price,
                })
                .collect(),
            pay_deadline: order.pay_deadline,
            created_at: order.created_at,
            paid_at: order.paid_at,
            closed_at: order.closed_at,
        }
    }
}

/// `{"items": [{"product_id": 1, "quantity": 2}]}`. At most 50 lines; lines naming the same
/// product are merged; quantities are 1 to 100 per product.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
// An unknown parameter (a `sort` this list does not offer, a misspelt `pagesize`) is a 400,
// not silently ignored.
#[serde(deny_unknown_fields)]
pub struct ListOrdersParams {
    /// Page number, from 1 (default 1).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    pub page: Option<String>,
    /// Items per page, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub page_size: Option<String>,
    /// Only orders in this status.
    #[param(value_type = Option<String>, pattern = r"^(pending_payment|paid|cancelled|closed)$")]
    pub status: Option<String>,
}

/// Turns the raw `items` into validated lines, naming each bad field.
fn parse_items(items: &Value) -> Result<OrderRequest, ApiError> {
    let mut errors = FieldErrors::default();
    let Some(list) = items.as_array() else {
        errors.add("items", "items must be a list");
        return Err(errors.into_error());
    };
    let mut lines = Vec::with_capacity(list.len());
    for (index, item) in list.iter().enumerate() {
        if let Some(line) = item.as_object() {
            for unknown in line
                .keys()
                .filter(|key| !matches!(key.as_str(), "product_id" | "quantity"))
            {
                errors.add(&format!("items[{index}].{unknown}"), "unknown field");
            }
        }
        let product_id = item
            .get("product_id")
            .and_then(Value::as_u64)
            .filter(|id| *id <= ID_MAX);
        let quantity = item.get("quantity").and_then(Value::as_i64);
        if product_id.is_none() {
            errors.add(
                &format!("items[{index}].product_id"),
                "must be a positive integer",
            );
        }
        if quantity.is_none() {
            errors.add(&format!("items[{index}].quantity"), "must be an integer");
        }
        if let (Some(product_id), Some(quantity)) = (product_id, quantity) {
            lines.push((product_id, quantity));
        }
    }
    errors.into_result()?;
    OrderRequest::new(&lines).map_err(ApiError::invalid_fields)
}

/// Place an order: all items or none. Retrying with the same `Idempotency-Key` and body
/// returns the same order (header `Idempotent-Replayed: true`) without taking stock again.
#[utoipa::path(
    post,
    path = "/orders",
    tag = "orders",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 128, description = "1 to 128 ASCII characters; makes retries safe")),
    request_body = NewOrderBody,
    responses(
        (status = 201, description = "placed (or replayed)", body = Envelope<OrderView>),
        (status = 400, description = "invalid items (10001, `data.fields`)", body = ErrorEnvelope),
        (status = 404, description = "a product does not exist (30001)", body = ErrorEnvelope),
        (status = 409, description = "insufficient stock (30002, `data.product_id`) or key reused with another body (10009)", body = ErrorEnvelope),
    )
)]
pub async fn create_order(
    State(state): State<AppState>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(body): ApiJson<NewOrderBody>,
) -> Result<ApiResponse<OrderView>, ApiError> {
    let request = parse_items(&body.items)?;
    let (order, replayed) = state
        .orders
        .create(user.id, &request, key.as_deref())
        .await?;
    Ok(ApiResponse::created(OrderView::from(order)).replayed(replayed))
}

/// The caller's orders, newest first.
#[utoipa::path(
    get,
    path = "/orders",
    tag = "orders",
    security(("bearer" = [])),
    params(ListOrdersParams),
    responses(
        (status = 200, description = "one page", body = Envelope<PageView<OrderView>>),
        (status = 400, description = "invalid paging or status (10001)", body = ErrorEnvelope),
    )
)]
pub async fn list_orders(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(params): ApiQuery<ListOrdersParams>,
) -> Result<ApiResponse<PageView<OrderView>>, ApiError> {
    let mut errors = FieldErrors::default();
    let page = validation::page(
        params.page.as_deref(),
        params.page_size.as_deref(),
        &mut errors,
    );
    let status = params
        .status
        .as_deref()
        .and_then(|raw| errors.check("status", validation::choice::<OrderStatus>("status", raw)));
    errors.into_result()?;
    let (orders, total) = state.orders.list(user.id, status, page).await?;
    Ok(ApiResponse::ok(PageView {
        items: orders.into_iter().map(OrderView::from).collect(),
        page: page.page,
        page_size: page.page_size,
        total,
    }))
}

/// One order: the caller's own, or any for an admin. Someone else's is 404.
#[utoipa::path(
    get,
    path = "/orders/{id}",
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "order id")),
    responses(
        (status = 200, description = "the order", body = Envelope<OrderView>),
        (status = 404, description = "no such order of yours (40001)", body = ErrorEnvelope),
    )
)]
pub async fn get_order(
    State(state): State<AppState>,
    user: AuthUser,
    PathId(id): PathId,
) -> Result<ApiResponse<OrderView>, ApiError> {
    let order = state
        .orders
        .get(user.id, user.role == Role::Admin, id)
        .await?;
    Ok(ApiResponse::ok(order.into()))
}

/// Pay (simulated). Paying a paid order returns it again; a cancelled or closed order, or one
/// past its deadline, is 409/40002.
#[utoipa::path(
    post,
    path = "/orders/{id}/pay",
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "order id")),
    responses(
        (status = 200, description = "paid", body = Envelope<OrderView>),
        (status = 404, description = "no such order of yours (40001)", body = ErrorEnvelope),
        (status = 409, description = "not payable (40002)", body = ErrorEnvelope),
    )
)]
pub async fn pay_order(
    State(state): State<AppState>,
    user: AuthUser,
    PathId(id): PathId,
) -> Result<ApiResponse<OrderView>, ApiError> {
    Ok(ApiResponse::ok(state.orders.pay(user.id, id).await?.into()))
}

/// Cancel an unpaid order; its stock returns.
#[utoipa::path(
    post,
    path = "/orders/{id}/cancel",
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "order id")),
    responses(
        (status = 200, description = "cancelled", body = Envelope<OrderView>),
        (status = 404, description = "no such order of yours (40001)", body = ErrorEnvelope),
        (status = 409, description = "not pending payment (40002)", body = ErrorEnvelope),
    )
)]
pub async fn cancel_order(
    State(state): State<AppState>,
    user: AuthUser,
    PathId(id): PathId,
) -> Result<ApiResponse<OrderView>, ApiError> {
    Ok(ApiResponse::ok(
        state.orders.cancel(user.id, id).await?.into(),
    ))
}
