#!/usr/bin/env bash
# Removes what integration tests (and scripts/fuzz.sh) leave behind when their process is killed
# before cleanup: databases, Redis keys, RabbitMQ queues and policies named `spike_test_*` —
# only those of a process that is gone. Names carry the id of the process that made them
# (`spike_test_<pid>_<uuid>`, `spike_test_fuzz_<pid>_`), so a parallel run's resources on the same
# services are left alone; names without one (an older checkout's) are treated as leftovers.
# Empty exchanges are left: they hold nothing and rabbitmqctl cannot delete them.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/stores.sh
source scripts/lib/stores.sh

DB_HOST=${SPIKE_DB_HOST:-127.0.0.1}
DB_PORT=${SPIKE_DB_PORT:-3306}
read -r -a ROOT_ARGS <<<"${MYSQL_ROOT_ARGS:--uroot}"
client=$(command -v mariadb || command -v mysql)

# owner_alive NAME: whether the process whose id NAME carries still runs.
owner_alive() {
  local pid
  pid=$(sed -nE 's/^spike_test_(fuzz_)?([0-9]+)([_.:].*)?$/\2/p' <<<"$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# leftovers: reads names on stdin, prints those whose owner is gone.
leftovers() {
  local name
  while read -r name; do
    [ -n "$name" ] || continue
    owner_alive "$name" || printf '%s\n' "$name"
  done
}

count=0
while read -r db; do
  "$client" -h"$DB_HOST" -P"$DB_PORT" "${ROOT_ARGS[@]}" -e "DROP DATABASE IF EXISTS \`$db\`"
  count=$((count + 1))
done < <("$client" -h"$DB_HOST" -P"$DB_PORT" "${ROOT_ARGS[@]}" -N -e "SHOW DATABASES LIKE 'spike\\_test\\_%'" | leftovers)

# Redis: the distinct prefixes (up to the first ':') of the keys, each removed when its owner is
# gone, on the Redis and on every node of the local cluster.
keys=0
for port in 6379 ${REDIS_CLUSTER_PORTS:-7000 7001 7002}; do
  redis-cli -p "$port" ping >/dev/null 2>&1 || continue
  while read -r prefix; do
    keys=$((keys + $(delete_redis_keys "$prefix:*")))
  done < <(redis-cli -p "$port" --scan --pattern 'spike_test_*' | cut -d: -f1 | sort -u | leftovers)
done

queues=0
if command -v rabbitmqctl >/dev/null 2>&1; then
  while read -r queue; do
    timeout 20 rabbitmqctl -q delete_queue "$queue" </dev/null >/dev/null 2>&1 || true
    queues=$((queues + 1))
  done < <(timeout 30 rabbitmqctl -q list_queues name 2>/dev/null | grep '^spike_test_' | leftovers || true)
  while read -r policy; do
    timeout 20 rabbitmqctl -q clear_policy "$policy" </dev/null >/dev/null 2>&1 || true
  done < <(timeout 30 rabbitmqctl -q list_policies 2>/dev/null | awk '{print $2}' | grep '^spike_test_' | leftovers || true)
fi
printf 'clean-test-data: removed %d databases, %d redis keys, %d queues (of processes that are gone)\n' \
  "$count" "$keys" "$queues" >&2
