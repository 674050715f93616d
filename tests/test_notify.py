"""The notification outbox against real PostgreSQL and a real SMTP server (started late on purpose)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pipeline.crm.notify.outbox import OutboxRunner
from pipeline.envelope import Contact, utcnow
from tests.crm_helpers import SmtpServer, make_report, prepare, store
from tests.harness import free_port

pytestmark = pytest.mark.stack


def outbox(iso, report_id: str) -> list[tuple]:
    return iso.query(
        "SELECT event_key, destination, state, attempts, last_error, next_attempt_at, body "
        "FROM notify.outbox WHERE report_id = %s ORDER BY outbox_id",
        (report_id,),
    )


def test_outbox_retries_after_the_mail_server_was_down_and_sends_once(iso):
    port = free_port()  # nothing listens here yet
    settings = iso.settings(email_relay_port=port, email_relay_timeout_s=3)
    report = make_report("email", contact=Contact(email="sabar@example.com"))

    async def first():
        await prepare(settings)
        with SmtpServer() as working:  # earlier tests' mails go out while the relay still works
            await OutboxRunner(iso.settings(email_relay_port=working.port)).run_once(utcnow())
        await store(settings, report)
        await store(settings, report)  # a replayed batch queues nothing new
        t0 = utcnow()
        return t0, await OutboxRunner(settings).run_once(t0)

    t0, result = asyncio.run(first())
    rows = outbox(iso, report.report_id)
    assert len(rows) == 1
    key, dest, state, attempts, error, next_at, _ = rows[0]
    assert (key, dest, state, attempts) == ("ack", "email", "pending", 1)
    assert "unreachable" in error and any(err for _, err in result.failed)
    assert timedelta(minutes=4, seconds=50) < next_at - t0 <= timedelta(minutes=5, seconds=10)
    paused = iso.query("SELECT failures, paused_until FROM notify.destinations WHERE destination = 'email'")
    assert paused[0][0] >= 1 and paused[0][1] > t0

    with SmtpServer(port=port) as smtp:

        async def later():
            runner = OutboxRunner(settings)
            early = await runner.run_once(t0 + timedelta(minutes=2))  # not due yet: nothing is tried
            due = await runner.run_once(t0 + timedelta(minutes=6))
            again = await runner.run_once(t0 + timedelta(hours=2))
            return early, due, again

        early, due, again = asyncio.run(later())
        mails = smtp.mailbox.wait_for(1)
    mine = [m for m in mails if m["To"] == "sabar@example.com"]
    assert len(mine) == 1 and "JKT-" in mine[0]["Subject"]
    assert f"<{report.provider_id}>" == mine[0]["In-Reply-To"]
    assert not early.sent and not early.failed
    rows = outbox(iso, report.report_id)
    assert rows[0][2] == "sent" and rows[0][3] == 2
    assert all(oid not in again.sent for oid in due.sent)
    dest_sql = "SELECT failures, paused_until FROM notify.destinations WHERE destination = 'email'"
    assert iso.query(dest_sql) == [(0, None)]


def test_each_channel_gets_its_answer_and_a_private_reporter_is_never_named(iso):
    calls: list[tuple[str, dict]] = []

    async def capture(request: web.Request) -> web.Response:
        calls.append((request.path, await request.json()))
        return web.json_response({"id": f"m{len(calls)}"})

    app = web.Application()
    app.router.add_post("/{tail:.*}", capture)

    sms = make_report("sms", provider_id="SM-1", contact=Contact(phone="+628111272206"))
    fb_public = make_report("facebook", provider_id="111_222", contact=Contact(name="Ani", handle="9001"))
    fb_private = make_report(
        "facebook", provider_id="111_333", contact=Contact(name="Budi", handle="9002"), private=True
    )
    messenger = make_report("facebook", provider_id="m_abc", contact=Contact(name="Citra", handle="9003"))
    desk = make_report("desk_kelurahan", provider_id="31.71.05.1001:7", desk_office="31.71.05.1001")
    nobody = make_report("web", provider_id=f"web-{uuid.uuid4().hex}")  # no contact: no way back

    async def go():
        server = TestServer(app)
        await server.start_server()
        try:
            base = str(server.make_url("")).rstrip("/")
            settings = iso.settings(notify_sms_url=f"{base}/v1/send", notify_meta_graph_base=base)
            await prepare(settings)
            # A destination paused by an earlier test (its gateway was not running) is up again now.
            iso.query("UPDATE notify.destinations SET paused_until = NULL RETURNING destination")
            await store(settings, sms, fb_public, fb_private, messenger, desk, nobody)
            return await OutboxRunner(settings).run_once()
        finally:
            await server.close()

    asyncio.run(go())
    by_path = {}
    for path, body in calls:
        by_path.setdefault(path, []).append(body)
    texts = [b for b in by_path["/v1/send"] if b["to"] == "+628111272206"]
    assert len(texts) == 1 and "JKT-" in texts[0]["text"]
    assert by_path["/v19.0/111_222/comments"][0]["message"].startswith("Terima kasih")
    assert len(by_path["/v19.0/111_222/comments"]) == 1
    messages = by_path["/v19.0/me/messages"]
    assert {"recipient": {"comment_id": "111_333"}} in [{"recipient": m["recipient"]} for m in messages]
    assert {"id": "9003"} in [m["recipient"] for m in messages]
    assert "/v19.0/111_333/comments" not in by_path  # no public comment for the private reporter
    for _, body in calls:
        text = str(body)
        assert "Budi" not in text and "Ani" not in text and "Citra" not in text
    assert outbox(iso, desk.report_id)[0][1:3] == ("desk", "desk")
    assert outbox(iso, nobody.report_id)[0][1:3] == ("none", "skipped")
    for r in (sms, fb_public, fb_private, messenger):
        assert outbox(iso, r.report_id)[0][2] == "sent"
