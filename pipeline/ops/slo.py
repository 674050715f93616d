"""Metrics the alert rules and SLOs in ``deploy/prometheus/`` need, beyond the stage counters.

* ``crm_report_latency_seconds{channel}``: received (ingress, poller, mail gateway) to committed in the
  CRM store, observed by the worker once the batch's rows are in. The latency SLO (99 % within 60 s)
  and its burn-rate alerts are built on it. Backfilled reports carry their historical time: left out.
* ``crm_last_report_timestamp_seconds{channel}``: when the intake last published a report of the
  channel; "a channel gone silent for longer than its normal gap" compares it with the longest gap
  the channel had in the past week.
* ``crm_ingress_responses_total{channel,code}``: every answer of a channel route by HTTP status, so
  5xx (503 and an unhandled 500 alike) can be taken as a share of all answers.
* ``crm_kafka_under_replicated_partitions`` / ``crm_kafka_offline_partitions``: from the cluster
  metadata of the pipeline's own topics.

The ingress samples the worker group's lag and the partitions' replication every
``CRM_LAG_SAMPLE_S``: a stopped or crashed worker exports nothing, so the lag that says "nobody is
consuming" has to come from a process that keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

from ..settings import Settings

log = logging.getLogger("pipeline.slo")

REPORT_LATENCY = Histogram(
    "crm_report_latency_seconds",
    "time from a report's received_at to its row committed in the CRM store (backfill left out)",
    ["channel"],
    buckets=(0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600),
)
LAST_REPORT = Gauge(
    "crm_last_report_timestamp_seconds",
    "unix time the intake last published a report, per channel",
    ["channel"],
)
INGRESS_RESPONSES = Counter(
    "crm_ingress_responses_total", "ingress answers on channel routes per HTTP status", ["channel", "code"]
)
UNDER_REPLICATED = Gauge(
    "crm_kafka_under_replicated_partitions",
    "partitions of the pipeline's topics with fewer in-sync replicas than replicas",
)
OFFLINE_PARTITIONS = Gauge(
    "crm_kafka_offline_partitions", "partitions of the pipeline's topics without a leader"
)
#: the SLO threshold; its bucket bound must stay one of REPORT_LATENCY's buckets
SLO_LATENCY_S = 60.0


def observe_stored(reports: Iterable[Any], now: float | None = None) -> None:
    """End-to-end latency of reports whose rows are committed (never raises: metrics never break the flow)."""
    try:
        now = time.time() if now is None else now
        for r in reports:
            if r.channel == "backfill":
                continue
            REPORT_LATENCY.labels(r.channel).observe(max(now - r.received_at.timestamp(), 0.0))
    except Exception:
        log.debug("observe_stored failed", exc_info=True)


def mark_intake(channels: Iterable[str]) -> None:
    """The intake (ingress, poller, mail gateway) has just published reports of these channels."""
    now = time.time()
    for channel in set(channels):
        LAST_REPORT.labels(channel).set(now)


def responses_middleware(channel_of: dict[str, str]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Counts every answer of a channel route (``channel_of``: route path → channel) by status."""

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        resource = request.match_info.route.resource
        channel = channel_of.get(resource.canonical) if resource is not None else None
        if channel is None:
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            INGRESS_RESPONSES.labels(channel, str(exc.status)).inc()
            raise
        except Exception:
            INGRESS_RESPONSES.labels(channel, "500").inc()
            raise
        INGRESS_RESPONSES.labels(channel, str(response.status)).inc()
        return response

    return count


async def sample_kafka(settings: Settings) -> None:
    """One sample of the worker group's lag and of the replication of the pipeline's partitions."""
    from aiokafka.admin import AIOKafkaAdminClient

    from ..security import kafka_client_kwargs
    from .lag import consumer_lag
    from .telemetry import CONSUMER_LAG, CONSUMER_LAG_TOTAL

    rows = await consumer_lag(settings)
    for r in rows:
        CONSUMER_LAG.labels(r.topic, str(r.partition)).set(r.lag)
    CONSUMER_LAG_TOTAL.set(sum(r.lag for r in rows))

    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings), client_id="crm-ops-replication")
    await admin.start()
    try:
        described = await admin.describe_topics(None)
    finally:
        await admin.close()
    prefix = settings.topic_namespace + "."
    under = offline = 0
    for topic in described:
        if not str(topic.get("topic", "")).startswith(prefix):
            continue
        for p in topic.get("partitions") or ():
            if p.get("leader", -1) < 0:
                offline += 1
            if len(p.get("isr") or ()) < len(p.get("replicas") or ()):
                under += 1
    UNDER_REPLICATED.set(under)
    OFFLINE_PARTITIONS.set(offline)


def kafka_sampler(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp cleanup context that runs :func:`sample_kafka` every ``CRM_LAG_SAMPLE_S`` (0: never)."""

    async def run() -> None:
        while True:
            try:
                await asyncio.wait_for(sample_kafka(settings), timeout=max(settings.lag_sample_s * 2, 10))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("lag/replication sample failed: %r", exc)
            await asyncio.sleep(settings.lag_sample_s)

    async def ctx(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run()) if settings.lag_sample_s > 0 else None
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return ctx


def exported_metrics() -> dict[str, str]:
    """Every metric the code exports (name as scraped → type), found by importing every module of the
    package and reading prometheus_client's registry: a metric added anywhere is seen without a list."""
    import importlib
    from pathlib import Path

    from prometheus_client import REGISTRY

    root = Path(__file__).resolve().parents[1]
    failed = []
    # Files, not pkgutil: some packages (pipeline/sources) are namespace packages pkgutil skips.
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        try:
            importlib.import_module(name)
        except Exception as exc:  # reported: a module that cannot be imported hides its metrics
            failed.append(f"{name}: {exc!r}")
    if failed:
        raise ImportError("modules that could not be imported: " + "; ".join(failed))
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gauge": ("",),
        "info": ("_info",),
        "stateset": ("",),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    }
    out: dict[str, str] = {}
    for family in REGISTRY.collect():
        for suffix in suffixes.get(family.type, ("",)):
            out[family.name + suffix] = family.type
    return out
