"""Helpers for the issue #4 tests: stored reports, a real local SMTP server, topics of a namespace."""

from __future__ import annotations

import asyncio
import email
import threading
import time
import uuid
from datetime import timedelta
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller

from pipeline.envelope import Contact, Location, Region, Report, Reporter, Triage
from pipeline.processors.route import load_router
from pipeline.sinks.postgres import PostgresReportSink, migrate
from pipeline.topics import ensure_topics, topic_specs
from tests.harness import free_port

REGION = Region(
    kota="Kota Administrasi Jakarta Pusat",
    kota_code="31.71",
    kecamatan="Cempaka Putih",
    kecamatan_code="31.71.05",
    kelurahan="Cempaka Putih Timur",
    kelurahan_code="31.71.05.1001",
)

_prepared: set[str] = set()


async def prepare(settings: Any) -> None:
    """Schema and every topic of the namespace (once per session)."""
    if settings.topic_namespace in _prepared:
        return
    router = load_router()
    await ensure_topics(settings, topic_specs(settings, [], router.agencies(), router.kota_codes()))
    await migrate(settings)
    _prepared.add(settings.topic_namespace)


async def lift_email_pause(settings: Any) -> None:
    """Other tests in the session fail e-mail on purpose (a closed relay), which pauses the shared
    'email' destination; a test whose relay is up lifts that pause, which is not its own."""
    import psycopg

    dsn = settings.database_url.get_secret_value()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
        await c.execute("UPDATE notify.destinations SET paused_until = NULL WHERE destination = 'email'")


def make_report(
    channel: str = "email",
    *,
    provider_id: str | None = None,
    contact: Contact | None = None,
    private: bool = False,
    agency: str | None = "Dinas Bina Marga",
    category: str = "road_damage",
    text: str = "Jalan berlubang besar di Jl. Cempaka Putih Raya, mohon diperbaiki",
    expected_in: timedelta = timedelta(days=7),
    desk_office: str | None = None,
) -> Report:
    provider_id = provider_id or f"{uuid.uuid4().hex}@warga.example"
    report = Report.create(
        channel=channel,
        provider_id=provider_id,
        reporter=Reporter(id=f"rp-{uuid.uuid4().hex[:12]}", private=private),
        contact=contact,
        text=text,
        location=Location(address="Jl. Cempaka Putih Raya", desk_office=desk_office),
    )
    report.triage = Triage(
        normalised_text=text.lower(),
        category=category,
        confidence=0.9,
        classifier="test",
        region=REGION,
        agency=agency,
        agency_unit=f"Suku Dinas Bina Marga {REGION.kota}" if agency == "Dinas Bina Marga" else None,
        routed_to="agency" if agency else "triage",
        route_reason="road_damage → Dinas Bina Marga (test)",
        expected_by=report.received_at + expected_in,
    )
    return report


async def store(settings: Any, *reports: Report) -> None:
    sink = PostgresReportSink(settings)
    try:
        result = await sink.write_until_stored(list(reports))
        assert not result.poison, result.poison
    finally:
        await sink.close()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def wait_for(self, n: int, timeout: float = 10) -> list[Message]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= n:
                    return list(self.messages)
            time.sleep(0.05)
        raise TimeoutError(f"expected {n} mails, got {len(self.messages)}")

    @staticmethod
    def body(msg: Message) -> str:
        if msg.is_multipart():
            return "".join(p.get_payload(decode=True).decode() for p in msg.walk() if not p.is_multipart())
        return msg.get_payload(decode=True).decode()


class SmtpServer:
    """A real SMTP server (aiosmtpd) on 127.0.0.1, in its own thread."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.mailbox = Mailbox()
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.controller.stop()


async def until(fn: Any, wait_s: float = 20, what: str = "condition") -> Any:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        value = await fn()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")
