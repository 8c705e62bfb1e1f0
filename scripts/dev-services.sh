#!/usr/bin/env bash
# Makes sure MariaDB, Redis (and the local 3-master Redis Cluster on 7000-7002 that the scale-out
# tests run on: scripts/redis-cluster.sh) and RabbitMQ run on this machine and that the `spike`
# database and user exist. Installs a missing service from Debian's packages, starts a stopped
# one, waits until each answers. Idempotent: run it as often as you like.
#
# With a Docker engine you may instead run `docker compose up -d mysql redis rabbitmq`.
#
# Env: SPIKE_DB_HOST/SPIKE_DB_PORT (127.0.0.1:3306), MYSQL_ROOT_ARGS (extra args for the root
# client, default "-uroot"), SPIKE_DB_PASSWORD (password of the `spike` user, default "spike").
set -euo pipefail

DB_HOST=${SPIKE_DB_HOST:-127.0.0.1}
DB_PORT=${SPIKE_DB_PORT:-3306}
DB_PASSWORD=${SPIKE_DB_PASSWORD:-spike}
read -r -a ROOT_ARGS <<<"${MYSQL_ROOT_ARGS:--uroot}"
REDIS_PORT=6379
AMQP_PORT=5672

log() { printf 'dev-services: %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True when RabbitMQ answers the AMQP 0-9-1 protocol header with Connection.Start (a frame of
# type 1). An open port is not enough: a wedged node keeps its listener but answers nothing.
amqp_answers() {
  timeout 10 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
    printf "AMQP\x00\x00\x09\x01" >&3
    first=$(head -c 1 <&3 | od -An -tu1 | tr -d " ")
    [ "$first" = 1 ]' "$AMQP_PORT" 2>/dev/null
}

wait_for() { # name, seconds, command...
  local name=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "$name did not come up within ${seconds}s"
      return 1
    fi
    sleep 1
  done
  log "$name is up"
}

apt_updated=""
ensure_package() { # command, package
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" != 0 ]; then
    log "$1 is missing and this is not root: install the Debian package $2"
    exit 1
  fi
  if [ -z "$apt_updated" ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  log "installing $2"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}

start_mariadb() {
  if port_open "$DB_PORT"; then return 0; fi
  ensure_package mariadbd mariadb-server
  ensure_package mariadb mariadb-client
  log "starting MariaDB"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  wait_for MariaDB 60 port_open "$DB_PORT"
}

start_redis() {
  if port_open "$REDIS_PORT"; then return 0; fi
  ensure_package redis-server redis-server
  log "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no
  wait_for Redis 30 redis-cli -p "$REDIS_PORT" ping
}

start_rabbitmq() {
  if port_open "$AMQP_PORT"; then
    if amqp_answers; then return 0; fi
    log "RabbitMQ listens on $AMQP_PORT but does not answer AMQP: restarting it"
    timeout 30 rabbitmqctl stop >/dev/null 2>&1 || pkill -KILL -f 'beam.*rabbit' || true
    for _ in $(seq 1 30); do port_open "$AMQP_PORT" || break; sleep 1; done
  fi
  ensure_package rabbitmq-server rabbitmq-server
  log "starting RabbitMQ"
  rabbitmq-server -detached
  timeout 130 rabbitmqctl await_startup --timeout 120 >/dev/null 2>&1 || true
  wait_for RabbitMQ 120 amqp_answers
}

# The management API (port 15672): spike applies the order queue's bound as a policy through it
# when SPIKE_AMQP_MANAGEMENT_URL is set (docs/scale-out.md). Enabling the plugin is online.
enable_rabbitmq_management() {
  port_open 15672 && return 0
  command -v rabbitmq-plugins >/dev/null 2>&1 || return 0
  log "enabling the RabbitMQ management plugin"
  timeout 60 rabbitmq-plugins enable rabbitmq_management >/dev/null
  wait_for "RabbitMQ management API" 60 port_open 15672
}

create_database() {
  local client
  client=$(command -v mariadb || command -v mysql)
  # The `spike` user owns `spike` and may create/drop the per-test databases `spike_test_*`.
  "$client" -h"$DB_HOST" -P"$DB_PORT" "${ROOT_ARGS[@]}" <<SQL
CREATE DATABASE IF NOT EXISTS spike CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS 'spike'@'localhost' IDENTIFIED BY '${DB_PASSWORD}';
CREATE USER IF NOT EXISTS 'spike'@'127.0.0.1' IDENTIFIED BY '${DB_PASSWORD}';
CREATE USER IF NOT EXISTS 'spike'@'%' IDENTIFIED BY '${DB_PASSWORD}';
GRANT ALL PRIVILEGES ON \`spike\`.* TO 'spike'@'localhost', 'spike'@'127.0.0.1', 'spike'@'%';
GRANT ALL PRIVILEGES ON \`spike\_test\_%\`.* TO 'spike'@'localhost', 'spike'@'127.0.0.1', 'spike'@'%';
FLUSH PRIVILEGES;
SQL
  log "database 'spike' and user 'spike' ready"
}

start_mariadb
start_redis
"$(dirname "$0")/redis-cluster.sh" start
start_rabbitmq
enable_rabbitmq_management
create_database
