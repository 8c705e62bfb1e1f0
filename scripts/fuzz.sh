#!/usr/bin/env bash
# Fuzzes the HTTP API from its own OpenAPI document with schemathesis, as an admin and as a
# plain user: every answer must be documented (status, content type, body schema), no input
# may cause a 5xx, and whatever the document rules out must be refused (docs/reliability.md).
#
# Starts `spike all` (debug build) on a free port against a scratch database and Redis/AMQP
# prefixes of its own, removes them afterwards, and exits non-zero on any failure or on a panic
# in the server's log. Installs schemathesis into target/fuzz-venv on first use (PyPI).
#
# Env: FUZZ_EXAMPLES (examples per operation, default 20), SPIKE_DB_HOST/SPIKE_DB_PORT,
# MYSQL_ROOT_ARGS (as scripts/dev-services.sh).
#
# One check is left out: positive_data_acceptance ("every request the schema allows is
# accepted"). The document cannot express this API's cross-field and state rules (end_at after
# start_at, min_price not above max_price, an email taken already, stock that ran out), so
# schema-valid requests are rightly refused with 400 or 409.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/stores.sh
source scripts/lib/stores.sh

SCHEMATHESIS_VERSION=4.32.5
EXAMPLES=${FUZZ_EXAMPLES:-20}
DB_HOST=${SPIKE_DB_HOST:-127.0.0.1}
DB_PORT=${SPIKE_DB_PORT:-3306}
DB_PASSWORD=${SPIKE_DB_PASSWORD:-spike}
read -r -a ROOT_ARGS <<<"${MYSQL_ROOT_ARGS:--uroot}"
client=$(command -v mariadb || command -v mysql)

log() { printf 'fuzz: %s\n' "$*" >&2; }

venv=target/fuzz-venv
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  log "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build --locked -q
run=$(printf 'spike_test_fuzz_%s' "$$")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
server_log=$(mktemp)
admin_email=fuzz-admin@example.com
admin_password=fuzz-admin-password

"$client" -h"$DB_HOST" -P"$DB_PORT" "${ROOT_ARGS[@]}" -e "CREATE DATABASE \`$run\`"
server=""
cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  "$client" -h"$DB_HOST" -P"$DB_PORT" "${ROOT_ARGS[@]}" -e "DROP DATABASE IF EXISTS \`$run\`" || true
  delete_redis_keys "${run}_*" >/dev/null
  delete_queues "${run}_"
  delete_policies "${run}_"
  rm -f "$server_log"
}
trap cleanup EXIT

SPIKE_ENV=dev \
  SPIKE_HTTP_ADDR="127.0.0.1:$port" \
  SPIKE_INTERNAL_HTTP_ADDR=127.0.0.1:0 \
  SPIKE_DATABASE_URL="mysql://spike:$DB_PASSWORD@$DB_HOST:$DB_PORT/$run" \
  SPIKE_REDIS_PREFIX="${run}_" \
  SPIKE_AMQP_PREFIX="${run}_" \
  SPIKE_AMQP_QUEUE_TYPE=classic \
  SPIKE_BOOTSTRAP_ADMIN_EMAIL="$admin_email" \
  SPIKE_BOOTSTRAP_ADMIN_PASSWORD="$admin_password" \
  SPIKE_LOG_FORMAT=json \
  SPIKE_LOG_LEVEL=warn \
  target/debug/spike all >"$server_log" 2>&1 &
server=$!

for _ in $(seq 1 60); do
  curl -sf "$base/readyz" >/dev/null && break
  sleep 1
done
curl -sf "$base/readyz" >/dev/null || { log "the server did not become ready"; cat "$server_log" >&2; exit 1; }

token() { # email password → access token
  curl -sf -X POST "$base/api/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$1\",\"password\":\"$2\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["access_token"])'
}
curl -sf -X POST "$base/api/v1/auth/register" -H 'content-type: application/json' \
  -d '{"email":"fuzz-user@example.com","password":"fuzz-user-password"}' >/dev/null
admin_token=$(token "$admin_email" "$admin_password")
user_token=$(token fuzz-user@example.com fuzz-user-password)

status=0
for who in admin user; do
  if [ "$who" = admin ]; then bearer=$admin_token; else bearer=$user_token; fi
  log "schemathesis as $who ($EXAMPLES examples per operation)"
  # Run from the venv: schemathesis keeps a cache (.schemathesis/) in its working directory.
  # One worker: with two, hypothesis describes lambdas with `ast` from two threads at once, and
  # CPython 3.11's `ast` is not thread-safe ("AST constructor recursion depth mismatch").
  (cd "$venv" && bin/schemathesis run "$base/api/v1/openapi.json" \
    --checks all --exclude-checks positive_data_acceptance \
    --header "Authorization: Bearer $bearer" \
    --max-examples "$EXAMPLES" --workers 1 --seed 20261129 \
    --suppress-health-check all) || status=1
done

if grep -q '"panic"\|panicked' "$server_log"; then
  log "the server panicked:"
  grep '"panic"\|panicked' "$server_log" >&2
  status=1
fi
exit $status
