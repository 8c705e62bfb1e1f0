//! Where configuration values come from and how they are read: the file and the environment
//! merged into one flat map, and a [`Reader`] that parses keys, collects every problem, and
//! remembers which keys it read (the rest are unknown) and how each is documented (the README
//! table and `.env.example` are rendered from that record, see [`super::key_docs`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use super::values::{Secret, format_duration, parse_duration};

/// Prefix of every environment variable.
pub const ENV_PREFIX: &str = "SPIKE_";

/// Keys renamed since 0.2 and still read under their old name, with a warning, for one release
/// (0.3; gone in 0.4).
/// The flash-sale keys were `spike_*` (so `SPIKE_SPIKE_MODE`): the capability is "flash sale".
const RENAMED_PREFIXES: &[(&str, &str)] = &[("flash_sale_", "spike_")];

/// Single keys renamed, read under their old name with a warning until 0.4: every role opens
/// the internal listener now, not only the worker.
const RENAMED_KEYS: &[(&str, &str)] = &[("internal_http_addr", "worker_http_addr")];

/// What the documentation says about one key, recorded as the key is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDoc {
    pub key: &'static str,
    /// The area it belongs to (a heading in `.env.example`).
    pub section: &'static str,
    /// The default as the README writes it (Markdown: `` `15m` ``, "**required**", "unset").
    pub default: String,
    /// A value for `.env.example`.
    pub example: String,
    pub doc: &'static str,
}

impl KeyDoc {
    pub fn variable(&self) -> String {
        format!("{ENV_PREFIX}{}", self.key.to_uppercase())
    }
}

/// Merges the file (when present) and the environment into one flat `key → string` map.
pub(super) fn read_sources(
    file: &Path,
    file_exists: bool,
    env_vars: &HashMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut builder = config::Config::builder();
    if file_exists {
        builder = builder.add_source(config::File::from(file.to_path_buf()));
    }
    let env_map: config::Map<String, String> = env_vars
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix("SPIKE")
            .prefix_separator("_")
            .source(Some(env_map)),
    );
    let merged = builder
        .build()
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let table = merged
        .try_deserialize::<HashMap<String, config::Value>>()
        .map_err(|e| format!("cannot read configuration: {e}"))?;
    let mut out = BTreeMap::new();
    for (key, value) in table {
        match value.into_string() {
            Ok(s) => {
                out.insert(key.to_lowercase(), s);
            }
            Err(_) => return Err(format!("{key}: must be a plain value, not a table or list")),
        }
    }
    Ok(out)
}

