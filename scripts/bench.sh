#!/usr/bin/env bash
# Measures the whole system in one go and prints ONE table of figures and ratios, all taken in
# the same run on the same machine (docs/benchmarks.md explains each line):
#   /healthz ÷ a bare axum hello-world (the HTTP ceiling), the load tool's own ceiling next to
#   wrk's, `reserve` ÷ raw EVALSHA of reserve.lua (redis-benchmark), `sold-out` ÷ /healthz,
#   the Redis+MQ path ÷ the naive db mode, the worker's drain in orders/s, the mass close of the
#   drained orders at their deadline, a full `sale` with its invariant checks, the cost of
#   traces on the buy path (off, sampled at 1 %, at 100 %, to a stand-in OTLP collector),
#   `reserve` on the local 3-master Redis Cluster and on a local 3-node RabbitMQ cluster
#   (scripts/rabbitmq-cluster.sh, quorum queues), and a `crowd` beyond the admission rate with
#   the waiting line on and off (requests per buyer, time to outcome, fairness).
#
# Builds release, makes sure MariaDB/Redis/RabbitMQ run (scripts/dev-services.sh), installs wrk
# and redis-benchmark from Debian if missing, and starts the servers itself on 127.0.0.1 only.
# Safe beside other runs on a shared machine: it first checks that its ports are free (else it
# stops, in a second, having changed nothing), names its database (spike_bench_<pid>), Redis
# prefix and queue prefix (bench_<pid>) per run and removes them afterwards (BENCH_KEEP=1 keeps
# the database for a look), and measures a server only once it has checked that the process
# listening on the port is the one it started. Exits non-zero if any invariant check fails.
#
# Env (defaults): BENCH_PORT (18080), BENCH_HELLO_PORT (18081), BENCH_OTLP_PORT (18083),
# BENCH_RABBITMQ_CLUSTER_BASE_PORT (5680: the cluster's AMQP ports are the next three),
# BENCH_DURATION (5s) per open-ended scenario, BENCH_CONNECTIONS (64),
# BENCH_RESERVE (30000) buyers of the reserve scenario and so messages for the drain,
# BENCH_SALE_BUYERS (20000), BENCH_SALE_ATTEMPTS (2), BENCH_SALE_STOCK (2000),
# BENCH_CROWD_BUYERS (1000), BENCH_CROWD_RATE (1000 arrivals/s), BENCH_CROWD_STOCK (500),
# BENCH_CROWD_ADMISSION (200/1s, the event's admission rate in the crowd runs),
# BENCH_OUT (target/bench: JSON of every step, logs, sale.html), BENCH_KEEP (0).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/stores.sh
source scripts/lib/stores.sh

DURATION=${BENCH_DURATION:-5s}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
RESERVE=${BENCH_RESERVE:-30000}
SALE_BUYERS=${BENCH_SALE_BUYERS:-20000}
SALE_ATTEMPTS=${BENCH_SALE_ATTEMPTS:-2}
SALE_STOCK=${BENCH_SALE_STOCK:-2000}
CROWD_BUYERS=${BENCH_CROWD_BUYERS:-1000}
CROWD_RATE=${BENCH_CROWD_RATE:-1000}
CROWD_STOCK=${BENCH_CROWD_STOCK:-500}
CROWD_ADMISSION=${BENCH_CROWD_ADMISSION:-200/1s}
OUT=${BENCH_OUT:-target/bench}
SPIKE_PORT=${BENCH_PORT:-18080}
HELLO_PORT=${BENCH_HELLO_PORT:-18081}
OTLP_PORT=${BENCH_OTLP_PORT:-18083}
RMQ_BASE=${BENCH_RABBITMQ_CLUSTER_BASE_PORT:-5680}
RMQ_CLUSTER_STARTED=0
RUN=bench_$$
DB=spike_$RUN
REDIS_PREFIX="$RUN:"
AMQP_PREFIX="$RUN."

