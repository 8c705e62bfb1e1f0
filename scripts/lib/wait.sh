# shellcheck shell=bash
# wait_until SECONDS COMMAND...: runs COMMAND every WAIT_POLL seconds (0.2) until it succeeds;
# returns 1 if SECONDS pass first. Sourced by the scripts that start services and clusters.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep "${WAIT_POLL:-0.2}"
  done
}
