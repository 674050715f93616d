"""``email``: real SMTP into the gateway (aiosmtplib), real Kafka underneath, and a real local SMTP
server (aiosmtpd) standing in for the city's outbound relay that receives the acknowledgements."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import time
import uuid
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import aiosmtplib
import pytest
import redis
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from aiosmtpd.controller import Controller

from pipeline.envelope import report_id_for
from pipeline.publish import Publisher, make_producer
from pipeline.settings import Settings
from pipeline.sources.email import EmailGateway, ack_message_id, html_to_text
from pipeline.topics import Topics, ensure_topics, topic_specs
from tests.harness import Process, free_port, read_topic

pytestmark = pytest.mark.stack

CRM = "dki@jakarta.go.id"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9"


class Inbox:
    """The outbound relay: a real SMTP server that keeps what it is given."""

    def __init__(self) -> None:
        self.mails: list[tuple[str, list[str], EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        msg = BytesParser(policy=policy.default).parsebytes(envelope.original_content)
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 OK"


@pytest.fixture
def inbox():
    box = Inbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.port = controller.port  # type: ignore[attr-defined]
    yield box
    controller.stop()


@pytest.fixture
def space(iso, inbox) -> Settings:
    ns = f"{iso.tag}-{uuid.uuid4().hex[:6]}"
    settings = iso.settings(
        topic_namespace=ns,
        email_relay_host="127.0.0.1",
        email_relay_port=inbox.port,
        produce_timeout_s=5,
        email_ack_enabled=True,  # the gateway's own receipt, tested here
    )
    asyncio.run(ensure_topics(settings, topic_specs(settings, ["email", "twitter", "lapor1708"])))
    yield settings
    r = redis.Redis.from_url(settings.redis_url)
    for key in r.scan_iter(f"{ns}:*"):
        r.delete(key)


def citizen_mail(
    mid: str = "", subject: str = "Jalan berlubang di Jl. Pramuka", **headers: str
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Rina Wijaya <rina.wijaya@example.com>"
    msg["To"] = CRM
    msg["Subject"] = subject
    msg["Message-ID"] = mid or f"<{uuid.uuid4().hex}@mail.example.com>"
    msg["Date"] = "Thu, 02 May 2024 09:15:00 +0700"
    for key, value in headers.items():
        msg[key.replace("_", "-")] = value
    msg.set_content(
        "Selamat pagi,\nada lubang besar di Jl. Pramuka depan halte, sudah dua motor jatuh.\n",
        charset="iso-8859-1",
    )
    msg.add_alternative(
        "<html><body><p>Selamat pagi,</p><p>ada lubang <b>besar</b></p></body></html>", subtype="html"
    )
    return msg


async def _deliver(
    settings: Settings, items: list[Any], mail_from: str = "rina.wijaya@example.com", rcpt: str = CRM
) -> list[tuple[int, str]]:
    """Run the gateway, deliver each item over SMTP; the (code, text) answer to each DATA/refusal."""
    producer = make_producer(settings, client_id="test-smtp")
    await producer.start()
    client = aioredis.from_url(settings.redis_url)
    gateway = EmailGateway(settings, Publisher(settings, producer), client)
    port = free_port()
    server = await gateway.start("127.0.0.1", port)
    answers: list[tuple[int, str]] = []
    try:
        for item in items:
            raw = item.as_bytes() if isinstance(item, EmailMessage) else item
            try:
                async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30) as smtp:
                    _, text = await smtp.sendmail(mail_from, [rcpt], raw)
                    answers.append((250, text))
            except aiosmtplib.SMTPRecipientsRefused as exc:
                answers.append((exc.recipients[0].code, exc.recipients[0].message))
            except aiosmtplib.SMTPResponseException as exc:
                answers.append((exc.code, exc.message))
        await gateway.drain()
    finally:
        server.close()
        await server.wait_closed()
        await producer.stop()
        await client.aclose()
    return answers


def deliver(settings: Settings, *items: Any, **kw: Any) -> list[tuple[int, str]]:
    return asyncio.run(_deliver(settings, list(items), **kw))


def ingest(iso, settings: Settings, n: int, timeout: float = 15) -> list[dict]:
    return read_topic(iso, Topics(settings.topic_namespace).ingest("email"), min_records=n, timeout=timeout)


def letters(iso, settings: Settings, n: int, timeout: float = 15) -> list[dict]:
    return read_topic(iso, Topics(settings.topic_namespace).deadletter, min_records=n, timeout=timeout)


def raw_records(settings: Settings, n: int, timeout: float = 15) -> dict[str, bytes]:
    async def go() -> dict[str, bytes]:
        consumer = AIOKafkaConsumer(
            Topics(settings.topic_namespace).raw,
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        await consumer.start()
        out: dict[str, bytes] = {}
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and len(out) < n:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    out.update({r.key.decode(): r.value for r in records})
        finally:
            await consumer.stop()
        return out

    return asyncio.run(go())


def test_mail_with_html_alternative_and_photo_becomes_a_report_and_is_acknowledged(iso, space, inbox):
    msg = citizen_mail()
    msg.add_attachment(JPEG, maintype="image", subtype="jpeg", filename="lubang.jpg")
    mid = msg["Message-ID"].strip("<>")
    [(code, text)] = deliver(space, msg)
    rid = report_id_for("email", mid)
    assert code == 250 and rid in text

    [report] = ingest(iso, space, 1)
    assert report["report_id"] == rid and report["provider_id"] == mid and report["channel"] == "email"
    assert report["text"].startswith("Jalan berlubang di Jl. Pramuka\n\nSelamat pagi,\nada lubang besar")
    assert report["contact"] == {"name": "Rina Wijaya", "email": "rina.wijaya@example.com"}
    assert report["source_at"].startswith("2024-05-02T02:15:00")
    [att] = report["attachments"]
    assert att["name"] == "lubang.jpg" and att["media_type"] == "image/jpeg" and att["size"] == len(JPEG)
    assert f"sha256={hashlib.sha256(JPEG).hexdigest()}" in att["url"]
    # the bytes are not on the report topic: they are in the raw message the report points at
    raw = raw_records(space, 1)[report["raw_ref"]["key"]]
    assert report["raw_ref"]["content_type"] == "message/rfc822" and b"lubang.jpg" in raw
    part = int(att["url"].split("part=")[1].split("&")[0])
    leaves = [p for p in BytesParser(policy=policy.default).parsebytes(raw).walk() if not p.is_multipart()]
    assert leaves[part].get_payload(decode=True) == JPEG

    [(env_from, rcpts, ack)] = inbox.mails
    assert env_from == "<>" and rcpts == ["rina.wijaya@example.com"]  # null return path: no loops
    assert ack["In-Reply-To"] == f"<{mid}>" and f"<{mid}>" in ack["References"]
    assert ack["Auto-Submitted"] == "auto-replied" and ack["X-CRM-Report-Id"] == rid
    assert ack["Subject"] == "Re: Jalan berlubang di Jl. Pramuka" and rid in ack.get_content()


def test_html_only_mail_in_windows_1252_is_turned_into_text(iso, space, inbox):
    raw = (
        "From: warga@example.org\r\nTo: dki@jakarta.go.id\r\nSubject: Pohon tumbang\r\n"
        f"Message-ID: <html-1252-{uuid.uuid4().hex}@example.org>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/html; charset=windows-1252\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        "<html><head><style>p{color:red}</style><script>alert(1)</script></head><body>"
        "<p>Pohon tumbang di Jl. Kemang Raya =96 menutup jalan</p><br>"
        "<div>Caf=E9 &amp; toko tertutup</div></body></html>\r\n"
    ).encode()
    [(code, _)] = deliver(space, raw, mail_from="warga@example.org")
    assert code == 250
    [report] = ingest(iso, space, 1)
    assert (
        report["text"]
        == "Pohon tumbang\n\nPohon tumbang di Jl. Kemang Raya – menutup jalan\n\nCafé & toko tertutup"
    )
    assert "alert" not in report["text"] and "color" not in report["text"]
    assert len(inbox.mails) == 1


def test_redelivery_keeps_one_report_id_and_one_acknowledgement(iso, space, inbox):
    msg = citizen_mail()
    answers = deliver(space, msg, msg)  # the relay did not see our first 250 and sends again
    assert [c for c, _ in answers] == [250, 250]
    reports = ingest(iso, space, 2)
    assert len({r["report_id"] for r in reports}) == 1  # the worker's dedup keeps one
    assert len(inbox.mails) == 1


def test_reply_to_the_acknowledgement_is_threaded_and_auto_replies_are_never_answered(iso, space, inbox):
    first = citizen_mail()
    mid = first["Message-ID"].strip("<>")
    ack_id = ack_message_id(mid, "jakarta.go.id")
    reply = citizen_mail(
        subject="Re: Jalan berlubang di Jl. Pramuka", In_Reply_To=ack_id, References=f"<{mid}> {ack_id}"
    )
    only_ack_ref = citizen_mail(subject="Re: laporan", In_Reply_To=ack_id)  # a client that drops References
    vacation = citizen_mail(subject="Out of office", Auto_Submitted="auto-replied", In_Reply_To=ack_id)
    bulk = citizen_mail(subject="Newsletter", Precedence="bulk")
    answers = deliver(space, first, reply, only_ack_ref, vacation, bulk)
    assert [c for c, _ in answers] == [250] * 5
    bounce = citizen_mail(subject="Undelivered Mail Returned to Sender")
    [(code, _)] = deliver(space, bounce, mail_from="")  # MAIL FROM:<>
    assert code == 250
    reports = {r["provider_id"]: r for r in ingest(iso, space, 6)}
    assert reports[reply["Message-ID"].strip("<>")]["in_reply_to"] == mid
    assert reports[only_ack_ref["Message-ID"].strip("<>")]["in_reply_to"] == mid
    assert reports[vacation["Message-ID"].strip("<>")]["in_reply_to"] == mid
    assert "in_reply_to" not in reports[mid]
    # acknowledged: the first mail and the two real replies; never the vacation notice, bulk mail or bounce
    assert sorted(m["In-Reply-To"] for _, _, m in inbox.mails) == sorted(
        f"<{m['Message-ID'].strip('<>')}>" for m in (first, reply, only_ack_ref)
    )


def test_malformed_mime_is_refused_5xx_and_dead_lettered_with_the_reason(iso, space, inbox):
    no_boundary = (
        b"From: a@example.com\r\nTo: dki@jakarta.go.id\r\nSubject: x\r\nMessage-ID: <nb@example.com>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\n"
        b"--zz\r\nContent-Type: text/plain\r\n\r\nhi\r\n--zz--\r\n"
    )
    no_sender = b"To: dki@jakarta.go.id\r\nSubject: tanpa pengirim\r\n\r\nGenangan air di Jl. Sudirman\r\n"
    empty = b"From: a@example.com\r\nTo: dki@jakarta.go.id\r\nMessage-ID: <e@example.com>\r\n\r\n   \r\n"
    answers = deliver(space, no_boundary, no_sender, empty, citizen_mail())
    assert [c for c, _ in answers] == [550, 550, 550, 250]  # one bad mail never blocks the next
    assert "malformed_mime" in answers[0][1] and "NoBoundaryInMultipartDefect" in answers[0][1]
    assert "bad_sender" in answers[1][1] and "missing_text" in answers[2][1]
    found = {d["code"]: d for d in letters(iso, space, 3)}
    assert set(found) == {"malformed_mime", "bad_sender", "missing_text"}
    assert base64.b64decode(found["malformed_mime"]["raw_b64"]) == no_boundary
    assert (
        found["malformed_mime"]["channel"] == "email"
        and found["malformed_mime"]["content_type"] == "message/rfc822"
    )
    assert len(ingest(iso, space, 1)) == 1 and len(inbox.mails) == 1


def test_relay_outside_the_allow_list_and_foreign_recipients_are_refused(iso, space, inbox):
    closed = Settings(**{**space.model_dump(), "email_allowed_relays": "10.20.0.0/16"})
    [(code, text)] = deliver(closed, citizen_mail())
    assert code == 554 and "Relay access denied" in text
    [(code, text)] = deliver(space, citizen_mail(), rcpt="someone@elsewhere.example")
    assert code == 550 and "recipient not accepted" in text
    assert ingest(iso, space, 1, timeout=3) == [] and letters(iso, space, 1, timeout=3) == []
    assert inbox.mails == []


def test_oversized_mail_is_refused_552(iso, space, inbox):
    small = Settings(**{**space.model_dump(), "email_max_bytes": 20_000})
    msg = citizen_mail()
    msg.add_attachment(b"\x00" * 60_000, maintype="application", subtype="octet-stream", filename="big.bin")
    [(code, _)] = deliver(small, msg)
    assert code == 552 and inbox.mails == []


def test_broker_not_confirming_answers_451_and_sends_no_acknowledgement(iso, inbox):
    # A namespace whose topics were never created: the broker cannot take the records (no auto-create).
    settings = iso.settings(
        topic_namespace=f"{iso.tag}-gone{uuid.uuid4().hex[:4]}",
        produce_timeout_s=2,
        email_relay_port=inbox.port,
        email_ack_enabled=True,
    )
    [(code, text)] = deliver(settings, citizen_mail())
    assert code == 451 and "Temporary failure" in text
    assert inbox.mails == []


def test_html_to_text_keeps_blocks_and_drops_scripts():
    assert html_to_text("<p>a&nbsp;b</p><script>x</script><ul><li>c</li><li>d</li></ul>") == "a b\n\nc\n\nd"


def test_crm_pipeline_smtp_command_serves_the_gateway(iso, space, inbox):
    port = free_port()
    env = {
        **iso.env,
        "CRM_TOPIC_NAMESPACE": space.topic_namespace,
        "CRM_EMAIL_RELAY_PORT": str(inbox.port),
        "CRM_EMAIL_ACK_ENABLED": "true",
    }
    proc = Process("smtp", ["smtp", "--port", str(port)], env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        msg = citizen_mail()

        async def send() -> str:
            _, text = await aiosmtplib.send(msg, hostname="127.0.0.1", port=port, timeout=30)
            return text

        assert report_id_for("email", msg["Message-ID"].strip("<>")) in asyncio.run(send())
        [report] = ingest(iso, space, 1)
        assert report["provider_id"] == msg["Message-ID"].strip("<>")
        deadline = time.monotonic() + 15
        while not inbox.mails and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(inbox.mails) == 1
    finally:
        proc.stop()
