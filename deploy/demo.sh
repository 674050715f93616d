#!/usr/bin/env bash
# make demo: start the local stack and the pipeline (ingress, worker, dashboard, Open311/officer API,
# status consumer, notifier, SMTP gateway, media stage); demo/run.py then starts simulated providers (X API,
# LAPOR!, SMS send API, Graph API, a mail relay sink), submits reports on every channel family, follows
# one report through Selesai and reads an agency's queue; then stop exactly what this script started.
# CRM_* variables already set win over the stack's and the demo's defaults (tests run it isolated).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
LOGS="${DEMO_LOGS:-$ROOT/.stack/demo}"
mkdir -p "$LOGS"

started_stack=0
if ! deploy/stack.sh status >/dev/null 2>&1; then deploy/stack.sh start >/dev/null; started_stack=1; fi
while IFS= read -r line; do  # the stack's settings, unless the caller set them
  key=${line%%=*}
  if [[ $line == CRM_*=* && -z ${!key:-} ]]; then export "${line?}"; fi
done < <(deploy/stack.sh env)
export CRM_INGRESS_PORT="${CRM_INGRESS_PORT:-8080}"
export CRM_API_PORT="${CRM_API_PORT:-8091}"
# The demo's own simulators listen on non-default ports; the pipeline is pointed at them here.
export CRM_DEMO_PROVIDERS_PORT="${CRM_DEMO_PROVIDERS_PORT:-18190}"
PROVIDERS="http://127.0.0.1:$CRM_DEMO_PROVIDERS_PORT"
export CRM_EMAIL_SMTP_PORT="${CRM_EMAIL_SMTP_PORT:-12525}"     # crm-pipeline smtp (inbound gateway)
export CRM_EMAIL_RELAY_PORT="${CRM_EMAIL_RELAY_PORT:-12526}"   # the mail relay sink of demo.run
export CRM_TWITTER_API_BASE="${CRM_TWITTER_API_BASE:-$PROVIDERS/x}"
export CRM_TWITTER_BEARER_TOKEN="${CRM_TWITTER_BEARER_TOKEN:-dev-only-demo-x-token}"
export CRM_LAPOR_API_BASE="${CRM_LAPOR_API_BASE:-$PROVIDERS/lapor}"
export CRM_NOTIFY_SMS_URL="${CRM_NOTIFY_SMS_URL:-$PROVIDERS/sms/v1/send}"
export CRM_JAKI_REPLY_URL="${CRM_JAKI_REPLY_URL:-$PROVIDERS/jaki/v1/crm/callbacks}"
export CRM_NOTIFY_TWITTER_API_BASE="${CRM_NOTIFY_TWITTER_API_BASE:-$PROVIDERS/x}"
export CRM_NOTIFY_TWITTER_TOKEN="${CRM_NOTIFY_TWITTER_TOKEN:-dev-only-demo-x-token}"
export CRM_NOTIFY_META_GRAPH_BASE="${CRM_NOTIFY_META_GRAPH_BASE:-$PROVIDERS/graph}"
export CRM_NOTIFY_META_PAGE_TOKEN="${CRM_NOTIFY_META_PAGE_TOKEN:-dev-only-demo-page-token}"
export CRM_NOTIFY_INTERVAL_S="${CRM_NOTIFY_INTERVAL_S:-0.5}"
export CRM_NOTIFY_RETRY_FIRST_S="${CRM_NOTIFY_RETRY_FIRST_S:-2}"
export CRM_NOTIFY_RETRY_EVERY_S="${CRM_NOTIFY_RETRY_EVERY_S:-5}"
export CRM_WORKER_BATCH_WITHIN_S="${CRM_WORKER_BATCH_WITHIN_S:-0.1}"
# Surges (issue #17): windows shrunk from 15 min / 1 h / 6 h so the demo's flood closes within a minute;
# the agencies' mails go to the demo's mail sink.
export CRM_SURGE_WINDOWS="${CRM_SURGE_WINDOWS:-20s,1m,5m}"
export CRM_SURGE_TICK_S="${CRM_SURGE_TICK_S:-2}"
export CRM_SURGE_BATCH_WITHIN_S="${CRM_SURGE_BATCH_WITHIN_S:-0.3}"
export CRM_SURGE_NOTIFY_ADDRESSES="${CRM_SURGE_NOTIFY_ADDRESSES:-{\"sumber_daya_air\": \"dsda-pusdatin@example.org\", \"bpbd\": \"bpbd-pusdalops@example.org\"\}}"
# The demo's photo host is one of its local simulators: let the media stage fetch from 127.0.0.1.
export CRM_MEDIA_FETCH_ALLOW_PRIVATE="${CRM_MEDIA_FETCH_ALLOW_PRIVATE:-true}"

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
"$PY" -m pipeline api >"$LOGS/api.log" 2>&1 & pids+=($!)
"$PY" -m pipeline status >"$LOGS/status.log" 2>&1 & pids+=($!)
"$PY" -m pipeline notify >"$LOGS/notify.log" 2>&1 & pids+=($!)
"$PY" -m pipeline smtp >"$LOGS/smtp.log" 2>&1 & pids+=($!)
"$PY" -m pipeline media run >"$LOGS/media.log" 2>&1 & pids+=($!)
"$PY" -m pipeline surge run --loglevel warning >"$LOGS/surge.log" 2>&1 & pids+=($!)
export CRM_DASHBOARD_PORT="${CRM_DASHBOARD_PORT:-8090}"
"$PY" -m pipeline dashboard >"$LOGS/dashboard.log" 2>&1 & pids+=($!)
DASHBOARD_URL="http://127.0.0.1:$CRM_DASHBOARD_PORT/"
for _ in $(seq 1 50); do curl -fs "${DASHBOARD_URL}healthz" >/dev/null 2>&1 && break; sleep 0.2; done
echo "[demo] ingress on http://127.0.0.1:$CRM_INGRESS_PORT, Open311/officer API on :$CRM_API_PORT," \
  "SMTP gateway on :$CRM_EMAIL_SMTP_PORT; worker, status consumer, notifier, media stage, surge worker" \
  "started (logs in $LOGS)"
echo "[demo] live operations dashboard: $DASHBOARD_URL  (open it now: the reports below arrive there live)"
if [[ -n ${DISPLAY:-} ]] && command -v xdg-open >/dev/null; then xdg-open "$DASHBOARD_URL" >/dev/null 2>&1 || true; fi
sleep "${DEMO_PAUSE_S:-3}"  # time to open the page before the traffic starts
"$PY" -m demo.run --url "http://127.0.0.1:$CRM_INGRESS_PORT" --api-url "http://127.0.0.1:$CRM_API_PORT"
# Keep the dashboard up a little after the traffic (DEMO_HOLD_S=0 to stop at once).
echo "[demo] dashboard stays up for ${DEMO_HOLD_S:-20}s at $DASHBOARD_URL (Ctrl-C to stop)"
sleep "${DEMO_HOLD_S:-20}"
