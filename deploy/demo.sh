#!/usr/bin/env bash
# make demo: start the local stack, the ingress and one worker; submit realistic web-form reports;
# print them as stored in the CRM store; then stop exactly what this script started.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
LOGS="$ROOT/.stack/demo"
mkdir -p "$LOGS"

started_stack=0
if ! deploy/stack.sh status >/dev/null 2>&1; then deploy/stack.sh start >/dev/null; started_stack=1; fi
set -a; eval "$(deploy/stack.sh env)"; set +a
export CRM_INGRESS_PORT="${CRM_INGRESS_PORT:-8080}"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if ((started_stack)); then deploy/stack.sh stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

"$PY" -m pipeline topics create >/dev/null
"$PY" -m pipeline store migrate
"$PY" -m pipeline ingress >"$LOGS/ingress.log" 2>&1 & pids+=($!)
"$PY" -m pipeline worker --loglevel warning >"$LOGS/worker.log" 2>&1 & pids+=($!)
export CRM_DASHBOARD_PORT="${CRM_DASHBOARD_PORT:-8090}"
"$PY" -m pipeline dashboard >"$LOGS/dashboard.log" 2>&1 & pids+=($!)
DASHBOARD_URL="http://127.0.0.1:$CRM_DASHBOARD_PORT/"
for _ in $(seq 1 50); do curl -fs "${DASHBOARD_URL}healthz" >/dev/null 2>&1 && break; sleep 0.2; done
echo "[demo] ingress on http://127.0.0.1:$CRM_INGRESS_PORT, worker started (logs in $LOGS)"
echo "[demo] live operations dashboard: $DASHBOARD_URL  (open it now: the reports below arrive there live)"
if [[ -n ${DISPLAY:-} ]] && command -v xdg-open >/dev/null; then xdg-open "$DASHBOARD_URL" >/dev/null 2>&1 || true; fi
sleep "${DEMO_PAUSE_S:-3}"  # time to open the page before the traffic starts
"$PY" -m pipeline.demo --url "http://127.0.0.1:$CRM_INGRESS_PORT"
# Keep the dashboard up a little after the traffic (DEMO_HOLD_S=0 to stop at once).
echo "[demo] dashboard stays up for ${DEMO_HOLD_S:-20}s at $DASHBOARD_URL (Ctrl-C to stop)"
sleep "${DEMO_HOLD_S:-20}"
