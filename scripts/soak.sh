#!/usr/bin/env bash
# The chaos soak (docs/reliability.md, "The chaos soak"): a sale of tens of thousands of buyers at
# a steady rate against 2 × `spike serve` + 2 × `spike worker` on real clusters of this machine —
# a MariaDB primary with a replica on the catalog's read path (scripts/mysql-replica.sh), a Redis
# Cluster of 3 masters + 3 replicas (scripts/redis-cluster.sh), a 3-node RabbitMQ cluster with
# quorum queues (scripts/rabbitmq-cluster.sh) — while `spike-bench soak` runs a seeded fault
# schedule through this script's `fault` command. Exits non-zero when an invariant check fails or
# a fault could not be injected; the report (text, and HTML with the fault schedule on the
# timeline) lands in $SOAK_OUT.
#
#   scripts/soak.sh [--short] [--seed N]   the soak (the default: 30000 buyers at 100/s, 5 min,
#                                          a fault every 30 s); --short: 12000 at 80/s, 2.5 min,
#                                          a fault every 25 s (each kind once), for the test command
#   scripts/soak.sh fault KIND TARGET      inject one fault and wait for its repair (what the load
#                                          tool calls; KIND as in `spike-bench soak --faults`)
#
# The workers run under a supervisor loop (a process manager's restart, as Kubernetes would do),
# so a killed worker comes back. Everything runs on 127.0.0.1 on fixed ports, checked free before
# anything starts; the clusters and the run's data are removed on exit (SOAK_KEEP=1 keeps them).
#
# Env (defaults): SOAK_BUYERS, SOAK_RATE, SOAK_STOCK (80 % of the buyers: the sale sells out near
# the end), SOAK_FAULT_EVERY, SOAK_SEED (1), SOAK_PROFILE (release; the test command passes
# debug, which it has built), SOAK_OUT (target/soak), SOAK_PORTS ("18090 18091": the two API
# processes), SOAK_MYSQL_PORTS ("3326 3327"), SOAK_REDIS_PORTS (7130-7135),
# SOAK_RABBITMQ_BASE_PORT (5700: AMQP 5701-5703).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/stores.sh
source scripts/lib/stores.sh

OUT=${SOAK_OUT:-$PWD/target/soak}
export SOAK_OUT=$OUT  # the fault commands the load tool runs read it too
read -r -a API_PORTS <<<"${SOAK_PORTS:-18090 18091}"
export MYSQL_REPLICA_PORTS=${SOAK_MYSQL_PORTS:-3326 3327}
export REDIS_CLUSTER_PORTS=${SOAK_REDIS_PORTS:-7130 7131 7132 7133 7134 7135}
export RABBITMQ_CLUSTER_BASE_PORT=${SOAK_RABBITMQ_BASE_PORT:-5700}
# A silent Redis master counts as failed after 2 s: its replica takes over within seconds.
export REDIS_CLUSTER_NODE_TIMEOUT=${REDIS_CLUSTER_NODE_TIMEOUT:-2000}
read -r -a REDIS_PORTS <<<"$REDIS_CLUSTER_PORTS"

log() { printf 'soak: %s\n' "$*" >&2; }

# shellcheck source=scripts/lib/wait.sh
source scripts/lib/wait.sh

# ---- faults: each injects, then waits until the system is whole again ----------------------------

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# The supervisor has started worker N again: a new process, still running a second later.
worker_restarted() { # N, old pid
  local pid
  pid=$(cat "$OUT/worker-$1.pid" 2>/dev/null || true)
  [ -n "$pid" ] && [ "$pid" != "$2" ] && alive "$pid" && sleep 1 && alive "$pid"
}

fault_worker_kill() {
  local n=$1 pid
  pid=$(cat "$OUT/worker-$n.pid")
  alive "$pid" || { log "worker $n is not running"; return 1; }
  kill -9 "$pid"
  log "worker $n (pid $pid) killed"
  wait_until 30 worker_restarted "$n" "$pid" || { log "worker $n was not restarted"; return 1; }
  log "worker $n runs again (pid $(cat "$OUT/worker-$n.pid"))"
}

fault_rabbitmq_node_kill() {
  scripts/rabbitmq-cluster.sh kill "$1"
  # The other two carry the queues (quorum: a majority is left) before the node returns.
  sleep 10
  scripts/rabbitmq-cluster.sh revive "$1"
}

# The Nth master in port order (roles move with every failover).
master_index() { # N: prints the node's 1-based index in REDIS_PORTS
  local want=$1 seen=0 i
  for i in "${!REDIS_PORTS[@]}"; do
    if redis-cli -p "${REDIS_PORTS[$i]}" role 2>/dev/null | head -1 | grep -q '^master$'; then
      seen=$((seen + 1))
      if [ "$seen" = "$want" ]; then
        echo $((i + 1))
        return 0
      fi
    fi
  done
  return 1
}

