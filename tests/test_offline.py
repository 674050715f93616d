"""``crm-pipeline triage`` and ``crm-pipeline train`` over CSV files (no Kafka)."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from pipeline.cli import main

ROWS = [
    ("A1", "Mhn TL pju mati di gg. 5, gelap bgt. Hub 0812-3456-7890", "Kel. Kali Baru"),
    (
        "A2",
        "sampah numpuk di gg melati rt 05 blm diangkut seminggu, bau busuk banyak lalat",
        "KELURAHAN KLENDER",
    ),
    (
        "A3",
        "Sampah numpuk di gang Melati RT 05 belum diangkut seminggu, bau busuk banyak lalat",
        "Kelurahan Klender",
    ),
    ("A4", "parkir liar di bahu jalan bikin macet", "-6.101002,106.932576"),
    ("A5", "PKL jualan di trotoar", "31.75.07.1003"),
    ("A6", "selamat pagi admin", ""),
]
PILE = "Sampah numpuk di gang Melati RT 05 belum diangkut seminggu, bau busuk banyak lalat"
PILE_AGAIN = "sampah numpuk di gg melati rt 05 blm diangkut seminggu, bau busuk banyak lalat"
FIELDS = "id category confidence agency kota kecamatan kelurahan kelurahan_code case_id route_reason".split()


@pytest.fixture(autouse=True)
def root_logging_restored() -> Iterator[None]:
    """``main`` points the root logger at the sys.stderr of the moment, which is this test's capture;
    left in place, a later test's threads (aiosmtpd's) log into that closed file."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def write_csv(path: Path, header: list[str], rows: list[tuple[str, ...]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def triage(src: Path, out: Path, *extra: str) -> int:
    columns = ["--id-column", "no", "--text-column", "isi", "--location-column", "lokasi"]
    return main(["triage", str(src), *columns, "--out", str(out), *extra])


