//! `/products`: the public catalog and its admin writes.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::body::{NewProductBody, ProductChangesBody};
use super::error::{ApiError, ErrorEnvelope};
use super::extract::{AdminUser, ApiJson, ApiQuery, PathId};
use super::response::{ApiResponse, Envelope, PageView};
use super::validation::{self, FieldErrors};
use crate::domain::money::Money;
use crate::domain::product::{self, NewProduct, Product, ProductChanges, ProductQuery, Sort};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_products, create_product))
        .routes(routes!(get_product, update_product, delete_product))
        .routes(routes!(get_stock))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductView {
    pub id: u64,
    pub title: String,
    pub description: String,
    /// Decimal string with two places.
    #[schema(value_type = String, example = "19.90")]
    pub price: Money,
    pub stock: u32,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<Product> for ProductView {
    fn from(p: Product) -> ProductView {
        ProductView {
            id: p.id,
            title: p.title,
            description: p.description,
            price: p.price,
            stock: p.stock,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StockView {
    pub product_id: u64,
    pub stock: u32,
}

/// Query of `GET /products`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
// An unknown parameter (a `sort` this list does not offer, a misspelt `pagesize`) is a 400,
// not silently ignored.
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Page number, from 1 (default 1).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    pub page: Option<String>,
    /// Items per page, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub page_size: Option<String>,
    /// `price`, `created_at` or `title`, optionally followed by `,asc` or `,desc`
    /// (default `created_at,desc`).
    #[param(value_type = Option<String>, pattern = r"^(price|created_at|title)(,(asc|desc))?$")]
    pub sort: Option<String>,
    /// Case-insensitive substring of the title.
    #[param(value_type = Option<String>, max_length = 200)]
    pub q: Option<String>,
    /// Lowest price, inclusive (decimal string).
    #[param(value_type = Option<String>, pattern = r"^[0-9]{1,10}(\.[0-9]{1,2})?$")]
    pub min_price: Option<String>,
    /// Highest price, inclusive (decimal string).
    #[param(value_type = Option<String>, pattern = r"^[0-9]{1,10}(\.[0-9]{1,2})?$")]
    pub max_price: Option<String>,
}

fn parse_list_params(params: ListParams) -> Result<ProductQuery, ApiError> {
    let mut errors = FieldErrors::default();
    let page = validation::page(
        params.page.as_deref(),
        params.page_size.as_deref(),
        &mut errors,
    );
    let sort = match &params.sort {
        Some(raw) => errors
            .check("sort", raw.parse::<Sort>())
            .unwrap_or_default(),
        None => Sort::default(),
    };
    if params
        .q
        .as_deref()
        .is_some_and(|q| q.chars().count() > product::TITLE_MAX_CHARS)
    {
        errors.add("q", "q must be at most 200 characters");
    }
    let title_contains = params.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let mut price = |field: &str, raw: &Option<String>| {
        raw.as_ref().and_then(|raw| {
            errors.check(field, validation::money(&Value::String(raw.clone()), field))
        })
    };
    let min_price = price("min_price", &params.min_price);
    let max_price = price("max_price", &params.max_price);
    if let (Some(min), Some(max)) = (min_price, max_price)
        && min > max
    {
        errors.add("min_price", "min_price must not exceed max_price");
    }
    errors.into_result()?;
    Ok(ProductQuery {
        title_contains: title_contains.map(str::to_owned),
        min_price,
        max_price,
        sort,
        page,
    })
}

/// Active products, filtered, sorted and paged; `total` counts every match.
#[utoipa::path(
    get,
    path = "/products",
    tag = "products",
    params(ListParams),
    responses(
        (status = 200, description = "one page", body = Envelope<PageView<ProductView>>),
        (status = 400, description = "invalid paging, sort or filter (10001, `data.fields`)", body = ErrorEnvelope),
    )
)]
pub async fn list_products(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<ApiResponse<PageView<ProductView>>, ApiError> {
    let query = parse_list_params(params)?;
    let (items, total) = state.catalog.list(&query).await?;
    Ok(ApiResponse::ok(PageView {
        items: items.into_iter().map(ProductView::from).collect(),
        page: query.page.page,
        page_size: query.page.page_size,
        total,
    }))
}

/// One product with its stock (served from the cache when warm; see docs/catalog.md for
/// how fresh the stock is).
#[utoipa::path(
    get,
    path = "/products/{id}",
    tag = "products",
    params(("id" = u64, Path, description = "product id")),
    responses(
        (status = 200, description = "the product", body = Envelope<ProductView>),
        (status = 404, description = "no such product, or deleted (30001)", body = ErrorEnvelope),
    )
)]
pub async fn get_product(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<ApiResponse<ProductView>, ApiError> {
    Ok(ApiResponse::ok(state.catalog.get(id).await?.into()))
}

/// Current stock, read from MySQL.
#[utoipa::path(
    get,
    path = "/products/{id}/stock",
    tag = "products",
    params(("id" = u64, Path, description = "product id")),
    responses(
        (status = 200, description = "the stock", body = Envelope<StockView>),
        (status = 404, description = "no such product, or deleted (30001)", body = ErrorEnvelope),
    )
)]
pub async fn get_stock(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<ApiResponse<StockView>, ApiError> {
    let stock = state.catalog.stock(id).await?;
    Ok(ApiResponse::ok(StockView {
        product_id: id,
        stock,
    }))
}

/// Admin: add a product with its initial stock.
#[utoipa::path(
    post,
    path = "/products",
    tag = "products",
    security(("bearer" = ["admin"])),
    request_body = NewProductBody,
    responses(
        (status = 201, description = "created", body = Envelope<ProductView>),
        (status = 400, description = "invalid fields (10001, `data.fields`)", body = ErrorEnvelope),
        (status = 403, description = "not an admin (10003)", body = ErrorEnvelope),
    )
)]
pub async fn create_product(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiJson(body): ApiJson<NewProductBody>,
) -> Result<ApiResponse<ProductView>, ApiError> {
    let mut errors = FieldErrors::default();
    let title = body.title.required("title", &mut errors);
    let description = body.description.optional("description", &mut errors);
    let price = body.price.required("price", &mut errors);
    let stock = body.stock.optional("stock", &mut errors);
    let (Some(title), Some(price)) = (title, price) else {
        return Err(errors.into_error());
    };
    errors.into_result()?;
    let new = NewProduct {
        title,
        description: description.unwrap_or_default(),
        price,
        stock: stock.unwrap_or(0),
    };
    Ok(ApiResponse::created(
        state.catalog.create(new).await?.into(),
    ))
}

