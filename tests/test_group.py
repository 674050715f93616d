"""Grouping repeated reports into cases: joins, duplicate candidates, time window, recurrence, the rules
that keep templates and one reporter's different findings apart, idempotence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.envelope import Location, Region, Report, Reporter, Triage
from pipeline.processors.group import (
    CaseIndex,
    GroupingPolicy,
    GroupItem,
    MemoryCaseStore,
    _LazyFingerprint,
    distance_m,
    fingerprint,
    text_similarity,
)
from pipeline.processors.normalise import normalise

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
KEL = "31.72.04.1004"


def item(rid: str, text: str, *, at: datetime = T0, cat: str = "garbage", kel: str | None = KEL,
         lat: float | None = None, lon: float | None = None) -> GroupItem:  # fmt: skip
    return GroupItem(rid, cat, normalise(text), at, lat, lon, kel)


def test_first_report_opens_a_case_named_after_it() -> None:
    d = CaseIndex().assign(item("r1", "sampah menumpuk di pinggir kali"))
    assert d.case_id == "case-r1" and not d.joined and d.candidate_of is None


def test_reworded_repeat_in_the_same_kelurahan_joins() -> None:
    index = CaseIndex()
    text = "Sampah menumpuk di pinggir kali dekat pos RW 05, sudah seminggu tidak diangkut"
    first = index.assign(item("r1", text))
    again = index.assign(item("r2", "sampah numpuk di pinggir kali deket pos rw 05 udh seminggu blm diangkut",
                              at=T0 + timedelta(days=2)))  # fmt: skip
    assert again.joined and again.case_id == first.case_id
    assert "same kelurahan" in again.reason


def test_same_text_other_kelurahan_or_category_stays_apart() -> None:
    index = CaseIndex()
    index.assign(item("r1", "sampah menumpuk di pinggir kali"))
    assert not index.assign(item("r2", "sampah menumpuk di pinggir kali", kel="31.75.07.1003")).joined
    assert not index.assign(item("r3", "sampah menumpuk di pinggir kali", cat="flood_drainage")).joined


def test_outside_the_time_window_opens_a_new_case() -> None:
    index = CaseIndex(policy=GroupingPolicy(window=timedelta(days=30)))
    index.assign(item("r1", "pohon tumbang menutup jalan", cat="fallen_tree_parks"))
    later = T0 + timedelta(days=45)
    late = index.assign(item("r2", "pohon tumbang menutup jalan", cat="fallen_tree_parks", at=later))
    assert not late.joined and late.candidate_of is None


PILE = "Sampah menumpuk di pinggir kali dekat pos RW 05 sudah seminggu tidak diangkut petugas, bau menyengat"


def test_a_case_takes_reports_for_its_maximum_age_then_the_problem_recurs() -> None:
    index = CaseIndex()  # max_age 30 days from the case's first report
    first = index.assign(item("r1", PILE))
    assert index.assign(item("r2", PILE, at=T0 + timedelta(days=25))).case_id == first.case_id
    third = index.assign(item("r3", PILE, at=T0 + timedelta(days=50)))
    assert not third.joined and third.case_id == "case-r3"
    assert third.recurs == first.case_id and third.occurrence == 2 and "recurring" in third.reason
    fourth = index.assign(item("r4", PILE, at=T0 + timedelta(days=55)))
    assert fourth.joined and fourth.case_id == "case-r3"  # the new occurrence's case takes the repeats


def test_a_closed_case_takes_no_more_reports_and_links_the_next_occurrence() -> None:
    store = MemoryCaseStore()
    index = CaseIndex(store)
    first = index.assign(item("r1", PILE))
    next(iter(store.cases_in("garbage", KEL, T0))).closed = "Selesai"  # every report of it is done
    again = index.assign(item("r2", PILE, at=T0 + timedelta(days=3)))
    assert not again.joined and again.recurs == first.case_id and again.occurrence == 2
    third_time = index.assign(item("r3", PILE, at=T0 + timedelta(days=4)))
    assert third_time.joined and third_time.case_id == again.case_id


def test_a_case_merged_away_points_to_the_case_it_went_into() -> None:
    store = MemoryCaseStore()
    index = CaseIndex(store)
    index.assign(item("r1", PILE))
    next(iter(store.cases_in("garbage", KEL, T0))).closed = "merged:case-elsewhere"
    soon = index.assign(
        item("r2", PILE, at=T0 + timedelta(days=2))
    )  # the same occurrence: flag the merged case
    assert not soon.joined and soon.recurs is None and soon.candidate_of == "case-elsewhere"
    later = index.assign(item("r3", PILE, at=T0 + timedelta(days=40), kel="31.71.01.1001"))
    assert later.recurs is None  # another kelurahan: nothing to link
    index2 = CaseIndex(MemoryCaseStore())
    index2.assign(item("q1", PILE))
    next(iter(index2.store.cases_in("garbage", KEL, T0))).closed = "merged:case-elsewhere"  # type: ignore[attr-defined]
    again = index2.assign(item("q2", PILE, at=T0 + timedelta(days=40)))  # past its age: a new occurrence
    assert again.recurs == "case-elsewhere" and again.occurrence == 2


LAMP = "Lampu PJU di gang Kenanga RT 03 RW 07 mati total sudah lima hari, jalan gelap sekali tiap malam"


def test_a_repeat_of_a_case_an_officer_merged_away_joins_the_case_it_went_into() -> None:
    """The officer said the two cases are one: the next report of either joins the one that is left,
    following a merge of a merge, and only while that case is open."""
    store = MemoryCaseStore()
    index = CaseIndex(store)
    pile = index.assign(item("m1", PILE))
    lamp = index.assign(item("m2", LAMP, cat="street_lights"))
    store.case(pile.case_id).closed = f"merged:{lamp.case_id}"  # type: ignore[union-attr]
    again = index.assign(item("m3", PILE, at=T0 + timedelta(days=2)))
    assert again.joined and again.case_id == lamp.case_id
    assert f"like {pile.case_id}, which an officer merged into it" in again.reason
    assert store.case(lamp.case_id).size == 2  # type: ignore[union-attr]

    third = index.assign(item("m4", "banjir setinggi lutut merendam rumah warga gang kenanga", cat="flood"))
    store.case(lamp.case_id).closed = f"merged:{third.case_id}"  # type: ignore[union-attr]
    once_more = index.assign(item("m5", PILE, at=T0 + timedelta(days=3)))
    assert once_more.joined and once_more.case_id == third.case_id  # merged twice: the last case left

    store.case(third.case_id).closed = "Selesai"  # type: ignore[union-attr]
    after = index.assign(item("m6", PILE, at=T0 + timedelta(days=4)))
    assert not after.joined and after.case_id == "case-m6"  # the case it went into is closed: a new one


def test_a_template_filed_in_many_kelurahan_is_not_joined_on_text() -> None:
    """A monitoring team's sentence, one shop per filing: the same words in 3+ kelurahan."""
    index = CaseIndex()
    text = ("Reklame rokok berupa poster diluar toko rumah, pelanggaran pergub nomor 148 tahun 2017 "
            "tentang larangan reklame rokok di dalam ruangan")  # fmt: skip
    index.assign(item("k1", text, kel="31.71.01.1001"))
    index.assign(item("k2", text, kel="31.71.01.1002"))
    here = index.assign(item("k3", text))
    again = index.assign(item("k4", text, at=T0 + timedelta(hours=1)))
    assert not again.joined and again.candidate_of == here.case_id and "template" in again.reason


