#!/usr/bin/env bash
# Removes what integration tests leave behind when their process is killed before cleanup:
# databases `spike_test_*`, Redis keys `spike_test_*`, RabbitMQ queues and policies `spike_test_*`
# (empty exchanges are left: they hold nothing and rabbitmqctl cannot delete them).
# Tests clean up after themselves; this only sweeps the remains of interrupted runs.
# Do not run it while another test run is in progress on the same services.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/stores.sh
source scripts/lib/stores.sh

DB_HOST=${SPIKE_DB_HOST:-127.0.0.1}
DB_PORT=${SPIKE_DB_PORT:-3306}
read -r -a ROOT_ARGS <<<"${MYSQL_ROOT_ARGS:--uroot}"
client=$(command -v mariadb || command -v mysql)

count=0
for db in $("$client" -h"$DB_HOST" -P"$DB_PORT" "${ROOT_ARGS[@]}" -N -e "SHOW DATABASES LIKE 'spike\\_test\\_%'"); do
  "$client" -h"$DB_HOST" -P"$DB_PORT" "${ROOT_ARGS[@]}" -e "DROP DATABASE \`$db\`"
  count=$((count + 1))
done

keys=$(delete_redis_keys 'spike_test_*')

queues=0
if command -v rabbitmqctl >/dev/null 2>&1; then
  while read -r queue; do
    timeout 20 rabbitmqctl -q delete_queue "$queue" </dev/null >/dev/null 2>&1 || true
    queues=$((queues + 1))
  done < <(timeout 30 rabbitmqctl -q list_queues name 2>/dev/null | grep '^spike_test_' || true)
  while read -r policy; do
    timeout 20 rabbitmqctl -q clear_policy "$policy" </dev/null >/dev/null 2>&1 || true
  done < <(timeout 30 rabbitmqctl -q list_policies 2>/dev/null | awk '{print $2}' | grep '^spike_test_' || true)
fi
printf 'clean-test-data: removed %d databases, %d redis keys, %d queues\n' "$count" "$keys" "$queues" >&2
