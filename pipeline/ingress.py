"""HTTP ingress for every push channel: read (size-capped), authenticate, parse, publish, answer.

A 202 means the broker has the report (idempotent producer, acks=all). Bad input is answered 4xx with
a reason and its raw request goes to the dead-letter topic; when the broker cannot take it, the
answer is 503 so the provider retries rather than believing it was stored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from .deadletter import DeadLetter
from .publish import Publisher, PublishError, make_producer
from .ratelimit import Decision, RateLimiter
from .settings import Settings, get_settings
from .sources.base import InboundRequest, PushSource, Rejected, parse_request, start_adapters, stop_adapters
from .sources.registry import discover

log = logging.getLogger("pipeline.ingress")

ACCEPTED = Counter("crm_ingress_reports_total", "reports accepted per channel", ["channel"])
REJECTED = Counter(
    "crm_ingress_rejected_total", "requests refused per channel and reason", ["channel", "code"]
)
UNAVAILABLE = Counter(
    "crm_ingress_unavailable_total", "requests answered 503: broker did not confirm", ["channel"]
)
LATENCY = Histogram(
    "crm_ingress_accept_seconds",
    "time from request to answer",
    ["channel"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

PUBLISHER: web.AppKey[Publisher] = web.AppKey("publisher", Publisher)
LIMITER: web.AppKey[RateLimiter] = web.AppKey("limiter", RateLimiter)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


async def _read_capped(request: web.Request, cap: int) -> tuple[bytes, bool]:
    """Read at most ``cap`` bytes; report whether the body was larger (never buffer an attacker's GBs)."""
    if request.content_length is not None and request.content_length > cap:
        return await request.content.read(min(cap, 64 * 1024)), True
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            return b"".join(chunks)[:cap], True


def _inbound(request: web.Request, body: bytes) -> InboundRequest:
    return InboundRequest(
        method=request.method,
        path=request.path,
        headers=request.headers,
        query=request.query,
        body=body,
        remote=request.remote,
        url=str(request.url),
    )


def push_handler(adapter: PushSource, settings: Settings):
    """The request handler of one push route (the ingress mounts one per adapter; the consumer API
    mounts the Open311 one so integrators have a single base URL)."""
    channel = adapter.channel

    def reply(
        request: web.Request, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> web.Response:
        data, ctype = adapter.respond(_inbound(request, b""), status, body)
        return web.Response(status=status, body=data, content_type=ctype, headers=headers)

    async def dead_letter(
        publisher: Publisher, body: bytes, ctype: str | None, code: str, reason: str, total: int | None = None
    ) -> None:
        letter = DeadLetter.build(
            raw=body,
            cap=settings.dead_letter_raw_cap_bytes,
            total_size=total,
            channel=channel,
            stage="ingress",
            code=code,
            reason=reason,
            content_type=ctype,
        )
        try:
            await publisher.dead_letter(letter)
        except PublishError:
            log.error("dead letter for channel %s could not be published (%s): %s", channel, code, reason)

    async def throttle(
        publisher: Publisher,
        body: bytes,
        ctype: str | None,
        decision: Decision,
        ids: list[str],
        ip: str | None,
    ) -> None:
        """A throttled request or report is flagged, not dropped: counted and dead-lettered (rate_limited)."""
        REJECTED.labels(channel, "rate_limited").inc()
        log.warning("throttled %s (%s rate limit)", channel, decision.scope, extra={"report_id": ids[:1]})
        letter = DeadLetter.build(
            raw=body,
            cap=settings.dead_letter_raw_cap_bytes,
            channel=channel,
            stage="ingress",
            code="rate_limited",
            reason=f"{decision.scope} rate limit exceeded; retry after {decision.retry_after_s}s",
            content_type=ctype,
            report_id=ids[0] if ids else None,
            meta={"scope": decision.scope, "report_ids": ids, "client_ip": ip},
        )
        try:
            await publisher.dead_letter(letter)
        except PublishError:
            log.error("rate-limited request on %s could not be dead-lettered", channel)

    def too_many(request: web.Request, decision: Decision) -> web.Response:
        return reply(
            request,
            429,
            {"error": "too many reports; please retry later", "code": "rate_limited"},
            headers={"Retry-After": str(decision.retry_after_s)},
        )

    async def handle(request: web.Request) -> web.Response:
        publisher = request.app[PUBLISHER]
        with LATENCY.labels(channel).time():
            if request.method == "GET":
                answer = adapter.handshake(_inbound(request, b""))
                if answer is None:
                    return reply(request, 405, {"error": "this channel accepts POST only", "code": "method"})
                status, text = answer
                return web.Response(status=status, text=text)

            body, oversized = await _read_capped(request, settings.max_body_bytes)
            ctype = request.headers.get("Content-Type")
            kept_body = adapter.scrub(body, ctype)  # what the raw topic and dead letters may keep
            if oversized:
                reason = f"body larger than {settings.max_body_bytes} bytes"
                REJECTED.labels(channel, "too_large").inc()
                total = request.content_length or settings.max_body_bytes + 1
                await dead_letter(publisher, kept_body, ctype, "too_large", reason, total)
                return reply(request, 413, {"error": reason, "code": "too_large"})

            inbound = _inbound(request, body)
            try:
                adapter.authenticate(inbound)
            except Rejected as exc:
                # Forged or unauthenticated: counted and logged, never stored (not citizen input).
                REJECTED.labels(channel, exc.code).inc()
                log.warning("refused %s request from %s: %s", channel, request.remote, exc.code)
                return reply(request, exc.status, {"error": exc.reason, "code": exc.code})

            limiter = request.app[LIMITER]
            client_ip = limiter.client_ip(request.remote, request.headers)
            decision = await limiter.check_ip(channel, client_ip)
            if not decision.allowed:
                await throttle(publisher, kept_body, ctype, decision, [], client_ip)
                return too_many(request, decision)

            try:
                result = await parse_request(adapter, inbound)  # awaited when the adapter's parse is async
            except Rejected as exc:
                REJECTED.labels(channel, exc.code).inc()
                await dead_letter(publisher, kept_body, ctype, exc.code, exc.reason)
                # A provider that retries every non-2xx (Telegram) is answered the adapter's refused_status.
                status = adapter.refused_status or exc.status
                return reply(request, status, {"error": exc.reason, "code": exc.code, "field": exc.field})
            except Exception as exc:  # an adapter bug must not lose the payload
                log.exception("adapter %s crashed on a request", channel)
                REJECTED.labels(channel, "adapter_error").inc()
                await dead_letter(publisher, kept_body, ctype, "adapter_error", f"adapter raised {exc!r}")
                return reply(
                    request, 400, {"error": "the request could not be processed", "code": "adapter_error"}
                )

            limited: list[tuple[str, Decision]] = []
            kept = []
            for report in result.reports:
                verdict = await limiter.check_sender(channel, report.reporter.id)
                if verdict.allowed:
                    kept.append(report)
                else:
                    limited.append((report.report_id, verdict))
            if limited:
                await throttle(publisher, kept_body, ctype, limited[0][1], [i for i, _ in limited], client_ip)
                if not kept:
                    return too_many(request, limited[0][1])
                result.reports = kept  # a batch (Meta): the other senders' reports go on

            try:
                if result.reports:
                    await publisher.publish_reports(result.reports, kept_body, ctype)
            except PublishError as exc:
                UNAVAILABLE.labels(channel).inc()
                log.error("broker unavailable, answering 503 on %s: %s", channel, exc)
                return reply(
                    request,
                    503,
                    {
                        "error": "the report could not be stored right now; please retry",
                        "code": "unavailable",
                    },
                    headers={"Retry-After": "5"},
                )
            ACCEPTED.labels(channel).inc(len(result.reports))
            if result.response is not None:
                return reply(request, result.status, dict(result.response))
            ids = [r.report_id for r in result.reports]
            return reply(
                request,
                result.status,
                {"status": "accepted", "report_id": ids[0] if ids else None, "report_ids": ids},
            )

    return handle


async def _health(_: web.Request) -> web.Response:
    return _json(200, {"status": "ok"})


async def _ready(request: web.Request) -> web.Response:
    producer = request.app[PUBLISHER].producer
    brokers = producer.client.cluster.brokers()
    # Readiness is the broker only (the ingress needs nothing else to accept a report); Redis and the
    # store are reported beside it so one probe shows the state of everything the pipeline uses.
    from .ops.health import check_database, check_redis

    settings = request.app[PUBLISHER].settings
    deps = {
        name: {"ok": ok, "detail": detail}
        for name, (ok, detail) in (
            ("redis", await check_redis(settings, wait_s=1.0)),
            ("database", await check_database(settings, wait_s=1.0)),
        )
    }
    if not brokers:
        return _json(503, {"status": "not ready", "kafka": "no broker known", "dependencies": deps})
    return _json(200, {"status": "ready", "kafka": f"{len(brokers)} broker(s)", "dependencies": deps})


async def _metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(settings: Settings | None = None, adapters: list[PushSource] | None = None) -> web.Application:
    settings = settings or get_settings()
    if adapters is None:
        adapters = [cls(settings) for cls in discover().values() if issubclass(cls, PushSource)]
    # The body cap is enforced by _read_capped; aiohttp's own limit must not cut in first.
    from .ops.slo import kafka_sampler, responses_middleware

    app = web.Application(
        client_max_size=settings.max_body_bytes * 4,
        middlewares=[responses_middleware({a.route: a.channel for a in adapters})],
    )
    for adapter in adapters:
        handler = push_handler(adapter, settings)
        # GET only where the provider verifies its webhook with one (Meta); elsewhere aiohttp answers 405.
        has_handshake = type(adapter).handshake is not PushSource.handshake
        for method in {*adapter.methods, *(["GET"] if has_handshake else [])}:
            app.router.add_route(method, adapter.route, handler)
    app.router.add_get("/healthz", _health)
    app.router.add_get("/readyz", _ready)
    app.router.add_get("/metrics", _metrics)
    from .openapi import serve_document

    app.router.add_get("/openapi.json", serve_document("ingress"))

    app.cleanup_ctx.append(push_context(settings, "crm-ingress", adapters))
    app.cleanup_ctx.append(kafka_sampler(settings))  # lag stays known while no worker runs
    return app


def push_context(settings: Settings, client_id: str, adapters: Sequence[PushSource] = ()):
    """What a push handler needs in its app: a started producer (publisher), the rate limiter, and its
    adapters started (``start()``, before the first request) and stopped (``stop()``, at shutdown)."""

    async def lifecycle(app: web.Application):
        producer = make_producer(settings, client_id=client_id)
        await producer.start()
        app[PUBLISHER] = Publisher(settings, producer)
        app[LIMITER] = RateLimiter(settings)
        try:
            await start_adapters(adapters)
        except BaseException:
            await producer.stop()
            await app[LIMITER].aclose()
            raise
        try:
            yield
        finally:
            await stop_adapters(adapters)
            await app[PUBLISHER].producer.stop()  # the publisher may have replaced a dead producer
            await app[LIMITER].aclose()

    return lifecycle


async def serve(host: str | None = None, port: int | None = None) -> None:
    settings = get_settings()
    runner = web.AppRunner(build_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host or settings.ingress_host, port or settings.ingress_port)
    await site.start()
    log.info(
        "ingress listening on http://%s:%s", host or settings.ingress_host, port or settings.ingress_port
    )
    import asyncio
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # a graceful stop: adapters' stop(), producer flushed
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("ingress stopping")
    finally:
        try:  # a producer flushing to a dead broker must not hold the stop forever
            await asyncio.wait_for(runner.cleanup(), timeout=15)
        except TimeoutError:
            log.error("ingress stop took longer than 15 s; leaving anyway")