/// Reads keys one by one, recording a problem for each missing or invalid one, every key it
/// looked at, and its documentation.
pub struct Reader<'a> {
    values: &'a BTreeMap<String, String>,
    section: &'static str,
    pub(super) problems: Vec<String>,
    pub(super) docs: Vec<KeyDoc>,
    read: BTreeSet<String>,
    /// `(old, new)` names found in the sources.
    pub(super) renamed: Vec<(String, String)>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(values: &'a BTreeMap<String, String>) -> Reader<'a> {
        Reader {
            values,
            section: "",
            problems: Vec::new(),
            docs: Vec::new(),
            read: BTreeSet::new(),
            renamed: Vec::new(),
        }
    }

    /// The keys read from here on belong to `section`.
    pub fn section(&mut self, section: &'static str) {
        self.section = section;
    }

    /// Keys in the sources that nothing read (typos, usually).
    pub(super) fn unread_keys(&self) -> Vec<String> {
        self.values
            .keys()
            .filter(|key| !self.read.contains(*key))
            .cloned()
            .collect()
    }

    /// Records that `key` was read, and its documentation. Also used for keys read before the
    /// reader exists (`env`, `config_dir`).
    pub fn document(&mut self, key: &'static str, doc: &'static str, default: String) {
        self.read.insert(key.to_owned());
        let shown = if default.is_empty() {
            "empty".to_owned()
        } else {
            format!("`{default}`")
        };
        self.docs.push(KeyDoc {
            key,
            section: self.section,
            default: shown,
            example: default,
            doc,
        });
    }

    /// Overrides the documented default of the key read last (Markdown; a default that depends
    /// on the environment or the machine), and the value `.env.example` shows for it.
    pub fn default_is(&mut self, text: &str, example: &str) {
        if let Some(doc) = self.docs.last_mut() {
            doc.default = text.to_owned();
            doc.example = example.to_owned();
        }
    }

    /// The trimmed, non-empty value of `key`, also under its pre-rename name.
    fn raw(&mut self, key: &str) -> Option<&'a str> {
        let values = self.values;
        let present = |name: &str| values.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let mut value = present(key);
        let old_names = RENAMED_PREFIXES
            .iter()
            .filter_map(|(new_prefix, old_prefix)| {
                let rest = key.strip_prefix(new_prefix)?;
                Some(format!("{old_prefix}{rest}"))
            })
            .chain(
                RENAMED_KEYS
                    .iter()
                    .filter(|(new, _)| *new == key)
                    .map(|(_, old)| (*old).to_owned()),
            );
        for old in old_names {
            if values.contains_key(&old) {
                self.read.insert(old.clone());
                self.renamed.push((old.clone(), key.to_owned()));
                value = value.or_else(|| present(&old));
            }
        }
        value
    }

    pub fn problem(&mut self, key: &str, message: impl fmt::Display) {
        self.problems.push(format!(
            "{key} ({ENV_PREFIX}{}): {message}",
            key.to_uppercase()
        ));
    }

    /// A key with no default; `example` is what `.env.example` shows.
    pub fn required(
        &mut self,
        key: &'static str,
        doc: &'static str,
        example: &str,
    ) -> Option<String> {
        self.document(key, doc, "required".into());
        self.default_is("**required**", example);
        let value = self.raw(key).map(str::to_owned);
        if value.is_none() {
            self.problem(key, "missing");
        }
        value
    }

    /// A key whose absence means "not set".
    pub fn optional(&mut self, key: &'static str, doc: &'static str) -> Option<String> {
        self.document(key, doc, String::new());
        self.default_is("unset", "");
        self.raw(key).map(str::to_owned)
    }

    /// An optional URL: unset or empty is `Some(None)`. One that `well_formed` refuses is a
    /// problem, reported as `expected` without echoing the value (it may hold a password), and
    /// gives `None`.
    pub fn optional_url(
        &mut self,
        key: &'static str,
        doc: &'static str,
        well_formed: impl FnOnce(&str) -> bool,
        expected: &str,
    ) -> Option<Option<Secret>> {
        let Some(raw) = self.optional(key, doc).filter(|url| !url.trim().is_empty()) else {
            return Some(None);
        };
        if !well_formed(&raw) {
            self.problem(key, expected);
            return None;
        }
        Some(Some(Secret::new(raw)))
    }

    /// A text value, kept as written, with a default.
    pub fn text(&mut self, key: &'static str, doc: &'static str, default: &str) -> String {
        self.document(key, doc, default.to_owned());
        self.raw(key)
            .map_or_else(|| default.to_owned(), str::to_owned)
    }

    /// Any value with `FromStr`, shown in the docs through its `Display`.
    pub fn parsed<T>(&mut self, key: &'static str, doc: &'static str, default: T) -> Option<T>
    where
        T: FromStr + fmt::Display,
        T::Err: fmt::Display,
    {
        self.document(key, doc, default.to_string());
        match self.raw(key) {
            None => Some(default),
            Some(raw) => match raw.parse::<T>() {
                Ok(v) => Some(v),
                Err(e) => {
                    self.problem(key, format!("{e} (got {raw:?})"));
                    None
                }
            },
        }
    }

    /// One of an enum's variants, by their lowercase names.
    pub fn choice<T>(&mut self, key: &'static str, doc: &'static str, default: T) -> Option<T>
    where
        T: FromStr + fmt::Display + strum::VariantNames,
    {
        self.document(key, doc, default.to_string());
        let Some(raw) = self.raw(key) else {
            return Some(default);
        };
        match raw.parse::<T>() {
            Ok(v) => Some(v),
            Err(_) => {
                let names = T::VARIANTS.join(", ");
                self.problem(key, format!("must be one of {names} (got {raw:?})"));
                None
            }
        }
    }

    /// A whole number that must be at least `min`.
    pub fn at_least<T>(
        &mut self,
        key: &'static str,
        doc: &'static str,
        default: T,
        min: T,
    ) -> Option<T>
    where
        T: FromStr + fmt::Display + PartialOrd + Copy,
        T::Err: fmt::Display,
    {
        let value = self.parsed(key, doc, default)?;
        if value < min {
            self.problem(key, format!("must be at least {min}"));
            return None;
        }
        Some(value)
    }

    /// A whole number from `min` to `max`.
    pub fn between<T>(
        &mut self,
        key: &'static str,
        doc: &'static str,
        default: T,
        min: T,
        max: T,
    ) -> Option<T>
    where
        T: FromStr + fmt::Display + PartialOrd + Copy,
        T::Err: fmt::Display,
    {
        let value = self.at_least(key, doc, default, min)?;
        if value > max {
            self.problem(key, format!("must be at most {max}"));
            return None;
        }
        Some(value)
    }

    /// A non-zero duration such as `15m`, `500ms` or `30` (seconds).
    pub fn duration(
        &mut self,
        key: &'static str,
        doc: &'static str,
        default: Duration,
    ) -> Option<Duration> {
        self.document(key, doc, format_duration(default));
        match self.raw(key) {
            None => Some(default),
            Some(raw) => self.check_duration(key, raw),
        }
    }

    fn check_duration(&mut self, key: &str, raw: &str) -> Option<Duration> {
        match parse_duration(raw) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.problem(key, "must be greater than zero");
                None
            }
            Err(e) => {
                self.problem(key, format!("{e} (got {raw:?}; use e.g. 15m, 30s, 7d)"));
                None
            }
        }
    }

    /// A comma-separated list of 1 to `max` non-zero durations.
    pub fn durations(
        &mut self,
        key: &'static str,
        doc: &'static str,
        default: &[Duration],
        max: usize,
    ) -> Option<Vec<Duration>> {
        let shown: Vec<String> = default.iter().map(|d| format_duration(*d)).collect();
        self.document(key, doc, shown.join(","));
        let Some(raw) = self.raw(key) else {
            return Some(default.to_vec());
        };
        let parsed: Option<Vec<Duration>> = raw
            .split(',')
            .map(|d| parse_duration(d.trim()).ok().filter(|d| !d.is_zero()))
            .collect();
        match parsed {
            Some(list) if (1..=max).contains(&list.len()) => Some(list),
            _ => {
                self.problem(
                    key,
                    format!("must be 1 to {max} durations such as 1s,5s,30s"),
                );
                None
            }
        }
    }

    pub fn bool(&mut self, key: &'static str, doc: &'static str, default: bool) -> Option<bool> {
        self.document(key, doc, default.to_string());
        match self.raw(key).map(str::to_ascii_lowercase).as_deref() {
            None => Some(default),
            Some("true" | "1" | "yes" | "on") => Some(true),
            Some("false" | "0" | "no" | "off") => Some(false),
            Some(other) => {
                let other = other.to_owned();
                self.problem(key, format!("must be true or false (got {other:?})"));
                None
            }
        }
    }

    /// A required URL whose scheme must be one of `schemes`; `check` parses it further.
    pub fn url(
        &mut self,
        key: &'static str,
        doc: &'static str,
        example: &str,
        schemes: &[&str],
        check: impl FnOnce(&str) -> Result<(), String>,
    ) -> Option<Secret> {
        let raw = self.required(key, doc, example)?;
        let scheme_ok = schemes.iter().any(|s| raw.starts_with(&format!("{s}://")));
        if !scheme_ok {
            self.problem(key, format!("must start with {}://", schemes.join("://, ")));
            return None;
        }
        if let Err(e) = check(&raw) {
            // The parser's message may echo the URL, password included: keep only its kind.
            self.problem(key, format!("not a valid URL ({})", first_words(&e)));
            return None;
        }
        Some(Secret::new(raw))
    }

    /// The raw value where an empty one means something (an empty CORS list).
    pub fn raw_even_if_empty(
        &mut self,
        key: &'static str,
        doc: &'static str,
        default: &str,
    ) -> Option<&'a str> {
        self.document(key, doc, default.to_owned());
        self.values.get(key).map(|v| v.trim())
    }
}

