"""Surges in the CRM store and the agencies' e-mails, against real PostgreSQL and a real SMTP server."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import orjson
import pytest

from pipeline.crm.notify.outbox import OutboxRunner
from pipeline.envelope import utcnow
from pipeline.processors.surge import Hit, SurgeDetector, replay
from pipeline.surge_store import SurgeStore
from tests.crm_helpers import SmtpServer, lift_email_pause, prepare

pytestmark = pytest.mark.stack

T0 = 1_767_600_000.0
KELS = ("31.75.03.1001", "31.75.03.1003", "31.75.03.1002")


def flood_records() -> list:
    tag = uuid.uuid4().hex[:6]
    hits = [
        Hit(f"{tag}-{i}", T0 + 60 * i, "flood_drainage", "31.75", "31.75.03", KELS[i % 3]) for i in range(12)
    ]
    return list(replay(hits, SurgeDetector()))


#: The session's outbox holds other tests' due rows, ahead of this test's in the runner's order: one
#: run must reach this test's rows too.
SHARED_OUTBOX_BATCH = 100_000


def test_records_stored_once_and_each_agency_mailed_once_per_change(iso):
    records = flood_records()
    sid = records[0].surge_id
    addresses = {"sumber_daya_air": "pusdatin@dsda.example", "bpbd": "pusdalops@bpbd.example"}

    with SmtpServer() as smtp:
        settings = iso.settings(
            email_relay_port=smtp.port,
            surge_notify_addresses=orjson.dumps(addresses).decode(),
            notify_batch_size=SHARED_OUTBOX_BATCH,
        )

        async def go():
            await prepare(settings)
            store = SurgeStore(settings)
            try:
                first = await store.apply(records)
                again = await store.apply(records)  # the same records consumed again
                stale = await store.apply(records[:1])  # an old record arriving late changes nothing
            finally:
                await store.close()
            await lift_email_pause(settings)
            runner = OutboxRunner(settings)
            sent = await runner.run_once(utcnow())
            later = await runner.run_once(utcnow() + timedelta(hours=1))
            return first, again, stale, sent, later

        first, again, stale, sent, later = asyncio.run(go())
        told = [r for r in records if r.state in ("opened", "growing", "closed")]
        mails = smtp.mailbox.wait_for(2 * len(told))
    assert (first, again, stale) == (len(records), 0, 0)
    row = iso.query("SELECT state, seq, place, report_count FROM surges WHERE surge_id = %s", (sid,))
    assert row == [("closed", records[-1].seq, "Kecamatan Jatinegara, Kota Administrasi Jakarta Timur", 12)]
    assert iso.query("SELECT count(*) FROM surge_changes WHERE surge_id = %s", (sid,)) == [(len(records),)]
    mine = [m for m in mails if m["X-CRM-Surge-Id"] == sid]
    assert sorted(m["To"] for m in mine) == sorted(list(addresses.values()) * len(told))
    opened = [m for m in mine if m["X-CRM-Surge-State"] == "opened"]
    assert len(opened) == 2 and opened[0]["Subject"].startswith("[LONJAKAN BARU] Laporan banjir")
    body = opened[0].get_payload(decode=True).decode()
    assert "Kecamatan Jatinegara" in opened[0]["Subject"] and "Kampung Melayu" in body
    assert {m["References"] for m in mine} == {f"<crm.surge.{sid}@jakarta.go.id>"}  # one thread per surge
    # Other tests' rows share this outbox (and come due an hour later): only this surge's rows count.
    own = {i for (i,) in iso.query("SELECT outbox_id FROM notify.outbox WHERE surge_id = %s", (sid,))}
    assert len(own) == len(mine) and own <= set(sent.sent) and not own & set(later.sent)
    states = iso.query("SELECT DISTINCT state FROM notify.outbox WHERE surge_id = %s", (sid,))
    assert states == [("sent",)]


def test_an_agency_without_an_address_is_a_failed_row_not_a_guess(iso):
    records = flood_records()  # to the end: no surge is left open for the session's other tests
    settings = iso.settings(
        surge_notify_addresses="{}", surge_notify_address_template="", notify_batch_size=SHARED_OUTBOX_BATCH
    )

    async def go():
        await prepare(settings)
        store = SurgeStore(settings)
        try:
            await store.apply(records)
        finally:
            await store.close()
        return await OutboxRunner(settings).run_once(utcnow())

    result = asyncio.run(go())
    rows = iso.query(
        "SELECT agency, state, last_error FROM notify.outbox WHERE surge_id = %s AND to_status = 'opened' "
        "ORDER BY agency",
        (records[0].surge_id,),
    )
    assert [(a, s) for a, s, _ in rows] == [
        ("Badan Penanggulangan Bencana Daerah", "failed"),
        ("Dinas Sumber Daya Air", "failed"),
    ]
    assert all("no address for agency" in e for _, _, e in rows) and result.failed