def test_triage_writes_one_object_per_row(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", ["no", "isi", "lokasi"], ROWS)
    out = tmp_path / "out.jsonl"
    # at 0.80 the built-in lexicon dispatches most of these (at the default 0.95 it waits for surer ones)
    assert triage(src, out, "--target-precision", "0.8") == 0
    rows = {r["id"]: r for r in read_jsonl(out)}
    assert list(rows) == [r[0] for r in ROWS]
    for r in rows.values():
        assert set(FIELDS) <= set(r)

    a1 = rows["A1"]
    assert (a1["category"], a1["agency"]) == ("street_lights", "Dinas Bina Marga")
    assert (a1["kelurahan"], a1["kelurahan_code"]) == ("Kalibaru", "31.72.04.1004")
    assert a1["kecamatan"] == "Cilincing"
    assert a1["kota"] == "Kota Administrasi Jakarta Utara"
    assert "Bina Marga" in a1["route_reason"] and "kelurahan kalibaru" in a1["route_reason"]

    assert rows["A2"]["agency"] == "Kelurahan" and rows["A2"]["kelurahan"] == "Klender"
    assert rows["A3"]["case_id"] == rows["A2"]["case_id"]  # the same complaint twice: one case
    assert rows["A4"]["kelurahan_code"] == "31.72.04.1004"  # from coordinates
    assert rows["A4"]["agency"] == "Dinas Perhubungan"
    assert rows["A5"]["kelurahan"] == "Klender"  # from a Kemendagri code
    assert rows["A5"]["agency"] == "Satuan Polisi Pamong Praja"
    assert rows["A6"]["category"] is None and rows["A6"]["agency"] is None


def test_the_target_precision_decides_what_waits_for_a_person(tmp_path: Path) -> None:
    rows = [
        ("P1", "PKL jualan di trotoar", "31.75.07.1003", ""),
        ("P2", "PKL jualan di trotoar", "31.75.07.1003", "PKL Liar"),
    ]
    src = write_csv(tmp_path / "in.csv", ["no", "isi", "lokasi", "kategori"], rows)
    out = tmp_path / "out.jsonl"
    assert triage(src, out, "--category-column", "kategori") == 0  # default: CRM_ROUTE_TARGET_PRECISION 0.95
    plain, hinted = read_jsonl(out)
    assert plain["route_threshold"] == hinted["route_threshold"] > 0.8
    # text alone is not sure enough at 0.95: a person picks, from the classifier's best agencies
    assert plain["routed_to"] == "triage" and plain["agency"] is None
    assert "below" in plain["route_reason"] and "at precision 0.95" in plain["route_reason"]
    best = plain["candidates"]
    assert best[0]["agency"] == "Satuan Polisi Pamong Praja" and best[0]["probability"] == plain["confidence"]
    assert 1 < len(best) <= 3 and sum(c["probability"] for c in best) <= 1.0 + 1e-6
    # the citizen's own category agrees with the text: sure enough to dispatch
    assert hinted["confidence"] > plain["confidence"]
    assert (hinted["routed_to"], hinted["agency"]) == ("agency", "Satuan Polisi Pamong Praja")


def test_bad_target_precision_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_csv(tmp_path / "in.csv", ["no", "isi", "lokasi"], ROWS[:1])
    assert triage(src, tmp_path / "out.jsonl", "--target-precision", "1.5") == 2
    assert "--target-precision 1.5 must be in (0, 1]" in capsys.readouterr().err


def test_triage_output_carries_no_phone_number(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", ["no", "isi", "lokasi"], ROWS[:1])
    out = tmp_path / "out.jsonl"
    assert triage(src, out) == 0
    assert b"0812" not in out.read_bytes()


def test_empty_text_is_left_for_a_person(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", ["no", "isi", "lokasi"], [("B1", "", "Kel. Klender")])
    out = tmp_path / "out.jsonl"
    assert triage(src, out) == 0
    (row,) = read_jsonl(out)
    assert row["id"] == "B1" and row["category"] is None and "empty text" in row["route_reason"]


def test_missing_file_is_exit_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.csv"
    assert triage(missing, tmp_path / "out.jsonl") == 2
    assert f"{missing}: no such file" in capsys.readouterr().err


def test_missing_column_is_exit_2_naming_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = write_csv(tmp_path / "in.csv", ["no", "teks", "lokasi"], [("C1", "sampah", "")])
    assert triage(src, tmp_path / "out.jsonl") == 2
    err = capsys.readouterr().err
    assert f"{src}:1: --text-column 'isi' is not a column" in err


def test_empty_id_is_exit_2_naming_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_csv(tmp_path / "in.csv", ["no", "isi", "lokasi"], [("D1", "sampah", ""), ("", "parkir", "")])
    assert triage(src, tmp_path / "out.jsonl") == 2
    assert f"{src}:3: empty 'no'" in capsys.readouterr().err


def test_reports_far_apart_in_time_open_separate_cases(tmp_path: Path) -> None:
    """A history is grouped by when each report was made, not as if it all happened now."""
    rows = [
        ("E1", PILE, "Kelurahan Klender", "2023-01-05"),
        ("E2", PILE_AGAIN, "Kelurahan Klender", "2023-01-20T09:30:00+07:00"),
        ("E3", PILE, "Kelurahan Klender", "2023-09-01 08:00"),
    ]
    src = write_csv(tmp_path / "in.csv", ["no", "isi", "lokasi", "dibuat"], rows)
    out = tmp_path / "out.jsonl"
    assert triage(src, out, "--time-column", "dibuat") == 0
    cases = {r["id"]: r["case_id"] for r in read_jsonl(out)}
    assert cases["E2"] == cases["E1"]  # 15 days apart: the same open case
    assert cases["E3"] != cases["E1"]  # eight months later the case is closed: a new one


def test_crm_export_day_month_year_columns_date_the_reports(tmp_path: Path) -> None:
    rows = [
        ("F1", PILE, "Kelurahan Klender", "5", "1", "23"),
        ("F2", PILE_AGAIN, "Kelurahan Klender", "20", "1", "23"),
        ("F3", PILE, "Kelurahan Klender", "1", "9", "23"),
    ]
    src = write_csv(tmp_path / "in.csv", ["no", "isi", "lokasi", "date", "month", "year"], rows)
    out = tmp_path / "out.jsonl"
    assert triage(src, out) == 0
    cases = {r["id"]: r["case_id"] for r in read_jsonl(out)}
    assert cases["F2"] == cases["F1"] and cases["F3"] != cases["F1"]


def test_bad_time_is_exit_2_naming_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [("G1", "sampah", "", "2023-01-05"), ("G2", "parkir liar", "", "kemarin sore")]
    src = write_csv(tmp_path / "in.csv", ["no", "isi", "lokasi", "dibuat"], rows)
    assert triage(src, tmp_path / "out.jsonl", "--time-column", "dibuat") == 2
    err = capsys.readouterr().err
    assert f"{src}:3: dibuat 'kemarin sore' is not an ISO 8601 date or time" in err


def test_missing_time_column_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_csv(tmp_path / "in.csv", ["no", "isi", "lokasi"], ROWS[:1])
    assert triage(src, tmp_path / "out.jsonl", "--time-column", "dibuat") == 2
    assert f"{src}:1: --time-column 'dibuat' is not a column" in capsys.readouterr().err


def test_missing_model_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_csv(tmp_path / "in.csv", ["no", "isi", "lokasi"], ROWS)
    assert triage(src, tmp_path / "out.jsonl", "--model", str(tmp_path / "m.joblib")) == 2
    assert "no such model file" in capsys.readouterr().err


TRAIN_ROWS = [
    ("jalan berlubang di depan sekolah", "DINAS BINA MARGA"), ("aspal rusak parah", "DINAS BINA MARGA"),
    ("lampu jalan mati total", "DINAS BINA MARGA"), ("trotoar amblas", "DINAS BINA MARGA"),
    ("parkir liar di bahu jalan", "DINAS PERHUBUNGAN"), ("mobil parkir sembarangan", "DINAS PERHUBUNGAN"),
    ("lampu merah mati macet", "DINAS PERHUBUNGAN"), ("juru parkir liar", "DINAS PERHUBUNGAN"),
    ("sampah menumpuk belum diangkut", "KELURAHAN"), ("got mampet", "KELURAHAN"),
    ("ppsu tidak datang", "KELURAHAN"), ("selokan penuh sampah", "KELURAHAN"),
    ("ada ular masuk rumah", "DINAS PENANGGULANGAN KEBAKARAN DAN PENYELAMATAN"),
    ("", "KELURAHAN"),
]  # fmt: skip


def test_train_then_triage_with_the_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_csv(tmp_path / "train.csv", ["text", "unit"], TRAIN_ROWS)
    model = tmp_path / "model.joblib"
    assert main(["train", "--data", str(data), "--text-column", "text", "--label-column", "unit",
                 "--out", str(model)]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "leaving out 1 label(s)" in err and "Penanggulangan Kebakaran" in err  # one example only
    assert "trained on 12 examples, 3 labels" in err and "1 rows without text or label skipped" in err

    rows = [("E1", "parkir liar mobil", "kel. klender")]
    src = write_csv(tmp_path / "in.csv", ["no", "isi", "lokasi"], rows)
    out = tmp_path / "out.jsonl"
    assert triage(src, out, "--model", str(model)) == 0
    (row,) = read_jsonl(out)
    assert row["category"] == "Dinas Perhubungan"  # CRM unit labels become official agency names
    assert row["agency"] in ("Dinas Perhubungan", None)  # None only if below the confidence threshold


def test_train_missing_label_column_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_csv(tmp_path / "train.csv", ["text", "unit"], TRAIN_ROWS)
    rc = main(["train", "--data", str(data), "--text-column", "text", "--label-column", "dinas",
               "--out", str(tmp_path / "m.joblib")])  # fmt: skip
    assert rc == 2
    assert f"{data}:1: --label-column 'dinas' is not a column" in capsys.readouterr().err


def test_train_reads_the_category_and_the_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.processors.trained import load_model

    places = ["Kel. Klender", "Kel. Kali Baru"]
    rows = [(t, u, f"cat {u[:5]}", places[i % 2]) for i, (t, u) in enumerate(TRAIN_ROWS[:12])]
    data = write_csv(tmp_path / "train.csv", ["text", "unit", "kategori", "lokasi"], rows)
    model = tmp_path / "model.joblib"
    argv = ["train", "--data", str(data), "--text-column", "text", "--label-column", "unit",
            "--category-column", "kategori", "--location-column", "lokasi", "--out", str(model),
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "trained on 12 examples, 3 labels" in err and "4-fold held-out: accuracy" in err
    meta = load_model(model).meta
    assert meta["with_hint"] == 12 and meta["with_place"] == 12
    assert meta["sources"]["csv"]["rows"] == 12 and set(meta["cv"]) >= {"accuracy", "macro_f1", "reliability"}


def test_train_needs_a_source_and_a_destination(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--out", str(tmp_path / "m.joblib")]) == 2
    assert "train needs --data FILE.csv, --from-store, or both" in capsys.readouterr().err
    data = write_csv(tmp_path / "train.csv", ["text", "unit"], TRAIN_ROWS)
    assert main(["train", "--data", str(data), "--text-column", "text", "--label-column", "unit"]) == 2
    assert "train needs --out FILE and/or --register" in capsys.readouterr().err
