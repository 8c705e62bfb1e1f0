#!/usr/bin/env bash
# Runs docs/walkthrough.md: a whole flash sale by hand — the dev admin's login, a product, three
# buyers, an event starting 20 s later, a purchase token, buys, results, a payment, a
# cancellation, the resale of the returned unit, the metrics that moved — against a fresh
# `spike all`, and fails on any answer the page does not show. So the page stays true.
#
# Usage: scripts/walkthrough.sh [curl|httpie|both]   (default both; HTTPie is installed from PyPI
# into target/walkthrough-venv on first use). Starts `spike all` (debug build) on free ports with
# a database, Redis prefix and queue prefix of its own (walk_<pid>), removed at exit, so it is
# safe beside other runs. Writes each client's transcript (commands and answers) to
# target/walkthrough/. Env: WALKTHROUGH_START_IN (20: seconds until the sale starts).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/stores.sh
source scripts/lib/stores.sh

CLIENTS=${1:-both}
[ "$CLIENTS" = both ] && CLIENTS="curl httpie"
START_IN=${WALKTHROUGH_START_IN:-20}
OUT=target/walkthrough
log() { printf 'walkthrough: %s\n' "$*" >&2; }
fail() {
  log "FAILED: $*"
  exit 1
}

venv=target/walkthrough-venv
if [[ " $CLIENTS " == *" httpie "* ]] && ! "$venv/bin/http" --version >/dev/null 2>&1; then
  log "installing HTTPie into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "httpie==3.2.4"
fi

scripts/dev-services.sh >/dev/null
cargo build --locked -q --bin spike
mkdir -p "$OUT"
# A fresh dev server: configs/dev.toml's admin (admin@example.com / dev-admin-password) included.
start_scratch_server "walk_$$" "$OUT/server.log"

# json FIELD: prints FIELD (a dotted path, e.g. data.id) of the JSON on stdin.
json() {
  python3 -c 'import json, sys
value = json.load(sys.stdin)
for part in sys.argv[1].split("."):
    value = value[int(part)] if isinstance(value, list) else value.get(part)
print("" if value is None else (json.dumps(value) if isinstance(value, (dict, list)) else value))' "$1"
}

