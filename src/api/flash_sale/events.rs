//! Flash-sale events: create and change (admin), list and read (anyone), warm up and the
//! ledger (admin).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::api::AppState;
use crate::api::body::{EventChangesBody, NewEventBody};
use crate::api::error::{ApiError, ErrorEnvelope};
use crate::api::extract::{AdminUser, ApiJson, ApiQuery, PathId};
use crate::api::response::{ApiResponse, Envelope, PageView};
use crate::api::validation::{self, FieldErrors};
use crate::domain::flash_sale::{EventStatus, EventWindow, FlashSaleEvent, NewEvent};
use crate::domain::money::Money;
use crate::service::flash_sale::{EventChanges, Ledger};

#[derive(Debug, Serialize, ToSchema)]
pub struct WarmUpView {
    pub event_id: u64,
    /// False when the event was warm already (nothing changed).
    pub warmed_now: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: u64,
    pub product_id: u64,
    pub title: String,
    #[schema(value_type = String, example = "99.00")]
    pub spike_price: Money,
    pub total_stock: u32,
    /// Units not yet sold.
    pub remaining_stock: u32,
    pub per_user_limit: u32,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub start_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub end_at: OffsetDateTime,
    /// `upcoming`, `active` or `ended`, from the window and the current time.
    #[schema(example = "upcoming")]
    pub status: &'static str,
}

impl From<FlashSaleEvent> for EventView {
    fn from(event: FlashSaleEvent) -> EventView {
        EventView {
            id: event.id,
            product_id: event.product_id,
            title: event.title,
            spike_price: event.spike_price,
            total_stock: event.total_stock,
            remaining_stock: event.available_stock,
            per_user_limit: event.per_user_limit,
            start_at: event.window.start_at(),
            end_at: event.window.end_at(),
            status: event.window.status_at(OffsetDateTime::now_utc()).as_str(),
        }
    }
}

/// Fields of an event. On create all but `per_user_limit` are required; on update any of
/// `title`, `spike_price`, `stock`, `start_at`, `end_at`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
// An unknown parameter (a `sort` this list does not offer, a misspelt `pagesize`) is a 400,
// not silently ignored.
#[serde(deny_unknown_fields)]
pub struct ListEventsParams {
    /// `upcoming`, `active` or `ended`.
    #[param(value_type = Option<String>, pattern = r"^(upcoming|active|ended)$")]
    pub status: Option<String>,
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    pub page: Option<String>,
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub page_size: Option<String>,
}

/// Admin: create an event. Its stock moves out of the product's inventory at once
/// (409/30002 when the product has fewer units).
#[utoipa::path(
    post,
    path = "/spike/events",
    tag = "flash sale",
    security(("bearer" = ["admin"])),
    request_body = NewEventBody,
    responses(
        (status = 201, description = "created", body = Envelope<EventView>),
        (status = 400, description = "invalid fields (10001, `data.fields`)", body = ErrorEnvelope),
        (status = 403, description = "not an admin (10003)", body = ErrorEnvelope),
        (status = 404, description = "no such product (30001)", body = ErrorEnvelope),
        (status = 409, description = "not enough product stock (30002)", body = ErrorEnvelope),
    )
)]
pub async fn create_event(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiJson(body): ApiJson<NewEventBody>,
) -> Result<ApiResponse<EventView>, ApiError> {
    let mut errors = FieldErrors::default();
    let product_id = body.product_id.required("product_id", &mut errors);
    let title = body.title.required("title", &mut errors);
    let spike_price = body.spike_price.required("spike_price", &mut errors);
    let stock = body.stock.required("stock", &mut errors);
    let start_at = body.start_at.required("start_at", &mut errors);
    let end_at = body.end_at.required("end_at", &mut errors);
    // Always 1: read only to refuse any other value by name.
    body.per_user_limit.optional("per_user_limit", &mut errors);
    let window = match (start_at, end_at) {
        (Some(start), Some(end)) => {
            match EventWindow::schedule(start, end, OffsetDateTime::now_utc()) {
                Ok(window) => Some(window),
                Err(refused) => {
                    errors.add(refused.field, refused.problem);
                    None
                }
            }
        }
        _ => None,
    };
    let (Some(product_id), Some(title), Some(spike_price), Some(stock), Some(window)) =
        (product_id, title, spike_price, stock, window)
    else {
        return Err(errors.into_error());
    };
    errors.into_result()?;
    let event = NewEvent {
        product_id,
        title,
        spike_price,
        stock,
        window,
    };
    Ok(ApiResponse::created(
        state.flash_sale.admin.create(event).await?.into(),
    ))
}

/// Admin: change an event before it starts (409/10005 once it has).
#[utoipa::path(
    patch,
    path = "/spike/events/{id}",
    tag = "flash sale",
    security(("bearer" = ["admin"])),
    params(("id" = u64, Path, description = "event id")),
    request_body = EventChangesBody,
    responses(
        (status = 200, description = "updated", body = Envelope<EventView>),
        (status = 400, description = "invalid fields (10001)", body = ErrorEnvelope),
        (status = 404, description = "no such event (50001)", body = ErrorEnvelope),
        (status = 409, description = "already started (10005) or not enough product stock (30002)", body = ErrorEnvelope),
    )
)]
pub async fn update_event(
    State(state): State<AppState>,
    _admin: AdminUser,
    PathId(id): PathId,
    ApiJson(body): ApiJson<EventChangesBody>,
) -> Result<ApiResponse<EventView>, ApiError> {
    let mut errors = FieldErrors::default();
    if body.product_id.is_sent() {
        errors.add("product_id", "an event's product cannot change");
    }
    body.per_user_limit.optional("per_user_limit", &mut errors);
    let changes = EventChanges {
        title: body.title.optional("title", &mut errors),
        spike_price: body.spike_price.optional("spike_price", &mut errors),
        stock: body.stock.optional("stock", &mut errors),
        start_at: body.start_at.optional("start_at", &mut errors),
        end_at: body.end_at.optional("end_at", &mut errors),
    };
    errors.into_result()?;
    if changes.is_empty() {
        return Err(validation::nothing_to_change(
            "title, spike_price, stock, start_at, end_at",
        ));
    }
    Ok(ApiResponse::ok(
        state.flash_sale.admin.update(id, changes).await?.into(),
    ))
}

