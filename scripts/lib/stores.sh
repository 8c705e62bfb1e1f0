# Sourced by the scripts that run the shop on a prefix of their own (bench, fuzz, the checks):
# removes what such a run leaves in Redis and RabbitMQ. Best effort: a store that is down or a
# missing rabbitmqctl leaves things as they are.

# delete_redis_keys PATTERN: every key matching the glob PATTERN.
delete_redis_keys() {
  redis-cli --scan --pattern "$1" | xargs -r -n 500 redis-cli DEL >/dev/null || true
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
