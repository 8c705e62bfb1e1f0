# Sourced by the scripts that run the shop on a prefix of their own (bench, fuzz, the checks):
# removes what such a run leaves in Redis and RabbitMQ. Best effort: a store that is down or a
# missing rabbitmqctl leaves things as they are.

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
