//! Input checks shared by handlers: collecting per-field problems into one 400 answer, and the
//! `page` / `page_size` query parameters every list takes.

use std::collections::BTreeMap;

use super::error::ApiError;
use crate::domain::product::Page;

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
