"""Found by the broker-restart scenario: after a broker restart under load, aiokafka's idempotent sender
can die with OutOfOrderSequenceNumber, and every later send fails the same way (the ingress answered
503 for minutes after the broker was back). The publisher must replace such a producer."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaConnectionError, OutOfOrderSequenceNumber

from pipeline import publish
from pipeline.publish import Publisher, PublishError
from pipeline.settings import Settings


class FakeClient:
    _client_id = "crm-test"


class FakeProducer:
    def __init__(self, error: Exception | None = None, start_error: Exception | None = None) -> None:
        self.error, self.start_error = error, start_error
        self.client = FakeClient()
        self.sent: list[tuple[str, bytes]] = []
        self.stopped = False

    async def start(self) -> None:
        if self.start_error:
            raise self.start_error

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        if self.error:
            fut.set_exception(self.error)
        else:
            self.sent.append((topic, value))
            fut.set_result(None)
        return fut


async def test_a_producer_whose_sender_died_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = FakeProducer(error=OutOfOrderSequenceNumber())
    fresh = [FakeProducer(start_error=KafkaConnectionError()), FakeProducer()]
    monkeypatch.setattr(publish, "make_producer", lambda settings, client_id: fresh.pop(0))
    pub = Publisher(Settings(produce_timeout_s=1), dead)  # type: ignore[arg-type]

    with pytest.raises(PublishError, match="OutOfOrderSequenceNumber"):
        await pub.send_many([("t", b"k", b"v1")])
    with pytest.raises(PublishError, match="could not start a new producer"):  # broker still away
        await pub.send_many([("t", b"k", b"v2")])
    assert pub.producer is dead
    await pub.send_many([("t", b"k", b"v3")])  # replaced: flows again
    assert pub.producer is not dead and pub.producer.sent == [("t", b"v3")] and dead.stopped  # type: ignore[attr-defined]


async def test_a_timeout_keeps_the_producer() -> None:
    slow = FakeProducer(error=KafkaConnectionError())
    pub = Publisher(Settings(produce_timeout_s=1), slow)  # type: ignore[arg-type]
    with pytest.raises(PublishError):
        await pub.send_many([("t", b"k", b"v")])
    assert pub._broken is None and pub.producer is slow
