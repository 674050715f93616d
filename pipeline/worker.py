"""The Faust worker: one agent that only wires the processors and the sink together.

``triage``  ingest topics → decode → exact dedup → normalise/classify/locate/route/group
            → CRM store (PostgreSQL, batched, idempotent)  ┐ at the same time
            → normalised topic (internal, full) + routed or ┘
              triage topic (public projection)

The store is written inside the same batch rather than by a second agent reading the normalised
topic back: that second hop cost every report another Kafka consume and decode, about 40% of the
worker's CPU in the profile of issue #5.

Delivery is at-least-once with idempotent effects (faust's exactly-once has open duplicate bugs):
each batch is taken with ``noack_take`` and acked only after its rows are committed and its records
confirmed by the broker. Processing errors never escape the agent: the report goes to the dead-letter
topic with the reason and the flow goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Tally
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
import redis.asyncio as aioredis
from faust.types import EventT
from prometheus_client import Counter, Histogram

from . import faust_consumer
from .deadletter import DeadLetter, SourcePosition
from .envelope import Report
from .hooks import wrap_triage_chain
from .learning.registry import Decision
from .learning.watcher import ModelWatcher
from .ops.slo import observe_stored
from .ops.telemetry import observe_triaged, start_worker_telemetry
from .processors import redis_batch
from .processors.cases_redis import RedisCaseGrouper
from .processors.chain import TriageChain, apply_case, settle_heap
from .processors.dedup import RedisDedupStore
from .processors.group import GroupItem
from .processors.normalise import mask_pii
from .processors.surge import hit_records
from .publish import Publisher, PublishError, make_producer
from .security import faust_broker_kwargs
from .settings import Settings, get_settings
from .sinks.postgres import PostgresReportSink, migrate
from .sources.registry import channel_ids
from .topics import Topics, ensure_topics
from .worker_topics import all_topic_specs

log = logging.getLogger("pipeline.worker")

PROCESSED = Counter("crm_worker_reports_total", "reports through triage per channel", ["channel"])
DEDUP_HITS = Counter("crm_dedup_hits_total", "duplicates dropped by exact dedup", ["channel", "reason"])
ROUTED = Counter("crm_routed_total", "reports routed per destination", ["routed_to", "agency"])
DEAD = Counter("crm_dead_letters_total", "dead letters written per stage and code", ["stage", "code"])
STORED = Counter("crm_store_rows_total", "report rows newly stored in the CRM store")
SINK_BATCH = Histogram("crm_sink_batch_seconds", "time to store one batch in the CRM store")

RETRY_MAX_S = 10.0


@dataclass
class Triaged:
    """A batch between the two halves of the triage stage."""

    fresh: list[Report]  # passed the dedup check (the triage may still have refused some)
    processed: list[Report]
    records: list[tuple[str, bytes | None, bytes]]
    decisions: list[Decision] = field(default_factory=list)  # live + shadow, while a shadow runs


class Stages:
    """The agent's work, free of Faust so it can be driven and tested directly."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_namespace)
        base = TriageChain(target_precision=settings.route_target_precision)
        self.known_agencies = set(base.router.agencies())  # type: ignore[attr-defined]
        self.known_kota = set(base.router.kota_codes())  # type: ignore[attr-defined]
        # the registry's live model routes, its shadow decides beside it (issue #16)
        self.models = ModelWatcher(settings.database_url.get_secret_value(), base, settings.model_poll_s)
        self.chain = wrap_triage_chain(base, settings)  # plug-in hooks (tests/chaos); none by default
        self._started = asyncio.Lock()
        self.publisher: Publisher | None = None
        self.dedup: RedisDedupStore | None = None
        self.cases: RedisCaseGrouper | None = None
        self.sink: PostgresReportSink | None = None

    async def start(self) -> None:
        async with self._started:
            if self.publisher is not None:
                return
            producer = make_producer(self.settings, client_id=f"{self.settings.worker_app_id}-out")
            await producer.start()
            self.publisher = Publisher(self.settings, producer)
            client = aioredis.from_url(self.settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
            self.dedup = RedisDedupStore(
                client,
                self.settings.topic_namespace,
                self.settings.dedup_ttl_s,
                self.settings.dedup_text_window_s,
            )
            self.cases = RedisCaseGrouper(client, self.settings.topic_namespace)
            self.sink = PostgresReportSink(self.settings)
            await self.models.refresh()  # the first batch already routes with the live model
            self.models.start()

    async def stop(self) -> None:
        await self.models.stop()
        if self.publisher is not None:
            await self.publisher.producer.stop()
        if self.dedup is not None:
            await redis_batch.aclose(self.dedup.r)
        if self.sink is not None:
            await self.sink.close()

    # ------------------------------------------------------------------ helpers
    async def _dead_letter(
        self, stage: str, code: str, reason: str, raw: bytes, position: Any, **extra: Any
    ) -> None:
        letter = DeadLetter.build(
            raw=raw,
            cap=self.settings.dead_letter_raw_cap_bytes,
            stage=stage,
            code=code,
            reason=reason,
            source=position,
            **extra,
        )
        DEAD.labels(stage, code).inc()
        log.warning(
            "dead letter (%s/%s): %s",
            stage,
            code,
            reason,
            extra={"report_id": letter.report_id, "stage": stage},
        )
        await self._send_until_confirmed(
            [(self.topics.deadletter, (letter.report_id or letter.raw_sha256).encode(), letter.dumps())]
        )

    async def _dead_letter_report(self, stage: str, code: str, reason: str, report: Report) -> None:
        """A decoded report that a stage could not handle, with its envelope as the raw payload."""
        await self._dead_letter(
            stage, code, reason, report.dumps(), None, report_id=report.report_id, channel=report.channel
        )

    async def _send_until_confirmed(self, records: Sequence[tuple[str, bytes | None, bytes]]) -> None:
        """The input is not acked until the outputs are on the broker, however long that takes."""
        assert self.publisher is not None
        delay = 0.2
        while True:
            try:
                await self.publisher.send_many(records)
                return
            except PublishError as exc:
                log.warning("publish failed, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    @staticmethod
    def _position(event: EventT) -> SourcePosition:
        m = event.message
        return SourcePosition(topic=m.topic, partition=m.partition, offset=m.offset)

    def _decode(self, events: Sequence[EventT]) -> tuple[list[Report], list[tuple[EventT, str]]]:
        reports, bad = [], []
        for event in events:
            try:
                reports.append(Report.loads(event.value))
            except Exception as exc:  # any undecodable record, whatever the cause
                bad.append((event, f"not a valid report envelope: {exc}"[:2000]))
        return reports, bad

    def records_of(self, report: Report) -> list[tuple[str, bytes, bytes]]:
        """A triaged report's records: the normalised topic's, then :meth:`routed_records`, from one dump."""
        dumped = report.model_dump(exclude_none=True)
        key = report.report_id.encode()
        return [(self.topics.normalised, key, orjson.dumps(dumped)), *self.routed_records(report, dumped)]

    def routed_records(
        self, report: Report, dumped: dict[str, Any] | None = None
    ) -> list[tuple[str, bytes, bytes]]:
        """Public projection to the agency and region topics, or to triage when it needs a person."""
        public = report.public(dumped)
        t = report.triage
        public["text"] = t.public_text if t is not None and t.public_text else mask_pii(report.text)
        value = orjson.dumps(public)
        key = report.report_id.encode()
        if t is not None and t.routed_to == "agency" and t.agency in self.known_agencies:
            out = [(self.topics.routed_agency(t.agency), key, value)]
            if t.region and t.region.kota_code in self.known_kota:
                out.append((self.topics.routed_region(t.region.kota_code), key, value))
            return out
        return [(self.topics.triage, key, value)]

    # ------------------------------------------------------------------ triage stage
    async def triage_batch(self, events: Sequence[EventT]) -> None:
        await self.triage_finish(await self.triage_prepare(events))

    async def triage_prepare(self, events: Sequence[EventT]) -> Triaged:
        """The CPU half of a batch: decode, dedup, triage, group, and the records to publish."""
        await self.start()
        assert self.dedup is not None
        reports, bad = self._decode(events)
        for event, reason in bad:
            await self._dead_letter(
                "decode", "bad_envelope", reason, event.value or b"", self._position(event)
            )

        try:
            fresh, dups = await self.dedup.split(reports)
        except (aioredis.RedisError, OSError) as exc:
            # Without Redis the report-id check falls back to the store's unique key; flow goes on.
            log.warning("dedup store unavailable, passing the batch on: %s", exc)
            fresh, dups = list(reports), []
        for dup in dups:
            DEDUP_HITS.labels(dup.report.channel, dup.reason.split(":")[0]).inc()
            log.info(
                "duplicate of %s: %s",
                dup.duplicate_of,
                dup.reason,
                extra={"report_id": dup.report.report_id, "channel": dup.report.channel},
            )

        processed, failed = self._triage(fresh)
        await self._group(processed)
        records: list[tuple[str, bytes | None, bytes]] = []
        # Metrics counted per batch: a labelled increment per report was ~8 µs of it (issue #19).
        channels: Tally[str] = Tally()
        routes: Tally[tuple[str, str]] = Tally()
        for report in processed:
            records.extend(self.records_of(report))
            channels[report.channel] += 1
            t = report.triage
            routes[(t.routed_to if t else "triage", (t.agency if t else None) or "-")] += 1
        if self.settings.surge_enabled:
            records.extend((self.topics.surge_hits, k, v) for k, v in hit_records(processed))
        for channel, n in channels.items():
            PROCESSED.labels(channel).inc(n)
        for (routed_to, agency), n in routes.items():
            ROUTED.labels(routed_to, agency).inc(n)
        observe_triaged(processed)
        for report, reason in failed:
            await self._dead_letter_report("triage", "processor_error", reason, report)
        return Triaged(fresh, processed, records, self.models.decisions(processed))

    async def triage_finish(self, batch: Triaged) -> None:
        """The I/O half: rows committed and records confirmed (both at once), then remembered."""
        assert self.dedup is not None
        refused = (
            await asyncio.gather(
                self._store(batch.processed),
                self._send_until_confirmed(batch.records),
                self.models.record(batch.decisions),
            )
        )[0]
        try:
            await self.dedup.remember([r for r in batch.processed if r.report_id not in refused])
        except (aioredis.RedisError, OSError) as exc:
            log.warning("could not remember batch in the dedup store: %s", exc)
        finally:
            self.dedup.release(batch.fresh)

    async def _store(self, reports: list[Report]) -> set[str]:
        """Rows committed (retrying until the database answers); returns the ids it refused for good."""
        assert self.sink is not None
        if not reports:
            return set()
        with SINK_BATCH.time():
            result = await self.sink.write_until_stored(reports)
        STORED.inc(result.stored)
        for report, reason in result.poison:
            await self._dead_letter_report("sink", "store_refused", reason, report)
        refused = {report.report_id for report, _ in result.poison}
        observe_stored(r for r in reports if r.report_id not in refused)
        return refused

    async def _group(self, reports: list[Report]) -> None:
        """Cases across workers (Redis); without Redis each report opens its own case, flow goes on."""
        assert self.cases is not None
        try:
            decisions = await self.cases.assign([GroupItem.from_report(r) for r in reports])
        except (aioredis.RedisError, OSError) as exc:
            log.warning("case store unavailable, grouping skipped for %d reports: %s", len(reports), exc)
            return
        for report, decision in zip(reports, decisions, strict=True):
            apply_case(report, decision)

    def _triage(self, reports: list[Report]) -> tuple[list[Report], list[tuple[Report, str]]]:
        """Triage the batch; if it raises, isolate the poison report(s) one by one. Returns the
        triaged reports and the failed ones with the reason (returned, not kept on ``self``: the
        agent's instances share this object and have batches in flight at once)."""
        failed: list[tuple[Report, str]] = []
        try:
            return self.chain.process(reports), failed
        except Exception:
            log.exception("triage raised on a batch of %d; isolating", len(reports))
        ok: list[Report] = []
        for report in reports:
            for attempt in (1, 2):
                try:
                    ok.extend(self.chain.process([report]))
                    break
                except Exception as exc:
                    if attempt == 2:
                        failed.append((report, f"processor raised {exc!r} (after {attempt} attempts)"))
        return ok, failed


def faust_app(settings: Settings) -> faust.App:
    """The worker's Faust app and consumer settings (the bench's Faust floor runs on the same)."""
    app = faust.App(
        settings.worker_app_id,
        broker=[f"kafka://{h.strip()}" for h in settings.kafka_bootstrap.split(",")],
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        consumer_max_fetch_size=settings.worker_fetch_partition_bytes,
        producer_acks=-1,
        web_enabled=settings.worker_web_port > 0,
        web_port=settings.worker_web_port or 6066,
        web_bind="127.0.0.1",
        web_in_thread=False,
        **faust_broker_kwargs(settings),
    )
    faust_consumer.install(app)  # no four tasks per message delivered (issue #19)
    return app


def create_app(settings: Settings | None = None) -> tuple[faust.App, Stages]:
    settings = settings or get_settings()
    topics = Topics(settings.topic_namespace)
    app = faust_app(settings)
    stages = Stages(settings)
    ingest = app.topic(*[topics.ingest(c) for c in channel_ids()], schema=faust_consumer.RawSchema())
    size, within = settings.worker_batch_size, settings.worker_batch_within_s

    @app.agent(ingest, name="triage", concurrency=settings.worker_concurrency)
    async def triage(stream: faust.StreamT) -> None:
        # Two batches in flight: while one is being stored and published, the next is triaged.
        # Each is acked once its own outputs are confirmed (faust commits only contiguous offsets).
        finishing: asyncio.Future | None = None

        async def finish(batch: Triaged, events: Sequence[EventT]) -> None:
            await stages.triage_finish(batch)
            for event in events:
                await stream.ack(event)

        try:
            ahead = settings.worker_take_ahead
            take = (
                faust_consumer.take_ahead(stream, size, within, ahead)
                if ahead > 0
                else stream.noack_take(size, within=within)
            )
            async for events in take:
                batch = await stages.triage_prepare(events)
                if finishing is not None:
                    await finishing
                finishing = asyncio.ensure_future(finish(batch, events))
                if not settings.worker_pipelined:
                    await finishing
        finally:  # stopping: an unfinished batch is not acked, so it is processed again (idempotent)
            if finishing is not None and not finishing.done():
                finishing.cancel()

    app.stages = stages  # type: ignore[attr-defined]
    return app, stages


async def prepare(settings: Settings) -> None:
    """Topics and database schema exist before any agent consumes."""
    await ensure_topics(settings, all_topic_specs(settings))
    await migrate(settings)


def run_worker(loglevel: str = "info") -> None:
    from .loop import use_event_loop

    settings = get_settings()
    use_event_loop(settings.worker_event_loop)
    asyncio.run(prepare(settings))
    start_worker_telemetry(settings)  # /metrics /healthz /readyz on CRM_WORKER_METRICS_PORT (0 = off)
    app, stages = create_app(settings)
    settle_heap()
    worker = faust.Worker(app, loglevel=loglevel, override_logging=False)

    @app.on_before_shutdown.connect
    async def _close(app: faust.App, **_: Any) -> None:  # pragma: no cover - shutdown path
        await stages.stop()

    worker.execute_from_commandline()
