"""Publishing to Kafka with delivery confirmed before anything is acknowledged.

Used by the ingress (a 202 is sent only after the broker has the report) and by the worker (input
offsets are acked only after the outputs are on the broker). Producers are idempotent (acks=all).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from aiokafka.partitioner import DefaultPartitioner

from .deadletter import DeadLetter
from .envelope import RawRef, Report
from .ops.slo import mark_intake
from .security import kafka_client_kwargs
from .settings import Settings
from .topics import Topics


class PublishError(RuntimeError):
    """The broker did not confirm in time: the caller must not acknowledge the input."""


#: After one of these aiokafka's idempotent sender stops for good (seen after a broker restart under
#: load: OutOfOrderSequenceNumber on every later send). Only a new producer (new producer id) sends again.
PRODUCER_FATAL = (OutOfOrderSequenceNumber, ProducerFenced, UnknownProducerId, InvalidProducerEpoch)


def make_producer(settings: Settings, client_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **kafka_client_kwargs(settings),
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=settings.producer_linger_ms,
        compression_type=None if settings.producer_compression == "none" else settings.producer_compression,
        max_batch_size=256 * 1024,
        request_timeout_ms=int(settings.produce_timeout_s * 1000),
    )


class Publisher:
    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.producer = producer
        self.topics = Topics(settings.topic_namespace)
        self._broken: AIOKafkaProducer | None = None  # a producer whose sender died (PRODUCER_FATAL)
        self._renewing = asyncio.Lock()

    def _check_fatal(self, exc: BaseException, producer: AIOKafkaProducer) -> None:
        if isinstance(exc, PRODUCER_FATAL):
            self._broken = producer

    async def _renew(self) -> None:
        """Replace a producer whose sender died; until a new one starts, sends keep failing (503/retry)."""
        async with self._renewing:
            old = self._broken
            if old is None or old is not self.producer:
                self._broken = None
                return
            fresh = make_producer(self.settings, client_id=old.client._client_id)
            try:
                await fresh.start()
            except KafkaError as exc:
                await fresh.stop()
                raise PublishError(f"could not start a new producer: {exc!r}") from exc
            self.producer, self._broken = fresh, None
            try:
                await old.stop()
            except Exception:  # noqa: S110 - the old producer is dead already; its records are retried
                pass

    async def _confirm(self, futures: Sequence[asyncio.Future], producer: AIOKafkaProducer) -> None:
        try:
            await asyncio.wait_for(asyncio.gather(*futures), timeout=self.settings.produce_timeout_s)
        except (TimeoutError, KafkaError) as exc:
            for f in futures:
                f.cancel()
            self._check_fatal(exc, producer)
            raise PublishError(f"broker did not confirm delivery: {exc!r}") from exc

    async def send_many(self, records: Sequence[tuple[str, bytes | None, bytes]]) -> None:
        """Send (topic, key, value) records and wait until the broker has all of them."""
        if self._broken is not None:
            await self._renew()
        producer = self.producer
        try:
            futures = await _send_batched(producer, records)
        except KafkaError as exc:
            self._check_fatal(exc, producer)
            raise PublishError(f"broker refused the records: {exc!r}") from exc
        await self._confirm(futures, producer)

    async def send_many_retrying(
        self, records: Sequence[tuple[str, bytes | None, bytes]], attempts: int = 5
    ) -> None:
        """``send_many`` with bounded backoff (0.5 s, 1 s, 2 s, ...) for batch commands; the last
        failure is raised so the command can report it."""
        for attempt in range(attempts):
            try:
                await self.send_many(records)
                return
            except PublishError:
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.5 * 2**attempt)

    async def publish_reports(self, reports: Sequence[Report], raw: bytes, content_type: str | None) -> None:
        """Raw payload on the raw topic, each report on its channel's ingest topic, keyed by report id."""
        sha = hashlib.sha256(raw).hexdigest()
        ref = RawRef(topic=self.topics.raw, key=sha, sha256=sha, size=len(raw), content_type=content_type)
        records: list[tuple[str, bytes | None, bytes]] = [(self.topics.raw, sha.encode(), raw)]
        for report in reports:
            report.raw_ref = ref
            records.append((self.topics.ingest(report.channel), report.report_id.encode(), report.dumps()))
        await self.send_many(records)
        mark_intake(r.channel for r in reports)

    async def dead_letter(self, letter: DeadLetter) -> None:
        key = (letter.report_id or letter.raw_sha256).encode()
        await self.send_many([(self.topics.deadletter, key, letter.dumps())])


_PARTITIONER = DefaultPartitioner()


async def _send_batched(
    producer: AIOKafkaProducer, records: Sequence[tuple[str, bytes | None, bytes]]
) -> list[asyncio.Future]:
    """One record batch per partition instead of one ``send`` per record.

    ``send`` costs a metadata wait, a partitioner call and a future per record; a worker batch of
    500 reports is about 1,500 records, and per-record sends were the largest slice of the worker's
    profile after the triage itself. Partitions are chosen exactly as ``send`` would (murmur2 of
    the key, the Java client's choice), so keys keep their partition whichever path sent them.
    """
    if len(records) == 1:
        t, k, v = records[0]
        return [await producer.send(t, value=v, key=k)]
    by_partition: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = {}
    partitions: dict[str, list[int]] = {}
    hashed: dict[tuple[bytes, int], int] = {}  # a report's key goes to 2-3 topics: hash it once
    for topic, key, value in records:
        if topic not in partitions:
            partitions[topic] = sorted(await producer.partitions_for(topic))
        every = partitions[topic]
        if key is None:
            p = _PARTITIONER(None, every, every)
        else:
            p = hashed.get((key, len(every)))
            if p is None:
                p = hashed[(key, len(every))] = _PARTITIONER(key, every, every)
        by_partition.setdefault((topic, p), []).append((key, value))
    futures = []
    for (topic, p), items in by_partition.items():
        batch = producer.create_batch()
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send, start anew
                futures.append(await producer.send_batch(batch, topic, partition=p))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise MessageSizeTooLargeError(f"a record of {len(value)} bytes does not fit a batch")
        futures.append(await producer.send_batch(batch, topic, partition=p))
    return futures
