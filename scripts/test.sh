#!/usr/bin/env bash
# The project's test command (CI runs it through .ci/run):
# services up → leftovers of killed test runs removed → fmt → clippy → Docker file lint →
# .sqlx/ offline query data up to date → all tests → a bounded schemathesis pass (scripts/fuzz.sh)
# → the walkthrough and the Postman collection against fresh servers → the dashboard's queries
# and the alert rules against a real Prometheus (check-dashboards.sh) → the short chaos soak
# (scripts/soak.sh --short: 2.5 minutes of buyers through five faults on private clusters).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "services"
scripts/dev-services.sh

step "leftovers of earlier test runs"
scripts/clean-test-data.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "deployment files: Dockerfile, compose, Prometheus rules, dashboard, Kubernetes, workflows"
scripts/check-deploy.sh

step "checked SQL: .sqlx/ matches the queries and the migrations"
scripts/sqlx-prepare.sh --check

step "tests (the server and the load tool; tests/api/bench.rs runs the spike-bench binary)"
cargo build --locked --workspace --bins
cargo test --locked --workspace

step "fuzz: the OpenAPI document against the running server (schemathesis)"
scripts/fuzz.sh

step "the walkthrough (docs/walkthrough.md) with curl and HTTPie against a fresh server"
scripts/walkthrough.sh both

step "the Postman collection (docs/postman/) with newman against a fresh server"
scripts/postman.sh

step "dashboards: every panel's query and alert rule against Prometheus scraping a live sale"
scripts/check-dashboards.sh

step "the short chaos soak: 12000 buyers through five faults on private clusters (scripts/soak.sh)"
SOAK_PROFILE=debug scripts/soak.sh --short