# Every node that answers says cluster_state:ok (a killed one answers nothing).
live_nodes_ok() {
  local port answered=0
  for port in "${REDIS_PORTS[@]}"; do
    redis-cli -p "$port" ping >/dev/null 2>&1 || continue
    answered=$((answered + 1))
    redis-cli -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
  done
  [ "$answered" -gt 0 ]
}

# Every other live node marks the node at PORT failed, and the cluster is ok again: its replica
# took over (a master without one would leave the cluster failed until it came back).
failed_over() { # port
  local other
  for other in "${REDIS_PORTS[@]}"; do
    [ "$other" = "$1" ] && continue
    redis-cli -p "$other" ping >/dev/null 2>&1 || continue
    redis-cli -p "$other" cluster nodes 2>/dev/null | grep ":$1@" | grep -q fail || return 1
  done
  live_nodes_ok
}

fault_redis_master_failover() {
  local node
  node=$(master_index "$1") || { log "no master number $1"; return 1; }
  scripts/redis-cluster.sh kill "$node"
  local since=$SECONDS
  wait_until 60 failed_over "${REDIS_PORTS[$((node - 1))]}" || { log "no replica took over from node $node"; return 1; }
  log "a replica took over from node $node within $((SECONDS - since)) s"
  scripts/redis-cluster.sh revive "$node"
}

fault_mysql_restart() {
  scripts/mysql-replica.sh restart
}

# Stands in for a partition between the application and Redis: every master holds its clients'
# commands for 5 s (CLIENT PAUSE ... ALL), so the application's commands time out as if the
# network dropped them. The cluster itself stays whole (its bus is not paused), so no failover
# follows; a master cut off from its peers is the redis-master-failover fault.
fault_redis_partition() {
  local port masters=()
  for port in "${REDIS_PORTS[@]}"; do
    redis-cli -p "$port" role 2>/dev/null | head -1 | grep -q '^master$' && masters+=("$port")
  done
  [ "${#masters[@]}" -gt 0 ] || { log "no Redis master answers"; return 1; }
  for port in "${masters[@]}"; do
    redis-cli -p "$port" client pause 5000 all >/dev/null
  done
  log "Redis masters ${masters[*]} hold every client for 5 s"
  sleep 5
  wait_until 10 scripts/redis-cluster.sh status || { log "the cluster is not ok after the pause"; return 1; }
}

if [ "${1:-}" = fault ]; then
  kind=${2:?"fault KIND TARGET"}
  target=${3:?"fault KIND TARGET"}
  case $kind in
    worker-kill) fault_worker_kill "$target" ;;
    rabbitmq-node-kill) fault_rabbitmq_node_kill "$target" ;;
    redis-master-failover) fault_redis_master_failover "$target" ;;
    mysql-restart) fault_mysql_restart ;;
    redis-partition) fault_redis_partition ;;
    *) log "unknown fault $kind"; exit 2 ;;
  esac
  exit
fi

# ---- the soak -------------------------------------------------------------------------------------

SHORT=0
SEED=${SOAK_SEED:-1}
while [ $# -gt 0 ]; do
  case $1 in
    --short) SHORT=1 ;;
    --seed) SEED=${2:?"--seed needs a number"}; shift ;;
    *) echo "usage: $0 [--short] [--seed N] | fault KIND TARGET" >&2; exit 2 ;;
  esac
  shift
done
if [ "$SHORT" = 1 ]; then
  BUYERS=${SOAK_BUYERS:-12000} RATE=${SOAK_RATE:-80} EVERY=${SOAK_FAULT_EVERY:-25s}
else
  BUYERS=${SOAK_BUYERS:-30000} RATE=${SOAK_RATE:-100} EVERY=${SOAK_FAULT_EVERY:-30s}
fi
STOCK=${SOAK_STOCK:-$((BUYERS * 8 / 10))}
PROFILE=${SOAK_PROFILE:-release}

read -r MYSQL_PRIMARY MYSQL_REPLICA <<<"$MYSQL_REPLICA_PORTS"
require_free_ports soak.sh "${API_PORTS[@]}" "$MYSQL_PRIMARY" "$MYSQL_REPLICA" "${REDIS_PORTS[@]}" \
  $((RABBITMQ_CLUSTER_BASE_PORT + 1)) $((RABBITMQ_CLUSTER_BASE_PORT + 2)) $((RABBITMQ_CLUSTER_BASE_PORT + 3))

# (Without this run's cluster ports: dev-services.sh starts the shared 3-master cluster through
# redis-cluster.sh, which would take them.)
env -u REDIS_CLUSTER_PORTS -u REDIS_CLUSTER_NODE_TIMEOUT scripts/dev-services.sh >/dev/null
if [ "$PROFILE" = release ]; then
  cargo build --release --locked --workspace --bins
else
  cargo build --locked --workspace --bins
