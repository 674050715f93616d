"""The raw baseline: aiokafka consume → produce pass-through, no processing, tuned for throughput.

Same broker, same records (report envelopes), same delivery promise as the worker (idempotent
producer, acks=all, input offsets committed only after the outputs are confirmed). Tuning: large
fetches (``fetch_max_bytes`` 50 MB, 4 MB per partition, up to 20,000 records per ``getmany``),
records re-batched per partition with ``create_batch``/``send_batch`` (no per-record future), 256 KB
batches, ``linger_ms`` 10, no compression (loopback: compression only costs CPU on 2 cores).

Run as ``python -m pipeline.bench.baseline BOOTSTRAP IN_TOPIC OUT_TOPIC GROUP EXPECTED``; prints one JSON
line: records, seconds (first record fetched → last output confirmed and offsets committed), rps, and
the process's own CPU over those seconds (each run is a fresh process that lives about a second, too
short for the bench's sampling monitor to see whole).
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def pass_through(bootstrap: str, src: str, dst: str, group: str, expected: int) -> dict[str, float]:
    consumer = AIOKafkaConsumer(
        src,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_bytes=50 * 1024 * 1024,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_wait_ms=50,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=10,
        max_batch_size=256 * 1024,
        compression_type=None,
    )
    await consumer.start()
    await producer.start()
    n = 0
    first = None
    cpu0 = time.process_time()
    try:
        while n < expected:
            batches = await consumer.getmany(timeout_ms=200, max_records=20_000)
            if not batches:
                if first is not None and time.perf_counter() - first > 600:
                    break
                continue
            if first is None:
                first = time.perf_counter()
                cpu0 = time.process_time()
            futures = []
            for tp, records in batches.items():
                batch = producer.create_batch()
                for rec in records:
                    if batch.append(key=rec.key, value=rec.value, timestamp=None) is None:
                        futures.append(await producer.send_batch(batch, dst, partition=tp.partition))
                        batch = producer.create_batch()
                        batch.append(key=rec.key, value=rec.value, timestamp=None)
                futures.append(await producer.send_batch(batch, dst, partition=tp.partition))
                n += len(records)
            await asyncio.gather(*futures)
            await consumer.commit()
        elapsed = time.perf_counter() - (first or time.perf_counter())
        cpu_s = time.process_time() - cpu0
    finally:
        await producer.stop()
        await consumer.stop()
    return {
        "records": n,
        "seconds": elapsed,
        "rps": n / elapsed if elapsed > 0 else 0.0,
        "cpu_s": round(cpu_s, 3),
        "cpu_pct": round(100 * cpu_s / elapsed, 1) if elapsed > 0 else 0.0,
    }


def main() -> None:
    bootstrap, src, dst, group, expected = sys.argv[1:6]
    result = asyncio.run(pass_through(bootstrap, src, dst, group, int(expected)))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
