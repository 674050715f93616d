"""The framework's floor: a bare Faust agent that passes envelopes through, nothing else.

Same app and consumer settings as the worker (:func:`pipeline.worker.faust_app`: commit interval,
offset reset, acks), the same batches (``noack_take(CRM_WORKER_BATCH_SIZE, within=…)``), the same
producer and batched send (:class:`pipeline.publish.Publisher`), the same event loop
(``CRM_WORKER_EVENT_LOOP``), and the same promise: a batch is
acked only once its records are confirmed by the broker. What the worker costs above this is what
its processors cost, not Faust's.

Run as ``python -m pipeline.bench.faust_floor IN_TOPIC OUT_TOPIC EXPECTED`` with the bench
namespace's ``CRM_*`` environment (``CRM_WORKER_APP_ID`` is the consumer group); prints one JSON
line like :mod:`.baseline` (records, seconds from the first batch to the last one confirmed and
acked, rps, the process's own CPU over those seconds), then stops itself.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import faust
import orjson

from ..faust_consumer import RawSchema
from ..loop import use_event_loop
from ..publish import Publisher, make_producer
from ..settings import get_settings
from ..worker import faust_app


def main() -> None:
    src, dst, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
    settings = get_settings()
    use_event_loop(settings.worker_event_loop)
    app = faust_app(settings)
    source = app.topic(src, schema=RawSchema())

    @app.agent(source, name="floor")
    async def floor(stream: faust.StreamT) -> None:
        producer = make_producer(settings, client_id=f"{settings.worker_app_id}-out")
        await producer.start()
        publisher = Publisher(settings, producer)
        n, first, cpu0 = 0, 0.0, 0.0
        try:
            async for events in stream.noack_take(
                settings.worker_batch_size, within=settings.worker_batch_within_s
            ):
                if not n:
                    first, cpu0 = time.perf_counter(), time.process_time()
                await publisher.send_many([(dst, e.key, e.value) for e in events])
                for event in events:
                    await stream.ack(event)
                n += len(events)
                if n >= expected:
                    elapsed = time.perf_counter() - first
                    cpu_s = time.process_time() - cpu0
                    result: dict[str, Any] = {
                        "records": n,
                        "seconds": elapsed,
                        "rps": n / elapsed if elapsed > 0 else 0.0,
                        "cpu_s": round(cpu_s, 3),
                        "cpu_pct": round(100 * cpu_s / elapsed, 1) if elapsed > 0 else 0.0,
                    }
                    sys.stdout.write(orjson.dumps(result).decode() + "\n")
                    sys.stdout.flush()
                    os.kill(os.getpid(), signal.SIGTERM)  # the worker's own graceful shutdown
                    return
        finally:
            await producer.stop()

    faust.Worker(app, loglevel="warning", override_logging=False).execute_from_commandline()


if __name__ == "__main__":
    main()
