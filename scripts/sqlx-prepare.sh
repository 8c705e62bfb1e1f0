#!/usr/bin/env bash
# Refreshes (or, with --check, verifies) the offline data of the checked sqlx queries in .sqlx/,
# which lets every build compile `query!`/`query_as!` without a database (.cargo/config.toml sets
# SQLX_OFFLINE=true). Run it after changing a checked query or a migration, and commit .sqlx/.
#
# Describes the queries against a scratch database built from migrations/ (its name appears in
# the data, so it is fixed: spike_sqlx). Two runs on one machine (two checkouts, parallel CI)
# would drop it under each other, so a run holds a lock file for its whole length and a second
# one waits for it. Installs sqlx-cli (the version of Cargo.lock's sqlx) when missing.
# Env: SQLX_PREPARE_DATABASE_URL (mysql://root@127.0.0.1:3306/spike_sqlx),
# SQLX_PREPARE_LOCK (/tmp/spike-sqlx-prepare.lock).
set -euo pipefail
cd "$(dirname "$0")/.."

lock=${SQLX_PREPARE_LOCK:-/tmp/spike-sqlx-prepare.lock}
exec 9>"$lock"
if ! flock -n 9; then
  echo "==> sqlx-prepare: another run holds $lock; waiting for it (up to 10 minutes)" >&2
  flock -w 600 9 || { echo "sqlx-prepare: $lock still held after 10 minutes" >&2; exit 2; }
fi

url=${SQLX_PREPARE_DATABASE_URL:-mysql://root@127.0.0.1:3306/spike_sqlx}
version=$(awk '/^name = "sqlx"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)

if ! command -v sqlx >/dev/null 2>&1 || ! sqlx --version | grep -q " $version\$"; then
  echo "==> installing sqlx-cli $version (once; a few minutes)" >&2
  cargo install sqlx-cli --version "=$version" --no-default-features --features mysql --locked
fi

export DATABASE_URL=$url SQLX_OFFLINE=false
sqlx database drop -y >/dev/null
sqlx database create
sqlx migrate run >/dev/null
if [ "${1:-}" = "--check" ]; then
  cargo sqlx prepare --workspace --check -- --all-targets
else
  cargo sqlx prepare --workspace -- --all-targets
fi