log() { printf '\n==> %s\n' "$*" >&2; }

# Before anything else: another server on these ports would be measured instead of ours.
require_free_ports bench.sh "$SPIKE_PORT" "$HELLO_PORT" "$OTLP_PORT" $((RMQ_BASE + 1)) $((RMQ_BASE + 2)) $((RMQ_BASE + 3))

need() {
  local command=$1 package=$2
  command -v "$command" >/dev/null 2>&1 && return
  log "installing $package (for $command)"
  if [ "$(id -u)" -ne 0 ]; then
    echo "bench: $command is missing; install the Debian package $package" >&2
    exit 2
  fi
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
}

need wrk wrk
need redis-benchmark redis-tools
need python3 python3
need curl curl

log "services"
scripts/dev-services.sh

log "release build"
cargo build --release --locked --workspace --bins --example hello
SPIKE=target/release/spike
BENCH=target/release/spike-bench
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT"/*.html

client=$(command -v mariadb || command -v mysql)
"$client" -h127.0.0.1 -uroot -e "CREATE DATABASE $DB;
  GRANT ALL ON $DB.* TO 'spike'@'%'; GRANT ALL ON $DB.* TO 'spike'@'localhost';"
# The run's Redis keys, queues and queue policy (the close messages of every order would
# otherwise sit in its order.close.delay), and its database unless BENCH_KEEP=1: all removed
# when the script exits, however it exits.
remove_run_data() {
  delete_redis_keys "$REDIS_PREFIX*" >/dev/null
  delete_queues "$AMQP_PREFIX"
  delete_policies "$AMQP_PREFIX"
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    echo "bench: database $DB kept (BENCH_KEEP=1)" >&2
  else
    "$client" -h127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS $DB" || true
  fi
}

# The server's settings: its own data, quiet logs, and limits out of the way of the measurement
# (the per-buyer and per-event limits are features; here they would cap what is measured).
export SPIKE_ENV=dev
export SPIKE_DATABASE_URL="mysql://spike:${SPIKE_DB_PASSWORD:-spike}@127.0.0.1:3306/$DB"
export SPIKE_REDIS_PREFIX=$REDIS_PREFIX
export SPIKE_AMQP_PREFIX=$AMQP_PREFIX
export SPIKE_HTTP_ADDR=127.0.0.1:$SPIKE_PORT
# Every role opens an internal listener (probes, /metrics); the bench reads neither, and serve
# and worker run side by side: any free port each.
export SPIKE_INTERNAL_HTTP_ADDR=127.0.0.1:0
export SPIKE_LOG_LEVEL=${SPIKE_LOG_LEVEL:-warn}
export SPIKE_LOG_FORMAT=json
export SPIKE_FLASH_SALE_USER_RATE_LIMIT=1000000/1s
export SPIKE_FLASH_SALE_EVENT_RATE_LIMIT=100000000/1s
export SPIKE_FLASH_SALE_QUEUE_MAX_LENGTH=$((RESERVE + SALE_BUYERS * SALE_ATTEMPTS + 10000))
export SPIKE_DB_MAX_CONNECTIONS=${SPIKE_DB_MAX_CONNECTIONS:-32}
# The drain measures the worker, not the reconciler: with tens of thousands of reservations
# legitimately queued, a 60 s bound would republish the tail of the queue while it drains.
export SPIKE_FLASH_SALE_RECONCILE_AFTER=30m

pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap 'stop_all; remove_run_data; [ "$RMQ_CLUSTER_STARTED" = 1 ] && scripts/rabbitmq-cluster.sh stop' EXIT

