#!/usr/bin/env bash
# A MariaDB primary with a binlog-replicated replica on this machine (127.0.0.1:3316 → 3317),
# from Debian's mariadb-server, for the tests that prove what the catalog's read path promises
# under replica lag (tests/api/failover_replica.rs, docs/reliability.md). The dev instance on
# 3306 keeps no binlog and is shared, so the pair is a primary of its own. Data lives under
# target/mysql-replica/<primary port>/; nothing else on the machine is touched. A test runs a
# pair of its own on free ports (MYSQL_REPLICA_PORTS), since lag is a property of the whole pair
# and parallel runs must not stop each other's replica.
#
#   scripts/mysql-replica.sh start    start whichever instance is down and make the replica follow
#                                     the primary (idempotent; prints both URLs)
#   scripts/mysql-replica.sh stop     stop both and delete their data (the pair's directory)
#   scripts/mysql-replica.sh status   exit 0 when both answer and the replica's threads run
#   scripts/mysql-replica.sh lag on   stop the replica's SQL thread: it keeps receiving the binlog
#                                     but applies nothing (the lag grows until `lag off`)
#   scripts/mysql-replica.sh lag off  start it again; the replica catches up
#   scripts/mysql-replica.sh restart  restart the primary (a clean shutdown, as an operator's
#                                     restart); returns once it answers and the replica follows
#
# Both instances have a root user without a password on 127.0.0.1 only, and the `spike` user
# (SPIKE_DB_PASSWORD, default "spike") with every right, as the dev instance has.
# Env: MYSQL_REPLICA_PORTS (default "3316 3317": primary, replica).
set -euo pipefail
cd "$(dirname "$0")/.."

read -r PRIMARY REPLICA <<<"${MYSQL_REPLICA_PORTS:-3316 3317}"
DIR=$PWD/target/mysql-replica/$PRIMARY
DB_PASSWORD=${SPIKE_DB_PASSWORD:-spike}

log() { printf 'mysql-replica: %s\n' "$*" >&2; }
client() { mariadb -uroot -h127.0.0.1 -P"$1" "${@:2}"; }
answers() { client "$1" -N -e 'SELECT 1' >/dev/null 2>&1; }

# shellcheck source=scripts/lib/wait.sh
source scripts/lib/wait.sh

# The replica's two threads: "Yes Yes" when it follows the primary.
threads() {
  client "$REPLICA" -e 'SHOW REPLICA STATUS\G' 2>/dev/null |
    awk '/Slave_IO_Running:/ {io = $2} /Slave_SQL_Running:/ {sql = $2} END {print io, sql}'
}
following() { [ "$(threads)" = "Yes Yes" ]; }

start_instance() { # port, server id
  local port=$1 id=$2 data=$DIR/$1
  answers "$port" && return 0
  command -v mariadbd >/dev/null || { log "mariadbd is missing (scripts/dev-services.sh installs mariadb-server)"; exit 1; }
  mkdir -p "$data"
  if [ ! -d "$data/db/mysql" ]; then
    mariadb-install-db --no-defaults --datadir="$data/db" --user="$(id -un)" \
      --auth-root-authentication-method=normal --skip-test-db >"$data/install.log" 2>&1 ||
      { log "initialising $port failed (see $data/install.log)"; exit 1; }
  fi
  # Small: two instances beside the shared one on a 2-core box. The binlog on both (the replica's
  # own, so it could be promoted), GTIDs to follow by position-free coordinates.
  mariadbd --no-defaults --datadir="$data/db" --port="$port" --bind-address=127.0.0.1 \
    --socket="$data/mysqld.sock" --pid-file="$data/mysqld.pid" --log-error="$data/error.log" \
    --user="$(id -un)" --server-id="$id" --log-bin="$data/db/binlog" --binlog-format=ROW \
    --innodb-buffer-pool-size=64M --max-connections=300 --skip-name-resolve \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
    --default-time-zone=+00:00 >/dev/null 2>&1 &
  disown
  wait_until 60 answers "$port" || { log "the instance on $port did not start (see $data/error.log)"; exit 1; }
  client "$port" -e "CREATE USER IF NOT EXISTS 'spike'@'%' IDENTIFIED BY '$DB_PASSWORD';
    GRANT ALL ON *.* TO 'spike'@'%' WITH GRANT OPTION;
    CREATE USER IF NOT EXISTS 'replicator'@'127.0.0.1' IDENTIFIED BY 'replicator';
    GRANT REPLICATION SLAVE ON *.* TO 'replicator'@'127.0.0.1';"
}

start() {
  command -v mariadb >/dev/null || { log "the mariadb client is missing (scripts/dev-services.sh installs it)"; exit 1; }
  start_instance "$PRIMARY" 1001
  start_instance "$REPLICA" 1002
  if ! following; then
    # From the primary's first transaction on (both start empty: the users created above are
    # the replica's own, written before it follows, and are not in the primary's binlog twice).
    client "$REPLICA" -e "STOP REPLICA; SET GLOBAL gtid_slave_pos = '';
      CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = $PRIMARY,
        MASTER_USER = 'replicator', MASTER_PASSWORD = 'replicator', MASTER_USE_GTID = slave_pos,
        MASTER_CONNECT_RETRY = 1;
      SET GLOBAL replicate_ignore_table = '';
      START REPLICA;"
    wait_until 30 following || { log "the replica does not follow the primary: $(threads)"; exit 1; }
  fi
  log "up: primary mysql://spike:$DB_PASSWORD@127.0.0.1:$PRIMARY, replica mysql://spike:$DB_PASSWORD@127.0.0.1:$REPLICA"
}

stop_instance() { # port
  local pid
  if [ -f "$DIR/$1/mysqld.pid" ]; then
    pid=$(cat "$DIR/$1/mysqld.pid")
    kill "$pid" 2>/dev/null || true
    wait_until 30 bash -c "! kill -0 $pid 2>/dev/null" || kill -9 "$pid" 2>/dev/null || true
  fi
}

stop() {
  stop_instance "$PRIMARY"
  stop_instance "$REPLICA"
  rm -rf "$DIR"
  log "stopped"
}

# The replica retries its connection every second (MASTER_CONNECT_RETRY above), so it follows
# again within moments of the primary's return.
restart() {
  [ -d "$DIR/$PRIMARY/db" ] || { log "no primary on $PRIMARY to restart (start first)"; exit 1; }
  stop_instance "$PRIMARY"
  log "primary on $PRIMARY stopped"
  start_instance "$PRIMARY" 1001
  wait_until 30 following || { log "the replica does not follow the restarted primary: $(threads)"; exit 1; }
  log "primary on $PRIMARY is back; the replica follows"
}

status() {
  answers "$PRIMARY" && answers "$REPLICA" && following
}

lag() {
  case ${1:-} in
    on) client "$REPLICA" -e 'STOP REPLICA SQL_THREAD' && log "the replica applies nothing until 'lag off'" ;;
    off) client "$REPLICA" -e 'START REPLICA SQL_THREAD' && wait_until 30 following && log "the replica follows again" ;;
    *) echo "usage: $0 lag on|off" >&2; exit 2 ;;
  esac
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  lag) lag "${2:-}" ;;
  restart) restart ;;
  *) echo "usage: $0 start|stop|status|lag on|off|restart" >&2; exit 2 ;;
esac
