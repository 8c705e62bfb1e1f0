#!/usr/bin/env bash
# A local 3-node RabbitMQ cluster, from Debian's rabbitmq-server, for the failover tests
# (tests/api/failover_rabbitmq.rs, docs/scale-out.md): nodes spike-rmq-1..3@localhost, AMQP on
# 127.0.0.1:5681-5683, management on 15681-15683, Erlang distribution on 25681-25683, each with
# its data, logs and config under target/rabbitmq-cluster/<base>/<n>/ (owned by the `rabbitmq`
# user, as the broker runs as it). A quorum queue declared there gets a replica on every node
# (RabbitMQ's default initial group size is the cluster's size). The shared broker on 5672 is
# not touched.
#
#   scripts/rabbitmq-cluster.sh start     start the nodes that are down, cluster them (idempotent;
#                                         prints the URL list for SPIKE_AMQP_URL)
#   scripts/rabbitmq-cluster.sh stop      stop every node and delete its data
#   scripts/rabbitmq-cluster.sh status    exit 0 when all three run and see each other
#   scripts/rabbitmq-cluster.sh kill N    SIGKILL node N (1..3): a crash, its queue replicas gone
#   scripts/rabbitmq-cluster.sh revive N  start node N again with its data: it rejoins the cluster
#
# Env: RABBITMQ_CLUSTER_BASE_PORT (5680: AMQP ports base+1..base+3, management 10000 above,
# distribution 20000 above).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${RABBITMQ_CLUSTER_BASE_PORT:-5680}
NODES=(1 2 3)
DIR=$PWD/target/rabbitmq-cluster/$BASE
RABBITMQ_HOME=/var/lib/rabbitmq

log() { printf 'rabbitmq-cluster: %s\n' "$*" >&2; }

node_name() { echo "spike-rmq-$BASE-$1@localhost"; }
amqp_port() { echo $((BASE + $1)); }

# rabbitmqctl as the broker's user, against node N; the node's own env file is not read.
ctl() {
  local n=$1
  shift
  runuser -u rabbitmq -- env HOME="$RABBITMQ_HOME" RABBITMQ_CONF_ENV_FILE=/dev/null \
    ERL_EPMD_ADDRESS=127.0.0.1 rabbitmqctl -q -n "$(node_name "$n")" "$@"
}

running() { ctl "$1" status >/dev/null 2>&1; }

# rabbitmqctl starts an Erlang VM per call: poll less often.
WAIT_POLL=0.5
# shellcheck source=scripts/lib/wait.sh
source scripts/lib/wait.sh

start_node() {
  local n=$1 data=$DIR/$1
  running "$n" && return 0
  command -v rabbitmq-server >/dev/null || { log "rabbitmq-server is missing (scripts/dev-services.sh installs it)"; exit 1; }
  mkdir -p "$data/mnesia" "$data/log"
  cat >"$data/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$(amqp_port "$n")
management.tcp.port = $((BASE + 10000 + n))
management.tcp.ip = 127.0.0.1
loopback_users = none
EOF
  echo '[rabbitmq_management].' >"$data/enabled_plugins"
  chown -R rabbitmq:rabbitmq "$DIR"
  # The broker's own user runs it (its Erlang cookie is the shared broker's: one cookie, one
  # machine). The process outlives this script; `stop` and `kill` end it.
  runuser -u rabbitmq -- env HOME="$RABBITMQ_HOME" RABBITMQ_CONF_ENV_FILE=/dev/null \
    RABBITMQ_NODENAME="$(node_name "$n")" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_DIST_PORT=$((BASE + 20000 + n)) RABBITMQ_CONFIG_FILE="$data/rabbitmq.conf" \
    RABBITMQ_MNESIA_BASE="$data/mnesia" RABBITMQ_LOG_BASE="$data/log" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$data/enabled_plugins" RABBITMQ_PID_FILE="$data/pid" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    setsid /usr/lib/rabbitmq/bin/rabbitmq-server >"$data/stdout.log" 2>&1 </dev/null &
  disown
  wait_until 90 running "$n" || { log "node $n did not start (see $data/log/)"; exit 1; }
  ctl "$n" await_startup --timeout 60 >/dev/null
}

members() { ctl 1 cluster_status --formatter json 2>/dev/null | python3 -c '
import json, sys
print(len(json.load(sys.stdin).get("running_nodes", [])))' 2>/dev/null || echo 0; }

clustered() { [ "$(members)" = 3 ]; }

start() {
  start_node 1
  local n
  for n in 2 3; do
    start_node "$n"
    if ! ctl "$n" cluster_status --formatter json 2>/dev/null | grep -q "$(node_name 1)"; then
      # (The CLI reports what the join does on stderr at length; errors still stop the script.)
      ctl "$n" stop_app >/dev/null 2>&1
      ctl "$n" reset >/dev/null 2>&1
      ctl "$n" join_cluster "$(node_name 1)" >/dev/null 2>&1
      ctl "$n" start_app >/dev/null 2>&1
    fi
  done
  wait_until 60 clustered || { log "the nodes did not form one cluster"; exit 1; }
  log "up: $(urls)"
}

urls() {
  local n list=()
  for n in "${NODES[@]}"; do list+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/%2f"); done
  (IFS=,; echo "${list[*]}")
}

pid_of() { cat "$DIR/$1/pid" 2>/dev/null || pgrep -f "$(node_name "$1")" | head -1; }

kill_node() {
  local n=${1:?"which node? 1 to 3"} pid
  pid=$(pid_of "$n")
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  # The Erlang VM's helpers (erl_child_setup, inet_gethost) go with it.
  pkill -9 -f "$(node_name "$n")" 2>/dev/null || true
  wait_until 20 bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$(amqp_port "$n")) 2>/dev/null" ||
    { log "node $n still listens"; exit 1; }
  log "killed node $n"
}

revive_node() {
  local n=${1:?"which node? 1 to 3"}
  start_node "$n"
  wait_until 60 clustered || { log "node $n did not rejoin"; exit 1; }
  log "node $n is back"
}

stop() {
  local n
  for n in "${NODES[@]}"; do
    ctl "$n" stop >/dev/null 2>&1 || true
    pkill -9 -f "$(node_name "$n")" 2>/dev/null || true
  done
  rm -rf "$DIR"
  log "stopped"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) clustered ;;
  kill) kill_node "${2:-}" ;;
  revive) revive_node "${2:-}" ;;
  urls) urls ;;
  *) echo "usage: $0 start|stop|status|kill N|revive N|urls" >&2; exit 2 ;;
esac
