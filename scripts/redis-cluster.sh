#!/usr/bin/env bash
# A local Redis Cluster of three masters (no replicas) on 127.0.0.1:7000-7002, from Debian's
# redis-server, for the tests that run spike on a cluster (docs/scale-out.md). Like the single
# Redis, it keeps nothing on disk: each node's cluster file lives under target/redis-cluster/.
#
#   scripts/redis-cluster.sh start    start the nodes that are down, form the cluster if it is not
#                                     (idempotent; prints the seed list for SPIKE_REDIS_URL)
#   scripts/redis-cluster.sh stop     stop the three nodes and forget the cluster
#   scripts/redis-cluster.sh status   exit 0 when the cluster answers `cluster_state:ok`
#
# Env: REDIS_CLUSTER_PORTS (default "7000 7001 7002").
set -euo pipefail
cd "$(dirname "$0")/.."

read -r -a PORTS <<<"${REDIS_CLUSTER_PORTS:-7000 7001 7002}"
DIR=$PWD/target/redis-cluster

log() { printf 'redis-cluster: %s\n' "$*" >&2; }

answers() { redis-cli -p "$1" ping 2>/dev/null | grep -q PONG; }

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

wait_until() { # seconds, command...
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

start_node() {
  local port=$1
  answers "$port" && return 0
  mkdir -p "$DIR/$port"
  # A node that died keeps its cluster file; a fresh start with the old file would rejoin a
  # cluster whose other nodes forgot it. Every start is a new node.
  rm -f "$DIR/$port/nodes.conf"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --dir "$DIR/$port" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
    --save "" --appendonly no --logfile "$DIR/$port/redis.log" --pidfile "$DIR/$port/redis.pid"
  wait_until 30 answers "$port" || { log "node $port did not start (see $DIR/$port/redis.log)"; exit 1; }
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
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
  wait_until 30 cluster_ok || { log "the cluster did not reach cluster_state:ok"; exit 1; }
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

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) cluster_ok ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
