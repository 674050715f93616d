"""Consumer lag of the worker group, per topic and partition: log-end offset minus committed offset."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from ..security import kafka_client_kwargs
from ..settings import Settings
from ..sources.registry import channel_ids
from ..topics import Topics
from .kafka import partitions_of


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group never committed here (it starts at the beginning)
    end: int
    lag: int


def worker_input_topics(settings: Settings) -> list[str]:
    t = Topics(settings.topic_namespace)
    return [t.ingest(c) for c in channel_ids()]


async def consumer_lag(
    settings: Settings, group: str | None = None, topics: list[str] | None = None
) -> list[PartitionLag]:
    group = group or settings.worker_app_id
    topics = topics or worker_input_topics(settings)
    parts = await partitions_of(settings, topics)
    tps = [TopicPartition(t, p) for t in topics for p in parts.get(t, [])]
    if not tps:
        return []
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings), client_id="crm-ops-lag")
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
    finally:
        await consumer.stop()
    rows = []
    for tp in tps:
        meta = committed.get(tp)
        offset = meta.offset if meta is not None and meta.offset >= 0 else None
        base = offset if offset is not None else starts[tp]
        rows.append(PartitionLag(tp.topic, tp.partition, offset, ends[tp], max(ends[tp] - base, 0)))
    return rows


def format_lag(rows: list[PartitionLag], group: str) -> str:
    if not rows:
        return f"group {group}: no input topics found (run `crm-pipeline topics create`)"
    width = max(len(r.topic) for r in rows)
    lines = [f"{'topic':{width}}  part  committed        end        lag"]
    for r in rows:
        committed = "-" if r.committed is None else str(r.committed)
        lines.append(f"{r.topic:{width}}  {r.partition:4}  {committed:>9}  {r.end:>9}  {r.lag:>9}")
    lines.append(f"group {group}: total lag {sum(r.lag for r in rows)} over {len(rows)} partitions")
    return "\n".join(lines)
