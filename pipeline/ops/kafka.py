"""Small Kafka helpers shared by the ops commands and the dashboard: read a topic to its current end."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from ..security import kafka_client_kwargs
from ..settings import Settings


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int


async def partitions_of(settings: Settings, topics: list[str]) -> dict[str, list[int]]:
    """Partition ids of each existing topic (missing topics are left out)."""
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings), client_id="crm-ops")
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return {
        d["topic"]: sorted(p["partition"] for p in d["partitions"])
        for d in described
        if not d.get("error_code") and d.get("partitions")
    }


async def read_to_end(settings: Settings, topic: str, timeout_s: float = 30.0) -> list[Record]:
    """Every record on ``topic`` from the beginning up to its end as of now (no consumer group)."""
    parts = (await partitions_of(settings, [topic])).get(topic, [])
    if not parts:
        return []
    consumer = AIOKafkaConsumer(
        **kafka_client_kwargs(settings),
        enable_auto_commit=False,
        group_id=None,
        client_id="crm-ops-reader",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    out: list[Record] = []
    try:
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        import time

        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < ends[tp]:
                        out.append(Record(tp.topic, tp.partition, r.offset, r.key, r.value, r.timestamp))
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        if pending:
            raise TimeoutError(f"could not read {topic} to its end within {timeout_s:.0f}s")
    finally:
        await consumer.stop()
    out.sort(key=lambda r: (r.timestamp_ms, r.partition, r.offset))
    return out
