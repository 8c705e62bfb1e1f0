#!/usr/bin/env bash
# Renders the Grafana dashboard's queries and the alert rules' expressions against a real
# Prometheus scraping a real spike under a small flash sale, and fails when a query is invalid
# or a panel shows nothing (docs/observability.md).
#
# Starts `spike serve` and `spike worker` (debug build) on a scratch database, runs a `sale` with
# the load tool, scrapes both every second with Debian's `prometheus` (installed when missing),
# then evaluates every target of deploy/grafana/dashboards/spike.json and every rule of
# deploy/prometheus/alerts.yml through Prometheus's query API. Everything listens on 127.0.0.1,
# on free ports it picks; the run's database, Redis keys, queues and policy (checkdash_<pid>) are
# its own and removed at exit, so parallel runs on one machine do not meet.
# Env: CHECK_OUT (target/check-dashboards: logs and the query report).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/stores.sh
source scripts/lib/stores.sh

OUT=${CHECK_OUT:-target/check-dashboards}
API_PORT=$(free_port)
WORKER_PORT=$(free_port)
API_INTERNAL_PORT=$(free_port)
PROM_PORT=$(free_port)
RUN=checkdash_$$
DB=spike_$RUN
log() { printf 'check-dashboards: %s\n' "$*" >&2; }

if ! command -v prometheus >/dev/null 2>&1; then
  log "installing prometheus (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package starts a server of its own on :9090; this check runs its own.
  (service prometheus stop || systemctl stop prometheus) >/dev/null 2>&1 || true
fi

scripts/dev-services.sh >/dev/null
cargo build --locked --workspace --bins
SPIKE=target/debug/spike
BENCH=target/debug/spike-bench
rm -rf "$OUT" && mkdir -p "$OUT/prometheus-data"

mysql -uroot -h127.0.0.1 -e "CREATE DATABASE $DB; GRANT ALL ON $DB.* TO 'spike'@'%';"
export SPIKE_ENV=dev SPIKE_LOG_FORMAT=json SPIKE_LOG_LEVEL=warn \
  SPIKE_DATABASE_URL="mysql://spike:spike@127.0.0.1:3306/$DB" \
  SPIKE_REDIS_PREFIX="$RUN:" SPIKE_AMQP_PREFIX="$RUN." SPIKE_AMQP_QUEUE_TYPE=classic \
  SPIKE_METRICS_SAMPLE_INTERVAL=1s SPIKE_FLASH_SALE_SCHEDULER_INTERVAL=1s \
  SPIKE_BOOTSTRAP_ADMIN_EMAIL=admin@example.com SPIKE_BOOTSTRAP_ADMIN_PASSWORD=admin-password-1

# The check's Redis keys, queues, policy and database.
forget_stores() {
  delete_redis_keys "$RUN:*" >/dev/null
  delete_queues "$RUN."
  delete_policies "$RUN."
  mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS $DB" || true
}
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  forget_stores
}
trap cleanup EXIT

# /metrics is served on each role's internal listener only (SPIKE_INTERNAL_HTTP_ADDR).
SPIKE_HTTP_ADDR=127.0.0.1:$API_PORT SPIKE_INTERNAL_HTTP_ADDR=127.0.0.1:$API_INTERNAL_PORT \
  SPIKE_AUTO_MIGRATE=true $SPIKE serve >"$OUT/serve.log" 2>&1 &
pids+=($!)
serve_pid=$!
for _ in $(seq 1 120); do curl -fsS "http://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1 && break; sleep 0.5; done
SPIKE_INTERNAL_HTTP_ADDR=127.0.0.1:$WORKER_PORT $SPIKE worker >"$OUT/worker.log" 2>&1 &
pids+=($!)
worker_pid=$!
for _ in $(seq 1 120); do curl -fsS "http://127.0.0.1:$WORKER_PORT/readyz" >/dev/null 2>&1 && break; sleep 0.5; done
# What Prometheus will scrape must be the processes started here, not another run's.
owned_by_us "$serve_pid" "$API_PORT" && owned_by_us "$serve_pid" "$API_INTERNAL_PORT" &&
  owned_by_us "$worker_pid" "$WORKER_PORT" || {
  log "the ports are not answered by the processes this check started (see $OUT/*.log)"
  exit 1
}

cat >"$OUT/prometheus.yml" <<EOF
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [$(pwd)/deploy/prometheus/alerts.yml]
scrape_configs:
  - job_name: spike-api
    static_configs: [{targets: ["127.0.0.1:$API_INTERNAL_PORT"]}]
  - job_name: spike-worker
    static_configs: [{targets: ["127.0.0.1:$WORKER_PORT"]}]
EOF
prometheus --config.file="$OUT/prometheus.yml" --storage.tsdb.path="$OUT/prometheus-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$OUT/prometheus.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 60); do curl -fsS "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null 2>&1 && break; sleep 0.5; done

log "a small sale, product reads and a few 404s while Prometheus scrapes"
$BENCH sale --url "http://127.0.0.1:$API_PORT" --buyers 3000 --attempts 2 --stock 500 \
  -c 32 >"$OUT/sale.txt"
$BENCH catalog --url "http://127.0.0.1:$API_PORT" -n 2000 -c 8 >"$OUT/catalog.txt"
for _ in $(seq 1 20); do curl -s "http://127.0.0.1:$API_PORT/api/v1/products/999999999" >/dev/null; done
sleep 12 # a few scrapes after the load: rate() windows need two samples

python3 - "$PROM_PORT" "$OUT/report.txt" <<'EOF'
import json, re, sys, urllib.parse, urllib.request

port, report_path = sys.argv[1], sys.argv[2]
def query(expr):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url) as response:
            body = json.load(response)
    except urllib.error.HTTPError as error:
        body = json.load(error)
    if body.get("status") != "success":
        return None, body.get("error")
    return body["data"]["result"], None

failures, lines = [], []
dashboard = json.load(open("deploy/grafana/dashboards/spike.json"))
for panel in dashboard["panels"]:
    shown = 0
    for target in panel["targets"]:
        result, error = query(target["expr"])
        if error:
            failures.append(f"panel '{panel['title']}': {target['expr']}: {error}")
            continue
        shown += len(result)
        lines.append(f"{len(result):4d} series  {panel['title']}: {target['expr']}")
    if shown == 0:
        failures.append(f"panel '{panel['title']}' shows nothing")

with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules") as response:
    groups = json.load(response)["data"]["groups"]
rules = [rule for group in groups for rule in group["rules"]]
if not rules:
    failures.append("Prometheus loaded no alert rules")
for rule in rules:
    if rule.get("health") != "ok":
        failures.append(f"rule {rule['name']}: {rule.get('lastError')}")
    lines.append(f"rule {rule['name']}: health={rule.get('health')} state={rule.get('state')}")

open(report_path, "w").write("\n".join(lines + ["", *("FAIL " + f for f in failures)]) + "\n")
print("\n".join(lines))
if failures:
    print("\n".join("FAIL " + f for f in failures), file=sys.stderr)
    sys.exit(1)
print(f"check-dashboards: {len(dashboard['panels'])} panels and {len(rules)} rules evaluated, all valid, every panel shows data")
EOF
