//! Request bodies: one type per body, read leniently and documented by itself.
//!
//! A body type is what the handler deserialises and what the OpenAPI document shows: its
//! `ToSchema` is built here from the same field kinds that read it, so the two cannot drift
//! apart. Lenient fields are [`Field`]s: serde keeps the raw JSON of each (left out, or what was
//! sent, `null` included), and the handler reads every one through its [`FieldKind`], so one
//! `400` names every bad field with its own message instead of serde stopping at the first.
//! Each kind's pattern is the domain's own (`product::TITLE_PATTERN`, `money::MONEY_PATTERN`,
//! …), which the domain's unit tests check against its parser.

use std::borrow::Cow;
use std::marker::PhantomData;

use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use super::validation::{self, FieldErrors};
use crate::domain::ID_MAX;
use crate::domain::money::{MONEY_PATTERN, Money};
use crate::domain::order::MAX_QUANTITY;
use crate::domain::product::{self, STOCK_MAX};
use crate::domain::user::{EMAIL_PATTERN, PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS};

/// What one field of a body is: how the document describes it, and how the JSON a client sent
/// becomes a value (or a message naming the field).
pub trait FieldKind {
    type Value;
    /// The field's schema, without the description and example a body may add.
    fn schema() -> ObjectBuilder;
    fn read(json: &Value, field: &str) -> Result<Self::Value, String>;
}

/// One lenient field of a body: left out, or the JSON it held.
pub struct Field<K> {
    sent: Option<Value>,
    kind: PhantomData<K>,
}

impl<K> Default for Field<K> {
    fn default() -> Field<K> {
        Field {
            sent: None,
            kind: PhantomData,
        }
    }
}

impl<K> std::fmt::Debug for Field<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Field").field(&self.sent).finish()
    }
}

/// Anything deserialises, so a wrong type is this field's message, not serde's for the body; a
/// `null` is kept as sent (a wrong type, never "left out").
impl<'de, K> Deserialize<'de> for Field<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Field<K>, D::Error> {
        Ok(Field {
            sent: Some(Value::deserialize(deserializer)?),
            kind: PhantomData,
        })
    }
}

impl<K: FieldKind> Field<K> {
    pub fn is_sent(&self) -> bool {
        self.sent.is_some()
    }

    /// The value when sent and valid; a bad one is recorded under `name`.
    pub fn optional(&self, name: &str, errors: &mut FieldErrors) -> Option<K::Value> {
        let json = self.sent.as_ref()?;
        errors.check(name, K::read(json, name))
    }

    /// As [`Field::optional`], and "`name` is required" when left out.
    pub fn required(&self, name: &str, errors: &mut FieldErrors) -> Option<K::Value> {
        if self.sent.is_none() {
            errors.add(name, format!("{name} is required"));
        }
        self.optional(name, errors)
    }
}

/// A product's or an event's title (`product::parse_title`).
pub struct Title;

impl FieldKind for Title {
    type Value = String;
    fn schema() -> ObjectBuilder {
        string()
            .max_length(Some(product::TITLE_MAX_CHARS))
            .pattern(Some(product::TITLE_PATTERN))
    }
    fn read(json: &Value, field: &str) -> Result<String, String> {
        validation::text(json, field).and_then(|text| product::parse_title(&text))
    }
}

/// A product's description (`product::parse_description`).
pub struct Description;

impl FieldKind for Description {
    type Value = String;
    fn schema() -> ObjectBuilder {
        string()
            .max_length(Some(product::DESCRIPTION_MAX_CHARS))
            .pattern(Some(product::DESCRIPTION_PATTERN))
    }
    fn read(json: &Value, field: &str) -> Result<String, String> {
        validation::text(json, field).and_then(|text| product::parse_description(&text))
    }
}

/// An amount of money: a decimal string, never a JSON number (which would lose cents).
pub struct Price;

impl FieldKind for Price {
    type Value = Money;
    fn schema() -> ObjectBuilder {
        string().pattern(Some(MONEY_PATTERN))
    }
    fn read(json: &Value, field: &str) -> Result<Money, String> {
        validation::money(json, field)
    }
}

/// A product's stock: 0 to [`STOCK_MAX`].
pub struct ProductStock;

impl FieldKind for ProductStock {
    type Value = u32;
    fn schema() -> ObjectBuilder {
        int32(0, STOCK_MAX.into())
    }
    fn read(json: &Value, field: &str) -> Result<u32, String> {
        validation::integer(json, field).and_then(product::parse_stock)
    }
}

/// An event's stock: 1 to [`STOCK_MAX`].
pub struct EventStock;

impl FieldKind for EventStock {
    type Value = u32;
    fn schema() -> ObjectBuilder {
        int32(1, STOCK_MAX.into())
    }
    fn read(json: &Value, field: &str) -> Result<u32, String> {
        json.as_i64()
            .filter(|n| (1..=i64::from(STOCK_MAX)).contains(n))
            .map(|n| n as u32)
            .ok_or_else(|| format!("{field} must be an integer from 1 to {STOCK_MAX}"))
    }
}

