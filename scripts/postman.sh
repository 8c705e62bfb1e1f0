#!/usr/bin/env bash
# Runs the Postman collection (docs/postman/spike.postman_collection.json: the walkthrough's flow
# with tests on every response) with newman against a fresh `spike all`, and checks first that the
# committed collection is what scripts/lib/postman_collection.py builds from the server's OpenAPI
# document. The server is started with an admin other than the dev one, given to newman as the
# collection variables adminEmail and adminPassword, so the collection is proven to run against
# any instance that way. Exits non-zero on any failed assertion.
#
# Usage: scripts/postman.sh [--write]   (--write regenerates the collection and its environment
# file instead of checking them). Installs newman (npm) into target/newman on first use. Runs on
# free ports with a database, Redis prefix and queue prefix of its own (postman_<pid>), removed
# at exit. Env: POSTMAN_START_IN (5: seconds until the flow's sale starts; the collection's
# default is 20).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/stores.sh
source scripts/lib/stores.sh

MODE=${1:---check}
NEWMAN_VERSION=6.2.2
ADMIN_EMAIL="ops-$$@shop.example"
ADMIN_PASSWORD="ops-password-$$"
OUT=target/postman
log() { printf 'postman: %s\n' "$*" >&2; }

newman=target/newman/node_modules/.bin/newman
if ! "$newman" --version 2>/dev/null | grep -qx "$NEWMAN_VERSION"; then
  command -v npm >/dev/null 2>&1 || {
    log "installing Node.js and npm (Debian packages)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  }
  log "installing newman $NEWMAN_VERSION into target/newman"
  mkdir -p target/newman
  npm install --silent --no-audit --no-fund --prefix target/newman "newman@$NEWMAN_VERSION" >/dev/null
fi

scripts/dev-services.sh >/dev/null
cargo build --locked -q --bin spike
mkdir -p "$OUT"
start_scratch_server "postman_$$" "$OUT/server.log" \
  SPIKE_BOOTSTRAP_ADMIN_EMAIL="$ADMIN_EMAIL" SPIKE_BOOTSTRAP_ADMIN_PASSWORD="$ADMIN_PASSWORD"

python3 scripts/lib/postman_collection.py "$BASE/api/v1/openapi.json" "$MODE"
[ "$MODE" = --write ] && { log "docs/postman/ written"; exit 0; }

log "newman: the collection against a server whose admin is $ADMIN_EMAIL"
"$newman" run docs/postman/spike.postman_collection.json \
  --environment docs/postman/spike.postman_environment.json \
  --env-var "baseUrl=$BASE" --env-var "adminEmail=$ADMIN_EMAIL" \
  --env-var "adminPassword=$ADMIN_PASSWORD" --env-var "startInSeconds=${POSTMAN_START_IN:-5}" \
  --reporters cli --bail failure --color off --disable-unicode
