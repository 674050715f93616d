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
        "t1",
        "sampah menumpuk di pinggir kali gang masjid bau sekali sudah seminggu belum diangkut petugas",
        kel="31.72.04.1004",
        cat="garbage",
    )
    b = _item(
        "t2",
        "sampah menumpuk pinggir kali gang masjid sangat bau seminggu belum diangkut petugas",
        kel="31.72.04.1004",
        cat="garbage",
        minutes=60,
    )
    c = _item(
        "t3",
        "sampah menumpuk pinggir kali gang masjid sangat bau seminggu belum diangkut petugas",
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
    desk = _item("d1", "pohon beringin tumbang menutup jalan depan sekolah dasar negeri 05 pagi", kel=kel)
    app = _item(
        "a1",
        "pohon beringin tumbang menutup jalan depan sekolah dasar negeri 05",
        lat=-6.2615,
        lon=106.8132,
        kel=kel,
        minutes=30,
    )
    [[first], [second]] = run(iso, [[desk], [app]])
    assert second.joined and second.case_id == first.case_id


def test_a_case_is_filed_under_every_cell_a_report_within_the_radius_can_be_in_and_few_others():
    import math
    import random

    from pipeline.processors.group import _cell, _cell_key, distance_m

    grouper = RedisCaseGrouper(None, "t")  # type: ignore[arg-type]  # filing needs no connection
    rng = random.Random(7)
    radius = grouper.policy.radius_m
    counts = []
    for _ in range(4000):
        lat, lon = rng.uniform(-6.40, -6.08), rng.uniform(106.68, 107.00)
        filed = set(grouper._filed_in_cells("flood", lat, lon))
        counts.append(len(filed))
        for _ in range(5):  # reports up to the radius away, in any direction, many near its edge
            r, bearing = radius * math.sqrt(rng.random()) ** 0.2, rng.uniform(0, 2 * math.pi)
            rlat = lat + r * math.cos(bearing) / 111_195.0
            rlon = lon + r * math.sin(bearing) / (111_195.0 * math.cos(math.radians(lat)))
            if distance_m(lat, lon, rlat, rlon) <= radius:
                assert grouper._k_cell("flood", _cell_key(_cell(rlat, rlon))) in filed
    assert min(counts) == 4 and max(counts) <= 9
    assert sum(counts) / len(counts) < 5.5  # not all nine cells around it


def test_a_report_finds_a_case_across_a_cell_corner(iso):
    from pipeline.processors.group import _CELL_DEG

    corner_lat, corner_lon = -1390 * _CELL_DEG, 23740 * _CELL_DEG  # a cell corner in Jakarta
    d = 0.0002  # ~22 m each way: the two reports are ~63 m apart, in diagonal cells
    case = _item("corner-c1", "pohon tumbang menutup jalan", lat=corner_lat + d, lon=corner_lon + d)
    report = _item(
        "corner-r1", "pohon tumbang menutup jalan raya", lat=corner_lat - d, lon=corner_lon - d, minutes=5
    )
    (first,), (second,) = run(iso, [[case], [report]])
    assert not first.joined
    assert second.joined and second.case_id == first.case_id


PILE = "sampah menumpuk di pinggir kali gang masjid bau sekali sudah seminggu belum diangkut petugas"


def test_a_closed_case_opens_the_next_occurrence_and_templates_count_across_batches(iso):
    from pipeline.processors.cases_redis import mark_closed

    async def go():
        client = aioredis.from_url(iso.env["CRM_REDIS_URL"])
        ns = f"{iso.tag}-life"
        try:
            first = await RedisCaseGrouper(client, ns).assign(
                [_item("c1", PILE, kel="31.72.04.1004", cat="garbage")]
            )
            await mark_closed(client, ns, first[0].case_id, "Selesai", 3600)
            later = await RedisCaseGrouper(client, ns).assign(
                [_item("c2", PILE, kel="31.72.04.1004", cat="garbage", minutes=60)]
            )
            # the same sentence filed in two more kelurahan by other workers: a template from then on
            kels = ["31.71.01.1001", "31.71.01.1002"]
            for i, kel in enumerate(kels):
                await RedisCaseGrouper(client, ns).assign(
                    [_item(f"o{i}", PILE, kel=kel, cat="garbage", minutes=70)]
                )
            repeat = await RedisCaseGrouper(client, ns).assign(
                [_item("c3", PILE, kel="31.72.04.1004", cat="garbage", minutes=80)]
            )
            return first[0], later[0], repeat[0]
        finally:
            await client.aclose()

    first, later, repeat = asyncio.run(go())
    assert not later.joined and later.recurs == first.case_id and later.occurrence == 2
    assert not repeat.joined and repeat.candidate_of == later.case_id and "template" in repeat.reason


def test_a_case_another_category_may_have_been_is_flagged_across_batches_and_closes_everywhere(iso):
    from pipeline.processors.cases_redis import mark_closed

    kel = "31.74.02.1007"
    bridge = GroupItem("x1", "public_transport", "lampu jembatan menuju halte busway tidak menyala gelap",
                       T0, None, None, kel, (("street_lights", 0.35), ("road_damage", 0.17)))  # fmt: skip

    def lamps(rid: str, minutes: int, **kw):
        return _item(
            rid, "lampu sepanjang jembatan tidak menyala gelap", cat="street_lights", minutes=minutes, **kw
        )

    async def go():
        client = aioredis.from_url(iso.env["CRM_REDIS_URL"])
        ns = f"{iso.tag}-doubt"
        try:
            [opened] = await RedisCaseGrouper(client, ns).assign([bridge])
            key = f"{ns}:case:kel:doubted:street_lights:{kel}"
            filed = await client.zscore(key, opened.case_id)
            later = await RedisCaseGrouper(client, ns).assign(
                [lamps("x2", 60, kel=kel), lamps("x3", 60, kel="31.74.02.1001"),
                 lamps("x4", 60, kel=kel, lat=-6.2101, lon=106.8301)]
            )  # fmt: skip
            await mark_closed(client, ns, opened.case_id, "Selesai", 3600)
            rescored = await client.zscore(key, opened.case_id)
            [after] = await RedisCaseGrouper(client, ns).assign([lamps("x5", 120, kel=kel)])
            return opened, filed, later, rescored, after
        finally:
            await client.aclose()

    opened, filed, (same_kel, other_kel, located), rescored, after = asyncio.run(go())
    assert filed is not None  # filed in Redis under its runner-up's bucket of its kelurahan
    assert not same_kel.joined and same_kel.candidate_of == opened.case_id
    assert opened.case_id not in other_kel.candidates
    assert opened.case_id not in located.candidates  # reports with coordinates: not across categories
    # closing it moves it in that bucket too, so every worker re-reads it and sees it closed
    assert rescored is not None and rescored > filed
    assert opened.case_id not in after.candidates


@pytest.mark.parametrize("long_lived", [False, True], ids=["fresh-grouper", "worker-cache"])
def test_a_report_split_out_takes_its_words_along_and_its_repeats_join_the_new_case(iso, long_lived):
    """Two trees on one road joined one case; the officer splits the second out. Its repeat must join
    the split-out case, not come back to the first through the words the officer took out of it, and
    the first tree's repeat still joins the first case (also in a worker that cached it)."""
    from pipeline.processors.cases_redis import _decode_case, split_out

    school = _item("s1", "pohon tumbang menutup jalan kemang raya depan sekolah", lat=-6.2615, lon=106.8132)
    mosque = _item(
        "s2", "pohon tumbang menutup jalan kemang raya depan masjid", lat=-6.2624, lon=106.8138, minutes=30
    )
    mosque_again = _item(
        "s3", "pohon tumbang depan masjid menutup jalan kemang raya", lat=-6.2625, lon=106.8139, minutes=90
    )
    school_again = _item(
        "s4", "pohon tumbang depan sekolah menutup jalan kemang raya", lat=-6.2614, lon=106.8131, minutes=95
    )

    async def go():
        client = aioredis.from_url(iso.env["CRM_REDIS_URL"])
        ns = f"{iso.tag}-split-{long_lived}"
        worker = RedisCaseGrouper(client, ns)

        def grouper() -> RedisCaseGrouper:
            return worker if long_lived else RedisCaseGrouper(client, ns)

        try:
            [first] = await grouper().assign([school])
            [joined] = await grouper().assign([mosque])
            stored = _decode_case(await client.get(worker._k_case(first.case_id)))
            bucket = worker.filed_under(stored)[0]
            filed = await client.zscore(bucket, first.case_id)
            await split_out(client, ns, mosque, first.case_id, "case-split-s2")
            bumped = await client.zscore(bucket, first.case_id)
            [replayed] = await grouper().assign([mosque])
            [repeat, other] = await grouper().assign([mosque_again, school_again])
            return first, joined, replayed, repeat, other, bumped - filed
        finally:
            await client.aclose()

    first, joined, replayed, repeat, other, moved = asyncio.run(go())
    assert joined.joined and joined.case_id == first.case_id  # the wrong merge an officer undoes
    assert moved > 0  # the old case moved in its buckets: a worker that cached it reads it again
    assert replayed.case_id == "case-split-s2"  # a redelivered copy keeps the officer's decision
    assert repeat.joined and repeat.case_id == "case-split-s2", repeat
    assert other.joined and other.case_id == first.case_id, other


def test_a_repeat_of_a_merged_case_joins_the_case_it_went_into_across_workers(iso):
    """The officer merged case A (text only) into case B (elsewhere): a fresh worker reads A from its
    bucket, follows the merge to B by id, and files the repeat under B."""
    from pipeline.processors.cases_redis import _decode_case, mark_closed

    kel = "31.72.04.1004"
    pile = ("sampah menumpuk di pinggir kali dekat pos rw 05 sudah seminggu tidak diangkut petugas "
            "bau menyengat banyak lalat")  # fmt: skip
    a = _item("g1", pile, kel=kel, cat="garbage")
    b = _item("g2", "tumpukan sampah liar di bantaran kali", lat=-6.2101, lon=106.8301, cat="garbage")
    repeat = _item("g3", pile + " mohon diangkut", kel=kel, cat="garbage", minutes=120)

    async def go():
        client = aioredis.from_url(iso.env["CRM_REDIS_URL"])
        ns = f"{iso.tag}-merged"
        try:
            [da, db] = await RedisCaseGrouper(client, ns).assign([a, b])
            await mark_closed(client, ns, da.case_id, f"merged:{db.case_id}", 3600)
            [dr] = await RedisCaseGrouper(client, ns).assign([repeat])
            kept = _decode_case(await client.get(f"{ns}:case:{db.case_id}"))
            return da, db, dr, kept
        finally:
            await client.aclose()

    da, db, dr, kept = asyncio.run(go())
    assert da.case_id != db.case_id
    assert dr.joined and dr.case_id == db.case_id, dr
    assert kept.size == 2 and "g3" in [rid for rid, _ in kept.members]


def test_a_case_read_again_keeps_its_members_fingerprints(iso, monkeypatch):
    """A case a worker holds is read again once it is no longer fresh (another worker or an officer may
    have changed it): its members' texts are the same, so their fingerprints are not made again."""
    from pipeline.processors import cases_redis

    monkeypatch.setattr(cases_redis, "CACHE_FRESH_S", 0.0)  # every cached case is stale at once
    kel = "31.72.04.1004"
    text = "sampah menumpuk di pinggir kali gang masjid bau sekali sudah seminggu belum diangkut petugas"
    first = _item("f1", text, kel=kel, cat="garbage")
    again = _item("f2", text.replace("bau sekali", "sangat bau"), kel=kel, cat="garbage", minutes=30)
    made: list[str] = []
    real = cases_redis._LazyFingerprint.get

    def counted(self):
        if self._fp is None:
            made.append(self.text)
        return real(self)

    monkeypatch.setattr(cases_redis._LazyFingerprint, "get", counted)

    async def go():
        client = aioredis.from_url(iso.env["CRM_REDIS_URL"])
        try:
            worker = RedisCaseGrouper(client, f"{iso.tag}-reread")
            [opened] = await worker.assign([first])
            member = worker._cache[opened.case_id][1].members[0][1]
            made.clear()
            [joined] = await worker.assign([again])
            reread = worker._cache[opened.case_id][1]
            return opened, joined, member, reread
        finally:
            await client.aclose()

    opened, joined, member, reread = asyncio.run(go())
    assert joined.joined and joined.case_id == opened.case_id
    assert reread.members[0][1] is member  # the re-read case holds the fingerprint made before
    assert text not in made  # and it was not made again when the new report was compared with it


def test_a_member_whose_text_changed_is_fingerprinted_again():
    from pipeline.processors.cases_redis import _decode_case, _encode_case
    from pipeline.processors.group import CaseRecord, _LazyFingerprint

    old_fp, other_fp = _LazyFingerprint("pohon tumbang", kept=True), _LazyFingerprint("x", kept=True)
    known = CaseRecord("c1", "fallen_tree", T0, T0, None, None, "k", [("r1", old_fp), ("r2", other_fp)])
    stored = CaseRecord(
        "c1", "fallen_tree", T0, T0, None, None, "k",
        [("r1", _LazyFingerprint("pohon tumbang", kept=True)), ("r2", _LazyFingerprint("y", kept=True))],
    )  # fmt: skip
    decoded = _decode_case(_encode_case(stored), known)
    assert decoded.members[0][1] is old_fp
    assert decoded.members[1][1] is not other_fp and decoded.members[1][1].text == "y"
