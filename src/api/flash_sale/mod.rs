//! `/spike/events`: flash-sale events — their administration and listing (`events`), and buying
//! with its result (`purchase`).

mod events;
mod purchase;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
/// The buy answer's body (the hot-path benchmarks serialize it).
pub use purchase::AcceptedView;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(events::list_events, events::create_event))
        .routes(routes!(events::get_event, events::update_event))
        .routes(routes!(events::warm_up_event))
        .routes(routes!(purchase::buy))
        .routes(routes!(purchase::buy_result))
        .routes(routes!(purchase::purchase_token))
        .routes(routes!(events::event_ledger))
}
