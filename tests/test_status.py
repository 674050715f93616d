"""Status lifecycle against the real stack: Kafka status topic, PostgreSQL, a real SMTP server."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipeline.crm.api import create_app
from pipeline.crm.notify.outbox import OutboxRunner
from pipeline.crm.status import (
    DISPOSISI,
    FINAL,
    KOORDINASI,
    MENUNGGU,
    STATUSES,
    TRANSITIONS,
    StatusEvent,
    TransitionError,
    check_transition,
)
from pipeline.crm.status_service import StatusConsumer, StatusService
from pipeline.envelope import Contact, utcnow
from pipeline.topics import Topics
from tests.crm_helpers import SmtpServer, lift_email_pause, make_report, prepare, store
from tests.harness import read_topic

pytestmark = pytest.mark.stack

OFFICER = {"X-API-Key": "dev-only-officer"}


def test_transition_table_is_explicit_and_closed():
    assert set(TRANSITIONS) == set(STATUSES)
    assert all(targets <= set(STATUSES) for targets in TRANSITIONS.values())
    assert all(not TRANSITIONS[s] for s in FINAL)
    check_transition(MENUNGGU, KOORDINASI)
    with pytest.raises(TransitionError) as err:
        check_transition(MENUNGGU, "Selesai")
    assert err.value.code == "invalid_transition" and "Menunggu" in err.value.reason
    with pytest.raises(TransitionError) as err:
        check_transition("Selesai", "Proses")
    assert err.value.code == "final_status"


async def _consume_one(consumer: StatusConsumer, report_id: str, wait_s: float = 30):
    """Consume until an event for ``report_id`` was handled (earlier tests' events replay harmlessly)."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while asyncio.get_running_loop().time() < deadline:
        out = await consumer.run_batch(timeout_ms=500)
        mine = [c for c in out if c is None or c.report_id == report_id]
        if mine:
            return mine
    raise TimeoutError("no status event consumed")


def test_a_report_through_its_whole_lifecycle_with_a_mail_at_each_step(iso):
    """Intake → Koordinasi (topic) → Proses → Menunggu Validasi → Selesai (API); one mail per step."""
    with SmtpServer() as smtp:
        settings = iso.settings(email_relay_port=smtp.port, status_group_id="lifecycle")
        report = make_report(
            "email", provider_id="lapor-1@warga.example", contact=Contact(email="warga1@example.com")
        )

        async def go():
            await prepare(settings)
            await store(settings, report)
            # only this report's rows: the session's store holds other tests' rows, due at other times
            runner = OutboxRunner(settings, only_reports=[report.report_id])

            async def send_mine() -> None:
                await lift_email_pause(settings)
                assert (await runner.run_once()).sent

            await send_mine()
            consumer = StatusConsumer(settings)
            await consumer.start()
            client = TestClient(TestServer(create_app(settings)))
            await client.start_server()
            try:
                event = StatusEvent(report_id=report.report_id, status="Koordinasi", actor="kel-cpt")
                await consumer.service.publisher.send_many(
                    [(Topics(iso.tag).status, report.report_id.encode(), event.model_dump_json().encode())]
                )
                changes = await _consume_one(consumer, report.report_id)
                assert changes[0] is not None and changes[0].to_status == "Koordinasi"
                await send_mine()
                for status in ("Proses", "Menunggu Validasi", "Selesai"):
                    resp = await client.post(
                        f"/v1/reports/{report.report_id}/status",
                        json={"status": status, "note": f"catatan {status}", "actor": "budi"},
                        headers=OFFICER,
                    )
                    assert resp.status == 201, await resp.text()
                    await send_mine()
                one = await client.get(
                    f"/open311/v2/requests/{report.report_id}.json", params={"api_key": "dev-only-officer"}
                )
                return await one.json()
            finally:
                await client.close()
                await consumer.stop()

        open311 = asyncio.run(go())
        smtp.mailbox.wait_for(5)
        mails = [m for m in smtp.mailbox.messages if m["To"] == "warga1@example.com"]  # other tests' acks

    rid = (report.report_id,)
    tracking = iso.query("SELECT tracking_number FROM reports WHERE report_id = %s", rid)[0][0]
    assert tracking.startswith("JKT-")
    subjects = [m["Subject"] for m in mails]
    assert subjects == [
        f"[{tracking}] Laporan Anda: {s}"
        for s in ("Menunggu", "Koordinasi", "Proses", "Menunggu Validasi", "Selesai")
    ]
    for m in mails:  # threaded replies to the citizen's original mail
        assert m["To"] == "warga1@example.com"
        assert m["In-Reply-To"] == "<lapor-1@warga.example>"
        assert tracking in m.get_payload(decode=True).decode()
    history = iso.query(
        "SELECT from_status, to_status, actor FROM status_history WHERE report_id = %s ORDER BY changed_at, "
        "history_id",
        (report.report_id,),
    )
    assert [(f, t) for f, t, _ in history] == [
        (None, "Menunggu"),
        ("Menunggu", "Koordinasi"),
        ("Koordinasi", "Proses"),
        ("Proses", "Menunggu Validasi"),
        ("Menunggu Validasi", "Selesai"),
    ]
    assert history[2][2] == "officer:budi"
    assert open311[0]["status"] == "closed" and open311[0]["crm_status"] == "Selesai"
    changes = [
        c
        for c in read_topic(iso, Topics(iso.tag).status_changes, min_records=4)
        if c["report_id"] == report.report_id
    ]
    assert [c["to_status"] for c in changes] == ["Koordinasi", "Proses", "Menunggu Validasi", "Selesai"]
    assert all("warga1" not in orjson.dumps(c).decode() for c in changes)


def test_disposisi_reroutes_the_report_to_another_agency(iso):
    settings = iso.settings()
    report = make_report("web", contact=Contact(email="warga2@example.com"))

    async def go():
        await prepare(settings)
        await store(settings, report)
        service = StatusService(settings)
        try:
            change, replayed = await service.apply(
                StatusEvent(
                    event_id="dispo-1",
                    report_id=report.report_id,
                    status=DISPOSISI,
                    actor="kel-cpt",
                    agency="sumber_daya_air",
                    note="saluran, bukan jalan",
                )
            )
            again, replayed_again = await service.apply(
                StatusEvent(
                    event_id="dispo-1", report_id=report.report_id, status=DISPOSISI, actor="x", agency="x"
                )
            )
        finally:
            await service.stop()
        return change, replayed, again, replayed_again

    change, replayed, again, replayed_again = asyncio.run(go())
    assert not replayed and replayed_again and again.event_id == change.event_id
    assert change.agency == "Dinas Sumber Daya Air"
    assert change.agency_unit == "Suku Dinas Sumber Daya Air Kota Administrasi Jakarta Pusat"
    assert change.previous_agency == "Dinas Bina Marga"
    rows = iso.query(
        "SELECT agency, agency_unit, active, assigned_by FROM assignments WHERE report_id = %s "
        "ORDER BY assignment_id",
        (report.report_id,),
    )
    assert rows == [
        ("Dinas Bina Marga", "Suku Dinas Bina Marga Kota Administrasi Jakarta Pusat", False, "pipeline"),
        ("Dinas Sumber Daya Air", change.agency_unit, True, "kel-cpt"),
    ]
    assert iso.query("SELECT agency, status FROM reports WHERE report_id = %s", (report.report_id,)) == [
        ("Dinas Sumber Daya Air", "Disposisi")
    ]
    t = Topics(iso.tag)
    routed = read_topic(iso, t.routed_agency("Dinas Sumber Daya Air"), min_records=1)
    mine = [r for r in routed if r["report_id"] == report.report_id]
    assert mine and mine[0]["triage"]["agency"] == "Dinas Sumber Daya Air"
    assert "contact" not in mine[0] and "warga2" not in orjson.dumps(mine[0]).decode()
    assert iso.query(
        "SELECT count(*) FROM status_history WHERE report_id = %s AND to_status = 'Disposisi'",
        (report.report_id,),
    ) == [(1,)]


def test_invalid_transitions_are_refused_on_the_api_and_dead_lettered_on_the_topic(iso):
    settings = iso.settings(status_group_id="invalid")
    report = make_report("web", contact=Contact(email="warga3@example.com"))

    async def go():
        await prepare(settings)
        await store(settings, report)
        client = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        consumer = StatusConsumer(settings)
        await consumer.start()
        try:
            path = f"/v1/reports/{report.report_id}/status"
            r409 = await client.post(path, json={"status": "Selesai"}, headers=OFFICER)
            r422 = await client.post(path, json={"status": "Beres"}, headers=OFFICER)
            r422b = await client.post(path, json={"status": "Disposisi"}, headers=OFFICER)
            r404 = await client.post(
                "/v1/reports/JKT-99999999/status", json={"status": "Proses"}, headers=OFFICER
            )
            bad = StatusEvent(report_id=report.report_id, status="Menunggu Validasi", actor="x")
            await consumer.service.publisher.send_many(
                [(Topics(iso.tag).status, report.report_id.encode(), bad.model_dump_json().encode())]
            )
            out = await _consume_one(consumer, report.report_id)
            return (
                (r409.status, await r409.json()),
                (r422.status, await r422.json()),
                (r422b.status, await r422b.json()),
                r404.status,
                out,
                bad.event_id,
            )
        finally:
            await consumer.stop()
            await client.close()

    (s409, b409), (s422, b422), (s422b, b422b), s404, out, bad_id = asyncio.run(go())
    assert s409 == 409 and b409[0]["error_code"] == "invalid_transition"
    assert "'Menunggu' cannot become 'Selesai'" in b409[0]["description"]
    assert s422 == 422 and "unknown status" in b422[0]["description"]
    assert s422b == 422 and b422b[0]["error_code"] == "agency_required"
    assert s404 == 404
    assert out == [None]
    letters = read_topic(iso, Topics(iso.tag).deadletter, min_records=1)
    mine = [d for d in letters if d["stage"] == "status" and d.get("report_id") == report.report_id]
    assert mine and mine[0]["code"] == "invalid_transition" and "Menunggu Validasi" in mine[0]["reason"]
    assert bad_id in orjson.loads(__import__("base64").b64decode(mine[0]["raw_b64"]))["event_id"]
    rid = (report.report_id,)
    assert iso.query("SELECT status FROM reports WHERE report_id = %s", rid) == [("Menunggu",)]
    assert iso.query("SELECT count(*) FROM status_history WHERE report_id = %s", rid) == [(1,)]


def test_overdue_reports_raise_one_escalation_each(iso):
    settings = iso.settings()
    late = make_report("web", expected_in=timedelta(days=-1))
    done = make_report("web", expected_in=timedelta(days=-1))

    async def go():
        await prepare(settings)
        await store(settings, late, done)
        service = StatusService(settings)
        try:
            for status in ("Proses", "TL Ditolak"):
                await service.apply(StatusEvent(report_id=done.report_id, status=status, actor="x"))
            first = await service.check_escalations()
            second = await service.check_escalations(utcnow() + timedelta(hours=1))
        finally:
            await service.stop()
        return first, second

    first, second = asyncio.run(go())
    assert late.report_id in [e.report_id for e in first]
    assert done.report_id not in [e.report_id for e in first]
    assert late.report_id not in [e.report_id for e in second]
    on_topic = read_topic(iso, Topics(iso.tag).escalation, min_records=1)
    assert sum(1 for e in on_topic if e["report_id"] == late.report_id) == 1
