//! Domain types: values that are valid by construction, converted from DTOs at the API edge.
//! They depend on nothing else in the crate.

pub mod flash_sale;
pub mod money;
pub mod order;
pub mod product;
pub mod user;

/// The largest id. Ids are documented as int64 (the OpenAPI document, and clients in languages
/// without unsigned integers), so a larger number names nothing and is refused, not looked up.
pub const ID_MAX: u64 = i64::MAX as u64;

/// A positive integer spelt the canonical way: ASCII digits only, no sign, no leading zero, no
/// space (`7`, not `07`, `+7`, ` 7` or `7.0`). Ids and page numbers are what responses carried;
/// another spelling of one is a client bug, and letting `01` and `1` name the same thing would
/// make caches and logs disagree.
pub fn parse_positive(raw: &str) -> Option<u64> {
    let canonical =
        !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) && !raw.starts_with('0');
    canonical.then(|| raw.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_integers_are_spelt_the_canonical_way() {
        assert_eq!(parse_positive("1"), Some(1));
        assert_eq!(parse_positive("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "0",
            "01",
            "+1",
            "-1",
            "1.0",
            " 1",
            "1 ",
            "1e3",
            "x",
            "18446744073709551616",
        ] {
            assert_eq!(parse_positive(bad), None, "{bad:?}");
        }
    }
}