# start NAME PORT COMMAND...: starts a process in the background and waits until it answers
# /healthz on PORT (or, without a port, a moment); stops the run when the port is taken or
# whatever answers is not the process just started.
start() {
  local name=$1 port=$2 pid
  shift 2
  if [ "$port" != - ]; then
    require_free_ports "bench.sh ($name)" "$port"
  fi
  "$@" >"$OUT/$name.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  [ "$port" = - ] && { sleep 2; return; }
  for _ in $(seq 1 300); do
    if curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
      owned_by_us "$pid" "$port" && return
      echo "bench: something else answers on port $port, not $name (see $OUT/$name.log)" >&2
      exit 2
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench: $name did not answer on port $port (see $OUT/$name.log)" >&2
  exit 2
}

# bench NAME ARGS...: one run of the load tool, its JSON kept as $OUT/NAME.json.
bench() {
  local name=$1
  shift
  log "spike-bench $*"
  local status=0
  "$BENCH" "$@" --json >"$OUT/$name.json" || status=$?
  if [ "$status" -ne 0 ]; then
    echo "bench: '$name' exited with $status" >&2
    [ "$status" -eq 1 ] || exit "$status"
    FAILED=1
  fi
}
FAILED=0

wrk_rate() { # prints wrk's requests/s for URL
  wrk -t2 -c"$CONNECTIONS" -d"$DURATION" "$1" | awk '/^Requests\/sec/ {print $2}'
}

log "HTTP ceiling: hello-world (wrk, then the load tool)"
start hello "$HELLO_PORT" target/release/examples/hello "127.0.0.1:$HELLO_PORT"
wrk_rate "http://127.0.0.1:$HELLO_PORT/healthz" >"$OUT/hello.wrk"
bench hello healthz --url "http://127.0.0.1:$HELLO_PORT" -c "$CONNECTIONS" --duration "$DURATION"
stop_all

log "spike serve alone (no worker): the API side"
start serve "$SPIKE_PORT" "$SPIKE" serve
wrk_rate "http://127.0.0.1:$SPIKE_PORT/healthz" >"$OUT/healthz.wrk"
bench healthz healthz -c "$CONNECTIONS" --duration "$DURATION"
bench reserve reserve -c "$CONNECTIONS" --requests "$RESERVE"
bench sold-out sold-out -c "$CONNECTIONS" --duration "$DURATION"
bench catalog catalog -c "$CONNECTIONS" --duration "$DURATION"
bench orders orders -c "$CONNECTIONS" --duration "$DURATION"

log "raw EVALSHA of reserve.lua (redis-benchmark, 50 clients, a new buyer each call)"
raw="${REDIS_PREFIX}raw:ev:{1}"
redis-cli SET "$raw:stock" 1000000000 >/dev/null
redis-cli HSET "$raw:meta" start_ms 0 end_ms 99999999999999 >/dev/null
# As the server loads it: the token bucket's function in front, the admission bucket taken in the
# same call (its limit out of the way, as for the server).
# The waiting line's keys are passed and its bound set, as the server does; with the bucket out
# of the way nobody waits.
sha=$(redis-cli SCRIPT LOAD "$(cat src/repo/redis/scripts/{bucket,reservation,reserve}.lua)")
redis-benchmark --csv -n 200000 -c 50 -r 1000000000 EVALSHA "$sha" 8 \
  "$raw:stock" "$raw:meta" "$raw:buyers" "$raw:resv" "$raw:admission" \
  "$raw:line" "$raw:line:tickets" "$raw:line:seq" __rand_int__ t__rand_int__ \
  100000000 100000000 100000 10000 |
  tail -1 | cut -d, -f2 | tr -d '"' >"$OUT/evalsha.rate"
redis-cli DEL "$raw:stock" "$raw:meta" "$raw:buyers" "$raw:resv" "$raw:admission" \
  "$raw:line" "$raw:line:tickets" "$raw:line:seq" >/dev/null
stop_all

log "spike serve logging every request at info (wrk)"
SPIKE_LOG_LEVEL=info SPIKE_LOG_REQUEST_SAMPLE=1 start serve-info "$SPIKE_PORT" "$SPIKE" serve
wrk_rate "http://127.0.0.1:$SPIKE_PORT/healthz" >"$OUT/healthz-info.wrk"
stop_all
: >"$OUT/serve-info.log" # hundreds of thousands of request lines: measured, not kept

