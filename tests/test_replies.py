"""A way back on every channel: JAKI and LAPOR! reporters hear back on their own channel, desks acknowledge.

Real PostgreSQL (the outbox), the real officer API for the status change, and the simulated JAKI backend
and LAPOR! integration API of ``demo/providers.py`` as protocol peers: the JAKI backend checks the HMAC
signature and timestamp of every callback, LAPOR! the token; both honour ``Idempotency-Key``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from datetime import timedelta

import orjson
import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from demo.providers import Providers, start_http
from pipeline.crm.api import create_app
from pipeline.crm.notify.channel_replies import JakiReplySender, JakiReplySettings
from pipeline.crm.notify.outbox import OutboxRunner, destination_for, undelivered
from pipeline.crm.notify.replies import discover_replies
from pipeline.dashboard.app import Collector
from pipeline.envelope import Contact, utcnow
from pipeline.sources.config import ChannelSettingsError
from pipeline.sources.conformance import ReplyConformance
from tests.crm_helpers import make_report, prepare, store
from tests.harness import ROOT, free_port

pytestmark = pytest.mark.stack

OFFICER = {"X-API-Key": "dev-only-officer"}
LAPOR_TOKEN = "lapor-test-token"


def rows(iso, report_id: str) -> list[tuple]:
    return iso.query(
        "SELECT event_key, destination, state, attempts, provider_ref, last_error FROM notify.outbox "
        "WHERE report_id = %s ORDER BY outbox_id",
        (report_id,),
    )


def test_jaki_and_lapor_are_registered_reply_channels_and_web_still_falls_back():
    assert {"jaki", "lapor1708"} <= set(discover_replies())
    assert destination_for("jaki", False, False) == "jaki"
    assert destination_for("lapor1708", True, True) == "lapor1708"  # its own channel before e-mail
    assert destination_for("web", True, False) == "email"


def test_jaki_reply_secret_is_declared_masked_and_refused_in_production(iso, monkeypatch):
    from pipeline.settings import Settings

    settings = JakiReplySettings.load(iso.settings())
    assert "dev-only" not in repr(settings) and "********" in repr(settings)
    listed = {row["setting"]: row for row in settings.listing()}
    assert (
        listed["CRM_JAKI_REPLY_SECRET"]["secret"] and listed["CRM_JAKI_REPLY_SECRET"]["value"] == "********"
    )
    prod = Settings.model_construct(env="production")
    with pytest.raises(ChannelSettingsError, match="CRM_JAKI_REPLY_SECRET"):
        JakiReplySettings.load(prod)
    monkeypatch.setenv("CRM_JAKI_REPLY_SECRET", "a-real-secret-from-the-vault")
    assert JakiReplySettings.load(prod).secret.get_secret_value() == "a-real-secret-from-the-vault"
    monkeypatch.setenv("CRM_JAKI_REPLY_TIMEOUT_S", "soon")
    with pytest.raises(ChannelSettingsError, match="CRM_JAKI_REPLY_TIMEOUT_S"):
        JakiReplySettings.load(prod)


def test_a_status_change_reaches_jaki_and_lapor_reporters_on_their_own_channel(iso, monkeypatch):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("CRM_JAKI_REPLY_URL", f"{base}/jaki/v1/crm/callbacks")
    settings = iso.settings(lapor_api_base=f"{base}/lapor", lapor_token=LAPOR_TOKEN)
    providers = Providers(x_token="x", lapor_token=LAPOR_TOKEN)
    n = uuid.uuid4().hex[:8]
    jaki = make_report("jaki", provider_id=f"JAKI-2024-{n}", contact=Contact(handle=f"u-{n}"), private=True)
    lapor = make_report("lapor1708", provider_id=f"43{n}", contact=Contact(email=f"warga.{n}@example.com"))
    providers.lapor_items.append({"id": lapor.provider_id, "content": lapor.text, "updated_at": "2024-05-01"})

    async def go():
        http = await start_http(providers.app(), port)
        client = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        try:
            await prepare(settings)
            iso.query("UPDATE notify.destinations SET paused_until = NULL RETURNING destination")
            await store(settings, jaki, lapor)
            await store(settings, jaki, lapor)  # a replayed batch queues nothing new
            runner = OutboxRunner(settings)
            first = await runner.run_once()
            for report in (jaki, lapor):
                resp = await client.post(
                    f"/v1/reports/{report.report_id}/status",
                    json={"status": "Proses", "note": "petugas menuju lokasi", "actor": "budi"},
                    headers=OFFICER,
                )
                assert resp.status == 201, await resp.text()
            second = await runner.run_once()
            third = await runner.run_once(utcnow() + timedelta(hours=3))  # nothing left to send
            await runner.close()
            return first, second, third
        finally:
            await client.close()
            await http.cleanup()

    first, second, third = asyncio.run(go())
    assert len(first.sent) >= 2 and len(second.sent) >= 2 and not third.sent
    tracking = dict(
        iso.query(
            "SELECT report_id::text, tracking_number FROM reports WHERE report_id = ANY(%s::uuid[])",
            ([jaki.report_id, lapor.report_id],),
        )
    )
    # JAKI: one signed callback per step (the simulator refused anything unsigned), with the app's ids.
    calls = [c for c in providers.jaki_callbacks if c["report_id"] == jaki.provider_id]
    assert [(c["kind"], c["status"]) for c in calls] == [("ack", "Menunggu"), ("status", "Proses")]
    assert all(c["tracking_number"] == tracking[jaki.report_id] for c in calls)
    assert calls[0]["account_id"] == f"u-{n}" and tracking[jaki.report_id] in calls[0]["message"]
    # LAPOR!: one follow-up per step on the LAPOR! report itself, not an e-mail.
    follow = [f for f in providers.lapor_followups if f["lapor_id"] == lapor.provider_id]
    assert [f["status"] for f in follow] == ["Menunggu", "Proses"]
    assert tracking[lapor.report_id] in follow[0]["content"]
    for report, destination in ((jaki, "jaki"), (lapor, "lapor1708")):
        got = rows(iso, report.report_id)
        assert [(r[1], r[2], r[3]) for r in got] == [(destination, "sent", 1)] * 2
        assert all(r[4] for r in got)  # the provider's id for each message is kept


def test_a_failing_jaki_backend_is_retried_then_undelivered_and_listed(iso, monkeypatch):
    port = free_port()
    monkeypatch.setenv("CRM_JAKI_REPLY_URL", f"http://127.0.0.1:{port}/jaki/v1/crm/callbacks")
    settings = iso.settings(notify_max_attempts=2)
    providers = Providers(x_token="x", lapor_token=LAPOR_TOKEN, down={"jaki"})
    n = uuid.uuid4().hex[:8]
    report = make_report("jaki", provider_id=f"JAKI-2024-{n}", contact=Contact(handle=f"u-{n}"))

    async def go():
        http = await start_http(providers.app(), port)
        try:
            await prepare(settings)
            iso.query("UPDATE notify.destinations SET paused_until = NULL RETURNING destination")
            await store(settings, report)
            runner = OutboxRunner(settings)
            t0 = utcnow()
            first = await runner.run_once(t0)
            paused = await runner.run_once(t0 + timedelta(seconds=10))  # destination paused, row not due
            second = await runner.run_once(t0 + timedelta(hours=1))
            return first, paused, second
        finally:
            await http.cleanup()

    first, paused, second = asyncio.run(go())
    mine = rows(iso, report.report_id)
    assert [(r[1], r[2], r[3]) for r in mine] == [("jaki", "failed", 2)]
    assert "503" in mine[0][5]
    assert providers.calls["jaki.callback"] >= 2 and not providers.jaki_callbacks
    assert first.failed and second.failed and not paused.sent and not paused.failed

    env = {**iso.env, "CRM_DATABASE_URL": iso.env["CRM_DATABASE_URL"]}
    cli = [sys.executable, "-m", "pipeline", "notify", "undelivered"]
    out = subprocess.run([*cli, "--json", "--destination", "jaki"], env=env, capture_output=True, cwd=ROOT)
    assert out.returncode == 1, out.stderr.decode()
    listed = orjson.loads(out.stdout)["undelivered"]
    found = [r for r in listed if r["report_id"] == report.report_id]
    assert len(found) == 1 and found[0]["attempts"] == 2 and "503" in found[0]["last_error"]
    text = subprocess.run(cli, env=env, capture_output=True, cwd=ROOT, text=True)
    assert text.returncode == 1 and "undelivered" in text.stdout and "jaki" in text.stdout

    async def board():  # what the dashboard's collector puts in its snapshot
        async with await psycopg.AsyncConnection.connect(iso.env["CRM_DATABASE_URL"]) as conn:
            return await Collector(settings)._store(conn)

    shown = asyncio.run(board())["undelivered"]
    assert shown["total"] >= 1 and shown["by_destination"]["jaki"] >= 1
    mine = [r for r in shown["latest"] if r["destination"] == "jaki" and "503" in r["error"]]
    assert mine and mine[0]["attempts"] == 2


def test_a_desk_acknowledges_what_it_told_the_walk_in_reporter(iso):
    settings = iso.settings()
    office = "31.71.05.1001"
    report = make_report("desk_kelurahan", provider_id=f"{office}:{uuid.uuid4().hex[:8]}", desk_office=office)
    desk_url = "/v1/desk/notifications"

    async def go():
        client = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        try:
            await prepare(settings)
            await store(settings, report)
            listed = await (await client.get(desk_url, params={"office": office}, headers=OFFICER)).json()
            mine = [r for r in listed if r["report_id"] == report.report_id]
            assert len(mine) == 1 and mine[0]["kind"] == "ack"
            oid = mine[0]["outbox_id"]
            ack = {"how": "printed", "officer": "Siti Aminah", "office": office}
            url = f"/v1/desk/notifications/{oid}/ack"
            no_key = await client.post(url, json=ack)
            other = await client.post(url, json={**ack, "office": "31.71.01.1001"}, headers=OFFICER)
            bad = await client.post(url, json={"how": "faxed", "officer": "x"}, headers=OFFICER)
            first = await client.post(url, json=ack, headers=OFFICER)
            again = await client.post(url, json={**ack, "how": "delivered"}, headers=OFFICER)
            resp = await client.post(
                f"/v1/reports/{report.report_id}/status",
                json={"status": "Proses", "note": "petugas menuju lokasi", "actor": "budi"},
                headers=OFFICER,
            )
            assert resp.status == 201, await resp.text()
            await OutboxRunner(settings).run_once()  # desk rows are for the desk, never sent
            after = await (await client.get(desk_url, params={"office": office}, headers=OFFICER)).json()
            async with await psycopg.AsyncConnection.connect(iso.env["CRM_DATABASE_URL"]) as conn:
                overdue = await undelivered(conn, "desk", desk_overdue=timedelta(0))
            statuses = (no_key.status, other.status, bad.status)
            return statuses, await first.json(), await again.json(), after, overdue
        finally:
            await client.close()

    statuses, first, again, after, overdue = asyncio.run(go())
    assert statuses == (401, 404, 422)
    assert (first["state"], first["delivered_how"]) == ("delivered", "printed")
    assert first["delivered_by"] == "Siti Aminah"
    assert again == first  # acknowledging twice keeps the first acknowledgement
    pending = [r for r in after if r["report_id"] == report.report_id]
    assert [r["to_status"] for r in pending] == ["Proses"]  # the status change waits for the desk
    assert [(r["state"], r["to_status"]) for r in overdue if r["report_id"] == report.report_id] == [
        ("desk", "Proses")
    ]  # not acknowledged (here: at once) is undelivered; the acknowledged ack is not
    got = iso.query(
        "SELECT event_key, state, delivered_how FROM notify.outbox WHERE report_id = %s ORDER BY outbox_id",
        (report.report_id,),
    )
    assert got[0] == ("ack", "delivered", "printed") and got[1][1] == "desk"


def test_the_jaki_callback_is_signed_over_timestamp_and_body():
    import hashlib
    import hmac

    from pipeline.crm.notify.notification import Notification
    from pipeline.settings import Settings

    sender = JakiReplySender(Settings(env="test"))
    n = Notification(
        outbox_id=7, report_id="r", event_key="ack", channel="jaki", destination="jaki", kind="ack",
        to_status=None, body="Terima kasih", attempts=0, provider_id="JAKI-1", in_reply_to=None,
        private=True, tracking_number="JKT-1", status="Menunggu", handle="u-1",
    )  # fmt: skip
    body, headers = sender.request(n, now=1714540800)
    mac = hmac.new(b"dev-only-jaki-reply-secret", b"1714540800." + body, hashlib.sha256).hexdigest()
    assert headers["X-CRM-Signature"] == f"sha256={mac}" and headers["Idempotency-Key"] == "crm-7"
    assert orjson.loads(body)["account_id"] == "u-1"


# ------------------------------------------------------------------ the reply kit on a built-in channel
class _JakiBackend:
    """demo/providers.py's JAKI backend as the kit's peer (``down``: it answers 503)."""

    def __init__(self) -> None:
        self.providers = Providers(x_token="x", lapor_token=LAPOR_TOKEN)

    @property
    def down(self) -> bool:
        return "jaki" in self.providers.down

    @down.setter
    def down(self, value: bool) -> None:
        (self.providers.down.add if value else self.providers.down.discard)("jaki")

    def app(self):
        return self.providers.app()


@pytest.fixture(scope="module")
def reply_database(iso) -> str:
    asyncio.run(prepare(iso.settings()))
    return iso.env["CRM_DATABASE_URL"]


class TestJakiReplies(ReplyConformance):
    reply_sender = JakiReplySender

    def report(self, nonce: str):
        return make_report(
            "jaki", provider_id=f"JAKI-{nonce}", contact=Contact(handle=f"u-{nonce}"), private=True
        )

    def peer(self) -> _JakiBackend:
        return _JakiBackend()

    def delivered(self, peer: _JakiBackend, report) -> int:
        return sum(1 for c in peer.providers.jaki_callbacks if c["report_id"] == report.provider_id)

    def sender(self, peer_url: str) -> JakiReplySender:
        sender = JakiReplySender(self.settings())
        sender.config = JakiReplySettings(url=f"{peer_url}/jaki/v1/crm/callbacks")
        return sender


def test_the_reply_kit_sends_only_its_own_rows_and_leaves_the_destination_as_it_found_it(iso, reply_database):
    """Run on a store where other rows wait (an e-mail acknowledgement) and the destination has a state of
    its own: the kit's outbox runs leave both exactly as they were."""
    n = uuid.uuid4().hex[:8]
    other = make_report("web", contact=Contact(email=f"warga.{n}@example.com"))
    asyncio.run(store(iso.settings(), other))
    before = rows(iso, other.report_id)
    assert [(r[1], r[2]) for r in before] == [("email", "pending")]
    iso.query(
        "INSERT INTO notify.destinations (destination, failures, paused_until, last_error, updated_at) "
        "VALUES ('jaki', 1, now() - interval '1 hour', 'earlier trouble', now()) "
        "ON CONFLICT (destination) DO UPDATE SET failures = 1, last_error = 'earlier trouble', "
        "paused_until = now() - interval '1 hour' RETURNING destination"
    )
    kit = TestJakiReplies()
    try:
        _, kit_rows, _ = asyncio.run(
            kit._outbox(reply_database, kit.report(n), [], down=True, max_attempts=2)
        )
        assert kit_rows == [("ack", "failed", 2)]
        assert rows(iso, other.report_id) == before, "the kit touched a row that is not its own"
        [(failures, error, paused)] = iso.query(
            "SELECT failures, last_error, paused_until < now() FROM notify.destinations "
            "WHERE destination = 'jaki'"
        )
        assert (failures, error, paused) == (1, "earlier trouble", True), "the kit left its simulated pause"
    finally:  # the session's store is shared: no pending row or destination state left for other tests
        iso.query(
            "UPDATE notify.outbox SET state = 'skipped' WHERE report_id = %s RETURNING outbox_id",
            (other.report_id,),
        )
        iso.query("DELETE FROM notify.destinations WHERE destination = 'jaki' RETURNING destination")