/// Admin: change any of title, description, price and stock (absolute).
#[utoipa::path(
    patch,
    path = "/products/{id}",
    tag = "products",
    security(("bearer" = ["admin"])),
    params(("id" = u64, Path, description = "product id")),
    request_body = ProductChangesBody,
    responses(
        (status = 200, description = "updated", body = Envelope<ProductView>),
        (status = 400, description = "invalid fields (10001, `data.fields`)", body = ErrorEnvelope),
        (status = 403, description = "not an admin (10003)", body = ErrorEnvelope),
        (status = 404, description = "no such product (30001)", body = ErrorEnvelope),
    )
)]
pub async fn update_product(
    State(state): State<AppState>,
    _admin: AdminUser,
    PathId(id): PathId,
    ApiJson(body): ApiJson<ProductChangesBody>,
) -> Result<ApiResponse<ProductView>, ApiError> {
    let mut errors = FieldErrors::default();
    let changes = ProductChanges {
        title: body.title.optional("title", &mut errors),
        description: body.description.optional("description", &mut errors),
        price: body.price.optional("price", &mut errors),
        stock: body.stock.optional("stock", &mut errors),
    };
    errors.into_result()?;
    if changes.is_empty() {
        return Err(validation::nothing_to_change(
            "title, description, price, stock",
        ));
    }
    Ok(ApiResponse::ok(
        state.catalog.update(id, changes).await?.into(),
    ))
}

/// Admin: soft-delete a product; readers get 404 from then on.
#[utoipa::path(
    delete,
    path = "/products/{id}",
    tag = "products",
    security(("bearer" = ["admin"])),
    params(("id" = u64, Path, description = "product id")),
    responses(
        (status = 200, description = "deleted; `data` is null", body = Envelope<Option<String>>),
        (status = 403, description = "not an admin (10003)", body = ErrorEnvelope),
        (status = 404, description = "no such product (30001)", body = ErrorEnvelope),
    )
)]
pub async fn delete_product(
    State(state): State<AppState>,
    _admin: AdminUser,
    PathId(id): PathId,
) -> Result<ApiResponse<Option<()>>, ApiError> {
    state.catalog.delete(id).await?;
    Ok(ApiResponse::ok(None))
}