log "spike serve with production logging: info, 1 % of request lines (wrk)"
SPIKE_LOG_LEVEL=info SPIKE_LOG_REQUEST_SAMPLE=0.01 start serve-prod-log "$SPIKE_PORT" "$SPIKE" serve
wrk_rate "http://127.0.0.1:$SPIKE_PORT/healthz" >"$OUT/healthz-prod-log.wrk"
stop_all
: >"$OUT/serve-prod-log.log"

log "spike worker alone: drain the reserve scenario's queued reservations"
reserve_event=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["event_id"])' "$OUT/reserve.json")
# The watcher starts first, so the drain is timed from the worker's start.
"$BENCH" drain --event "$reserve_event" --drain-timeout 10m --json >"$OUT/drain.json" &
watcher=$!
sleep 1
start worker - "$SPIKE" worker
if ! wait "$watcher"; then
  echo "bench: the drain did not finish (see $OUT/drain.json)" >&2
  FAILED=1
fi

log "spike serve + worker: a whole sale, then its invariant checks"
start serve "$SPIKE_PORT" "$SPIKE" serve
bench sale sale -c "$CONNECTIONS" --buyers "$SALE_BUYERS" --attempts "$SALE_ATTEMPTS" \
  --stock "$SALE_STOCK" --report "$OUT/sale.html"
stop_all

log "the waiting line: a crowd at $CROWD_RATE/s against an admission of $CROWD_ADMISSION, line on and off"
# Every buyer behaves like a person's app: buys once, then long-polls its result; refused with
# 429 (no line), it retries after Retry-After. A thousand buyers hold a connection each: the
# per-address connection cap (one client address here) is raised out of the way.
for line in on off; do
  line_max=100000
  [ "$line" = off ] && line_max=0
  SPIKE_FLASH_SALE_EVENT_RATE_LIMIT=$CROWD_ADMISSION SPIKE_FLASH_SALE_WAITING_LINE_MAX=$line_max \
    SPIKE_HTTP_MAX_CONNECTIONS_PER_IP=$((CROWD_BUYERS + 1000)) start "serve-crowd-$line" "$SPIKE_PORT" "$SPIKE" serve
  SPIKE_FLASH_SALE_EVENT_RATE_LIMIT=$CROWD_ADMISSION start "worker-crowd-$line" - "$SPIKE" worker
  bench "crowd-$line" crowd --buyers "$CROWD_BUYERS" --rate "$CROWD_RATE" --stock "$CROWD_STOCK" \
    --report "$OUT/crowd-$line.html"
  stop_all
done

log "mass close: every drained order reaches its deadline at once"
# What a 100k sale does a pay timeout later, replayed on the drain's orders: their deadline is
# moved to now and their close messages are written to the outbox as the worker writes them (one
# per batch of 500); a worker with a 1 s delay queue relays and closes them. The old delay queue
# (with the orders' real, 15-minute close messages) goes first: its TTL is fixed at declaration.
timeout 30 rabbitmqctl -q delete_queue "${AMQP_PREFIX}order.close.delay" </dev/null >/dev/null 2>&1 || true
"$client" -h127.0.0.1 -uroot "$DB" <<SQL
SET SESSION group_concat_max_len = 100000000;
UPDATE orders o JOIN spike_orders s ON s.order_id = o.id SET o.pay_deadline = UTC_TIMESTAMP(3)
  WHERE s.spike_event_id = $reserve_event AND o.status = 'pending_payment';
INSERT INTO outbox (topic, payload)
  SELECT 'order.close.delay', CONCAT('{"order_ids":[', GROUP_CONCAT(id ORDER BY id), ']}')
  FROM (SELECT o.id, FLOOR((ROW_NUMBER() OVER (ORDER BY o.id) - 1) / 500) AS chunk
        FROM orders o JOIN spike_orders s ON s.order_id = o.id
        WHERE s.spike_event_id = $reserve_event AND o.status = 'pending_payment') due
  GROUP BY chunk;
