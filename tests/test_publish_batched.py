"""Batched publishing keeps what per-record sends guaranteed: every record, on the key's partition."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from pipeline.publish import Publisher, make_producer

pytestmark = pytest.mark.stack


def test_many_records_over_topics_land_on_the_key_partition_in_order(iso):
    settings = iso.settings()
    topics = [f"{iso.tag}.pub-a", f"{iso.tag}.pub-b"]
    boot = settings.kafka_bootstrap
    # 3,000 records of 300 bytes over 2 topics x 4 partitions: several record batches per partition
    records = [(topics[i % 2], f"report-{i % 700}".encode(), b"%06d" % i + b"x" * 294) for i in range(3000)]
    records.append((topics[0], None, b"keyless"))

    async def go():
        admin = AIOKafkaAdminClient(bootstrap_servers=boot)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(t, 4, 1) for t in topics])
        finally:
            await admin.close()
        producer = make_producer(settings, client_id="test-batched")
        await producer.start()
        try:
            await Publisher(settings, producer).send_many(records)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(*topics, bootstrap_servers=boot, auto_offset_reset="earliest")
        await consumer.start()
        got = []
        try:
            while len(got) < len(records):
                batch = await consumer.getmany(timeout_ms=3000)
                if not batch:
                    break
                for msgs in batch.values():
                    got += msgs
        finally:
            await consumer.stop()
        return got

    got = asyncio.run(go())
    assert len(got) == len(records)
    assert {(m.topic, m.value) for m in got} == {(t, v) for t, _, v in records}
    partitioner = DefaultPartitioner()
    for m in got:
        if m.key is not None:
            assert m.partition == partitioner(m.key, [0, 1, 2, 3], [0, 1, 2, 3])
    for topic in topics:  # within a partition the input order is kept
        for p in range(4):
            mine = sorted(
                (m for m in got if m.topic == topic and m.partition == p and m.key), key=lambda m: m.offset
            )
            seq = [m.value[:6] for m in mine]
            assert seq == sorted(seq) and len(seq) > 0