fn first_words(message: &str) -> String {
    message
        .split([':', '/'])
        .next()
        .unwrap_or("invalid")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renamed_key_is_read_under_its_old_name_and_reported() {
        let values = BTreeMap::from([("spike_mode".to_string(), "db".to_string())]);
        let mut reader = Reader::new(&values);
        assert_eq!(
            reader.text("flash_sale_mode", "doc", "queue"),
            "db".to_string()
        );
        assert!(reader.unread_keys().is_empty());
        assert_eq!(
            reader.renamed,
            vec![("spike_mode".to_string(), "flash_sale_mode".to_string())]
        );
    }

    #[test]
    fn the_new_name_wins_over_the_old_one() {
        let values = BTreeMap::from([
            ("spike_mode".to_string(), "db".to_string()),
            ("flash_sale_mode".to_string(), "queue".to_string()),
        ]);
        let mut reader = Reader::new(&values);
        assert_eq!(reader.text("flash_sale_mode", "doc", "x"), "queue");
        assert_eq!(reader.renamed.len(), 1);
    }

    #[test]
    fn keys_nobody_read_are_unknown() {
        let values = BTreeMap::from([
            ("http_addr".to_string(), "x".to_string()),
            ("databse_url".to_string(), "typo".to_string()),
        ]);
        let mut reader = Reader::new(&values);
        reader.text("http_addr", "doc", "");
        assert_eq!(reader.unread_keys(), vec!["databse_url".to_string()]);
    }
}