SQL
closing_sql="SELECT COUNT(*), SUM(o.status = 'closed'),
  TIMESTAMPDIFF(MICROSECOND, MIN(o.closed_at), MAX(o.closed_at)) / 1e6
  FROM orders o JOIN spike_orders s ON s.order_id = o.id WHERE s.spike_event_id = $reserve_event"
SPIKE_ORDER_PAY_TIMEOUT=1s start closer - "$SPIKE" worker
for _ in $(seq 1 600); do
  read -r total closed seconds < <("$client" -h127.0.0.1 -uroot -N "$DB" -e "$closing_sql")
  [ "$seconds" = NULL ] && seconds=0
  [ "$closed" = "$total" ] && break
  sleep 0.5
done
stop_all
if [ "$closed" != "$total" ]; then
  echo "bench: mass close did not finish ($closed of $total closed)" >&2
  FAILED=1
fi
printf '{"orders": %s, "closed": %s, "seconds": %s}\n' "$total" "$closed" "${seconds:-0}" >"$OUT/close.json"
# The next servers declare it with the real pay timeout again.
timeout 30 rabbitmqctl -q delete_queue "${AMQP_PREFIX}order.close.delay" </dev/null >/dev/null 2>&1 || true

log "telemetry on the buy path: reserve with traces off, sampled at 1 %, and at 100 %"
# Spans go to a stand-in OTLP/HTTP collector that takes them and answers 200, so the figure is
# the shop's own cost (span bookkeeping, sampling, batching, protobuf encoding, the POSTs).
# The queue is purged between runs so each one publishes into an empty queue.
cat >"$OUT/otlp_sink.py" <<'PY'
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
PY
purge_orders() { timeout 30 rabbitmqctl -q purge_queue "${AMQP_PREFIX}spike.order.create" </dev/null >/dev/null 2>&1 || true; }
for traced in off 0.01 1; do
  purge_orders
  start otlp-sink "$OTLP_PORT" python3 "$OUT/otlp_sink.py" "$OTLP_PORT"
  if [ "$traced" = off ]; then
    start "serve-traces-$traced" "$SPIKE_PORT" "$SPIKE" serve
  else
    SPIKE_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT" SPIKE_TRACE_SAMPLE_RATIO=$traced \
      start "serve-traces-$traced" "$SPIKE_PORT" "$SPIKE" serve
  fi
  bench "reserve-traces-$traced" reserve -c "$CONNECTIONS" --requests "$RESERVE"
  wrk_rate "http://127.0.0.1:$SPIKE_PORT/healthz" >"$OUT/healthz-traces-$traced.wrk"
  stop_all
done
purge_orders

log "reserve on the local 3-master Redis Cluster (scripts/redis-cluster.sh; dev-services started it)"
export SPIKE_REDIS_MODE=cluster
export SPIKE_REDIS_URL=redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002
start serve-cluster "$SPIKE_PORT" "$SPIKE" serve
bench reserve-cluster reserve -c "$CONNECTIONS" --requests "$RESERVE"
stop_all
unset SPIKE_REDIS_MODE SPIKE_REDIS_URL
purge_orders

log "reserve on a local 3-node RabbitMQ cluster (scripts/rabbitmq-cluster.sh), quorum queues"
# The queues' bound as a declaration argument (the dev management URL names the shared broker).
export RABBITMQ_CLUSTER_BASE_PORT=$RMQ_BASE
RMQ_CLUSTER_STARTED=1
scripts/rabbitmq-cluster.sh start
SPIKE_AMQP_URL=$(scripts/rabbitmq-cluster.sh urls) SPIKE_AMQP_MANAGEMENT_URL= SPIKE_AMQP_QUEUE_TYPE=quorum \
  start serve-rmq-cluster "$SPIKE_PORT" "$SPIKE" serve
