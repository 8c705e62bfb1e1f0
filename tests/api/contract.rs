//! The contract in the repository (issue 25): docs/api.md names every route the OpenAPI document
//! has and every error code the server answers, and every link and `docs/…` citation in the docs,
//! the README and the code resolves to a file (and a heading) of the repository.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use spike::api::error::ErrorCode;
use strum::IntoEnumIterator;

use crate::helpers::spawn_app;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn docs_api_md_names_every_route_of_the_openapi_document_and_every_error_code() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let page = read(&root().join("docs/api.md"));
    let mut missing = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let route = format!("{} {path}", method.to_uppercase());
            if !page.contains(&route) {
                missing.push(route);
            }
        }
    }
    assert!(missing.is_empty(), "docs/api.md does not name {missing:?}");
    for code in ErrorCode::iter() {
        let (number, status, _) = code.parts();
        let row = format!("| {number} | {}", status.as_u16());
        assert!(
            page.contains(&row),
            "docs/api.md has no row {row:?} ({code:?})"
        );
    }
    for (number, status) in [(0, "200"), (10011, "431")] {
        assert!(page.contains(&format!("| {number} | {status}")), "{number}");
    }
}

/// Files whose words cite the docs: the README, the docs, the code, the tests, the scripts.
fn citing_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut dirs = vec![
        root().join("docs"),
        root().join("src"),
        root().join("tests"),
        root().join("scripts"),
    ];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path
                .extension()
                .is_some_and(|e| ["md", "rs", "sh", "lua"].contains(&e.to_str().unwrap()))
            {
                files.push(path);
            }
        }
    }
    files
}

/// GitHub's anchor of a heading: lower case, spaces to hyphens, other punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|heading| slug(heading.trim_start_matches('#').trim()))
        .collect()
}

#[test]
fn every_link_and_docs_citation_resolves_inside_the_repository() {
    let mut broken = Vec::new();
    for file in citing_files() {
        let text = read(&file);
        let here = file.parent().unwrap();
        // `docs/<name>.md` in words (code comments, scripts, prose).
        for (at, _) in text.match_indices("docs/") {
            let rest = &text[at + "docs/".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.')
                .collect();
            if let Some(name) = name.strip_suffix('.').or(Some(&name))
                && name.ends_with(".md")
                && !root().join("docs").join(name).is_file()
            {
                broken.push(format!("{}: docs/{name}", file.display()));
            }
        }
        // Markdown links `](target)` in .md files: relative targets must exist, anchors too.
        if file.extension().is_some_and(|e| e == "md") {
            for (at, _) in text.match_indices("](") {
                let rest = &text[at + 2..];
                let Some(end) = rest.find(')') else { continue };
                let target = &rest[..end];
                if target.starts_with("http") || target.starts_with("mailto:") {
                    continue;
                }
                let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
                let linked = if path.is_empty() {
                    file.clone()
                } else {
                    here.join(path)
                };
                if !linked.exists() {
                    broken.push(format!("{}: ({target})", file.display()));
                } else if !anchor.is_empty() && !anchors(&read(&linked)).contains(anchor) {
                    broken.push(format!(
                        "{}: ({target}) has no such heading",
                        file.display()
                    ));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links that go nowhere:\n{}",
        broken.join("\n")
    );
}