/// A product's id in a body.
pub struct ProductId;

impl FieldKind for ProductId {
    type Value = u64;
    fn schema() -> ObjectBuilder {
        int64(1, ID_MAX)
    }
    fn read(json: &Value, field: &str) -> Result<u64, String> {
        json.as_u64()
            .filter(|id| (1..=ID_MAX).contains(id))
            .ok_or_else(|| format!("{field} must be a product id"))
    }
}

/// An RFC 3339 time (`validation::timestamp`).
pub struct Timestamp;

impl FieldKind for Timestamp {
    type Value = time::OffsetDateTime;
    fn schema() -> ObjectBuilder {
        string().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
    }
    fn read(json: &Value, field: &str) -> Result<time::OffsetDateTime, String> {
        validation::timestamp(json, field)
    }
}

/// An event's orders per buyer: 1, the only limit the unique buyer key enforces.
pub struct PerUserLimit;

impl FieldKind for PerUserLimit {
    type Value = u32;
    fn schema() -> ObjectBuilder {
        int32(1, 1)
    }
    fn read(json: &Value, field: &str) -> Result<u32, String> {
        match json.as_u64() {
            Some(1) => Ok(1),
            _ => Err(format!("{field} must be 1 (one order per buyer per event)")),
        }
    }
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn int32(minimum: u64, maximum: u64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
        .minimum(Some(minimum))
        .maximum(Some(maximum))
}

fn int64(minimum: u64, maximum: u64) -> ObjectBuilder {
    int32(minimum, maximum).format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
}

/// A field's schema with its example (the document shows `example`, not 3.1's `examples`).
#[allow(deprecated)]
fn example(schema: ObjectBuilder, value: Value) -> ObjectBuilder {
    schema.example(Some(value))
}

/// One property of a body's schema.
struct Property {
    name: &'static str,
    schema: RefOr<Schema>,
    required: bool,
}

fn required(name: &'static str, schema: impl Into<RefOr<Schema>>) -> Property {
    Property {
        name,
        schema: schema.into(),
        required: true,
    }
}

fn optional(name: &'static str, schema: impl Into<RefOr<Schema>>) -> Property {
    Property {
        required: false,
        ..required(name, schema)
    }
}

/// A body's schema: an object of `properties` and nothing else, at least `min_properties`.
fn object(description: &str, min_properties: usize, properties: Vec<Property>) -> RefOr<Schema> {
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    if min_properties > 0 {
        object = object.min_properties(Some(min_properties));
    }
    for property in properties {
        if property.required {
            object = object.required(property.name);
        }
        object = object.property(property.name, property.schema);
    }
    RefOr::T(Schema::Object(object.build()))
}

/// Implements the document's name for a body type whose `PartialSchema` is written here.
macro_rules! named {
    ($type:ty, $name:literal) => {
        impl ToSchema for $type {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

/// `POST /products`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewProductBody {
    pub title: Field<Title>,
    pub description: Field<Description>,
    pub price: Field<Price>,
    pub stock: Field<ProductStock>,
}

impl PartialSchema for NewProductBody {
    fn schema() -> RefOr<Schema> {
        object(
            "`POST /products`.",
            0,
            vec![
                required("title", example(Title::schema(), json!("Phone X"))),
                optional(
                    "description",
                    example(Description::schema(), json!("The phone everyone wants"))
                        .description(Some("Empty when left out.")),
                ),
                required("price", example(Price::schema(), json!("1999.00"))),
                optional(
                    "stock",
                    example(ProductStock::schema(), json!(100))
                        .description(Some("0 when left out.")),
                ),
            ],
        )
    }
}
named!(NewProductBody, "NewProduct");

/// `PATCH /products/{id}`: at least one field; `stock` is the new absolute stock.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProductChangesBody {
    pub title: Field<Title>,
    pub description: Field<Description>,
    pub price: Field<Price>,
    pub stock: Field<ProductStock>,
}

impl PartialSchema for ProductChangesBody {
    fn schema() -> RefOr<Schema> {
        object(
            "`PATCH /products/{id}`: at least one field; `stock` is the new absolute stock.",
            1,
            vec![
                optional("title", Title::schema()),
                optional("description", Description::schema()),
                optional("price", Price::schema()),
                optional("stock", ProductStock::schema()),
            ],
        )
    }
}
named!(ProductChangesBody, "ProductChanges");

/// `POST /spike/events`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewEventBody {
    pub product_id: Field<ProductId>,
    pub title: Field<Title>,
    pub spike_price: Field<Price>,
    pub stock: Field<EventStock>,
    pub start_at: Field<Timestamp>,
    pub end_at: Field<Timestamp>,
    pub per_user_limit: Field<PerUserLimit>,
}

impl PartialSchema for NewEventBody {
    fn schema() -> RefOr<Schema> {
        object(
            "`POST /spike/events`. `end_at` must be after `start_at`, at most 31 days later, and neither\nmore than a year ahead; the stock moves out of the product's inventory.",
            0,
            vec![
                required("product_id", ProductId::schema()),
                required(
                    "title",
                    example(Title::schema(), json!("Double 11 phone sale")),
                ),
                required("spike_price", example(Price::schema(), json!("99.00"))),
                required("stock", example(EventStock::schema(), json!(100))),
                required("start_at", Timestamp::schema()),
                required("end_at", Timestamp::schema()),
                optional(
                    "per_user_limit",
                    example(PerUserLimit::schema(), json!(1))
                        .description(Some("Must be 1: one order per buyer per event.")),
                ),
            ],
        )
    }
}
named!(NewEventBody, "NewEvent");

/// `PATCH /spike/events/{id}` (before the start). `product_id` and `per_user_limit` are read
/// only to be refused by name (an event's product never changes; the limit is always 1); the
/// document leaves them out.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventChangesBody {
    pub product_id: Field<ProductId>,
    pub title: Field<Title>,
    pub spike_price: Field<Price>,
    pub stock: Field<EventStock>,
    pub start_at: Field<Timestamp>,
    pub end_at: Field<Timestamp>,
    pub per_user_limit: Field<PerUserLimit>,
}

