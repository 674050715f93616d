"""Case grouping across batches and workers, with the open cases in the real Redis of the stack."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from pipeline.processors.cases_redis import RedisCaseGrouper
from pipeline.processors.group import GroupItem

pytestmark = pytest.mark.stack

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def _item(rid: str, text: str, *, lat=None, lon=None, kel=None, cat="fallen_tree", minutes=0) -> GroupItem:
    return GroupItem(rid, cat, text, T0 + timedelta(minutes=minutes), lat, lon, kel)


def run(iso, batches):
    async def go():
        client = aioredis.from_url(iso.env["CRM_REDIS_URL"])
        try:
            out = []
            for batch in batches:
                # a fresh grouper per batch: nothing may be carried in process memory
                out.append(await RedisCaseGrouper(client, f"{iso.tag}-cases").assign(batch))
            return out
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_reports_of_one_fallen_tree_join_one_case_across_batches(iso):
    first = _item("r1", "pohon tumbang menutup jalan kemang raya", lat=-6.2615, lon=106.8132)
    near = _item(
        "r2", "pohon besar tumbang menutup jalan di kemang raya", lat=-6.2620, lon=106.8135, minutes=20
    )
    far = _item("r3", "pohon tumbang menutup jalan", lat=-6.1500, lon=106.9000, minutes=30)
    other_cat = _item("r4", "pohon tumbang menutup jalan kemang raya", lat=-6.2615, lon=106.8132, cat="flood")
    [[d1], [d2, d3, d4]] = run(iso, [[first], [near, far, other_cat]])
    assert not d1.joined and d1.case_id == "case-r1"
    assert d2.joined and d2.case_id == d1.case_id
    assert d3.case_id != d1.case_id and d4.case_id != d1.case_id


def test_text_only_reports_group_by_kelurahan_and_replay_is_stable(iso):
    a = _item(
        "t1", "sampah menumpuk di pinggir kali gang masjid bau sekali", kel="31.72.04.1004", cat="garbage"
    )
    b = _item(
        "t2",
        "sampah menumpuk pinggir kali gang masjid sangat bau",
        kel="31.72.04.1004",
        cat="garbage",
        minutes=60,
    )
    c = _item(
        "t3",
        "sampah menumpuk pinggir kali gang masjid sangat bau",
        kel="31.71.01.1001",
        cat="garbage",
        minutes=61,
    )
    [[da], [db, dc], [db_again]] = run(iso, [[a], [b, c], [b]])
    assert db.joined and db.case_id == da.case_id
    assert dc.case_id != da.case_id
    assert db_again == db  # a redelivered report finds its earlier decision


def test_one_long_lived_grouper_sees_cases_another_worker_opened(iso):
    async def go():
        client = aioredis.from_url(iso.env["CRM_REDIS_URL"])
        try:
            ns = f"{iso.tag}-shared"
            worker_a, worker_b = RedisCaseGrouper(client, ns), RedisCaseGrouper(client, ns)
            a1 = await worker_a.assign(
                [_item("s1", "banjir setinggi lutut di jalan kemang", lat=-6.26, lon=106.81, cat="flood")]
            )
            b1 = await worker_b.assign(
                [
                    _item(
                        "s2",
                        "banjir selutut di jalan kemang raya",
                        lat=-6.2601,
                        lon=106.8101,
                        cat="flood",
                        minutes=5,
                    )
                ]
            )
            a2 = await worker_a.assign(
                [
                    _item(
                        "s3",
                        "jalan kemang banjir setinggi lutut",
                        lat=-6.2602,
                        lon=106.8102,
                        cat="flood",
                        minutes=10,
                    )
                ]
            )
            return a1[0], b1[0], a2[0]
        finally:
            await client.aclose()

    a1, b1, a2 = asyncio.run(go())
    assert b1.joined and a2.joined and a1.case_id == b1.case_id == a2.case_id


def test_a_located_report_joins_a_case_known_only_by_its_kelurahan(iso):
    kel = "31.74.06.1001"
    desk = _item("d1", "pohon tumbang menutup jalan depan sekolah dasar negeri", kel=kel)
    app = _item(
        "a1",
        "pohon tumbang menutup jalan depan sekolah dasar",
        lat=-6.2615,
        lon=106.8132,
        kel=kel,
        minutes=30,
    )
    [[first], [second]] = run(iso, [[desk], [app]])
    assert second.joined and second.case_id == first.case_id
