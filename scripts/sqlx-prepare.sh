#!/usr/bin/env bash
# Refreshes (or, with --check, verifies) the offline data of the checked sqlx queries in .sqlx/,
# which lets every build compile `query!`/`query_as!` without a database (.cargo/config.toml sets
# SQLX_OFFLINE=true). Run it after changing a checked query or a migration, and commit .sqlx/.
#
# Describes the queries against a scratch database built from migrations/ (its name appears in
# the data, so it is fixed: spike_sqlx). Installs sqlx-cli (the version of Cargo.lock's sqlx)
# when missing. Env: SQLX_PREPARE_DATABASE_URL (mysql://root@127.0.0.1:3306/spike_sqlx).
set -euo pipefail
cd "$(dirname "$0")/.."

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
  cargo sqlx prepare --check -- --all-targets
else
  cargo sqlx prepare -- --all-targets
fi