impl PartialSchema for EventChangesBody {
    fn schema() -> RefOr<Schema> {
        object(
            "`PATCH /spike/events/{id}` (before the start): at least one field.",
            1,
            vec![
                optional("title", Title::schema()),
                optional("spike_price", Price::schema()),
                optional("stock", EventStock::schema()),
                optional("start_at", Timestamp::schema()),
                optional("end_at", Timestamp::schema()),
            ],
        )
    }
}
named!(EventChangesBody, "EventChanges");

/// One line of `POST /orders`, for the document (the handler reads the lines itself, naming
/// each bad one by its index: `items[2].quantity`).
pub struct OrderLine;

impl PartialSchema for OrderLine {
    fn schema() -> RefOr<Schema> {
        object(
            "One line of `POST /orders`.",
            0,
            vec![
                required("product_id", int64(1, ID_MAX)),
                required("quantity", int32(1, MAX_QUANTITY.into())),
            ],
        )
    }
}
named!(OrderLine, "OrderLine");

/// `POST /orders`: `items` is read as raw JSON and checked line by line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrderBody {
    #[serde(default)]
    pub items: Value,
}

impl PartialSchema for NewOrderBody {
    fn schema() -> RefOr<Schema> {
        let lines = ArrayBuilder::new()
            .items(Ref::from_schema_name(OrderLine::name()))
            .min_items(Some(1))
            .max_items(Some(crate::domain::order::MAX_ITEMS));
        object(
            "`POST /orders`: 1 to 50 lines as sent; lines naming the same product are merged (at most\n100 units of a product).",
            0,
            vec![required("items", lines.build())],
        )
    }
}

impl ToSchema for NewOrderBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("NewOrder")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((OrderLine::name().into(), OrderLine::schema()));
    }
}

/// The email field of the auth bodies: the canonical, ASCII form `Email::parse` accepts (its
/// per-part limits and the compatibility forms it folds are not in the pattern).
fn email() -> ObjectBuilder {
    example(
        string().max_length(Some(254)).pattern(Some(EMAIL_PATTERN)),
        json!("ada@example.com"),
    )
}

/// `POST /auth/register`. The auth bodies are strict (a field of the wrong type is a malformed
/// body); a missing field is empty, so it is named as required.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationBody {
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub password: String,
}

impl PartialSchema for RegistrationBody {
    fn schema() -> RefOr<Schema> {
        let password = string()
            .min_length(Some(PASSWORD_MIN_CHARS))
            .max_length(Some(PASSWORD_MAX_CHARS))
            .description(Some("8 to 128 characters."));
        object(
            "`POST /auth/register`.",
            0,
            vec![
                required("email", email()),
                required(
                    "password",
                    example(password, json!("correct horse battery staple")),
                ),
            ],
        )
    }
}
named!(RegistrationBody, "Registration");

/// `POST /auth/login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub password: String,
}

impl PartialSchema for LoginBody {
    fn schema() -> RefOr<Schema> {
        object(
            "`POST /auth/login`: the email is normalised as at registration (400 when it cannot be); a\nwrong pair is 401.",
            0,
            vec![
                required("email", email()),
                required(
                    "password",
                    example(string(), json!("correct horse battery staple")),
                ),
            ],
        )
    }
}
named!(LoginBody, "Login");

/// `POST /auth/refresh` and `POST /auth/logout`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshTokenBody {
    #[serde(default)]
    pub refresh_token: String,
}

impl PartialSchema for RefreshTokenBody {
    fn schema() -> RefOr<Schema> {
        object(
            "`POST /auth/refresh` and `POST /auth/logout`.",
            0,
            vec![required("refresh_token", string().min_length(Some(1)))],
        )
    }
}
named!(RefreshTokenBody, "RefreshToken");
