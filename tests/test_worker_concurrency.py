"""A worker running several agent instances (CRM_WORKER_CONCURRENCY) stores every report.

The instances share one ``Stages`` object: its store, Redis clients and caches. This pins that they
can have batches in flight at the same moment (one store transaction each).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from aiokafka import AIOKafkaProducer

from pipeline.envelope import Report, Reporter
from pipeline.sinks.postgres import PostgresReportSink, migrate
from pipeline.topics import Topics
from tests.harness import Process, wait_until

pytestmark = pytest.mark.stack


def _reports(tag: str, n: int) -> list[Report]:
    return [
        Report.create(
            channel="web",
            provider_id=f"{tag}-{i}",
            reporter=Reporter(id=f"rp-{tag}-{i}"),
            text=f"Jalan berlubang nomor {i} di Jl. Salemba Raya, mohon diperbaiki ({tag})",
        )
        for i in range(n)
    ]


def _stored(iso, reports: list[Report]) -> int:
    ids = [r.report_id for r in reports]
    return iso.query("SELECT count(*) FROM reports WHERE report_id = ANY(%s::uuid[])", (ids,))[0][0]


def test_one_sink_carries_concurrent_batches(iso):
    settings = iso.settings()
    asyncio.run(migrate(settings))
    warm, *batches = [_reports(f"sink-conc-{k}", 200) for k in range(4)]

    async def go():
        sink = PostgresReportSink(settings)
        try:  # a sink that has connected once; then each write is one transaction, none refused
            await sink.write(warm)
            return await asyncio.gather(*(sink.write(b) for b in batches))
        finally:
            await sink.close()

    assert asyncio.run(go()) == [200, 200, 200]
    assert _stored(iso, [r for b in batches for r in b]) == 600


def test_a_worker_with_two_agent_instances_stores_every_report(iso):
    ns = f"{iso.tag}c2"
    env = {
        **iso.env,
        "CRM_TOPIC_NAMESPACE": ns,
        "CRM_WORKER_APP_ID": f"crm-{ns}",
        "CRM_WORKER_CONCURRENCY": "2",
        "CRM_WORKER_BATCH_SIZE": "50",
    }
    subprocess.run(
        [sys.executable, "-m", "pipeline", "topics", "create"],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )
    reports = _reports(ns, 600)

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=env["CRM_KAFKA_BOOTSTRAP"], linger_ms=5)
        await producer.start()
        try:
            sent = [
                await producer.send(Topics(ns).ingest("web"), r.dumps(), key=r.report_id.encode())
                for r in reports
            ]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(produce())  # a backlog first: both instances have batches at once
    worker = Process("worker-c2", ["worker", "--loglevel", "warning"], env)
    try:
        wait_until(lambda: _stored(iso, reports) == len(reports), timeout=120, what="all 600 stored")
    finally:
        worker.stop()
    assert "store_refused" not in worker.output()