/// Events, latest start first, optionally only `upcoming`, `active` or `ended` ones.
#[utoipa::path(
    get,
    path = "/spike/events",
    tag = "flash sale",
    params(ListEventsParams),
    responses(
        (status = 200, description = "one page", body = Envelope<PageView<EventView>>),
        (status = 400, description = "invalid status or paging (10001)", body = ErrorEnvelope),
    )
)]
pub async fn list_events(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListEventsParams>,
) -> Result<ApiResponse<PageView<EventView>>, ApiError> {
    let mut errors = FieldErrors::default();
    let page = validation::page(
        params.page.as_deref(),
        params.page_size.as_deref(),
        &mut errors,
    );
    let status = params
        .status
        .as_deref()
        .and_then(|raw| errors.check("status", validation::choice::<EventStatus>("status", raw)));
    errors.into_result()?;
    let (events, total) = state.flash_sale.admin.list(status, page).await?;
    Ok(ApiResponse::ok(PageView {
        items: events.into_iter().map(EventView::from).collect(),
        page: page.page,
        page_size: page.page_size,
        total,
    }))
}

/// One event.
#[utoipa::path(
    get,
    path = "/spike/events/{id}",
    tag = "flash sale",
    params(("id" = u64, Path, description = "event id")),
    responses(
        (status = 200, description = "the event", body = Envelope<EventView>),
        (status = 404, description = "no such event (50001)", body = ErrorEnvelope),
    )
)]
pub async fn get_event(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<ApiResponse<EventView>, ApiError> {
    Ok(ApiResponse::ok(
        state.flash_sale.admin.get(id).await?.into(),
    ))
}

/// Admin: copy the event's free units into Redis so it can sell (idempotent; never raises
/// the stock of a warm event).
#[utoipa::path(
    post,
    path = "/spike/events/{id}/warmup",
    tag = "flash sale",
    security(("bearer" = ["admin"])),
    params(("id" = u64, Path, description = "event id")),
    responses(
        (status = 200, description = "warm", body = Envelope<WarmUpView>),
        (status = 404, description = "no such event (50001)", body = ErrorEnvelope),
    )
)]
pub async fn warm_up_event(
    State(state): State<AppState>,
    _admin: AdminUser,
    PathId(id): PathId,
) -> Result<ApiResponse<WarmUpView>, ApiError> {
    let warmed_now = state.flash_sale.warmup.warm_up(id).await?;
    Ok(ApiResponse::ok(WarmUpView {
        event_id: id,
        warmed_now,
    }))
}

/// Where an event's units are, from MySQL and Redis (admin; the reconciler's view).
#[utoipa::path(
    get,
    path = "/spike/events/{id}/ledger",
    tag = "flash sale",
    security(("bearer" = ["admin"])),
    params(("id" = u64, Path, description = "event id")),
    responses(
        (status = 200, description = "the ledger", body = Envelope<LedgerView>),
        (status = 403, description = "not an admin (10003)", body = ErrorEnvelope),
        (status = 404, description = "no such event (50001)", body = ErrorEnvelope),
    )
)]
pub async fn event_ledger(
    State(state): State<AppState>,
    _admin: AdminUser,
    PathId(id): PathId,
) -> Result<ApiResponse<LedgerView>, ApiError> {
    Ok(ApiResponse::ok(
        state.flash_sale.reconciler.ledger(id).await?.into(),
    ))
}

/// An event's units as both stores see them.
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerView {
    pub event_id: u64,
    pub total_stock: u32,
    pub mysql_available_stock: u32,
    /// Unsold units given back to the product after the event ended.
    pub returned_stock: u32,
    /// Orders holding a unit (any status but closed or cancelled).
    pub live_orders: u64,
    /// `null` when the event is not warm.
    pub redis_stock: Option<i64>,
    pub pending_reservations: u64,
    pub redis_buyers: u64,
    /// `total_stock - (redis_stock + pending_reservations + live_orders + returned_stock)`: 0 at
    /// quiescence.
    pub drift: Option<i64>,
    /// `total_stock - (mysql_available_stock + live_orders + returned_stock)`: always 0.
    pub mysql_drift: i64,
}

impl From<Ledger> for LedgerView {
    fn from(l: Ledger) -> LedgerView {
        LedgerView {
            event_id: l.event_id,
            total_stock: l.total_stock,
            mysql_available_stock: l.mysql_available_stock,
            returned_stock: l.returned_stock,
            live_orders: l.live_orders,
            redis_stock: l.redis_stock,
            pending_reservations: l.pending_reservations,
            redis_buyers: l.redis_buyers,
            drift: l.drift,
            mysql_drift: l.mysql_drift,
        }
    }
}
