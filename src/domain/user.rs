//! Users: email addresses, passwords and roles, each valid by construction.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// Shortest and longest accepted password, in characters (docs/api.md: 8..128).
pub const PASSWORD_MIN_CHARS: usize = 8;
pub const PASSWORD_MAX_CHARS: usize = 128;

/// The canonical, ASCII addresses [`Email::parse`] accepts, as a regular expression (the OpenAPI
/// document's pattern), surrounding whitespace allowed; its per-part length limits are not in
/// it, nor the compatibility forms it folds (fullwidth letters).
pub const EMAIL_PATTERN: &str = r"^\s*[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\s*$";

/// An email address in its canonical form: the one spelling of an identity. Registration
/// stores it, login looks it up, and every per-email limit keys on it, so `Ada@Example.com`,
/// a fullwidth `Ａｄａ@…` and `ada@example.com` are one account with one login budget
/// (issue 23: the database's accent- and case-insensitive collation once matched spellings the
/// limiter counted apart).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Validates and canonicalises a user-supplied address: surrounding whitespace dropped,
    /// Unicode NFKC (fullwidth letters, ligatures and compatibility forms become their plain
    /// letters), lower-cased, NFKC again (lower-casing can denormalise). What holds an invisible,
    /// control, bidi, separator or private-use character is refused rather than cleaned, and
    /// so is what is not plain ASCII after folding: no internationalised addresses, so no
    /// look-alike letters either. Deliberately simpler than RFC 5322 (no quoted local parts,
    /// no IP literals): what shops accept in practice, and what a mail server delivers.
    pub fn parse(raw: &str) -> Result<Email, &'static str> {
        // The limit counts what was sent, as the OpenAPI document's `maxLength` does.
        if raw.chars().count() > 254 {
            return Err("email must be at most 254 characters");
        }
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("email is required");
        }
        if trimmed.chars().any(is_hidden) {
            return Err("email must not contain invisible, control or bidi characters");
        }
        let email: String = trimmed
            .nfkc()
            .flat_map(char::to_lowercase)
            .collect::<String>()
            .nfkc()
            .collect();
        if !email.is_ascii() {
            return Err("email must be plain ASCII (after Unicode normalisation)");
        }
        let (local, domain) = email.split_once('@').ok_or("invalid email")?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && email.len() <= 254
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if local_ok && domain_ok {
            Ok(Email(email))
        } else {
            Err("invalid email")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Characters no address holds and a person cannot see: controls (NUL, escapes), format
/// characters (zero-width spaces and joiners, bidi marks and overrides, the BOM, the soft
/// hyphen), line and paragraph separators, private-use and unassigned code points.
fn is_hidden(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::PrivateUse
            | GeneralCategory::Surrogate
            | GeneralCategory::Unassigned
    )
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password of acceptable length. `Debug` never prints it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn parse(raw: String) -> Result<Password, String> {
        let chars = raw.chars().count();
        if chars < PASSWORD_MIN_CHARS {
            return Err(format!(
                "password must be at least {PASSWORD_MIN_CHARS} characters"
            ));
        }
        if chars > PASSWORD_MAX_CHARS {
            return Err(format!(
                "password must be at most {PASSWORD_MAX_CHARS} characters"
            ));
        }
        Ok(Password(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A registered user as the rest of the code sees it (no password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: u64,
    pub email: String,
    pub role: Role,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            Email::parse("  Ada.Lovelace@Example.COM ")
                .unwrap()
                .as_str(),
            "ada.lovelace@example.com"
        );
        assert!(Email::parse("first+tag@mail.example.org").is_ok());
    }

    #[test]
    fn every_spelling_of_an_address_is_one_canonical_email() {
        let canonical = |raw: &str| Email::parse(raw).map(|e| e.as_str().to_owned());
        for spelling in [
            "victim@shop.test",
            "VICTIM@SHOP.TEST",
            " Victim@Shop.Test\t",
            "ｖｉｃｔｉｍ@ｓｈｏｐ．ｔｅｓｔ", // fullwidth, with a fullwidth full stop
            "victi\u{1D5C6}@shop.test",        // mathematical sans-serif small m
            "\u{FF36}ICTIM@shop.test",         // fullwidth capital V
        ] {
            assert_eq!(
                canonical(spelling),
                Ok("victim@shop.test".into()),
                "{spelling:?}"
            );
        }
        // The Kelvin sign and the long s are compatibility forms of k and s.
        assert_eq!(canonical("\u{212A}ate@ex.com"), Ok("kate@ex.com".into()));
        assert_eq!(canonical("ro\u{17F}e@ex.com"), Ok("rose@ex.com".into()));
        assert_eq!(canonical("\u{FB00}@ex.com"), Ok("ff@ex.com".into()));
    }

    #[test]
    fn spellings_that_cannot_be_normalised_are_refused() {
        for bad in [
            "victim@shop.test\u{0}",    // trailing NUL
            "victim@shop.test\u{200B}", // zero-width space
            "vic\u{200D}tim@shop.test", // zero-width joiner
            "\u{FEFF}victim@shop.test", // byte order mark
            "vic\u{AD}tim@shop.test",   // soft hyphen
            "victim@shop.tset\u{202E}", // right-to-left override
            "vic\u{2066}tim@shop.test", // left-to-right isolate
            "victim\u{2028}@shop.test", // line separator (inside; around, it is whitespace)
            "vic\u{E000}tim@shop.test", // private use
            "victim@shop.t\u{E9}st",    // é: no internationalised addresses
            "V\u{130}CTIM@shop.test",   // İ lower-cases to i + combining dot
            "vic\u{1B}tim@shop.test",   // escape
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "",
            "plain",
            "@example.com",
            "ada@",
            "ada@localhost",
            "ada@@example.com",
            "a da@example.com",
            ".ada@example.com",
            "ada..l@example.com",
            "ada@-example.com",
            "ada@example..com",
            "ada@exa_mple.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn password_length_is_counted_in_characters() {
        assert!(Password::parse("short".into()).is_err());
        assert!(Password::parse("exactly8".into()).is_ok());
        assert!(
            Password::parse("密码密码密码密码".into()).is_ok(),
            "8 chars, 24 bytes"
        );
        assert!(Password::parse("x".repeat(128)).is_ok());
        assert!(Password::parse("x".repeat(129)).is_err());
        assert_eq!(
            format!("{:?}", Password::parse("secret-pw".into()).unwrap()),
            "Password([redacted])"
        );
    }

    #[test]
    fn roles_round_trip() {
        assert_eq!("admin".parse::<Role>().unwrap(), Role::Admin);
        assert_eq!(Role::User.as_str(), "user");
        assert!("root".parse::<Role>().is_err());
    }

    /// The document's pattern is the canonical ASCII form: everything it matches parses. (The
    /// parser takes more than the pattern, e.g. fullwidth letters it folds, so only this way.)
    #[test]
    fn what_the_email_pattern_matches_parses_and_what_it_refuses_is_not_canonical() {
        let pattern = regex::Regex::new(EMAIL_PATTERN).unwrap();
        let corpus = [
            "ada@example.com",
            "  ada@example.com ",
            "a.b+tag@sub.example.co",
            "o'brien@example.ie",
            "x@y.z",
            "ada@@example.com",
            "ada@example",
            "ada@-example.com",
            ".ada@example.com",
            "ada.@example.com",
            "a..da@example.com",
            "ada example@example.com",
            "",
            "ada@example.com\u{200B}",
            "\"ada\"@example.com",
            "ada@[127.0.0.1]",
        ];
        for raw in corpus {
            if pattern.is_match(raw) {
                assert!(Email::parse(raw).is_ok(), "matched but refused: {raw:?}");
            } else if let Ok(email) = Email::parse(raw) {
                assert_ne!(
                    email.as_str(),
                    raw.trim(),
                    "a canonical address the pattern refuses: {raw:?}"
                );
            }
        }
    }
}
