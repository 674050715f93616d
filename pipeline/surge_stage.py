"""The surge stage: hits in, surge state in a Faust table, alerts out (issue #17; docs/surges.md).

::

    triage worker ──(per batch, one record of hits per kota|category)──▶ <ns>.surge-hits.v1
        ──▶ surge worker (`crm-pipeline surge run`, Faust app <CRM_WORKER_APP_ID>-surge)
              agent "surge" ──▶ table "surge-state" (changelog <app>-surge-state-changelog)
                            └─▶ <ns>.alerts.v1 (keyed by surge id)
              agent "surge-alerts" ──▶ CRM store (surges, surge_changes) + the agencies' outbox rows
              timer (CRM_SURGE_TICK_S) ──({"tick": now}, one per owned partition)──▶ <ns>.surge-hits.v1
                  (open surges subside and close without new reports, in order behind the hits)

The triage stage adds to the records it already publishes in its batch one record per kota ×
category it touched, an array of ~100-byte hits (one per report; a single hit, the first format, is
still read): the report's own path to the store is untouched. Keying the hit by kota × category is
the repartition: every kelurahan, kecamatan and the kota itself of one category land on one partition,
so one table value (:class:`~pipeline.processors.surge.GroupState`) holds everything a decision needs,
and a surge that spreads from a kelurahan to its kecamatan stays one surge. (Faust's ``group_by``
would do the same with a second hop: the worker would consume every report a second time, forward it
and consume it again, several times the CPU this stage may spend.) The surge worker is its own app and
process: a Faust app with a table pauses all its agents while it restores the table after a rebalance,
and the reports' path to the store must not wait for that.

Delivery is at-least-once with idempotent effects, as in the triage stage. Per batch:

1. each hit is applied to its group's state (a report id already counted changes nothing, so a
   redelivered report or a replayed batch never inflates a window);
2. the resulting alerts are published and confirmed by the broker;
3. only then are the touched states written to the table (changelog), and the input acked. Faust
   flushes the changelog before it commits offsets.

A crash between 2 and 3 replays the batch against the older state: the same decisions again (the
surge id is derived from the report that opened it), so the same records are published again, same
``surge_id`` and ``seq``; consumers keep one per pair. A rebalance hands a partition's states to the
next worker through the changelog.

Table writes name their partition explicitly (the hit's): a batch mixes partitions, and a state must
live in the changelog partition of its key or the next owner would not restore it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson
from prometheus_client import Counter, Histogram

from .deadletter import DeadLetter, SourcePosition
from .processors.surge import Baseline, GroupState, Hit, SurgeConfig, SurgeDetector, SurgeRecord
from .publish import Publisher, PublishError, make_producer
from .settings import Settings
from .topics import Topics

log = logging.getLogger("pipeline.surge")

SURGE_RECORDS = Counter("crm_surge_records_total", "surge state changes published", ["state", "category"])
SURGE_HITS = Counter("crm_surge_hits_total", "reports counted by the surge stage")
SURGE_BATCH = Histogram("crm_surge_batch_seconds", "time to apply one batch of hits")
TABLE = "surge-state"
RETRY_MAX_S = 10.0


def load_detector(settings: Settings) -> SurgeDetector:
    config = SurgeConfig.load(settings.surge_thresholds, settings.surge_windows)
    baseline = Baseline.load(settings.surge_baseline) if settings.surge_baseline else Baseline()
    return SurgeDetector(config, baseline)


class SurgeStage:
    """The surge agent's work, free of Faust's agent API so it can be driven and tested directly.

    ``table`` is any object with ``data`` (a mutable mapping of bytes → bytes) and
    ``send_changelog(partition, key, value)``: a Faust table, or a plain stand-in offline.
    """

    def __init__(self, settings: Settings, detector: SurgeDetector | None = None) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_namespace)
        self.detector = detector or load_detector(settings)
        self.publisher: Publisher | None = None
        self.lock = asyncio.Lock()
        self._cache: dict[bytes, tuple[bytes, GroupState]] = {}
        self._partition: dict[bytes, int] = {}

    async def start(self) -> None:
        if self.publisher is None:
            producer = make_producer(self.settings, client_id=f"{self.settings.worker_app_id}-surge")
            await producer.start()
            self.publisher = Publisher(self.settings, producer)

    async def stop(self) -> None:
        if self.publisher is not None:
            await self.publisher.producer.stop()
            self.publisher = None

    # ------------------------------------------------------------------------------- state access
    def state(self, table: Any, key: bytes) -> GroupState:
        """The group's state; the live object while the table still holds what it was saved as."""
        raw = table.data.get(key)
        cached = self._cache.get(key)
        if cached is not None and raw is not None and cached[0] is raw:
            return cached[1]
        state = GroupState.loads(raw) if raw else self.detector.new_state(key.decode())
        self._cache[key] = (raw, state)  # type: ignore[assignment]
        return state

    def put(self, table: Any, key: bytes, state: GroupState, partition: int) -> None:
        raw = state.dumps()
        table.data[key] = raw
        table.send_changelog(partition, key, raw)
        self._cache[key] = (raw, state)
        self._partition[key] = partition

    # -------------------------------------------------------------------------------------- batch
    async def process(self, table: Any, events: Sequence[Any], partition_of: Any = None) -> list[SurgeRecord]:
        """Apply a batch of hit and clock events; returns the alerts it published."""
        await self.start()
        async with self.lock:
            with SURGE_BATCH.time():
                records, touched, bad = self.apply(table, events, partition_of)
            for event, reason, code in bad:
                await self._dead_letter(event, reason, code)
            await self._publish(records)
            for key, (state, partition) in touched.items():
                self.put(table, key, state, partition)
        return records

    def apply(
        self, table: Any, events: Sequence[Any], partition_of: Any = None
    ) -> tuple[list[SurgeRecord], dict[bytes, tuple[GroupState, int]], list[tuple[Any, str, str]]]:
        """The CPU half of a batch: (records, touched states with their partitions, bad events)."""
        records: list[SurgeRecord] = []
        touched: dict[bytes, tuple[GroupState, int]] = {}
        bad: list[tuple[Any, str, str]] = []
        for event in events:
            partition = event.message.partition
            value = event.value or b""
            if value[:1] == b"{":  # the clock: {"tick": epoch seconds}
                try:
                    now = float(orjson.loads(value)["tick"])
                except Exception as exc:
                    bad.append((event, f"not a surge clock tick: {exc}"[:2000], "bad_tick"))
                    continue
                records.extend(self._tick(table, partition, now, touched, partition_of))
                continue
            try:
                hits = Hit.loads_many(value)
            except Exception as exc:  # a record this worker did not write, or a bug: keep it
                bad.append((event, f"not a surge hits record: {exc}"[:2000], "bad_hit"))
                continue
            for hit in hits:
                key = hit.group_key.encode()
                state = touched[key][0] if key in touched else self.state(table, key)
                records.extend(self.detector.observe(state, hit))
                touched[key] = (state, partition)
            SURGE_HITS.inc(len(hits))
        return records, touched, bad

    def _tick(
        self,
        table: Any,
        partition: int,
        now: float,
        touched: dict[bytes, tuple[GroupState, int]],
        partition_of: Any,
    ) -> list[SurgeRecord]:
        """Open surges of one partition see the clock move on (reports no longer needed to close)."""
        records: list[SurgeRecord] = []
        for key in list(table.data.keys()):
            p = self._partition.get(key)
            if p is None:
                p = self._partition[key] = partition_of(key) if partition_of else -1
            if p != partition:
                continue
            state = touched[key][0] if key in touched else self.state(table, key)
            if not state.incidents:
                continue
            out = self.detector.advance(state, now)
            if out:
                records.extend(out)
                touched[key] = (state, partition)
        return records

    async def send_ticks(self, partitions: set[int], now: float | None = None) -> None:
        """The clock as records on the hits topic, one per partition this worker owns.

        A tick is applied in order behind the hits already on its partition, so a worker catching
        up after an outage never closes a surge on the wall clock before it has counted the reports
        that arrived meanwhile; and a replay after a crash replays the same ticks, so it makes the
        same decisions."""
        await self.start()
        assert self.publisher is not None
        value = orjson.dumps({"tick": round(time.time() if now is None else now, 3)})
        producer = self.publisher.producer
        try:
            futures = [
                await producer.send(self.topics.surge_hits, value=value, partition=p)
                for p in sorted(partitions)
            ]
            await asyncio.wait_for(asyncio.gather(*futures), timeout=self.settings.produce_timeout_s)
        except Exception as exc:  # the next tick will do
            log.warning("surge clock tick not sent: %s", exc)

    # ------------------------------------------------------------------------------------- output
    async def _publish(self, records: list[SurgeRecord]) -> None:
        if not records:
            return
        out = [(self.topics.alerts, r.surge_id.encode(), r.dumps()) for r in records]
        await self._send_until_confirmed(out)
        for r in records:
            SURGE_RECORDS.labels(r.state, r.category).inc()
            log.info(
                "surge %s %s: %s at %s (%s), %d in %s, expected %.2f",
                r.surge_id,
                r.state,
                r.category,
                r.kelurahan or r.kecamatan or r.kota or r.kota_code,
                r.level,
                r.count,
                r.window,
                r.expected,
            )

    async def _send_until_confirmed(self, records: list[tuple[str, bytes | None, bytes]]) -> None:
        assert self.publisher is not None
        delay = 0.2
        while True:
            try:
                await self.publisher.send_many(records)
                return
            except PublishError as exc:
                log.warning("surge alerts not confirmed, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def _dead_letter(self, event: Any, reason: str, code: str = "bad_hit") -> None:
        m = event.message
        position = SourcePosition(topic=m.topic, partition=m.partition, offset=m.offset) if m else None
        letter = DeadLetter.build(
            raw=event.value or b"",
            cap=self.settings.dead_letter_raw_cap_bytes,
            stage="surge",
            code=code,
            reason=reason,
            source=position,
        )
        log.warning("dead letter (surge/%s): %s", code, reason)
        await self._send_until_confirmed(
            [(self.topics.deadletter, letter.raw_sha256.encode(), letter.dumps())]
        )


async def store_until_done(store: Any, records: list[SurgeRecord]) -> None:
    """The input is not acked until the store has the records, however long the database is away."""
    import psycopg

    delay = 0.2
    while True:
        try:
            await store.apply(records)
            return
        except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
            log.warning("surges not stored, retrying in %.1fs: %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)


def wire_surge(app: Any, settings: Settings) -> SurgeStage:
    """The surge agent, its table, its clock and the alerts agent on a Faust app."""
    import faust

    topics = Topics(settings.topic_namespace)
    stage = SurgeStage(settings)
    table = app.Table(
        TABLE,
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.topic_partitions,
        help="surge detector state per kota|category (pipeline/processors/surge.py GroupState)",
    )
    hits = app.topic(topics.surge_hits, key_type=bytes, value_type=bytes)

    from aiokafka.partitioner import DefaultPartitioner

    partitioner = DefaultPartitioner()

    def partition_of(key: bytes) -> int:
        """The partition the triage stage's producer chose for the key (murmur2, as Java's)."""
        n = app.consumer.topic_partitions(topics.surge_hits) or settings.topic_partitions
        every = list(range(n))
        return partitioner(key, every, every)

    @app.agent(hits, name="surge", concurrency=1)
    async def surge(stream: faust.StreamT) -> None:
        async for events in stream.noack_take(
            settings.surge_batch_size, within=settings.surge_batch_within_s
        ):
            await stage.process(table, events)
            for event in events:
                await stream.ack(event)

    @app.timer(interval=settings.surge_tick_s)
    async def surge_clock() -> None:
        if app.rebalancing:
            return  # partitions are moving: the next tick will do
        assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic == topics.surge_hits}
        if assigned:
            await stage.send_ticks(assigned)

    from .surge_store import SurgeStore

    store = SurgeStore(settings)
    alerts = app.topic(topics.alerts, key_type=bytes, value_type=bytes)

    @app.agent(alerts, name="surge-alerts", concurrency=1)
    async def surge_alerts(stream: faust.StreamT) -> None:
        """The alerts into the CRM store and the agencies' outbox rows (idempotent)."""
        async for events in stream.noack_take(500, within=1.0):
            records = []
            for event in events:
                try:
                    records.append(SurgeRecord.loads(event.value))
                except Exception as exc:  # not ours or from a newer major version: keep it for a person
                    await stage._dead_letter(event, f"not a surge alert record: {exc}"[:2000], "bad_alert")
            await store_until_done(store, records)
            for event in events:
                await stream.ack(event)

    @app.on_before_shutdown.connect
    async def _close(app: Any, **_: Any) -> None:  # pragma: no cover - shutdown path
        await stage.stop()
        await store.close()

    app.surge = stage
    app.surge_table = table
    return stage


def create_surge_app(settings: Settings) -> Any:
    """The surge detector's own Faust app (consumer group ``<CRM_WORKER_APP_ID>-surge``).

    Not in the triage worker's app: a Faust app with a table stops all its agents while it restores
    the table after a rebalance, and the reports' own path to the store must never wait for that."""
    import faust

    from .security import faust_broker_kwargs

    app = faust.App(
        f"{settings.worker_app_id}-surge",
        broker=[f"kafka://{h.strip()}" for h in settings.kafka_bootstrap.split(",")],
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        producer_acks=-1,
        web_enabled=False,
        **faust_broker_kwargs(settings),
    )
    wire_surge(app, settings)
    return app


def run_surge_worker(loglevel: str = "info") -> None:
    """``crm-pipeline surge run``: one surge worker (never more than the hits topic's partitions)."""
    import faust

    from .loop import use_event_loop
    from .ops.telemetry import start_worker_telemetry
    from .settings import get_settings
    from .worker import prepare

    settings = get_settings()
    use_event_loop(settings.worker_event_loop)
    asyncio.run(prepare(settings))
    # /metrics /healthz /readyz on CRM_SURGE_METRICS_PORT (0 = off): its own, beside a worker's on one host
    start_worker_telemetry(settings.model_copy(update={"worker_metrics_port": settings.surge_metrics_port}))
    app = create_surge_app(settings)
    faust.Worker(app, loglevel=loglevel, override_logging=False).execute_from_commandline()
