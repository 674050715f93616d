"""The worker's Faust consumer hands a fetched message to its stream without four tasks per message
(issue #19), and still lets Faust abandon a delivery once the flow is suspended (a rebalance)."""

from __future__ import annotations

import asyncio

from pipeline import faust_consumer
from pipeline.settings import Settings
from pipeline.worker import faust_app


async def test_a_delivery_is_awaited_directly_while_the_flow_runs_and_faust_decides_once_suspended() -> None:
    app = faust_app(Settings(worker_web_port=0, topic_namespace="fc"))
    consumer = app.consumer
    assert isinstance(consumer, faust_consumer.Consumer)
    delivered: list[int] = []

    async def deliver(n: int) -> int:
        await asyncio.sleep(0)
        delivered.append(n)
        return n

    before = len(asyncio.all_tasks())
    suspended = consumer.suspend_flow.wait()
    result = await consumer.wait_first(deliver(1), suspended)
    assert result.results == [1] and not result.stopped and delivered == [1]
    assert suspended.cr_frame is None  # closed, never scheduled
    assert len(asyncio.all_tasks()) == before  # no task left behind

    # Suspended (a rebalance): Faust's own wait, which gives up on a delivery that cannot finish.
    consumer.suspend_flow.set()
    stuck = asyncio.Event()

    async def blocked() -> int:
        await stuck.wait()
        return 2

    result = await asyncio.wait_for(consumer.wait_first(blocked(), consumer.suspend_flow.wait()), 5)
    assert result.results == [True]  # the suspend event won; the delivery was cancelled
    assert not stuck.is_set()


async def test_the_raw_schema_builds_the_event_faust_would_build_for_a_bytes_topic() -> None:
    from faust.types.tuples import Message

    app = faust_app(Settings(worker_web_port=0, topic_namespace="fc"))
    faust_decode = app.topic("t", key_type=bytes, value_type=bytes).schema.compile(app)
    raw_decode = faust_consumer.RawSchema().compile(app)
    message = Message("t", 2, 41, 0.0, 0, [("h", b"1")], b"report-id", b'{"text": "banjir"}', None)
    ours, theirs = await raw_decode(message), await faust_decode(message)
    assert (ours.key, ours.value, ours.headers, ours.message) == (
        theirs.key,
        theirs.value,
        theirs.headers,
        theirs.message,
    )
    assert ours.value == b'{"text": "banjir"}' and ours.message.offset == 41
