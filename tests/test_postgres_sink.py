"""The CRM store sink against the real PostgreSQL of the local stack."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.envelope import Contact, Report, Reporter
from pipeline.sinks.postgres import PostgresReportSink, migrate

pytestmark = pytest.mark.stack


def _r(i: int, **kw) -> Report:
    return Report.create(
        channel="web",
        provider_id=f"sink-{i}",
        reporter=Reporter(id=f"rp-{i}"),
        text=f"Saluran air tersumbat nomor {i}",
        **kw,
    )


def test_migrations_are_versioned_and_idempotent(iso):
    settings = iso.settings()
    asyncio.run(migrate(settings))
    assert asyncio.run(migrate(settings)) == []
    versions = [v for (v,) in iso.query("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions[0] == "0001_reports"


def test_batch_write_is_idempotent_and_keeps_contacts_apart(iso):
    settings = iso.settings()
    asyncio.run(migrate(settings))
    batch = [_r(i, contact=Contact(email=f"w{i}@example.com")) for i in range(50)]

    async def go():
        sink = PostgresReportSink(settings)
        try:
            first = await sink.write_until_stored(batch)
            again = await sink.write_until_stored([*batch, _r(50)])
        finally:
            await sink.close()
        return first, again

    first, again = asyncio.run(go())
    assert first.stored == 50 and again.stored == 1 and not first.poison
    ids = [str(r.report_id) for r in batch]
    assert iso.query("SELECT count(*) FROM reports WHERE report_id = ANY(%s::uuid[])", (ids,))[0][0] == 50
    assert (
        iso.query("SELECT count(*) FROM reporter_contacts WHERE report_id = ANY(%s::uuid[])", (ids,))[0][0]
        == 50
    )
    cols = [
        c
        for (c,) in iso.query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'reports'"
        )
    ]
    assert "email" not in cols and "phone" not in cols


def test_a_row_the_store_refuses_is_isolated_and_the_rest_stored(iso):
    settings = iso.settings()
    asyncio.run(migrate(settings))
    good = [_r(100 + i) for i in range(7)]
    poison = _r(200)
    poison.text = "nul byte \x00 is refused by PostgreSQL text"

    async def go():
        sink = PostgresReportSink(settings)
        try:
            return await sink.write_until_stored([*good[:3], poison, *good[3:]])
        finally:
            await sink.close()

    result = asyncio.run(go())
    assert result.stored == 7
    assert [r.report_id for r, _ in result.poison] == [poison.report_id]
    assert "0x00" in result.poison[0][1] or "NUL" in result.poison[0][1]
