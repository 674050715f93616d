"""The surge detector's pure parts: the test, the windows, the thresholds file, the state machine."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from scipy.stats import poisson

from pipeline.processors.surge import (
    Baseline,
    GroupState,
    Hit,
    Ring,
    SurgeConfig,
    SurgeConfigError,
    SurgeDetector,
    SurgeRecord,
    fit_baseline,
    hour_of_week,
    json_schema,
    parse_windows,
    poisson_score,
    read_thresholds,
    replay,
)

SCHEMAS = Path(__file__).resolve().parents[1] / "pipeline" / "schemas"
T0 = 1_767_600_000.0  # Monday 2026-01-05 15:00 WIB
KAMPUNG_MELAYU, BALI_MESTER, BIDARA_CINA = "31.75.03.1001", "31.75.03.1003", "31.75.03.1002"


def hit(i: int, at: float, kel: str = KAMPUNG_MELAYU, category: str = "flood_drainage") -> Hit:
    return Hit(f"r-{i}", at, category, kel[:5], kel[:8], kel, f"case-{i % 3}")


@pytest.mark.parametrize(("n", "mu"), [(5, 0.01), (12, 1.5), (3, 2.0), (40, 25.0), (2000, 1800.0), (9, 0.3)])
def test_poisson_score_is_the_upper_tail(n, mu):
    expected = -poisson.logsf(n - 1, mu) / 2.302585092994046
    assert poisson_score(n, mu) == pytest.approx(max(expected, 0.0), rel=1e-6, abs=1e-9)


def test_no_score_at_or_below_the_expected_count():
    assert poisson_score(2, 3.0) == 0.0 and poisson_score(0, 0.0) == 0.0


def test_windows_parse_and_refuse_nonsense():
    assert parse_windows("15m,1h,6h") == (900, 3600, 21600)
    assert parse_windows("15s, 45s, 180s") == (15, 45, 180)
    for bad in ("1h,15m,6h", "15m,1h", "5s,1m,1h", "15 minutes,1h,6h"):
        with pytest.raises(ValueError):
            parse_windows(bad)


def test_ring_counts_slide():
    windows = (60, 240, 1440)  # slot sizes of the 15 min, 1 h and 6 h windows
    ring = Ring()
    for k in range(10):
        ring.add(T0 + k * 60, T0 + k * 60, windows)
    assert ring.counts(T0 + 540, windows) == [10, 10, 10]
    assert ring.counts(T0 + 540 + 1000, windows) == [0, 10, 10]  # the 15 min window has moved on
    assert ring.counts(T0 + 540 + 4000, windows)[1] == 0
    again = Ring.from_list(json.loads(json.dumps(ring.to_list())))
    assert again.counts(T0 + 540 + 4000, windows) == ring.counts(T0 + 540 + 4000, windows)


def test_hour_of_week_is_wib_and_starts_monday():
    assert hour_of_week(T0) == 15  # Monday 15:00 WIB
    assert hour_of_week(T0 + 86400 * 6 + 3600 * 8) == 167  # Sunday 23:00


def test_shipped_thresholds_are_valid_and_name_bpbd_for_floods():
    rules = read_thresholds()
    assert rules["flood_drainage"].notify_also == ("bpbd",)
    assert "*" in rules and all(r.open_p < r.close_p for r in rules.values())


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("flood_drainage,1,3,1e-6,0.01,20,,x", "min_count 1 outside"),
        ("flood_drainage,5,3,0.02,0.01,20,,x", "close_p 0.01 must lie between"),
        ("banjir,5,3,1e-6,0.01,20,,x", "category 'banjir' is not in the routing table"),
        ("flood_drainage,5,3,1e-6,0.01,20,bnpb,x", "notify_also 'bnpb' is not an agency_id"),
        ("flood_drainage,five,3,1e-6,0.01,20,,x", "min_count 'five' is not a whole number"),
    ],
)
def test_bad_thresholds_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "surge_thresholds.v1.csv"
    header = "category,min_count,min_ratio,open_p,close_p,prior_daily,notify_also,note"
    path.write_text(f"# comment\n{header}\n*,5,3,1e-6,0.01,3,,default\n{line}\n", encoding="utf-8")
    with pytest.raises(SurgeConfigError) as err:
        read_thresholds(path)
    assert f"{path}:4:" in str(err.value) and message in str(err.value)


def flood(n: int, start: float = T0, every: float = 60.0) -> list[Hit]:
    kels = (KAMPUNG_MELAYU, BALI_MESTER, BIDARA_CINA)
    return [hit(i, start + i * every, kels[i % 3]) for i in range(n)]


def test_a_flood_in_three_kelurahan_is_one_surge_of_their_kecamatan():
    detector = SurgeDetector()
    records = list(replay(flood(12), detector))
    opened = [r for r in records if r.state == "opened"]
    assert len(opened) == 1
    r = opened[0]
    assert (r.level, r.kecamatan, r.kota_code) == ("kecamatan", "Jatinegara", "31.75")
    assert r.count >= 5 and r.score >= 6 and r.first_report_id == "r-0"
    assert {p.kelurahan for p in r.places} == {"Kampung Melayu", "Bali Mester", "Bidara Cina"}
    assert r.notify == ["Dinas Sumber Daya Air", "Badan Penanggulangan Bencana Daerah"]
    assert r.agency_unit == "Suku Dinas Sumber Daya Air Kota Administrasi Jakarta Timur"
    states = [x.state for x in records if x.surge_id == r.surge_id]
    assert states[0] == "opened" and states[-1] == "closed" and "subsiding" in states
    seqs = [x.seq for x in records if x.surge_id == r.surge_id]
    assert seqs == list(range(1, len(seqs) + 1))
    assert records[-1].report_count == 12 and records[-1].case_ids == ["case-0", "case-1", "case-2"]


def test_one_report_in_a_quiet_kelurahan_is_not_a_surge_nor_four():
    detector = SurgeDetector()
    assert list(replay(flood(1), detector)) == []
    assert list(replay([hit(i, T0 + i, KAMPUNG_MELAYU) for i in range(4)], detector)) == []


def test_a_redelivered_report_does_not_inflate_a_window():
    detector = SurgeDetector()
    state = detector.new_state("31.75|flood_drainage")
    once = hit(1, T0)
    for _ in range(10):
        assert detector.observe(state, once) == []
    assert state.rings[KAMPUNG_MELAYU].counts(T0, detector.windows) == [1, 1, 1]


def test_replaying_from_a_saved_state_makes_the_same_decisions():
    """The worker saved its state after hit k and died; its input is replayed from a few hits before k
    (offsets not yet committed). Those are ignored and later hits give the very same records."""
    key = "31.75|flood_drainage"
    hits = flood(16, every=40.0)
    detector = SurgeDetector()
    state = detector.new_state(key)
    straight = [[(r.surge_id, r.seq, r.state, r.count) for r in detector.observe(state, h)] for h in hits]
    assert sum(1 for out in straight for r in out if r[2] == "opened") == 1
    for k in range(1, len(hits)):
        state = detector.new_state(key)
        for h in hits[:k]:
            detector.observe(state, h)
        saved = GroupState.loads(state.dumps())
        again = SurgeDetector()
        replayed = [
            [(r.surge_id, r.seq, r.state, r.count) for r in again.observe(saved, h)]
            for h in hits[max(0, k - 3) :]
        ]
        overlap = min(3, k)
        assert replayed[:overlap] == [[]] * overlap
        assert replayed[overlap:] == straight[k:]


def test_state_round_trip():
    detector = SurgeDetector()
    state = detector.new_state("31.75|flood_drainage")
    for h in flood(8):
        detector.observe(state, h)
    again = GroupState.loads(state.dumps())
    assert again.dumps() == state.dumps()
    assert [i.surge_id for i in again.incidents] == [i.surge_id for i in state.incidents]
    # the rings travel sparse (the changelog carries the state on every batch): counts survive
    assert {c: (r.heads, r.slots, r.totals) for c, r in again.rings.items()} == {
        c: (r.heads, r.slots, r.totals) for c, r in state.rings.items()
    }
    # a changelog written before sparse rings still restores
    old = json.loads(state.dumps())
    old["r"] = {c: r.to_list() for c, r in state.rings.items()}
    del old["rs"]
    assert GroupState.loads(json.dumps(old).encode()).dumps() == state.dumps()


def test_a_closed_surge_does_not_reopen_from_its_own_reports_in_the_long_window():
    detector = SurgeDetector()
    records = list(replay(flood(30, every=30.0), detector))
    assert [r.state for r in records].count("opened") == 1


def test_a_storm_across_a_kota_is_a_kota_surge():
    import random

    from pipeline.processors.surge import place_names

    rng = random.Random(3)
    kels = [c for c, p in place_names().items() if p.level == "kelurahan" and c.startswith("31.74.")]
    hits = [hit(i, T0 + i * 50, rng.choice(kels), "fallen_tree_parks") for i in range(30)]
    opened = [r for r in replay(hits, SurgeDetector()) if r.state == "opened"]
    assert len(opened) == 1 and opened[0].level == "kota" and opened[0].kota_code == "31.74"


def test_fitted_baseline_follows_history_and_keeps_priors_elsewhere(tmp_path):
    rules = read_thresholds()
    day = 86400
    history = [
        (T0 + d * day + 3600 * (i % 12), "garbage", ["31.75.03.1001", "31.75.03", "31.75"])
        for d in range(28)
        for i in range(6)
    ]
    base = fit_baseline(history, rules)
    assert base.daily("31.75.03.1001", "garbage", 1.0) > 4  # ~6 a day observed, shrunk a little to the prior
    assert base.daily("31.71.01.1001", "garbage", 1.0) < base.daily("31.75.03.1001", "garbage", 1.0) / 10
    (tmp_path / "b.json").write_bytes(base.dumps())
    again = Baseline.load(tmp_path / "b.json")
    assert again.daily("31.75.03.1001", "garbage", 1.0) == pytest.approx(
        base.daily("31.75.03.1001", "garbage", 1.0), rel=1e-3
    )
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SurgeConfigError, match=r"bad\.json: not a surge baseline file"):
        Baseline.load(tmp_path / "bad.json")


def test_records_match_the_shipped_alert_schema():
    shipped = json.loads((SCHEMAS / "alert.v1.schema.json").read_text(encoding="utf-8"))
    assert shipped == json.loads(json.dumps(json_schema()))
    record = next(iter(replay(flood(12), SurgeDetector())))
    jsonschema.validate(json.loads(record.dumps()), shipped)
    assert SurgeRecord.loads(record.dumps()) == record


def test_short_windows_scale_the_expected_counts():
    config = SurgeConfig.load(windows="15s,45s,180s")
    records = list(replay(flood(8, every=2.0), SurgeDetector(config)))
    assert records[0].state == "opened" and records[-1].state == "closed"
    assert records[0].window in ("15s", "45s", "3m")


REPLAY_FIELDS = [
    "surge_id", "state", "at", "kota", "kecamatan", "kelurahan", "kelurahan_code", "category", "count",
    "expected", "score", "report_ids",
]  # fmt: skip


def test_replay_cli_writes_one_line_per_state_change(tmp_path, capsys):
    from pipeline.cli import main

    src, out = tmp_path / "history.csv", tmp_path / "surges.jsonl"
    lines = ["id,teks,lokasi,waktu,kategori"]
    for i in range(12):
        lines.append(
            f"F{i},banjir setinggi 50 cm di jl jatinegara barat air masuk rumah,Kelurahan Kampung Melayu,"
            f"2026-01-06T14:{i * 2:02d}:00+07:00,Banjir"
        )
    lines.append("X1,jalan berlubang di jl pramuka,Kelurahan Utan Kayu Utara,2026-01-06T09:00:00,Jalan")
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    argv = ["surge", "replay", str(src), "--id-column", "id", "--text-column", "teks",
            "--location-column", "lokasi", "--time-column", "waktu", "--category-column", "kategori",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert rows and all(list(r) == REPLAY_FIELDS for r in rows)
    assert rows[0]["state"] == "opened" and rows[-1]["state"] == "closed"
    assert rows[0]["kelurahan"] == "Kampung Melayu" and rows[0]["kelurahan_code"] == KAMPUNG_MELAYU
    assert rows[0]["category"] == "flood_drainage" and set(rows[-1]["report_ids"]) <= {
        f"F{i}" for i in range(12)
    }
    assert len({r["surge_id"] for r in rows}) == 1
    assert "1 surges" in capsys.readouterr().err

    src.write_text(lines[0] + "\nF1,banjir,Kelurahan Kampung Melayu,kemarin sore,Banjir\n", encoding="utf-8")
    assert main(argv) == 2
    assert f"{src}:2: waktu 'kemarin sore' is not an ISO 8601 date or time" in capsys.readouterr().err


def test_fit_cli_learns_a_baseline_that_replay_uses(tmp_path, capsys):
    from pipeline.cli import main

    history, base = tmp_path / "history.csv", tmp_path / "baseline.json"
    rows = ["id,teks,lokasi,waktu"]
    for d in range(21):  # three weeks: two flood reports a day in Kampung Melayu, one garbage report
        for i, (text, hour) in enumerate(
            (("banjir di gang 3", 9), ("banjir lagi", 15), ("sampah menumpuk", 11))
        ):
            rows.append(
                f"H{d}-{i},{text},Kelurahan Kampung Melayu,2025-12-{1 + d:02d}T{hour:02d}:00:00+07:00"
            )
    history.write_text("\n".join(rows) + "\n", encoding="utf-8")
    argv = ["surge", "fit", str(history), "--id-column", "id", "--text-column", "teks",
            "--location-column", "lokasi", "--time-column", "waktu", "--out", str(base)]  # fmt: skip
    assert main(argv) == 0
    assert "fitted on 63 reports over 20 days" in capsys.readouterr().err
    fitted = Baseline.load(base)
    assert fitted.daily(KAMPUNG_MELAYU, "flood_drainage", 1.0) > 1.0  # ~2 a day here
    assert fitted.daily(BALI_MESTER, "flood_drainage", 1.0) < 0.2
    assert main(["surge", "fit", "--id-column", "id"]) == 2
    assert "give a CSV file of past reports, or --from-store" in capsys.readouterr().err


def test_hits_travel_one_record_per_kota_and_category_and_count_the_same():
    """The triage worker sends a batch's hits as one record per kota × category; the surge stage
    counts them as it counted one record per report (the first format, still read), and a record it
    cannot read goes to the dead letters with the reason."""
    from types import SimpleNamespace

    from pipeline.bench.surge_eval import _Event, _Table
    from pipeline.processors.surge import hit_records
    from pipeline.settings import Settings
    from pipeline.surge_stage import SurgeStage

    # three kelurahan of Jatinegara flooding, a storm in Jakarta Selatan between them
    hits = [hit(i, T0 + 20 * i, [KAMPUNG_MELAYU, BALI_MESTER, BIDARA_CINA][i % 3]) for i in range(30)]
    hits += [
        Hit(f"t-{i}", T0 + 15 * i, "fallen_tree", "31.74", "31.74.01", "31.74.01.1001") for i in range(9)
    ]
    hits.sort(key=lambda h: h.at)

    def report(h: Hit) -> SimpleNamespace:  # what hit_for reads of a triaged report
        region = SimpleNamespace(
            kota_code=h.kota_code, kecamatan_code=h.kecamatan_code, kelurahan_code=h.kelurahan_code
        )
        triage = SimpleNamespace(category=h.category, region=region, case_id=h.case_id)
        when = SimpleNamespace(timestamp=lambda: h.at)
        return SimpleNamespace(report_id=h.report_id, triage=triage, received_at=when, source_at=None)

    batched = [
        kv for i in range(0, len(hits), 10) for kv in hit_records([report(h) for h in hits[i : i + 10]])
    ]
    assert len(batched) < len(hits) / 2
    assert [h for _, v in batched for h in Hit.loads_many(v)] != hits  # grouped per key, not in arrival order
    assert sorted((h for _, v in batched for h in Hit.loads_many(v)), key=lambda h: h.at) == hits
    assert {k for k, _ in batched} == {b"31.75|flood_drainage", b"31.74|fallen_tree"}

    def run(events: list[tuple[bytes, bytes]]) -> tuple[list, dict, list]:
        stage, table = SurgeStage(Settings()), _Table()
        records, touched, bad = stage.apply(table, [_Event(v, 0) for _, v in events])
        decisions = [(r.surge_id, r.state, r.count, r.report_count) for r in records]
        return decisions, {k: s.dumps() for k, (s, _) in touched.items()}, bad

    one_by_one = run([(h.group_key.encode(), h.dumps()) for h in hits])
    grouped = run(batched)
    assert one_by_one[0] and [d[1] for d in one_by_one[0]].count("opened") == 2
    assert sorted(grouped[0]) == sorted(one_by_one[0])
    assert grouped[1] == one_by_one[1]  # the same state, so the same later decisions

    bad = run([(b"31.75|flood_drainage", b"[]"), (b"x", b'[["r-1", "soon"]]')])[2]
    assert [(code, reason.split(":")[0]) for _, reason, code in bad] == [
        ("bad_hit", "not a surge hits record")
    ] * 2