bench reserve-rmq-cluster reserve -c "$CONNECTIONS" --requests "$RESERVE"
stop_all
scripts/rabbitmq-cluster.sh stop
RMQ_CLUSTER_STARTED=0

log "the naive baseline: spike serve with SPIKE_FLASH_SALE_MODE=db"
export SPIKE_FLASH_SALE_MODE=db
start serve-db "$SPIKE_PORT" "$SPIKE" serve
bench reserve-db reserve -c "$CONNECTIONS" --duration "$DURATION" --buyers "$RESERVE"
stop_all

log "results"
python3 - "$OUT" "$CONNECTIONS" <<'EOF'
import json, os, sys
out, connections = sys.argv[1], sys.argv[2]
def load(name): return json.load(open(os.path.join(out, name + ".json")))
def num(name): return float(open(os.path.join(out, name)).read().strip() or 0)
hello_wrk, healthz_wrk, evalsha = num("hello.wrk"), num("healthz.wrk"), num("evalsha.rate")
healthz_info, healthz_prod_log = num("healthz-info.wrk"), num("healthz-prod-log.wrk")
hello, healthz, reserve, sold_out = load("hello"), load("healthz"), load("reserve"), load("sold-out")
catalog, orders, drain, sale, db = load("catalog"), load("orders"), load("drain"), load("sale"), load("reserve-db")
close, cluster, rmq = load("close"), load("reserve-cluster"), load("reserve-rmq-cluster")
traces = {t: load(f"reserve-traces-{t}") for t in ("off", "0.01", "1")}
traces_healthz = {t: num(f"healthz-traces-{t}.wrk") for t in ("off", "0.01", "1")}
close_rate = close["closed"] / close["seconds"] if close["seconds"] else 0
def ratio(a, b): return f"{a / b:.2f}" if b else "n/a"
def run(r): return f"{r['throughput']:,.0f} req/s, p99 {r['latency']['p99']:.1f} ms"
rows = [
    ("hello-world /healthz (wrk)", f"{hello_wrk:,.0f} req/s", "the box's HTTP ceiling"),
    ("hello-world /healthz (spike-bench)", run(hello), f"tool ÷ wrk = {ratio(hello['throughput'], hello_wrk)}"),
    ("spike /healthz (wrk)", f"{healthz_wrk:,.0f} req/s", f"÷ hello-world = {ratio(healthz_wrk, hello_wrk)}"),
    ("spike /healthz (spike-bench)", run(healthz), f"÷ hello-world (tool) = {ratio(healthz['throughput'], hello['throughput'])}"),
    ("spike /healthz, info log per request (wrk)", f"{healthz_info:,.0f} req/s", f"÷ at warn = {ratio(healthz_info, healthz_wrk)}"),
    ("spike /healthz, production logging (wrk)", f"{healthz_prod_log:,.0f} req/s", f"÷ hello-world = {ratio(healthz_prod_log, hello_wrk)} (info, 1 % of request lines)"),
    ("reserve: buy → 202 (no worker)", run(reserve), f"÷ raw EVALSHA = {ratio(reserve['throughput'], evalsha)}"),
    ("reserve on a 3-master Redis Cluster", run(cluster), f"÷ reserve on one Redis = {ratio(cluster['throughput'], reserve['throughput'])}"),
    ("reserve on a 3-node RabbitMQ cluster (quorum)", run(rmq), f"÷ reserve on one node = {ratio(rmq['throughput'], reserve['throughput'])}"),
    ("raw EVALSHA reserve.lua (redis-benchmark)", f"{evalsha:,.0f} calls/s", "the store's ceiling for the buy path"),
    ("sold-out: buy → 409/50004", run(sold_out), f"÷ /healthz = {ratio(sold_out['throughput'], healthz['throughput'])}"),
    ("db mode: buy → 202 in one MySQL tx", run(db), f"Redis+MQ ÷ db = {ratio(reserve['throughput'], db['throughput'])}"),
    ("worker drain (spike worker alone)", f"{drain['drain']['orders_per_sec']:,.0f} orders/s", f"{drain['drain']['orders']:,} orders, {drain['drain']['seconds']:.1f} s incl. start-up"),
    ("mass close at the deadline (spike worker)", f"{close_rate:,.0f} orders/s", f"{close['closed']:,} of {close['orders']:,} closed in {close['seconds']:.1f} s; ÷ drain = {ratio(close_rate, drain['drain']['orders_per_sec'])}"),
    ("reserve, traces off (telemetry block)", run(traces["off"]), f"/healthz (wrk) {traces_healthz['off']:,.0f} req/s"),
    ("reserve, traces sampled at 1 %", run(traces["0.01"]), f"÷ off = {ratio(traces['0.01']['throughput'], traces['off']['throughput'])}; /healthz ÷ off = {ratio(traces_healthz['0.01'], traces_healthz['off'])}"),
    ("reserve, traces sampled at 100 %", run(traces["1"]), f"÷ off = {ratio(traces['1']['throughput'], traces['off']['throughput'])}; /healthz ÷ off = {ratio(traces_healthz['1'], traces_healthz['off'])}"),
    ("catalog: product detail (cache hit)", run(catalog), ""),
    ("orders: regular order placement", run(orders), ""),
]
s = sale["sale"]; d = sale["drain"]
failed = [c["name"] for c in sale["checks"] if c["passed"] is False]
rows.append((f"sale: {s['buyers']:,} buyers × {s['attempts']} for {s['stock']:,} units", run(sale),
             f"drain {d['seconds']:.1f} s, pipeline {s['pipeline_orders_per_sec']:,.0f} orders/s"))