def test_one_reporters_boilerplate_about_two_places_is_not_joined() -> None:
    """The words that differ are the ones that say where: a candidate for a person, not a merge."""
    index = CaseIndex()
    base = "Spanduk banner sumbangan liar tanpa ijin dipasang di {} di pinggir jalan umum mohon ditertibkan"
    first = index.assign(item("b1", base.format("pagar seng")))
    other = index.assign(item("b2", base.format("tiang marka"), at=T0 + timedelta(days=1)))
    assert not other.joined and other.candidate_of == first.case_id and "different details" in other.reason
    same = index.assign(item("b3", base.format("pagar seng"), at=T0 + timedelta(days=2)))
    assert same.joined and same.case_id == first.case_id


def test_a_short_generic_complaint_is_not_joined_on_text() -> None:
    index = CaseIndex()
    first = index.assign(item("s1", "lampu jalan mati mohon diperbaiki", cat="street_lights"))
    again = index.assign(item("s2", "lampu jalan mati mohon diperbaiki", cat="street_lights"))
    assert not again.joined and again.candidate_of == first.case_id and "content words" in again.reason


def test_the_same_named_place_joins_differently_worded_reports() -> None:
    index = CaseIndex()
    first_text = (
        "PKL dan parkir liar di trotoar depan kampus UKI, Jalan Diponegoro No. 84, mengganggu pejalan kaki"
    )
    again_text = "PKL & parkir liar bajaj di trotoar depan kampus UKI jl diponegoro no 84 ganggu pejalan kaki"
    first = index.assign(item("p1", first_text, cat="street_vendors"))
    again = index.assign(item("p2", again_text, cat="street_vendors", at=T0 + timedelta(days=3)))
    assert again.joined and again.case_id == first.case_id


