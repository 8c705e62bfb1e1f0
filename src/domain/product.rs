//! Products: the catalog entity, its field rules, and the list query's vocabulary
//! (sort keys, filters, paging), each valid by construction.

use time::OffsetDateTime;

use super::money::Money;

pub const TITLE_MAX_CHARS: usize = 200;
pub const DESCRIPTION_MAX_CHARS: usize = 10_000;
/// Largest stock one request may set: far above any real shelf, far below `INT UNSIGNED`.
pub const STOCK_MAX: u32 = 1_000_000_000;

/// [`parse_title`] as a regular expression (the OpenAPI document's pattern): not blank, no
/// control or [invisible](is_invisible) character; surrounding whitespace allowed (dropped).
pub const TITLE_PATTERN: &str = r"^\s*[^\s\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]([^\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^\s\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb])?\s*$";

/// [`parse_description`] as a regular expression: no control characters but line breaks and
/// tabs, no [invisible](is_invisible) one.
pub const DESCRIPTION_PATTERN: &str = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$";

/// A product as readers see it, with its current stock.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Product {
    pub id: u64,
    pub title: String,
    pub description: String,
    pub price: Money,
    pub stock: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A trimmed, non-empty title of at most [`TITLE_MAX_CHARS`] characters.
/// A title: surrounding whitespace is dropped; the length limit counts what was sent (as the
/// OpenAPI document's `maxLength` does).
pub fn parse_title(raw: &str) -> Result<String, String> {
    if raw.chars().count() > TITLE_MAX_CHARS {
        return Err(format!(
            "title must be at most {TITLE_MAX_CHARS} characters"
        ));
    }
    let title = raw.trim();
    if title.is_empty() {
        return Err("title is required".into());
    }
    // NUL, escapes, line breaks: nothing a title displays, and NUL truncates in some clients.
    if title.chars().any(char::is_control) {
        return Err("title must not contain control characters".into());
    }
    if title.chars().any(is_invisible) {
        return Err(
            "title must not contain invisible or bidi control characters (zero-width spaces, direction overrides, BOM, line separators)"
                .into(),
        );
    }
    Ok(title.to_owned())
}

/// Format characters a title or description never shows but that hide or reorder the text
/// around them — a right-to-left override turns "Phone X (gpj.exe)" into something else on
/// screen: bidi embeddings, overrides, isolates and marks, zero-width spaces, the word joiner
/// and invisible operators, the BOM, the soft hyphen, line and paragraph separators, interlinear
/// annotations. The zero-width joiner and non-joiner stay allowed: emoji sequences and several
/// scripts need them. [`TITLE_PATTERN`] and [`DESCRIPTION_PATTERN`] list the same characters.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

pub fn parse_description(raw: &str) -> Result<String, String> {
    if raw.chars().count() > DESCRIPTION_MAX_CHARS {
        return Err(format!(
            "description must be at most {DESCRIPTION_MAX_CHARS} characters"
        ));
    }
    // Line breaks and tabs are text; NUL and other control characters are not.
    if raw
        .chars()
        .any(|c| (c.is_control() && !matches!(c, '\n' | '\r' | '\t')) || is_invisible(c))
    {
        return Err(
            "description must not contain control characters other than line breaks and tabs, nor invisible or bidi control characters"
                .into(),
        );
    }
    Ok(raw.to_owned())
}

pub fn parse_stock(raw: i64) -> Result<u32, String> {
    u32::try_from(raw)
        .ok()
        .filter(|stock| *stock <= STOCK_MAX)
        .ok_or_else(|| format!("stock must be an integer from 0 to {STOCK_MAX}"))
}

/// Fields of a new product, all validated.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub title: String,
    pub description: String,
    pub price: Money,
    pub stock: u32,
}

/// A partial update: `None` leaves the field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProductChanges {
    pub title: Option<String>,
    pub description: Option<String>,
    pub price: Option<Money>,
    /// The new absolute stock (a restock sets it; it is not a delta).
    pub stock: Option<u32>,
}

impl ProductChanges {
    pub fn is_empty(&self) -> bool {
        self.title.is_none()
            && self.description.is_none()
            && self.price.is_none()
            && self.stock.is_none()
    }
}

/// Sortable columns of the product list (a whitelist: nothing else reaches SQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Price,
    CreatedAt,
    Title,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Asc,
    Desc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub key: SortKey,
    pub direction: Direction,
}

impl Default for Sort {
    /// Newest first.
    fn default() -> Sort {
        Sort {
            key: SortKey::CreatedAt,
            direction: Direction::Desc,
        }
    }
}

impl std::str::FromStr for Sort {
    type Err = String;
    /// `field` or `field,asc|desc`, field one of `price`, `created_at`, `title`.
    fn from_str(raw: &str) -> Result<Sort, String> {
        let (field, direction) = match raw.split_once(',') {
            Some((field, direction)) => (field.trim(), Some(direction.trim())),
            None => (raw.trim(), None),
        };
        let key = match field {
            "price" => SortKey::Price,
            "created_at" => SortKey::CreatedAt,
            "title" => SortKey::Title,
            _ => return Err("sort field must be one of price, created_at, title".into()),
        };
        let direction = match direction {
            None | Some("asc") => Direction::Asc,
            Some("desc") => Direction::Desc,
            Some(_) => return Err("sort direction must be asc or desc".into()),
        };
        Ok(Sort { key, direction })
    }
}

/// Largest page size a client may ask for.
pub const PAGE_SIZE_MAX: u32 = 100;
pub const PAGE_SIZE_DEFAULT: u32 = 20;
/// Deeper pages make MySQL skip too many rows (`OFFSET`); past this, filter instead.
pub const PAGE_MAX: u32 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub page: u32,
    pub page_size: u32,
}

