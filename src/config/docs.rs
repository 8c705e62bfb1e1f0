//! The README's key table and `.env.example`, rendered from what the reader records
//! ([`super::key_docs`]), so the documentation cannot drift from the code. The test below fails
//! when the committed files differ; `UPDATE_DOCS=1 cargo test --lib config::docs` rewrites them.

use std::fmt::Write;

use super::reader::KeyDoc;

/// The Markdown table of every key, its default and its meaning.
pub fn readme_table(keys: &[KeyDoc]) -> String {
    let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for key in keys {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            key.variable(),
            key.default,
            key.doc
        );
    }
    out
}

/// `.env.example`: every key with its meaning and a value (the default, or an example for the
/// keys that have none).
pub fn env_example(keys: &[KeyDoc]) -> String {
    let mut out = String::from(
        "# Every setting of spike; each SPIKE_X overrides key `x` of configs/<SPIKE_ENV>.toml.\n\
         # spike reads a .env in its working directory (cp .env.example .env, then keep the lines\n\
         # you change); variables set in the environment win over it.\n\
         # Durations take units (500ms, 2s, 15m, 1h, 14d) or bare seconds.\n\
         # Generated from src/config/ (`UPDATE_DOCS=1 cargo test --lib config::docs`): edit the code.\n",
    );
    let mut section = "";
    for key in keys {
        if key.section != section {
            section = key.section;
            let _ = write!(out, "\n# --- {section} ---\n");
        }
        let mut comment = key.doc.replace('`', "");
        let default = key.default.replace('`', "").replace("**", "");
        if default == "required" {
            comment.push_str(". Required");
        } else if default != key.example {
            let _ = write!(comment, ". Default: {default}");
        }
        for line in wrap(&comment, 98) {
            let _ = writeln!(out, "# {line}");
        }
        let _ = writeln!(out, "{}={}", key.variable(), key.example);
    }
    out
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("never empty");
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(word.to_owned());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::key_docs;

    /// Mark the start and the end of the generated table in README.md.
    const README_BEGIN: &str = "<!-- config-keys: generated from src/config/ by `UPDATE_DOCS=1 cargo test --lib config::docs` -->";
    const README_END: &str = "<!-- /config-keys -->";

    /// Compares `path` with `expected`; with `UPDATE_DOCS=1` writes it instead.
    fn check_file(path: &Path, expected: &str) {
        let current = std::fs::read_to_string(path).unwrap_or_default();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            if current != expected {
                std::fs::write(path, expected).expect("write the generated file");
            }
            return;
        }
        assert!(
            current == expected,
            "{} is out of date with src/config/; run `UPDATE_DOCS=1 cargo test --lib config::docs`",
            path.display()
        );
    }

    #[test]
    fn the_readme_key_table_and_env_example_match_the_code() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let keys = key_docs();
        check_file(&root.join(".env.example"), &env_example(&keys));

        let readme_path = root.join("README.md");
        let readme = std::fs::read_to_string(&readme_path).expect("README.md");
        let (before, rest) = readme
            .split_once(README_BEGIN)
            .expect("README.md has the config-keys begin marker");
        let (_, after) = rest
            .split_once(README_END)
            .expect("README.md has the config-keys end marker");
        let expected = format!(
            "{before}{README_BEGIN}\n{}{README_END}{after}",
            readme_table(&keys)
        );
        check_file(&readme_path, &expected);
    }

    #[test]
    fn long_comments_wrap_at_word_boundaries() {
        assert_eq!(wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
        assert_eq!(wrap("", 5), vec![""]);
    }
}