def test_somewhat_similar_text_is_a_duplicate_candidate_not_a_merge() -> None:
    index = CaseIndex()
    first = index.assign(item("r1", "Lampu PJU di gang mawar mati total sudah 5 hari, jalan jadi gelap",
                              cat="street_lights"))  # fmt: skip
    text = "lampu jalan gang mawar masih mati, gelap tiap malam"
    maybe = index.assign(item("r2", text, cat="street_lights"))
    assert not maybe.joined
    assert maybe.candidate_of == first.case_id
    assert maybe.case_id == "case-r2"
    assert 0.3 <= maybe.score < 0.5


def test_different_problem_in_the_same_kelurahan_is_not_grouped() -> None:
    index = CaseIndex()
    index.assign(item("r1", "sampah menumpuk di pinggir kali dekat pos rw"))
    other = index.assign(item("r2", "tempat sampah di taman bermain rusak dan berserakan"))
    assert not other.joined and other.candidate_of is None


def test_with_coordinates_nearby_reports_join_and_far_ones_do_not() -> None:
    index = CaseIndex()
    a = index.assign(item("r1", "pohon besar tumbang menutup jalan", cat="fallen_tree_parks",
                          lat=-6.20090, lon=106.83392))  # fmt: skip
    b = index.assign(item("r2", "ada pohon tumbang nutup jalan abis hujan", cat="fallen_tree_parks",
                          lat=-6.20101, lon=106.83401, kel=None))  # fmt: skip
    far = index.assign(item("r3", "pohon besar tumbang menutup jalan", cat="fallen_tree_parks",
                            lat=-6.2050, lon=106.8339))  # fmt: skip
    assert b.joined and b.case_id == a.case_id and "m apart" in b.reason
    assert not far.joined and far.candidate_of is None  # ~460 m away: a different tree


def test_reassigning_the_same_report_is_idempotent() -> None:
    index = CaseIndex()
    index.assign(item("r1", PILE))
    d1 = index.assign(item("r2", PILE))
    assert d1.joined and index.assign(item("r2", PILE)) == d1


def test_report_without_category_is_never_grouped() -> None:
    index = CaseIndex()
    index.assign(item("r1", "halo admin", cat=None))  # type: ignore[arg-type]
    d = index.assign(item("r2", "halo admin", cat=None))  # type: ignore[arg-type]
    assert not d.joined and "no category" in d.reason