impl Default for Page {
    fn default() -> Page {
        Page {
            page: 1,
            page_size: PAGE_SIZE_DEFAULT,
        }
    }
}

impl Page {
    /// `page`: 1 to [`PAGE_MAX`], spelt canonically (`01`, `+1`, ` 1` are refused, as in ids).
    pub fn parse_page(raw: &str) -> Result<u32, String> {
        super::parse_positive(raw)
            .filter(|p| *p <= u64::from(PAGE_MAX))
            .map(|p| p as u32)
            .ok_or_else(|| format!("page must be an integer from 1 to {PAGE_MAX}"))
    }

    /// `page_size`: 1 to [`PAGE_SIZE_MAX`], spelt canonically.
    pub fn parse_page_size(raw: &str) -> Result<u32, String> {
        super::parse_positive(raw)
            .filter(|s| *s <= u64::from(PAGE_SIZE_MAX))
            .map(|s| s as u32)
            .ok_or_else(|| format!("page_size must be an integer from 1 to {PAGE_SIZE_MAX}"))
    }

    pub fn offset(&self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.page_size)
    }
}

/// Filters, sort and page of one list request.
#[derive(Debug, Clone, Default)]
pub struct ProductQuery {
    /// Case-insensitive substring of the title.
    pub title_contains: Option<String>,
    pub min_price: Option<Money>,
    pub max_price: Option<Money>,
    pub sort: Sort,
    pub page: Page,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_accepts_the_whitelist_only() {
        assert_eq!(
            "price,desc".parse::<Sort>().unwrap(),
            Sort {
                key: SortKey::Price,
                direction: Direction::Desc
            }
        );
        assert_eq!("title".parse::<Sort>().unwrap().direction, Direction::Asc);
        assert!("price,sideways".parse::<Sort>().is_err());
        assert!("id,asc".parse::<Sort>().is_err());
        assert!("price; DROP TABLE products".parse::<Sort>().is_err());
    }

    #[test]
    fn paging_bounds() {
        assert_eq!(Page::parse_page("1"), Ok(1));
        assert!(Page::parse_page("0").is_err());
        assert!(Page::parse_page("-1").is_err());
        assert!(Page::parse_page("10001").is_err());
        assert_eq!(Page::parse_page_size("100"), Ok(100));
        assert!(Page::parse_page_size("101").is_err());
        assert!(Page::parse_page_size("abc").is_err());
        for other_spelling in ["01", "+1", " 1", "1 ", "1.0"] {
            assert!(
                Page::parse_page(other_spelling).is_err(),
                "{other_spelling:?}"
            );
            assert!(
                Page::parse_page_size(other_spelling).is_err(),
                "{other_spelling:?}"
            );
        }
        assert_eq!(
            Page {
                page: 3,
                page_size: 20
            }
            .offset(),
            40
        );
    }

    #[test]
    fn invisible_and_bidi_characters_are_refused_in_titles_and_descriptions() {
        for hidden in [
            '\u{202E}', '\u{200B}', '\u{FEFF}', '\u{2028}', '\u{2066}', '\u{AD}',
        ] {
            let text = format!("Pho{hidden}ne");
            assert!(parse_title(&text).is_err(), "{hidden:?} in a title");
            assert!(
                parse_description(&text).is_err(),
                "{hidden:?} in a description"
            );
        }
        // Emoji sequences and scripts that need the joiners keep them.
        assert!(parse_title("Family 👨\u{200D}👩\u{200D}👧 pack").is_ok());
        assert!(parse_title("می\u{200C}خواهم").is_ok());
        assert!(parse_description("line one\nline two\tend").is_ok());
    }

    #[test]
    fn field_rules() {
        assert_eq!(parse_title("  Phone ").unwrap(), "Phone");
        assert!(parse_title("Pho\u{0}ne").is_err());
        assert!(parse_title("   ").is_err());
        assert!(parse_title(&"t".repeat(201)).is_err());
        assert!(parse_stock(-1).is_err());
        assert!(parse_stock(i64::from(STOCK_MAX) + 1).is_err());
        assert_eq!(parse_stock(5), Ok(5));
    }

    /// The document's patterns say what the parsers accept, on a corpus of good and bad input
    /// (every entry within the length limits, which the document states apart).
    #[test]
    fn title_and_description_patterns_agree_with_their_parsers() {
        let title = regex::Regex::new(TITLE_PATTERN).unwrap();
        let description = regex::Regex::new(DESCRIPTION_PATTERN).unwrap();
        let corpus = [
            "Phone X",
            "  Phone X  ",
            "手机 X",
            "\u{3000}Phone\u{3000}",
            "👩\u{200D}💻 kit",
            "",
            "   ",
            "\t",
            "Phone\tX",
            "Phone\nX",
            "Phone\r\nX",
            "Phone\u{0}X",
            "Phone\u{7F}X",
            "Phone\u{85}X",
            "Phone\u{AD}X",
            "Phone\u{200B}X",
            "Phone\u{202E}X",
            "Phone\u{2066}X",
            "\u{FEFF}Phone",
            "Phone\u{FFF9}",
            "Phone\u{2028}X",
            "line one\nline two\ttabbed",
        ];
        for text in corpus {
            assert_eq!(
                title.is_match(text),
                parse_title(text).is_ok(),
                "title {text:?}"
            );
            assert_eq!(
                description.is_match(text),
                parse_description(text).is_ok(),
                "description {text:?}"
            );
        }
    }
}
