# Sourced by the scripts that run the shop on data of their own (bench, fuzz, the checks, the
# walkthrough, the Postman run): free ports and the proof that a port's server is ours, a scratch
# server, and the removal of what a run leaves in Redis and RabbitMQ (best effort: a store that
# is down or a missing rabbitmqctl leaves things as they are).

# delete_redis_keys PATTERN: every key matching the glob PATTERN, on the Redis (6379) and on each
# node of the local cluster (scripts/redis-cluster.sh) that runs; prints how many. Each node
# deletes the keys it lists, one UNLINK each (a cluster refuses one spanning several slots).
delete_redis_keys() {
  local port count=0 listed
  for port in 6379 ${REDIS_CLUSTER_PORTS:-7000 7001 7002}; do
    redis-cli -p "$port" ping >/dev/null 2>&1 || continue
    listed=$(redis-cli -p "$port" --scan --pattern "$1" || true)
    [ -n "$listed" ] || continue
    sed 's/^/UNLINK /' <<<"$listed" | redis-cli -p "$port" >/dev/null || true
    count=$((count + $(wc -l <<<"$listed")))
  done
  echo "$count"
}

# delete_queues PREFIX: every queue whose name starts with PREFIX (taken literally).
delete_queues() {
  command -v rabbitmqctl >/dev/null 2>&1 || return 0
  local queue
  while read -r queue; do
    timeout 20 rabbitmqctl -q delete_queue "$queue" </dev/null >/dev/null 2>&1 || true
  done < <(timeout 30 rabbitmqctl -q list_queues name 2>/dev/null |
    awk -v prefix="$1" 'index($0, prefix) == 1' || true)
}

# delete_policies PREFIX: every RabbitMQ policy whose name starts with PREFIX (a run in dev bounds
# its order queue by one: configs/dev.toml's management URL).
delete_policies() {
  command -v rabbitmqctl >/dev/null 2>&1 || return 0
  local policy
  while read -r policy; do
    timeout 20 rabbitmqctl -q clear_policy "$policy" </dev/null >/dev/null 2>&1 || true
  done < <(timeout 30 rabbitmqctl -q list_policies 2>/dev/null | awk '{print $2}' |
    awk -v prefix="$1" 'index($0, prefix) == 1' || true)
}

# port_free PORT: whether nothing listens on 127.0.0.1:PORT (nor on every address).
port_free() {
  # SO_REUSEADDR: connections a server just closed linger in TIME_WAIT on its port and would
  # make a plain bind fail although nothing listens (bench.sh's OTLP sink, restarted per step,
  # met it); a listener on the port still makes the bind fail.
  python3 -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

# require_free_ports NAME PORT...: stops the script NAME with a clear message, before it touches
# any data, when one of the PORTs is taken (another server, another checkout's run).
require_free_ports() {
  local name=$1 port
  shift
  for port in "$@"; do
    if ! port_free "$port"; then
      echo "$name: port $port on 127.0.0.1 is taken (another server, or another run of $name?);" \
        "free it or choose other ports (see the script's header); nothing was changed" >&2
      exit 2
    fi
  done
}

# free_port: a port nothing listens on now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# owned_by_us PID PORT: whether PID (a server this script started) is alive and is the one that
# listens on PORT, so a script never measures or drives another process's server.
owned_by_us() {
  local pid=$1 port=$2
  kill -0 "$pid" 2>/dev/null || return 1
  command -v ss >/dev/null 2>&1 || return 0
  ss -Hltnp "sport = :$port" 2>/dev/null | grep -q "pid=$pid,"
}

# start_scratch_server RUN LOG [VAR=value...]: a fresh `spike all` (the debug build, dev config) on
# free ports, on a database `spike_RUN`, Redis prefix `RUN:` and queue prefix `RUN.` of its own,
# its output in LOG; VAR=value words add to its environment. Sets BASE (the API), INTERNAL_BASE
# (probes, /metrics) and SERVER_PID once it is ready and proven to be the process started here.
# When the script exits the server stops and everything the run made is removed.
start_scratch_server() {
  SCRATCH_RUN=$1
  local log=$2 port internal
  shift 2
  SCRATCH_CLIENT=$(command -v mariadb || command -v mysql)
  port=$(free_port)
  internal=$(free_port)
  "$SCRATCH_CLIENT" -h127.0.0.1 -uroot -e "CREATE DATABASE spike_$SCRATCH_RUN;
    GRANT ALL ON spike_$SCRATCH_RUN.* TO 'spike'@'%'; GRANT ALL ON spike_$SCRATCH_RUN.* TO 'spike'@'localhost';"
  trap stop_scratch_server EXIT
  env SPIKE_ENV=dev SPIKE_HTTP_ADDR="127.0.0.1:$port" SPIKE_INTERNAL_HTTP_ADDR="127.0.0.1:$internal" \
    SPIKE_DATABASE_URL="mysql://spike:spike@127.0.0.1:3306/spike_$SCRATCH_RUN" \
    SPIKE_REDIS_PREFIX="$SCRATCH_RUN:" SPIKE_AMQP_PREFIX="$SCRATCH_RUN." SPIKE_AMQP_QUEUE_TYPE=classic \
    SPIKE_LOG_FORMAT=json SPIKE_LOG_LEVEL=warn "$@" \
    target/debug/spike all >"$log" 2>&1 &
  SERVER_PID=$!
  BASE="http://127.0.0.1:$port"
  INTERNAL_BASE="http://127.0.0.1:$internal"
  for _ in $(seq 1 120); do
    curl -fs "$BASE/readyz" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.5
  done
  owned_by_us "$SERVER_PID" "$port" || {
    echo "the scratch server did not start (see $log)" >&2
    exit 1
  }
}

stop_scratch_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  "$SCRATCH_CLIENT" -h127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS spike_$SCRATCH_RUN" || true
  delete_redis_keys "$SCRATCH_RUN:*" >/dev/null
  delete_queues "$SCRATCH_RUN."
  delete_policies "$SCRATCH_RUN."
}