def test_assign_accepts_a_triaged_report() -> None:
    def report(pid: str) -> Report:
        r = Report.create(
            channel="web",
            provider_id=pid,
            reporter=Reporter(id="anonymous"),
            text=PILE,
            location=Location(address="kel. kalibaru"),
            received_at=T0,
        )
        region = Region(kelurahan_code=KEL)
        r.triage = Triage(normalised_text=normalise(PILE), category="garbage", region=region)
        return r

    index = CaseIndex(MemoryCaseStore())
    first, second = report("a"), report("b")
    index.assign(first)
    assert index.assign(second).case_id == f"case-{first.report_id}"


def test_similarity_and_distance_helpers() -> None:
    same = fingerprint(normalise("pohon tumbang di jalan"))
    assert text_similarity(same, same) == 1.0
    assert text_similarity(same, fingerprint(normalise("lampu jalan mati"))) < 0.2
    assert 100 < distance_m(-6.2, 106.8, -6.201, 106.8) < 120


def test_a_kept_member_holds_its_shingles_as_a_tuple_and_scores_the_same() -> None:
    texts = [
        "Sampah menumpuk di pinggir kali dekat pos RW 05, sudah seminggu tidak diangkut",
        "sampah numpuk di pinggir kali deket pos rw 05 udh seminggu blm diangkut",
    ]
    fresh = [fingerprint(normalise(t)) for t in texts]
    kept = [_LazyFingerprint(normalise(t), kept=True).get() for t in texts]
    assert all(type(f.shingles) is frozenset for f in fresh)
    assert all(
        type(k.shingles) is tuple and sorted(k.shingles) == sorted(f.shingles)
        for k, f in zip(kept, fresh, strict=True)
    )
    expected = text_similarity(fresh[0], fresh[1])
    assert 0 < expected < 1
    # the new report (a frozenset) against a member, either way round, and two members
    assert text_similarity(fresh[0], kept[1]) == text_similarity(kept[1], fresh[0]) == expected
    assert text_similarity(kept[0], kept[1]) == expected
    # a report that joins a case keeps its fingerprint: what it computed already is converted
    index = CaseIndex()
    index.assign(item("r1", texts[0]))
    joined = index.assign(item("r2", texts[1], at=T0 + timedelta(days=2)))
    case = index.store.case(joined.case_id)
    assert joined.joined and case is not None
    assert all(type(fp.get().shingles) is tuple for _, fp in case.members)


def test_memory_store_forgets_closed_cases() -> None:
    store = MemoryCaseStore()
    index = CaseIndex(store)
    index.assign(item("old", "sampah menumpuk di pinggir kali"))
    index.assign(item("new", "pohon tumbang", cat="fallen_tree_parks", at=T0 + timedelta(days=200)))
    assert len(store) == 2
    assert store.prune(T0 + timedelta(days=100)) == 1
    assert len(store) == 1 and store.decision_for("old") is None and store.decision_for("new") is not None


def test_pruning_forgets_the_decisions_of_members_a_case_no_longer_keeps() -> None:
    """A case keeps only the members a comparison reads; the decisions of the others went with it
    too (they outlived it before: a million-row offline triage kept ~200 MB of them)."""
    store = MemoryCaseStore()
    index = CaseIndex(store)
    ids = [f"r{i}" for i in range(8)]
    for i, rid in enumerate(ids):
        assert index.assign(item(rid, PILE, at=T0 + timedelta(hours=i))).case_id == "case-r0"
    kept = {rid for rid, _ in store.case("case-r0").members}  # type: ignore[union-attr]
    assert kept != set(ids)  # some members were let go
    index.assign(item("later", "pohon tumbang", cat="fallen_tree_parks", at=T0 + timedelta(days=200)))
    assert store.prune(T0 + timedelta(days=100)) == 1
    assert [rid for rid in ids if store.decision_for(rid) is not None] == []
    assert store.decision_for("later") is not None


