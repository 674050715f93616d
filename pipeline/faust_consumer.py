"""Faust's Kafka consumer without four asyncio tasks for every message it hands to a stream, and
a schema for raw bytes topics that builds the event without Faust's codec lookups.

faust-streaming 0.15 delivers each fetched message with ``await self.wait_first(callback(message),
self.suspend_flow.wait())`` (``Consumer._drain_messages``). ``Service.wait_first`` wraps both, and
the service's stopped and crashed events, in tasks, waits for the first and cancels the rest: about
15-30 µs of CPU per message on these machines, paid twice per report by the worker (its ingest
topic and the surge hits), against about 0.1 µs for awaiting the delivery itself (issue #19).

While the flow is running, :meth:`Consumer.wait_first` awaits the delivery directly. The only
difference is during a rebalance: a delivery that is already waiting for room in a full stream
buffer when the flow is suspended finishes once there is room, instead of being abandoned, so a
message of a partition this worker just lost may still be processed here. The worker processes at
least once with idempotent effects (the store's unique keys, dedup, replays), so that costs a
repeated effect at worst, never a lost or doubled report (``make chaos``). Anything else, and any
delivery while the flow is suspended or the consumer stopping, takes Faust's own path.

:class:`RawSchema`: the worker's topics carry raw bytes (``key_type=bytes, value_type=bytes``,
serializer ``raw``), which Faust still decodes through its serializer registry, key and value apart,
for every message. The raw codec returns the bytes as they are, so the event is built from them
directly: the same event, without the lookups.

:func:`take_ahead`: Faust's ``Stream.noack_take`` stops filling its buffer from the moment it hands
a batch over until the agent asks for the next one, so the next batch's events only start through
the stream (Faust's per-event work, on the same event loop) once the agent is idle again. With
``ahead`` > 0 the stream keeps filling while the agent works, so that work overlaps the batch's waits
on Redis, PostgreSQL and Kafka instead of following them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import AppT, EventT, StreamT
from faust.types.transports import Message
from mode.services import WaitResults


class Consumer(AIOKafkaConsumer):
    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:  # noqa: ASYNC109 - its signature
        if (
            timeout is None
            and len(coros) == 2
            and asyncio.iscoroutine(coros[0])
            and asyncio.iscoroutine(coros[1])
            and coros[1].cr_code is _EVENT_WAIT  # the flow's suspend event: a delivery
            and not self.suspend_flow.is_set()
            and not self.should_stop
        ):
            deliver, suspended = coros
            suspended.close()  # never started: nothing to cancel
            return WaitResults([deliver], [await deliver], False)
        return await super().wait_first(*coros, timeout=timeout)


_EVENT_WAIT = asyncio.Event.wait.__code__


class RawSchema(faust.Schema):
    """Keys and values as the broker holds them (bytes, or None)."""

    def __init__(self) -> None:
        super().__init__(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    def compile(self, app: AppT, **_: Any) -> Any:
        create_event = app.create_event

        async def decode(message: Message, *, propagate: bool = False) -> EventT:
            return create_event(message.key, message.value, message.headers, message)

        return decode


def install(app: faust.App) -> None:
    """Make ``app`` create this consumer (before its worker starts)."""
    app.transport.Consumer = Consumer  # type: ignore[misc]


async def take_ahead(stream: StreamT, max_: int, within: float, ahead: int) -> AsyncIterator[list[EventT]]:
    """Batches of up to ``max_`` events, as ``stream.noack_take(max_, within)`` gives them (the agent
    acks each event itself), except that the stream goes on buffering while the agent works on a
    batch, up to ``ahead`` events (at least a batch). A batch is handed over as soon as ``max_``
    events are buffered, or ``within`` seconds after the agent asked for it with fewer (never an
    empty one)."""
    buffer: list[EventT] = []
    cap = max(max_, ahead)
    full = asyncio.Event()  # a whole batch is buffered
    room = asyncio.Event()  # the buffer is below its cap
    room.set()

    async def add_to_buffer(value: Any) -> Any:
        event = stream.current_event
        if event is None:
            raise RuntimeError("take_ahead: the stream has no current event")
        buffer.append(event)
        if len(buffer) >= max_:
            full.set()
        if len(buffer) >= cap:
            room.clear()
            await stream.wait(room)  # type: ignore[attr-defined]  # mode's Service.wait: or stopping
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False  # acked by the agent once its batch is done
    stream.add_processor(add_to_buffer)
    stream._enable_passive(stream.channel.__aiter__())  # type: ignore[attr-defined]  # as noack_take
    try:
        while not stream.should_stop:
            if len(buffer) < max_:
                await stream.wait_for_stopped(full, timeout=within)  # type: ignore[attr-defined]
            if buffer:
                batch = buffer[:max_]
                del buffer[:max_]
                if len(buffer) < max_:
                    full.clear()
                room.set()
                yield batch
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_buffer)  # type: ignore[attr-defined]
