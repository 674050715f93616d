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


async def _run_take(ahead: int) -> tuple[list[list[int]], list[int]]:
    """Eight events through a stream taken three at a time; the first batch is held until the test
    has looked at what the stream passed meanwhile."""
    app = faust_app(Settings(worker_web_port=0, topic_namespace="fc"))
    batches: list[list[int]] = []
    passed: list[int] = []  # values the stream's processors have seen
    release = asyncio.Event()

    async def agent(stream):  # type: ignore[no-untyped-def]
        stream.add_processor(lambda v: passed.append(v) or v)
        take = (
            faust_consumer.take_ahead(stream, 3, 0.05, ahead) if ahead else stream.noack_take(3, within=0.05)
        )
        async for batch in take:
            batches.append([e.value for e in batch])
            for e in batch:
                await stream.ack(e)
            if len(batches) == 1:
                await release.wait()

    test_agent = app.agent(app.channel(), name="take")(agent)
    async with test_agent.test_context() as ctx:
        for i in range(8):
            await ctx.put(i, wait=False)
        for _ in range(100):
            if batches:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # the agent works on its first batch
        during = list(passed)
        release.set()
        for _ in range(100):
            if sum(map(len, batches)) == 8:
                break
            await asyncio.sleep(0.01)
    return batches, during


async def test_take_ahead_keeps_the_stream_filling_while_a_batch_is_worked_on() -> None:
    batches, during = await _run_take(ahead=3)
    assert batches == [[0, 1, 2], [3, 4, 5], [6, 7]]  # in order, never more than three, none lost
    # While the first batch was held, the next three went through the stream (up to `ahead`).
    assert during == [0, 1, 2, 3, 4, 5]
    faust_batches, faust_during = await _run_take(ahead=0)  # the worker's CRM_WORKER_TAKE_AHEAD=0
    assert faust_batches == batches
    assert faust_during == [0, 1, 2]  # Faust's noack_take passes none until the agent asks again