def test_a_crowded_kelurahan_compares_only_its_most_recently_active_cases() -> None:
    """Work per report is bounded: only the BUCKET_LIMIT latest cases of a bucket are candidates."""
    from pipeline.processors.group import BUCKET_LIMIT

    index = CaseIndex()
    streets = [f"jalan nomor{i} blok{i} gang{i}" for i in range(BUCKET_LIMIT + 8)]
    for i, street in enumerate(streets):
        index.assign(item(f"c{i}", f"sampah menumpuk di {street} warga{i} resah bau busuk lalat banyak",
                          at=T0 + timedelta(minutes=i)))  # fmt: skip
    later = T0 + timedelta(hours=1)
    oldest = index.assign(
        item("late-0", f"sampah menumpuk di {streets[0]} warga0 resah bau busuk lalat banyak", at=later)
    )
    newest = index.assign(
        item(
            "late-n",
            f"sampah menumpuk di {streets[-1]} warga{len(streets) - 1} resah bau busuk lalat banyak",
            at=later,
        )
    )
    assert newest.joined and newest.case_id == f"case-c{len(streets) - 1}"
    assert not oldest.joined  # the first case fell out of the most recent BUCKET_LIMIT
    # joining makes a case recent again: it is found by the next repeat
    again = index.assign(
        item("late-0b", f"sampah menumpuk di {streets[0]} warga0 resah bau busuk lalat banyak", at=later)
    )
    assert again.joined and again.case_id == "case-late-0"


def _best_by_scoring_everything(index: CaseIndex, it: GroupItem) -> tuple[float, str, str] | None:
    """The plain rule the pruned search must agree with: shortlist by shared words (without
    coordinates), then score every candidate in full and keep the first best."""
    from pipeline.processors.group import TEXT_SHORTLIST, _jaccard

    cases = index._candidates(it)
    mine = fingerprint(it.text)
    if len(cases) > TEXT_SHORTLIST and (it.lat is None or it.lon is None):

        def overlap(case: Any) -> float:
            return max(_jaccard(mine.words, m.get().words) for _, m in index._compared(case))

        cases = sorted(cases, key=overlap, reverse=True)[:TEXT_SHORTLIST]
    best = None
    for case in cases:
        s, why = index.score(it, mine, case)
        if s > 0 and (best is None or s > best[0]):
            best = (s, case.case_id, why)
    return None if best is None else (best[0], best[1], best[2])


def test_pruned_search_picks_what_scoring_every_candidate_picks() -> None:
    """Shingles skipped by the bound never change the decision: same case, score and reason."""
    import random

    rng = random.Random(5)
    words = ("sampah numpuk kali got mampet banjir jalan rusak lubang lampu mati pohon tumbang "
             "parkir liar trotoar pkl bau asap genangan air selokan").split()  # fmt: skip
    kels = ["31.72.04.1004", "31.75.07.1003"]
    index = CaseIndex()
    checked = 0
    for i in range(1500):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(3, 9)))
        located = rng.random() < 0.4
        lat, lon = (-6.1 + rng.uniform(0, 0.01), 106.93 + rng.uniform(0, 0.01)) if located else (None, None)
        it = item(f"p{i}", text, at=T0 + timedelta(hours=i), cat=rng.choice(["garbage", "flood"]),
                  kel=rng.choice(kels), lat=lat, lon=lon)  # fmt: skip
        expected = _best_by_scoring_everything(index, it)
        got = index._best(it, _LazyFingerprint(it.text), index._candidates(it))
        if expected is None:
            assert got is None
        else:
            assert got is not None and (got[0], got[1].case_id, got[2]) == expected
            checked += 1
        index.assign(it)
    assert checked > 1000  # most reports had a candidate to compare with


def test_explain_says_what_drove_a_members_score() -> None:
    from pipeline.processors.group import explain

    a = item("e1", PILE)
    b = item("e2", PILE + " lagi dan lagi", at=T0 + timedelta(days=2))
    far = item(
        "e3", "pohon tumbang menutup jalan", cat="garbage", at=T0 + timedelta(days=1), kel="31.75.07.1003"
    )
    why = explain(b, [far, a])
    assert why["closest"] == "e1" and why["score"] >= 0.8 and why["same_kelurahan"]
    assert "sampah" in why["shared_words"] and why["days_apart"] == 2.0 and why["distance_m"] is None
    assert "rw:5" in why["same_place"]
    located = explain(
        item("l1", "pohon tumbang menutup jalan", lat=-6.2001, lon=106.8339),
        [item("l2", "pohon besar tumbang", lat=-6.2009, lon=106.8339, kel=None)],
    )
    assert 80 <= located["distance_m"] <= 95 and located["score"] > located["text_similarity"]


