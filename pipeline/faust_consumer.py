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
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import AppT, EventT
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
