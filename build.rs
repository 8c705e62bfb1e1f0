//! Stamps the binary with the git commit it was built from (`spike_build_info` in `/metrics`).
//! A build outside a git checkout (the Docker image) may pass `SPIKE_GIT_SHA` instead; without
//! either the label says `unknown`. The stamp is `BUILD_GIT_SHA`, not a `SPIKE_` name: cargo
//! passes it to `cargo run`'s environment too, where the configuration would read a `SPIKE_*`
//! variable as an unknown key (`git_sha`) and warn about it.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SPIKE_GIT_SHA");
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let given = std::env::var("SPIKE_GIT_SHA")
        .ok()
        .filter(|sha| !sha.trim().is_empty());
    let sha = given.or_else(|| {
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|output| output.status.success())
            .and_then(|output| String::from_utf8(output.stdout).ok())
    });
    let sha = sha.as_deref().map_or("unknown", str::trim);
    println!("cargo:rustc-env=BUILD_GIT_SHA={sha}");
}
