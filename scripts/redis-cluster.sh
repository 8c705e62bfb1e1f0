#!/usr/bin/env bash
# A local Redis Cluster on 127.0.0.1, from Debian's redis-server: three masters (no replicas) on
# 7000-7002 for the tests that run spike on a cluster (docs/scale-out.md), or, with
# `--replicas 1`, three masters and three replicas for the failover tests. Like the single Redis,
# it keeps nothing on disk: each node's cluster file lives under target/redis-cluster/<port>/.
#
#   scripts/redis-cluster.sh start [--replicas 1]
#                                     start the nodes that are down, form the cluster if it is not
#                                     (idempotent; prints the seed list for SPIKE_REDIS_URL)
#   scripts/redis-cluster.sh stop     stop every node and forget the cluster
#   scripts/redis-cluster.sh status   exit 0 when the cluster answers `cluster_state:ok`
#   scripts/redis-cluster.sh kill N   SIGKILL node N (1-based in the port list): a crash, nothing
#                                     saved; a master's replica is promoted after the node timeout
#   scripts/redis-cluster.sh revive N start node N again with its cluster file: it rejoins (a
#                                     master that was failed over comes back as a replica)
#
# Env: REDIS_CLUSTER_PORTS (default "7000 7001 7002", or six ports from 7000 with --replicas 1:
# masters first), REDIS_CLUSTER_NODE_TIMEOUT (ms before a silent node counts as failed: 5000).
set -euo pipefail
cd "$(dirname "$0")/.."

ACTION=${1:-}
REPLICAS=0
if [ "${2:-}" = --replicas ]; then
  REPLICAS=${3:?"--replicas needs a count"}
fi
DEFAULT_PORTS="7000 7001 7002"
[ "$REPLICAS" -gt 0 ] && DEFAULT_PORTS=$(seq -s ' ' 7000 $((7000 + 3 * (REPLICAS + 1) - 1)))
read -r -a PORTS <<<"${REDIS_CLUSTER_PORTS:-$DEFAULT_PORTS}"
NODE_TIMEOUT=${REDIS_CLUSTER_NODE_TIMEOUT:-5000}
DIR=$PWD/target/redis-cluster

log() { printf 'redis-cluster: %s\n' "$*" >&2; }

answers() { redis-cli -p "$1" ping 2>/dev/null | grep -q PONG; }

# Every replica's link to its master is up (a replica still syncing cannot take over).
replicas_synced() {
  local port
  for port in "${PORTS[@]}"; do
    if redis-cli -p "$port" info replication 2>/dev/null | grep -q '^role:slave'; then
      redis-cli -p "$port" info replication | grep -q '^master_link_status:up' || return 1
    fi
  done
}

cluster_ok() {
  local port
  for port in "${PORTS[@]}"; do
    redis-cli -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
  done
}

seeds() {
  local port list=()
  for port in "${PORTS[@]}"; do list+=("redis://127.0.0.1:$port"); done
  (IFS=,; echo "${list[*]}")
}

# shellcheck source=scripts/lib/wait.sh
source scripts/lib/wait.sh

start_node() { # port [keep]: a node, new unless "keep" (its cluster file rejoins it)
  local port=$1 keep=${2:-}
  answers "$port" && return 0
  mkdir -p "$DIR/$port"
  # A node that died keeps its cluster file; a fresh start with the old file would rejoin a
  # cluster whose other nodes forgot it. Every start is a new node, except a revive.
  [ "$keep" = keep ] || rm -f "$DIR/$port/nodes.conf" "$DIR/$port/dump.rdb"
  # A replica syncs at once (the default waits 5 s for more replicas to share one transfer).
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --dir "$DIR/$port" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout "$NODE_TIMEOUT" \
    --save "" --appendonly no --repl-diskless-sync-delay 0 \
    --logfile "$DIR/$port/redis.log" --pidfile "$DIR/$port/redis.pid"
  wait_until 30 answers "$port" || { log "node $port did not start (see $DIR/$port/redis.log)"; exit 1; }
}

node_port() { # N (1-based)
  local n=${1:?"which node? 1 to ${#PORTS[@]}"}
  ((n >= 1 && n <= ${#PORTS[@]})) || { log "no node $n: 1 to ${#PORTS[@]}"; exit 2; }
  echo "${PORTS[$((n - 1))]}"
}

kill_node() {
  local port pid
  port=$(node_port "${1:-}")
  pid=$(cat "$DIR/$port/redis.pid" 2>/dev/null || true)
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  wait_until 10 bash -c "! redis-cli -p $port ping >/dev/null 2>&1" || { log "node $port still answers"; exit 1; }
  log "killed node $1 ($port)"
}

revive_node() {
  local port
  port=$(node_port "${1:-}")
  start_node "$port" keep
  wait_until 60 cluster_ok || { log "the cluster is not ok after node $1 ($port) came back"; exit 1; }
  wait_until 30 replicas_synced || { log "node $1 ($port) did not sync as a replica"; exit 1; }
  log "node $1 ($port) is back"
}

start() {
  command -v redis-server >/dev/null || { log "redis-server is missing (scripts/dev-services.sh installs it)"; exit 1; }
  if cluster_ok; then
    log "up: $(seeds)"
    return 0
  fi
  # A half-formed cluster (a node restarted alone, say) is not repaired: start it over.
  local port
  for port in "${PORTS[@]}"; do
    if answers "$port" && [ "$(redis-cli -p "$port" cluster info | grep -c '^cluster_known_nodes:1')" = 0 ]; then
      log "the cluster on ${PORTS[*]} is broken: starting it over"
      stop
      break
    fi
  done
  for port in "${PORTS[@]}"; do start_node "$port"; done
  local nodes=()
  for port in "${PORTS[@]}"; do nodes+=("127.0.0.1:$port"); done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas "$REPLICAS" --cluster-yes >/dev/null
  wait_until 30 cluster_ok || { log "the cluster did not reach cluster_state:ok"; exit 1; }
  if [ "$REPLICAS" -gt 0 ]; then
    wait_until 30 replicas_synced || { log "the replicas did not sync with their masters"; exit 1; }
  fi
  log "up: $(seeds)"
}

stop() {
  local port
  for port in "${PORTS[@]}"; do
    answers "$port" && redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    wait_until 10 bash -c "! redis-cli -p $port ping >/dev/null 2>&1" || true
    rm -f "$DIR/$port/nodes.conf"
  done
  log "stopped"
}

case "$ACTION" in
  start) start ;;
  stop) stop ;;
  status) cluster_ok ;;
  kill) kill_node "${2:-}" ;;
  revive) revive_node "${2:-}" ;;
  *) echo "usage: $0 start [--replicas 1]|stop|status|kill N|revive N" >&2; exit 2 ;;
esac
