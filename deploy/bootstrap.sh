#!/usr/bin/env bash
# Installs what the local pipeline needs on a fresh Debian machine, once:
#   system: Java 17+, Maven (fetches the Kafka jars), Redis, PostgreSQL,
#           Prometheus (promtool), node_exporter                       (apt, only what is missing)
#   python: .venv with the package and its dev tools                      (pip, only when pyproject changed)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"

need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v redis-server >/dev/null || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
command -v psql >/dev/null || need+=(postgresql-client)
command -v flock >/dev/null || need+=(util-linux)
# The dashboard's browser test drives Debian's Chromium (Playwright never downloads a browser here).
[[ -x /usr/bin/chromium ]] || need+=(chromium chromium-driver)
# promtool checks and unit-tests the alert rules; the end-to-end alert test runs a real Prometheus.
command -v promtool >/dev/null || need+=(prometheus)
# The disk-full chaos scenario watches the broker's filesystem through node_exporter.
command -v prometheus-node-exporter >/dev/null || need+=(prometheus-node-exporter)
if ((${#need[@]})); then
  echo "[bootstrap] installing system packages: ${need[*]}" >&2
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts the packaged services; this project runs its own on other ports, so stop those.
  for svc in redis-server postgresql prometheus prometheus-node-exporter; do
    $SUDO systemctl stop "$svc" 2>/dev/null || $SUDO service "$svc" stop 2>/dev/null || true
  done
fi

java_major="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)"
((java_major >= 17)) || { echo "[bootstrap] Java 17+ required, found $java_major" >&2; exit 1; }

stamp="$ROOT/.venv/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [[ ! -f $stamp ]]; then
  echo "[bootstrap] installing the Python package into .venv" >&2
  [[ -x $ROOT/.venv/bin/python ]] || "$PYTHON" -m venv "$ROOT/.venv"
  "$ROOT/.venv/bin/pip" install -q --upgrade pip >/dev/null
  "$ROOT/.venv/bin/pip" install -q -e "$ROOT[dev]" 2>"$ROOT/.venv/pip.log" || { cat "$ROOT/.venv/pip.log" >&2; exit 1; }
  rm -f "$ROOT"/.venv/.installed-*
  touch "$stamp"
fi

# The Kafka jars and the SeaweedFS binary (cached in ~/.cache/crm-pipeline; a no-op once there), fetched
# and built here rather than by the first test that starts the stack: a test has a time limit, and a
# first SeaweedFS build takes minutes.
"$ROOT/deploy/stack.sh" fetch