LAMPS = "lampu jembatan menuju halte busway tidak menyala, gelap sekali kalau malam"
LAMPS_AGAIN = "lampu sepanjang jembatan tidak menyala, gelap kalau malam"


def test_a_case_whose_first_report_may_be_another_category_is_flagged_to_that_category_never_joined() -> None:
    index = CaseIndex()
    # the classifier read the first report as public transport, with street lights as its runner-up
    first = GroupItem("b1", "public_transport", normalise(LAMPS), T0, None, None, KEL,
                      (("street_lights", 0.47), ("road_damage", 0.23)))  # fmt: skip
    opened = index.assign(first)
    later = index.assign(item("b2", LAMPS_AGAIN, cat="street_lights", at=T0 + timedelta(days=5)))
    assert not later.joined and later.case_id == "case-b2"
    assert later.candidate_of == opened.case_id and opened.case_id in later.candidates
    assert "possible duplicate" in later.reason
    # the same problem classified as the runner-up elsewhere is no candidate: place still decides
    elsewhere = index.assign(item("b3", LAMPS_AGAIN, cat="street_lights", kel="31.75.07.1003",
                                  at=T0 + timedelta(days=5)))  # fmt: skip
    assert opened.case_id not in elsewhere.candidates


def test_a_runner_up_below_doubt_at_or_a_located_report_files_nothing_across_categories() -> None:
    for policy, lat, lon in ((GroupingPolicy(doubt_at=0.5), None, None), (GroupingPolicy(), -6.21, 106.84)):
        index = CaseIndex(policy=policy)
        first = GroupItem(
            "c1", "public_transport", normalise(LAMPS), T0, lat, lon, KEL, (("street_lights", 0.47),)
        )
        opened = index.assign(first)
        later = index.assign(
            item("c2", LAMPS_AGAIN, cat="street_lights", at=T0 + timedelta(days=5), lat=lat, lon=lon)
        )
        assert opened.case_id not in later.candidates, (policy, lat)
    assert first.doubts(0.1) == ("street_lights",) and first.doubts(0.5) == ()
    # only the first runner-up: two doubts would file every case twice over for no pair more caught
    two = GroupItem(
        "c3", "public_order_noise", "x", T0, runners_up=(("street_vendors", 0.4), ("traffic", 0.3))
    )
    assert two.doubts(0.1) == ("street_vendors",)


def test_the_chain_hands_its_runners_up_to_grouping_and_never_publishes_them() -> None:
    from pipeline.processors.chain import TriageChain

    def report(pid: str, text: str, days: int) -> Report:
        return Report.create(
            channel="web",
            provider_id=pid,
            reporter=Reporter(id="anonymous"),
            text=text,
            location=Location(address="kel. kalibaru"),
            received_at=T0 + timedelta(days=days),
        )

    chain = TriageChain(cases=CaseIndex())
    [bridge] = chain.process([report("l1", "lampu jembatan menuju halte busway tidak menyala", 0)])
    [lamps] = chain.process([report("l2", "lampu sepanjang jembatan tidak menyala, gelap", 3)])
    assert bridge.triage and lamps.triage
    assert (bridge.triage.category, lamps.triage.category) == ("public_transport", "street_lights")
    assert "street_lights" in dict(bridge.triage.runners_up)
    assert GroupItem.from_report(bridge).runners_up == bridge.triage.runners_up
    assert lamps.triage.case_candidates == [bridge.triage.case_id]
    assert b"runners_up" not in bridge.dumps() and "runners_up" not in str(Report.loads(bridge.dumps()))
