//! Input checks shared by handlers: collecting per-field problems into one 400 answer, the
//! readers of JSON field values the body kinds (`api::body`) are made of, and the `page` /
//! `page_size` query parameters every list takes.

use std::collections::BTreeMap;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::error::ApiError;
use crate::domain::money::Money;
use crate::domain::product::Page;

/// A JSON string.
pub fn text(value: &Value, field: &str) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{field} must be a string"))
}

/// Money is a decimal string (never a JSON number, which would lose cents).
pub fn money(value: &Value, field: &str) -> Result<Money, String> {
    match value {
        Value::String(raw) => raw.parse().map_err(|e| format!("{field} {e}")),
        _ => Err(format!(
            "{field} must be a decimal string such as \"19.90\""
        )),
    }
}

/// A JSON integer.
pub fn integer(value: &Value, field: &str) -> Result<i64, String> {
    value
        .as_i64()
        .ok_or_else(|| format!("{field} must be an integer"))
}

/// An RFC 3339 time, in UTC. A time whose offset carries it past the representable years
/// (`9999-12-31T23:59:59-23:59`) is refused like a malformed one instead of panicking later.
pub fn timestamp(value: &Value, field: &str) -> Result<OffsetDateTime, String> {
    value
        .as_str()
        .and_then(|raw| OffsetDateTime::parse(raw, &Rfc3339).ok())
        .and_then(|t| t.checked_to_offset(time::UtcOffset::UTC))
        .ok_or_else(|| format!("{field} must be an RFC 3339 time such as 2026-11-11T00:00:00Z"))
}

/// The 400 of a PATCH that names no field it can change: answering 200 with nothing done would
/// hide a client's typo (`{"titel": …}`).
pub fn nothing_to_change(fields: &str) -> ApiError {
    ApiError::new(super::error::ErrorCode::InvalidArgument)
        .with_message(format!("nothing to change: send at least one of {fields}"))
}

/// Per-field problems, so one response names every invalid field (`data.fields`).
#[derive(Debug, Default)]
pub struct FieldErrors(BTreeMap<String, String>);

/// One of an enum's names (`status=paid`), or "`field` must be one of …" naming them all.
pub fn choice<T>(field: &str, raw: &str) -> Result<T, String>
where
    T: std::str::FromStr + strum::VariantNames,
{
    raw.parse::<T>()
        .map_err(|_| format!("{field} must be one of {}", T::VARIANTS.join(", ")))
}

impl FieldErrors {
    /// Keeps the value, or records the problem under `field` and returns `None`.
    pub fn check<T, E: Into<String>>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(problem) => {
                self.add(field, problem);
                None
            }
        }
    }

    pub fn add(&mut self, field: &str, problem: impl Into<String>) {
        self.0.insert(field.to_owned(), problem.into());
    }

    /// `Err(400/10001)` naming every field, or `Ok` when there were none.
    pub fn into_result(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.into_error())
        }
    }

    /// The 400/10001 answer naming every recorded field.
    pub fn into_error(self) -> ApiError {
        ApiError::invalid_fields(self.0)
    }
}

/// The page asked for by `page` and `page_size` (defaults 1 and 20); bad values are recorded.
pub fn page(page: Option<&str>, page_size: Option<&str>, errors: &mut FieldErrors) -> Page {
    let mut result = Page::default();
    if let Some(raw) = page
        && let Some(value) = errors.check("page", Page::parse_page(raw))
    {
        result.page = value;
    }
    if let Some(raw) = page_size
        && let Some(value) = errors.check("page_size", Page::parse_page_size(raw))
    {
        result.page_size = value;
    }
    result
}
