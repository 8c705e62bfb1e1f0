//! Request bodies as the OpenAPI document describes them: required fields, types, lengths and
//! patterns that match what the handlers accept, so a client generated from the document (or a
//! fuzzer like schemathesis) sends what the server takes and the server refuses what the
//! document rules out.
//!
//! The handlers themselves read bodies field by field (`serde_json::Value` per field) to name
//! every bad field in one 400; these types exist for the document only. The patterns are the
//! validators of `domain` written as regular expressions — change both together:
//! money `domain::money` (at most two places and ten digits before the point); titles
//! `domain::product::parse_title` (not blank, no control or invisible characters: see
//! `domain::product::is_invisible`; surrounding whitespace is dropped); descriptions
//! `parse_description` (no control characters but line breaks and tabs, no invisible ones);
//! emails `domain::user::Email::parse` (surrounding whitespace dropped; its per-part length
//! limits are not in the pattern, nor the compatibility forms it folds, such as fullwidth
//! letters: the pattern is the canonical, ASCII form).

#![allow(dead_code)] // Fields are read by the schema derive only.

use serde_json::Value;
use utoipa::ToSchema;

/// `POST /auth/register`.
#[derive(ToSchema)]
#[schema(as = Registration)]
#[serde(deny_unknown_fields)]
pub struct RegistrationBody {
    #[schema(
        max_length = 254,
        pattern = r"^\s*[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\s*$",
        example = "ada@example.com"
    )]
    pub email: String,
    /// 8 to 128 characters.
    #[schema(
        min_length = 8,
        max_length = 128,
        example = "correct horse battery staple"
    )]
    pub password: String,
}

/// `POST /auth/login`: the email is normalised as at registration (400 when it cannot be); a
/// wrong pair is 401.
#[derive(ToSchema)]
#[schema(as = Login)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    #[schema(
        max_length = 254,
        pattern = r"^\s*[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\s*$",
        example = "ada@example.com"
    )]
    pub email: String,
    #[schema(example = "correct horse battery staple")]
    pub password: String,
}

/// `POST /auth/refresh` and `POST /auth/logout`.
#[derive(ToSchema)]
#[schema(as = RefreshToken)]
#[serde(deny_unknown_fields)]
pub struct RefreshTokenBody {
    #[schema(min_length = 1)]
    pub refresh_token: String,
}

/// `POST /products`.
#[derive(ToSchema)]
#[schema(as = NewProduct)]
#[serde(deny_unknown_fields)]
pub struct NewProductBody {
    #[schema(
        max_length = 200,
        pattern = r"^\s*[^\s\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]([^\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^\s\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb])?\s*$",
        example = "Phone X"
    )]
    pub title: String,
    /// Empty when left out.
    #[schema(
        required = false,
        max_length = 10000,
        pattern = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$",
        example = "The phone everyone wants"
    )]
    pub description: String,
    #[schema(pattern = r"^[0-9]{1,10}(\.[0-9]{1,2})?$", example = "1999.00")]
    pub price: String,
    /// 0 when left out.
    #[schema(required = false, minimum = 0, maximum = 1_000_000_000, example = 100)]
    pub stock: u32,
}

/// `PATCH /products/{id}`: at least one field; `stock` is the new absolute stock.
#[derive(ToSchema)]
#[schema(as = ProductChanges, min_properties = 1)]
#[serde(deny_unknown_fields)]
pub struct ProductChangesBody {
    #[schema(
        required = false,
        max_length = 200,
        pattern = r"^\s*[^\s\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]([^\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^\s\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb])?\s*$"
    )]
    pub title: String,
    #[schema(
        required = false,
        max_length = 10000,
        pattern = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$"
    )]
    pub description: String,
    #[schema(required = false, pattern = r"^[0-9]{1,10}(\.[0-9]{1,2})?$")]
    pub price: String,
    #[schema(required = false, minimum = 0, maximum = 1_000_000_000)]
    pub stock: u32,
}

/// `POST /spike/events`. `end_at` must be after `start_at`, at most 31 days later, and neither
/// more than a year ahead; the stock moves out of the product's inventory.
#[derive(ToSchema)]
#[schema(as = NewEvent)]
#[serde(deny_unknown_fields)]
pub struct NewEventBody {
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_u64)]
    pub product_id: u64,
    #[schema(
        max_length = 200,
        pattern = r"^\s*[^\s\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]([^\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^\s\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb])?\s*$",
        example = "Double 11 phone sale"
    )]
    pub title: String,
    #[schema(pattern = r"^[0-9]{1,10}(\.[0-9]{1,2})?$", example = "99.00")]
    pub spike_price: String,
    #[schema(minimum = 1, maximum = 1_000_000_000, example = 100)]
    pub stock: u32,
    #[schema(value_type = String, format = DateTime)]
    pub start_at: Value,
    #[schema(value_type = String, format = DateTime)]
    pub end_at: Value,
    /// Must be 1: one order per buyer per event.
    #[schema(required = false, minimum = 1, maximum = 1, example = 1)]
    pub per_user_limit: u32,
}

/// `PATCH /spike/events/{id}` (before the start): at least one field.
#[derive(ToSchema)]
#[schema(as = EventChanges, min_properties = 1)]
#[serde(deny_unknown_fields)]
pub struct EventChangesBody {
    #[schema(
        required = false,
        max_length = 200,
        pattern = r"^\s*[^\s\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]([^\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^\s\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb])?\s*$"
    )]
    pub title: String,
    #[schema(required = false, pattern = r"^[0-9]{1,10}(\.[0-9]{1,2})?$")]
    pub spike_price: String,
    #[schema(required = false, minimum = 1, maximum = 1_000_000_000)]
    pub stock: u32,
    #[schema(required = false, value_type = String, format = DateTime)]
    pub start_at: Value,
    #[schema(required = false, value_type = String, format = DateTime)]
    pub end_at: Value,
}

/// One line of `POST /orders`.
#[derive(ToSchema)]
#[schema(as = OrderLine)]
#[serde(deny_unknown_fields)]
pub struct OrderLineBody {
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_u64)]
    pub product_id: u64,
    #[schema(minimum = 1, maximum = 100)]
    pub quantity: u32,
}

/// `POST /orders`: 1 to 50 lines as sent; lines naming the same product are merged (at most
/// 100 units of a product).
#[derive(ToSchema)]
#[schema(as = NewOrder)]
#[serde(deny_unknown_fields)]
pub struct NewOrderBody {
    #[schema(min_items = 1, max_items = 50)]
    pub items: Vec<OrderLineBody>,
}