rows.append(("sale invariant checks", "all pass" if not failed else "FAILED: " + ", ".join(failed), f"{len(sale['checks'])} checks"))
for line in ("on", "off"):
    crowd = load(f"crowd-{line}"); c = crowd["crowd"]
    failed = [x["name"] for x in crowd["checks"] if x["passed"] is False]
    rows.append((f"crowd, line {line}: {c['buyers']:,} buyers at {c['arrival_rate']:,.0f}/s for {c['stock']:,} units",
                 f"{c['requests_per_buyer']:.2f} requests/buyer, outcome p50 {c['time_to_outcome_p50_ms']:,.0f} ms p99 {c['time_to_outcome_p99_ms']:,.0f} ms",
                 f"first {c['stock']:,} arrivals won {c['first_arrivals_won'] * 100:.1f} %, rank corr. {c['arrival_admission_correlation']:.3f}, "
                 f"429s {c['answers_429']:,}, checks {'pass' if not failed else 'FAILED: ' + ', '.join(failed)}"))
mix = sale["mix"]
rows.append(("sale outcomes", f"202 {mix['success']:,}, 409 {sum(mix['conflict_by_code'].values()):,}, 429 {mix['too_many_requests']}, 503 {mix['unavailable']}, 5xx {mix['server_errors']}, transport {mix['transport_errors']}", ""))
w = [max(len(r[i]) for r in rows) for i in range(3)]
print(f"\nspike bench.sh — {connections} connections, {os.cpu_count()} cores")
print(f"| {'measure':<{w[0]}} | {'figure':<{w[1]}} | {'ratio':<{w[2]}} |")
print(f"|{'-' * (w[0] + 2)}|{'-' * (w[1] + 2)}|{'-' * (w[2] + 2)}|")
for a, b, c in rows:
    print(f"| {a:<{w[0]}} | {b:<{w[1]}} | {c:<{w[2]}} |")
print(f"\nJSON of every step and the sale's HTML report: {out}/")
EOF
exit "$FAILED"
