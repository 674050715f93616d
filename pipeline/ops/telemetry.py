"""Metrics every process exports, and the worker's /metrics, /healthz and /readyz endpoints.

The ingress exports its own counters (``pipeline.ingress``) and the worker its stage counters
(``pipeline.worker``); this module adds what both lack: cases formed, classifications per category
and confidence band, consumer lag and the outbox backlog. ``start_worker_telemetry`` runs a small
HTTP server in a daemon thread (so it serves even while the Faust loop is busy) and samples lag,
backlog and readiness every ``interval`` seconds in another.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from ..settings import Settings

log = logging.getLogger("pipeline.telemetry")

CLASSIFIED = Counter(
    "crm_classified_total", "reports classified per category and confidence band", ["category", "band"]
)
CASES_FORMED = Counter("crm_cases_formed_total", "new cases opened by grouping (first report of a case)")
CASE_JOINS = Counter("crm_case_joins_total", "reports that joined an existing case (supporters)")
CONSUMER_LAG = Gauge(
    "crm_consumer_lag", "worker group lag per input topic and partition", ["topic", "partition"]
)
CONSUMER_LAG_TOTAL = Gauge("crm_consumer_lag_total", "worker group lag over all input partitions")
OUTBOX_BACKLOG = Gauge(
    "crm_outbox_backlog", "notifications in the store's outbox not yet sent (-1: no outbox)"
)
DEPENDENCY_UP = Gauge("crm_dependency_up", "1 when the dependency answered the last check", ["dependency"])


def confidence_band(confidence: float | None) -> str:
    if confidence is None:
        return "none"
    return "high" if confidence >= 0.8 else "medium" if confidence >= 0.5 else "low"


def observe_triaged(reports: Iterable[Any]) -> None:
    """Count classifications and case formation for a triaged batch (never raises)."""
    try:
        from ..processors.group import CaseIndex

        labels: collections.Counter[tuple[str, str]] = collections.Counter()
        formed = joins = 0
        for report in reports:
            t = report.triage
            if t is None:
                continue
            labels[(t.category or "unknown", confidence_band(t.confidence))] += 1
            if t.case_id:
                if t.case_id == CaseIndex.new_case_id(report.report_id):
                    formed += 1
                else:
                    joins += 1
        for (category, band), n in labels.items():  # one labelled increment per batch, not per report
            CLASSIFIED.labels(category, band).inc(n)
        if formed:
            CASES_FORMED.inc(formed)
        if joins:
            CASE_JOINS.inc(joins)
    except Exception:  # metrics must never break the flow
        log.debug("observe_triaged failed", exc_info=True)


async def outbox_backlog(settings: Settings) -> int | None:
    """Notifications waiting in the store's outbox (``notify.outbox``, state pending); None without one."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(
        settings.database_url.get_secret_value(), connect_timeout=3
    ) as conn:
        row = await (await conn.execute("SELECT to_regclass('notify.outbox') IS NOT NULL")).fetchone()
        if not row or not row[0]:
            return None
        pending = "SELECT count(*) FROM notify.outbox WHERE state = 'pending'"
        row = await (await conn.execute(pending)).fetchone()
        return int(row[0]) if row else 0


class _State:
    def __init__(self) -> None:
        self.ready: dict[str, Any] = {"ready": False, "checks": {}, "detail": "not checked yet"}
        self.started = time.time()


async def sample_once(settings: Settings, state: _State) -> None:
    from .health import readiness
    from .lag import consumer_lag

    state.ready = await readiness(settings)
    for name, check in state.ready["checks"].items():
        DEPENDENCY_UP.labels(name).set(1 if check["ok"] else 0)
    if state.ready["checks"].get("kafka", {}).get("ok"):
        try:
            rows = await consumer_lag(settings)
            for r in rows:
                CONSUMER_LAG.labels(r.topic, str(r.partition)).set(r.lag)
            CONSUMER_LAG_TOTAL.set(sum(r.lag for r in rows))
        except Exception as exc:
            log.warning("consumer lag could not be sampled: %s", exc)
    if state.ready["checks"].get("database", {}).get("ok"):
        try:
            backlog = await outbox_backlog(settings)
            OUTBOX_BACKLOG.set(-1 if backlog is None else backlog)
        except Exception as exc:
            log.warning("outbox backlog could not be sampled: %s", exc)


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif self.path.startswith("/healthz"):
                self._send(
                    200, orjson.dumps({"status": "ok", "uptime_s": round(time.time() - state.started)})
                )
            elif self.path.startswith("/readyz"):
                ready = state.ready
                self._send(200 if ready.get("ready") else 503, orjson.dumps(ready))
            else:
                self._send(404, b'{"error": "not found"}')

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def start_worker_telemetry(
    settings: Settings,
    interval: float = 10.0,
    host: str = "0.0.0.0",  # noqa: S104 - probes and Prometheus scrape from outside the pod
) -> _State | None:
    """Serve /metrics /healthz /readyz on ``CRM_WORKER_METRICS_PORT`` and sample lag; no-op when 0."""
    if not settings.worker_metrics_port:
        return None
    state = _State()
    server = ThreadingHTTPServer((host, settings.worker_metrics_port), _handler(state))
    threading.Thread(target=server.serve_forever, name="crm-telemetry-http", daemon=True).start()

    def sampler() -> None:
        loop = asyncio.new_event_loop()
        while True:
            try:
                loop.run_until_complete(sample_once(settings, state))
            except Exception as exc:
                log.warning("telemetry sample failed: %s", exc)
            time.sleep(interval)

    threading.Thread(target=sampler, name="crm-telemetry-sampler", daemon=True).start()
    log.info("worker telemetry on http://%s:%d/metrics", host, settings.worker_metrics_port)
    return state
