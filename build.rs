//! Stamps the binary with the git commit it was built from (`spike_build_info` in `/metrics`).
//! A build outside a git checkout (the Docker image) may pass `SPIKE_GIT_SHA` instead; without
//! either the label says `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SPIKE_GIT_SHA");
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    if std::env::var_os("SPIKE_GIT_SHA").is_some() {
        return;
    }
    let sha = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok());
    if let Some(sha) = sha {
        println!("cargo:rustc-env=SPIKE_GIT_SHA={}", sha.trim());
    }
}