fi
SPIKE=$PWD/target/$PROFILE/spike
BENCH=$PWD/target/$PROFILE/spike-bench
mkdir -p "$OUT"
rm -f "$OUT"/*.log "$OUT"/*.pid "$OUT"/stop "$OUT"/soak.html "$OUT"/soak.txt

pids=()
stop_all() {
  touch "$OUT/stop"
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "$OUT"/worker-*.pid; do [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${SOAK_KEEP:-0}" = 1 ]; then
    log "clusters kept (SOAK_KEEP=1): stop them with scripts/{mysql-replica,redis-cluster,rabbitmq-cluster}.sh stop and these ports"
    return
  fi
  scripts/rabbitmq-cluster.sh stop || true
  scripts/redis-cluster.sh stop || true
  scripts/mysql-replica.sh stop || true
}
trap stop_all EXIT

log "clusters: MariaDB primary + replica, Redis 3 + 3, RabbitMQ 3 nodes"
scripts/mysql-replica.sh start
scripts/redis-cluster.sh start --replicas 1
replicas=0
for port in "${REDIS_PORTS[@]}"; do
  redis-cli -p "$port" role | head -1 | grep -q '^slave$' && replicas=$((replicas + 1))
done
[ "$replicas" = 3 ] || { log "the Redis cluster on ${REDIS_PORTS[*]} has $replicas replicas, not 3: stop it (REDIS_CLUSTER_PORTS=... scripts/redis-cluster.sh stop) and start again"; exit 1; }
scripts/rabbitmq-cluster.sh start
mariadb -uroot -h127.0.0.1 -P"$MYSQL_PRIMARY" -e "CREATE DATABASE IF NOT EXISTS spike_soak"

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
export SPIKE_ENV=dev
export SPIKE_DATABASE_URL="mysql://spike:${SPIKE_DB_PASSWORD:-spike}@127.0.0.1:$MYSQL_PRIMARY/spike_soak"
export SPIKE_DATABASE_READ_URL="mysql://spike:${SPIKE_DB_PASSWORD:-spike}@127.0.0.1:$MYSQL_REPLICA/spike_soak"
export SPIKE_REDIS_MODE=cluster
SPIKE_REDIS_URL=$(printf 'redis://127.0.0.1:%s,' "${REDIS_PORTS[@]}")
export SPIKE_REDIS_URL=${SPIKE_REDIS_URL%,}
SPIKE_AMQP_URL=$(scripts/rabbitmq-cluster.sh urls)
export SPIKE_AMQP_URL
export SPIKE_AMQP_MANAGEMENT_URL=
export SPIKE_AMQP_QUEUE_TYPE=quorum
export SPIKE_INTERNAL_HTTP_ADDR=127.0.0.1:0
export SPIKE_LOG_FORMAT=json
export SPIKE_LOG_LEVEL=${SPIKE_LOG_LEVEL:-warn}
export SPIKE_STARTUP_TIMEOUT=2m
# Buyers retry through the faults (each at most a few times a second); every buyer of the crowd
# is a connection of its own from one address.
export SPIKE_FLASH_SALE_USER_RATE_LIMIT=50/1s
export SPIKE_HTTP_MAX_CONNECTIONS=40000
export SPIKE_HTTP_MAX_CONNECTIONS_PER_IP=40000
# A message lost with a killed node is republished after 20 s, within the soak's settle time.
export SPIKE_FLASH_SALE_RECONCILE_AFTER=${SPIKE_FLASH_SALE_RECONCILE_AFTER:-20s}

for i in "${!API_PORTS[@]}"; do
  port=${API_PORTS[$i]}
  SPIKE_HTTP_ADDR=127.0.0.1:$port "$SPIKE" serve >"$OUT/serve-$((i + 1)).log" 2>&1 &
  pids+=($!)
  wait_until 120 curl -fs "http://127.0.0.1:$port/readyz" -o /dev/null ||
    { log "serve $((i + 1)) is not ready (see $OUT/serve-$((i + 1)).log)"; exit 1; }
  owned_by_us "${pids[-1]}" "$port" || { log "something else answers on $port"; exit 1; }
done

# A worker under a supervisor: started again a second after it dies, until the soak ends.
supervise_worker() { # N
  while [ ! -f "$OUT/stop" ]; do
    "$SPIKE" worker >>"$OUT/worker-$1.log" 2>&1 &
    echo $! >"$OUT/worker-$1.pid"
    wait $! || true
    [ -f "$OUT/stop" ] || sleep 1
  done
}
for n in 1 2; do
  supervise_worker "$n" &
  pids+=($!)
done
wait_until 30 bash -c "[ -s '$OUT/worker-1.pid' ] && [ -s '$OUT/worker-2.pid' ]"

urls=$(printf 'http://127.0.0.1:%s,' "${API_PORTS[@]}")
log "$BUYERS buyers at $RATE/s for $STOCK units, a fault every $EVERY, seed $SEED"
set +e
"$BENCH" soak --url "${urls%,}" --buyers "$BUYERS" --rate "$RATE" --stock "$STOCK" \
  --seed "$SEED" --fault-every "$EVERY" --fault-command "$PWD/scripts/soak.sh fault" \
  --report "$OUT/soak.html" | tee "$OUT/soak.txt"
status=${PIPESTATUS[0]}
set -e
log "report: $OUT/soak.txt, $OUT/soak.html (exit $status)"
exit "$status"
