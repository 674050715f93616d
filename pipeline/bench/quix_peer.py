"""The Quix Streams peer: the worker's processors on the library a Python team would pick instead of Faust.

The same batch path as the worker (:class:`pipeline.worker.Stages`: decode, exact dedup in Redis,
``TriageChain``, case grouping in Redis, the idempotent PostgreSQL sink, the normalised and routed
records, dead letters), on Quix Streams' consumer, checkpoints and producer (librdkafka) instead of
Faust's and aiokafka's. A ``BaseSink`` collects the records of a checkpoint (every
``CRM_WORKER_BATCH_SIZE`` records or ``CRM_WORKER_BATCH_WITHIN_S`` seconds, the worker's batch) and
runs the batch on ``flush``: Quix commits the offsets only after ``flush`` returned, so rows are
committed and records confirmed before their input is acked, the worker's promise.

Run as ``python -m pipeline.bench.quix_peer`` with the bench namespace's ``CRM_*`` environment
(``CRM_WORKER_APP_ID`` is the consumer group) and ``.venv/bench-peer`` first on ``PYTHONPATH``
(:mod:`.peer_env`); it runs until terminated.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from ..processors import redis_batch
from ..processors.cases_redis import RedisCaseGrouper
from ..processors.dedup import RedisDedupStore
from ..settings import Settings, get_settings
from ..sinks.postgres import PostgresReportSink
from ..sources.registry import channel_ids
from ..topics import Topics
from ..worker import RETRY_MAX_S, Stages

try:  # the bench extra, on the peer's path only (.venv/bench-peer): without it the module still imports
    from quixstreams import Application
    from quixstreams.sinks import BaseSink
except ImportError:
    Application, BaseSink = None, object  # type: ignore[assignment,misc]

log = logging.getLogger("pipeline.bench.quix_peer")


class _Message:
    __slots__ = ("offset", "partition", "topic")

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset


class _Event:
    """What :class:`Stages` reads from a Faust event."""

    __slots__ = ("message", "value")

    def __init__(self, value: bytes, message: _Message) -> None:
        self.value, self.message = value, message


class QuixStages(Stages):
    """The worker's stages, publishing through the Quix application's producer (``app.get_producer()``)."""

    def __init__(self, settings: Settings, producer: Any) -> None:
        super().__init__(settings)
        self.producer = producer

    async def start(self) -> None:
        if self.dedup is not None:
            return
        client = aioredis.from_url(self.settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        s = self.settings
        self.dedup = RedisDedupStore(client, s.topic_namespace, s.dedup_ttl_s, s.dedup_text_window_s)
        self.cases = RedisCaseGrouper(client, s.topic_namespace)
        self.sink = PostgresReportSink(s)

    async def _send_until_confirmed(self, records: Sequence[tuple[str, bytes | None, bytes]]) -> None:
        """Produce, then wait in a thread until librdkafka has every delivery report (the store's
        transaction runs meanwhile, as in the worker); failed records are sent again."""
        delay, pending = 0.2, list(records)
        while pending:
            failed: list[tuple[str, bytes | None, bytes]] = []
            for rec in pending:
                topic, key, value = rec
                self.producer.produce(
                    topic, value, key, on_delivery=lambda e, _m, rec=rec, out=failed: e and out.append(rec)
                )
            left = await asyncio.to_thread(self.producer.flush, self.settings.produce_timeout_s)
            if not left and not failed:
                return
            log.warning("%d records not confirmed, sending them again in %.1fs", left or len(failed), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
            if not left:  # every delivery report is in: only the failed ones again
                pending = failed

    async def stop(self) -> None:
        self.producer.flush(self.settings.produce_timeout_s)
        if self.dedup is not None:
            await redis_batch.aclose(self.dedup.r)
        if self.sink is not None:
            await self.sink.close()


class StagesSink(BaseSink):
    """One batch per checkpoint, across partitions (as Faust's ``take`` merges them)."""

    def __init__(self, stages: QuixStages) -> None:
        super().__init__()
        self.stages = stages
        self.loop = asyncio.new_event_loop()
        self.events: list[_Event] = []

    def add(
        self,
        value: Any,
        key: Any,
        timestamp: int,
        headers: Any,
        topic: str,
        partition: int,
        offset: int,
    ) -> None:
        self.events.append(_Event(value, _Message(topic, partition, offset)))

    def flush(self) -> None:
        if not self.events:
            return
        events, self.events = self.events, []
        self.loop.run_until_complete(self.stages.triage_batch(events))  # type: ignore[arg-type]


def main() -> None:
    if Application is None:
        raise SystemExit("quixstreams is not installed: run the peer with .venv/bench-peer on PYTHONPATH")
    logging.basicConfig(level=logging.WARNING)
    settings = get_settings()
    topics = Topics(settings.topic_namespace)
    compression = settings.producer_compression
    with tempfile.TemporaryDirectory(prefix="crm-quix-state-") as state:
        app = Application(
            broker_address=settings.kafka_bootstrap,
            consumer_group=settings.worker_app_id,
            auto_offset_reset="earliest",
            commit_every=settings.worker_batch_size,
            commit_interval=settings.worker_batch_within_s,
            auto_create_topics=False,
            use_changelog_topics=False,
            state_dir=state,
            loglevel="WARNING",
            producer_extra_config={
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": settings.producer_linger_ms,
                "compression.type": compression,
            },
        )
        stages = QuixStages(settings, app.get_producer())
        sink = StagesSink(stages)
        for channel in channel_ids():
            topic = app.topic(topics.ingest(channel), key_deserializer="bytes", value_deserializer="bytes")
            app.dataframe(topic).sink(sink)
        try:
            app.run()
        finally:
            sink.loop.run_until_complete(stages.stop())


if __name__ == "__main__":
    main()
