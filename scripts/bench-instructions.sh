#!/usr/bin/env bash
# Instructions the server executes per request, counted by callgrind: a figure that does not move
# with the noise of a shared 2-core VM (wall-clock figures here vary by ±20 % between runs), so
# two builds can be compared exactly. Usage:
#   scripts/bench-instructions.sh OLD_BINARY [NEW_BINARY]    (NEW defaults to this tree's release)
# e.g. build the base commit in a worktree (`git worktree add /tmp/base <commit>`, then
# `cargo build --release` there) and pass /tmp/base/target/release/spike.
#
# For each scenario (healthz, sold-out, catalog, reserve) it starts each binary under
# `valgrind --tool=callgrind`, zeroes the counters once /healthz answers, drives N requests with
# this tree's `spike-bench` (8 connections), dumps, and prints instructions per request. Runs on
# a database, Redis prefix and queue prefix of its own (instr_<pid>, migrated by the new binary,
# removed at exit) and on a free port, so it is safe beside other runs.
# Env: N (20000), SCENARIOS ("healthz sold-out catalog reserve"), OLD_ENV and NEW_ENV (extra
# `VAR=value` words for one side only: the same binary twice with NEW_ENV set measures a setting,
# e.g. NEW_ENV="SPIKE_OTLP_ENDPOINT=http://127.0.0.1:18083 SPIKE_TRACE_SAMPLE_RATIO=0.01").
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/stores.sh
source scripts/lib/stores.sh

OLD=${1:?usage: scripts/bench-instructions.sh OLD_BINARY [NEW_BINARY]}
NEW=${2:-target/release/spike}
N=${N:-20000}
SCENARIOS=${SCENARIOS:-healthz sold-out catalog reserve}
OUT=target/bench/instructions
PORT=$(free_port)
RUN=instr_$$
DB=spike_$RUN
client=$(command -v mariadb || command -v mysql)

command -v valgrind >/dev/null 2>&1 || {
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
}
scripts/dev-services.sh >/dev/null
cargo build --release --locked --workspace --bins
mkdir -p "$OUT"

export SPIKE_ENV=dev SPIKE_HTTP_ADDR=127.0.0.1:$PORT SPIKE_LOG_LEVEL=warn SPIKE_LOG_FORMAT=json
# The internal listener (probes, /metrics) of binaries since 0.3: any free port.
export SPIKE_INTERNAL_HTTP_ADDR=127.0.0.1:0
export SPIKE_DATABASE_URL="mysql://spike:${SPIKE_DB_PASSWORD:-spike}@127.0.0.1:3306/$DB"
export SPIKE_REDIS_PREFIX="$RUN:" SPIKE_AMQP_PREFIX="$RUN." SPIKE_DB_MAX_CONNECTIONS=32
# The queue bound declared, not a policy: an older binary knows no policy.
export SPIKE_AMQP_MANAGEMENT_URL=
# The new binary migrates the run's database once (below); an older binary would refuse one a
# newer migrated ("previously applied but missing"), and neither needs to migrate it again.
export SPIKE_AUTO_MIGRATE=false
# The pre-0.2 names: binaries before the rename read only these, later ones read both.
export SPIKE_SPIKE_USER_RATE_LIMIT=1000000/1s SPIKE_SPIKE_EVENT_RATE_LIMIT=100000000/1s
export SPIKE_SPIKE_QUEUE_MAX_LENGTH=200000 SPIKE_SPIKE_RECONCILE_AFTER=30m

remove_run_data() {
  delete_redis_keys "$RUN:*" >/dev/null
  delete_queues "$RUN."
  "$client" -h127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS $DB" || true
}
trap remove_run_data EXIT
"$client" -h127.0.0.1 -uroot -e "CREATE DATABASE $DB;
  GRANT ALL ON $DB.* TO 'spike'@'%'; GRANT ALL ON $DB.* TO 'spike'@'localhost';"
"$NEW" migrate >/dev/null

# count NAME BINARY SCENARIO [VAR=value...]: prints instructions per request.
count() {
  local name=$1 binary=$2 scenario=$3
  shift 3
  rm -f "$OUT/$name".*
  env "$@" valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.out" "$binary" serve \
    >"$OUT/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 600); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  if ! owned_by_us "$pid" "$PORT"; then
    echo "bench-instructions: port $PORT is not answered by the binary just started" >&2
    exit 2
  fi
  callgrind_control -z "$pid" >/dev/null 2>&1
  target/release/spike-bench "$scenario" -c 8 -n "$N" --json >"$OUT/$name.json" 2>/dev/null
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  local dump total
  dump=$(ls -t "$OUT/$name".out.* | head -1)
  total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
  echo $((total / N))
}

printf '| scenario | old instr/request | new instr/request | new ÷ old |\n|---|---|---|---|\n'
for scenario in $SCENARIOS; do
  # shellcheck disable=SC2086 # word splitting of the VAR=value lists is intended
  old=$(count "old-$scenario" "$OLD" "$scenario" ${OLD_ENV:-})
  # shellcheck disable=SC2086
  new=$(count "new-$scenario" "$NEW" "$scenario" ${NEW_ENV:-})
  printf '| %s | %s | %s | %s |\n' "$scenario" "$old" "$new" "$(python3 -c "print(f'{$new/$old:.2f}')")"
done