# call METHOD PATH [TOKEN] [BODY] [HEADER]: one request with the chosen client; sets STATUS and
# BODY, and writes the command and the answer to the transcript.
call() {
  local method=$1 path=$2 token=${3:-} body=${4:-} header=${5:-} out status_line
  local -a cmd
  if [ "$CLIENT" = curl ]; then
    cmd=(curl -s -w '\n%{http_code}' -X "$method" "$BASE$path")
    [ -n "$token" ] && cmd+=(-H "Authorization: Bearer $token")
    [ -n "$header" ] && cmd+=(-H "$header")
    [ -n "$body" ] && cmd+=(-H 'content-type: application/json' -d "$body")
    out=$("${cmd[@]}")
    STATUS=${out##*$'\n'}
    BODY=${out%$'\n'*}
  else
    cmd=("$venv/bin/http" --ignore-stdin --print=hb --pretty=none "$method" "$BASE$path")
    [ -n "$token" ] && cmd+=("Authorization:Bearer $token")
    [ -n "$header" ] && cmd+=("${header/: /:}")
    if [ -n "$body" ]; then
      # HTTPie's own syntax for a JSON body: key=string, key:=raw JSON.
      while IFS= read -r item; do cmd+=("$item"); done < <(python3 -c 'import json, sys
for key, value in json.loads(sys.argv[1]).items():
    print(f"{key}={value}" if isinstance(value, str) else f"{key}:={json.dumps(value)}")' "$body")
    fi
    out=$("${cmd[@]}")
    status_line=${out%%$'\n'*}
    STATUS=$(awk '{print $2}' <<<"$status_line")
    BODY=$(awk 'body {print} /^\r?$/ {body = 1}' <<<"$out")
  fi
  {
    printf '$'
    printf ' %q' "${cmd[@]}" | sed "s|$BASE|http://localhost:8080|g; s|-w \$'\\\\n%{http_code}' ||"
    printf '\n%s\n%s\n\n' "$STATUS" "$BODY"
  } >>"$TRANSCRIPT"
}

# expect STATUS [CODE]: the last answer had this HTTP status (and envelope code).
expect() {
  [ "$STATUS" = "$1" ] || fail "$LAST: status $STATUS, expected $1: $BODY"
  if [ -n "${2:-}" ]; then
    local code
    code=$(json code <<<"$BODY")
    [ "$code" = "$2" ] || fail "$LAST: code $code, expected $2: $BODY"
  fi
}

step() {
  LAST=$*
  printf '\n## %s\n\n' "$*" >>"$TRANSCRIPT"
}

# wait_result TOKEN: asks for the buyer's result, held by the server until it is no longer
# `queued` or `waiting` (`?wait=10`), asking again if the wait ran out; prints the order id.
wait_result() {
  local status
  for _ in $(seq 1 10); do
    call GET "/api/v1/spike/events/$EVENT/result?wait=10" "$1"
    expect 200 0
    status=$(json data.status <<<"$BODY")
    [ "$status" = queued ] || [ "$status" = waiting ] || break
  done
  [ "$status" = success ] || fail "$LAST: result $BODY"
  json data.order_id <<<"$BODY"
}

walk() {
  CLIENT=$1
  TRANSCRIPT="$OUT/transcript-$CLIENT.md"
  : >"$TRANSCRIPT"
  local tag="$CLIENT-$$"
  log "the sale with $CLIENT (transcript: $TRANSCRIPT)"

  step "1. The admin logs in"
  call POST /api/v1/auth/login "" '{"email":"admin@example.com","password":"dev-admin-password"}'
  expect 200 0
  ADMIN=$(json data.access_token <<<"$BODY")

  step "2. A product with 10 units"
  call POST /api/v1/products "$ADMIN" '{"title":"Phone X","description":"The phone everyone wants","price":"1999.00","stock":10}'
  expect 201 0
  PRODUCT=$(json data.id <<<"$BODY")

  step "3. Three buyers register and log in"
  local name
  declare -gA TOKEN
  for name in alice bob carol; do
    call POST /api/v1/auth/register "" "{\"email\":\"$name-$tag@example.com\",\"password\":\"$name-password\"}"
    expect 201 0
    call POST /api/v1/auth/login "" "{\"email\":\"$name-$tag@example.com\",\"password\":\"$name-password\"}"
    expect 200 0
    TOKEN[$name]=$(json data.access_token <<<"$BODY")
  done

  step "4. A flash sale of 2 units, starting in $START_IN s"
  local start end
  start=$(date -u -d "+$START_IN seconds" +%Y-%m-%dT%H:%M:%SZ)
  end=$(date -u -d "+1 hour" +%Y-%m-%dT%H:%M:%SZ)
  call POST /api/v1/spike/events "$ADMIN" "{\"product_id\":$PRODUCT,\"title\":\"Phone X at midnight\",\"spike_price\":\"999.00\",\"stock\":2,\"start_at\":\"$start\",\"end_at\":\"$end\",\"per_user_limit\":1}"
  expect 201 0
  EVENT=$(json data.id <<<"$BODY")
  [ "$(json data.status <<<"$BODY")" = upcoming ] || fail "the event is not upcoming: $BODY"
  call GET "/api/v1/products/$PRODUCT/stock"
  expect 200 0
  [ "$(json data.stock <<<"$BODY")" = 8 ] || fail "the event did not take 2 units: $BODY"

  step "5. Too early: no purchase token before the start"
  call GET "/api/v1/spike/events/$EVENT/purchase-token" "${TOKEN[alice]}"
  expect 409 50002

  step "6. The sale starts"
  for _ in $(seq 1 $((START_IN * 2 + 20))); do
    call GET "/api/v1/spike/events/$EVENT"
    [ "$(json data.status <<<"$BODY")" = active ] && break
    sleep 1
  done
  expect 200 0
  [ "$(json data.status <<<"$BODY")" = active ] || fail "the event never started: $BODY"

  step "7. Alice takes a purchase token and buys"
  call GET "/api/v1/spike/events/$EVENT/purchase-token" "${TOKEN[alice]}"
  expect 200 0
  local purchase_token
  purchase_token=$(json data.token <<<"$BODY")
  call POST "/api/v1/spike/events/$EVENT/orders" "${TOKEN[alice]}" "" "X-Purchase-Token: $purchase_token"
  expect 202 0
  [ "$(json data.status <<<"$BODY")" = queued ] || fail "not queued: $BODY"

  step "8. Bob buys the last unit; Alice cannot buy twice; Carol is too late"
  call POST "/api/v1/spike/events/$EVENT/orders" "${TOKEN[bob]}"
  expect 202 0
  call POST "/api/v1/spike/events/$EVENT/orders" "${TOKEN[alice]}"
  expect 409 50005
  call POST "/api/v1/spike/events/$EVENT/orders" "${TOKEN[carol]}"
  expect 409 50004

  step "9. The results: both orders exist"
  local alice_order bob_order carol_order
  alice_order=$(wait_result "${TOKEN[alice]}")
  bob_order=$(wait_result "${TOKEN[bob]}")

  step "10. Alice pays; Bob cancels, and his unit goes back to the sale"
  call POST "/api/v1/orders/$alice_order/pay" "${TOKEN[alice]}" '{}'
  expect 200 0
  [ "$(json data.status <<<"$BODY")" = paid ] || fail "not paid: $BODY"
  call POST "/api/v1/orders/$bob_order/cancel" "${TOKEN[bob]}"
  expect 200 0
  [ "$(json data.status <<<"$BODY")" = cancelled ] || fail "not cancelled: $BODY"
  call GET "/api/v1/spike/events/$EVENT"
  expect 200 0
  [ "$(json data.remaining_stock <<<"$BODY")" = 1 ] || fail "the unit did not return: $BODY"

  step "11. Carol buys the returned unit"
  # The server clears its sold-out flag when it hears the unit announced, a moment after the
  # cancel: until then Carol may still hear "sold out".
  for _ in $(seq 1 50); do
    call POST "/api/v1/spike/events/$EVENT/orders" "${TOKEN[carol]}"
    [ "$STATUS" = 202 ] && break
    expect 409 50004
    sleep 0.1
  done
  expect 202 0
  carol_order=$(wait_result "${TOKEN[carol]}")
  call GET /api/v1/orders "${TOKEN[carol]}"
  expect 200 0
  [ "$(json data.items.0.id <<<"$BODY")" = "$carol_order" ] || fail "Carol's order: $BODY"
  [ "$(json data.items.0.kind <<<"$BODY")" = spike ] || fail "a flash-sale order: $BODY"

  step "12. The metrics that moved (internal listener)"
  local metrics
  metrics=$(curl -s "$INTERNAL_BASE/metrics")
  grep -E '^spike_buy_total\{outcome="(queued|sold_out|duplicate)"\}' <<<"$metrics" >>"$TRANSCRIPT"
  python3 - "$metrics" <<'PY' || fail "the buy counters did not move"
import re, sys
counts = dict(re.findall(r'^spike_buy_total\{outcome="(\w+)"\} (\d+)', sys.argv[1], re.M))
assert int(counts.get("queued", 0)) >= 3 and int(counts.get("sold_out", 0)) >= 1, counts
assert int(counts.get("duplicate", 0)) >= 1, counts
PY
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/metrics")" = 404 ] || fail "/metrics is public"
  log "$CLIENT: every answer as the page shows"
}

for each in $CLIENTS; do
  walk "$each"
done
log "done: $CLIENTS"
