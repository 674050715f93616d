"""Per-stage CPU cost of the worker's batch path (µs of CPU per report), without Faust or Kafka.

The end-to-end figures say how fast; this says where the time goes, stage by stage, so a change to one
processor shows up as a change in one line. It drives :class:`pipeline.worker.Stages` in-process over
generated envelopes against the run's real Redis and PostgreSQL (publishing is left out: it would
need the broker round trip that the end-to-end phases measure).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..settings import Settings
from .traffic import Traffic, stamp


class _Event:
    """What the stages read from a faust event."""

    __slots__ = ("message", "value")

    def __init__(self, value: bytes, partition: int | None = None) -> None:
        from .surge_eval import _Message

        self.value = value
        self.message = None if partition is None else _Message(partition)


async def measure(settings: Settings, batches: int = 20, batch_size: int = 500) -> dict[str, Any]:
    from ..processors.chain import settle_heap
    from ..worker import Stages

    traffic = Traffic(seed=13, run_tag="stages")
    # The first half fills the case store and warms caches and connections; the second is measured,
    # so grouping is timed against buckets that already hold cases, as in a long-running worker.
    data = [[_Event(stamp(traffic.envelope())) for _ in range(batch_size)] for _ in range(2 * batches)]
    stages = Stages(settings)
    await stages.start()
    from aiokafka.partitioner import DefaultPartitioner

    from ..processors.surge import hit_records
    from ..surge_stage import SurgeStage
    from .surge_eval import _Table

    surge, table, hits = SurgeStage(settings), _Table(), []
    partitioner, every, surge_cpu = DefaultPartitioner(), list(range(settings.topic_partitions)), 0.0
    settle_heap()
    assert stages.dedup is not None
    cpu: dict[str, float] = {}

    @contextmanager
    def timed(name: str) -> Iterator[None]:
        t = time.process_time()
        yield
        cpu[name] = cpu.get(name, 0.0) + time.process_time() - t

    try:
        for i, events in enumerate(data):
            if i == batches:
                cpu.clear()
            with timed("decode"):
                reports, _ = stages._decode(events)  # type: ignore[arg-type]
            with timed("dedup check"):
                fresh, _ = await stages.dedup.split(reports)
            with timed("triage chain"):
                processed, _ = stages._triage(fresh)
            with timed("case grouping"):
                await stages._group(processed)
            with timed("output records"):
                for r in processed:
                    stages.records_of(r)
                for key, value in hit_records(processed):  # the surge hits (issue #17) are among them
                    hits.append(_Event(value, partitioner(key, every, every)))
            with timed("store"):
                await stages._store(processed)
            with timed("dedup remember"):
                await stages.dedup.remember(processed)
            stages.dedup.release(fresh)
            # The surge worker is a process of its own: its CPU per report is reported apart.
            t = time.process_time()
            records, touched, _ = surge.apply(table, hits)
            for record in records:
                record.dumps()
            for key, (state, p) in touched.items():
                surge.put(table, key, state, p)
            if i >= batches:
                surge_cpu += time.process_time() - t
            hits.clear()
    finally:
        await stages.stop()
    n = batches * batch_size
    per = {k: round(1e6 * v / n, 1) for k, v in cpu.items()}
    total = sum(per.values())
    return {
        "us_per_report": per,
        "surge_worker_us_per_report": round(1e6 * surge_cpu / n, 1),
        "total_us_per_report": round(total, 1),
        "cpu_bound_rps": round(1e6 / total, 1) if total else None,
        "reports": n,
        "batch_size": batch_size,
    }
