"""Walk-in desks: the office-bound desk API (five channels) and the offline CSV import command."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from pipeline.settings import Settings
from pipeline.sources.base import Rejected
from pipeline.sources.conformance import HttpCall, PushConformance, Target, read_to_end, wait_for
from pipeline.sources.desk import (
    DeskBalaikotaSource,
    DeskInspektoratSource,
    DeskKecamatanSource,
    DeskKelurahanSource,
    DeskWalikotaSource,
    check_office,
    neutralise_cell,
    read_csv_lines,
)
from pipeline.topics import Topics

SETTINGS = Settings(env="test")
KEL = DeskKelurahanSource(SETTINGS)
KEC = DeskKecamatanSource(SETTINGS)
TOKENS = {
    "desk_kelurahan": "dev-only-desk-kelurahan",
    "desk_kecamatan": "dev-only-desk-kecamatan",
    "desk_walikota": "dev-only-desk-walikota",
    "desk_balaikota": "dev-only-desk-balaikota",
    "desk_inspektorat": "dev-only-desk-inspektorat",
}
OFFICES = {
    "desk_kelurahan": "31.71.01.1001",
    "desk_kecamatan": "31.71.01",
    "desk_walikota": "31.71",
    "desk_balaikota": "31",
    "desk_inspektorat": "31",
}


def entry(**extra) -> dict:
    return {
        "entry_id": "KEL-0042",
        "officer": "Siti Aminah",
        "text": "Warga melaporkan saluran air tersumbat di RT 03",
        "name": "Pak Darto",
        "phone": "0813 9999 0000",
        "address": "Jl. Gambir I RT 03/RW 01",
        "taken_at": "2024-05-01T09:30:00+07:00",
        **extra,
    }


def call(route: str, body: dict | bytes, token: str | None) -> HttpCall:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return HttpCall(route, body if isinstance(body, bytes) else orjson.dumps(body), headers)


def _accept(src, body, token):
    req = call(src.route, body, token).inbound()
    src.authenticate(req)
    return src.parse(req)


def test_a_desk_entry_carries_the_office_of_its_credential():
    [r] = _accept(KEL, entry(), TOKENS["desk_kelurahan"]).reports
    assert r.channel == "desk_kelurahan" and r.location.desk_office == "31.71.01.1001"
    assert r.provider_id == "31.71.01.1001:KEL-0042" and r.contact.phone == "+6281399990000"
    assert r.location.address.startswith("Jl. Gambir") and r.source_at is not None


def test_the_same_entry_id_twice_is_one_report_and_offices_do_not_collide():
    a = _accept(KEL, entry(), TOKENS["desk_kelurahan"]).reports[0]
    b = _accept(KEL, entry(text="Saluran air tersumbat (dikirim ulang)"), TOKENS["desk_kelurahan"]).reports[0]
    c = _accept(KEC, entry(), TOKENS["desk_kecamatan"]).reports[0]
    assert a.report_id == b.report_id != c.report_id


@pytest.mark.parametrize(
    ("src", "token", "status", "code"),
    [
        (KEL, None, 401, "unauthenticated"),
        (KEL, "not-a-desk-token", 403, "forbidden"),
        (KEL, TOKENS["desk_kecamatan"], 403, "wrong_office"),  # a kecamatan credential at the kelurahan desk
        (KEC, TOKENS["desk_kelurahan"], 403, "wrong_office"),
    ],
)
def test_credentials_are_bound_to_one_desk(src, token, status, code):
    with pytest.raises(Rejected) as exc:
        src.authenticate(call(src.route, entry(), token).inbound())
    assert (exc.value.status, exc.value.code) == (status, code)


def test_an_entry_naming_another_office_is_403():
    with pytest.raises(Rejected) as exc:
        _accept(KEL, entry(office_code="31.71.01.1002"), TOKENS["desk_kelurahan"])
    assert exc.value.status == 403 and exc.value.code == "wrong_office"
    assert _accept(KEL, entry(office_code="31.71.01.1001"), TOKENS["desk_kelurahan"]).reports


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (entry(officer=""), "missing_officer"),
        (entry(entry_id=None), "missing_id"),
        (entry(text="pendek"), "missing_text"),
        (entry(phone="12"), "bad_phone"),
        (entry(taken_at="kemarin"), "bad_timestamp"),
        (b"{", "malformed_json"),
    ],
)
def test_malformed_entries_are_refused_with_a_reason(body, code):
    with pytest.raises(Rejected) as exc:
        _accept(KEL, body, TOKENS["desk_kelurahan"])
    assert exc.value.code == code


@pytest.mark.parametrize("taken_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_taken_at_outside_the_utc_range_is_refused_not_a_crash(taken_at):
    # year 1 at +01:00 is year 0 in UTC: the envelope's conversion raised OverflowError
    with pytest.raises(Rejected) as exc:
        _accept(KEL, entry(taken_at=taken_at), TOKENS["desk_kelurahan"])
    assert exc.value.status == 400 and exc.value.code == "bad_timestamp"


def test_a_csv_line_with_a_taken_at_outside_the_utc_range_is_an_error_line(tmp_path):
    path = tmp_path / "desk.csv"
    path.write_text("text,taken_at\nSaluran air tersumbat di RT 03,0001-01-01T00:00:00+01:00\n")
    [line] = read_csv_lines(path, "desk_kelurahan", "31.71.01.1001", "Siti", SETTINGS)
    assert line.report is None and line.code == "bad_timestamp" and "out of range" in line.reason


def test_a_csv_line_with_an_overlong_entry_id_is_an_error_line_not_a_refused_file(tmp_path):
    # the envelope's ValidationError on the provider id (a ValueError) escaped read_csv_lines: the whole
    # file was refused with a pydantic message instead of that one line with its reason
    path = tmp_path / "desk.csv"
    path.write_text(
        "text,entry_id\nSaluran air tersumbat di RT 03," + "E" * 600 + "\nJalan berlubang di RT 04,KEL-7\n"
    )
    bad, good = read_csv_lines(path, "desk_kelurahan", "31.71.01.1001", "Siti", SETTINGS)
    assert bad.report is None and bad.code == "too_long" and "entry_id" in bad.reason
    assert good.report is not None and good.report.provider_id == "31.71.01.1001:KEL-7"


def test_office_codes_are_checked_against_the_gazetteer_level():
    assert check_office("desk_kelurahan", "31.71.01.1001")
    assert check_office("desk_walikota", "31.71")
    for channel, code in [
        ("desk_kelurahan", "31.71.01"),
        ("desk_kecamatan", "31.99.99"),
        ("desk_balaikota", "31.71"),
    ]:
        with pytest.raises(ValueError):
            check_office(channel, code)


def test_csv_formula_cells_are_neutralised():
    assert neutralise_cell('=HYPERLINK("http://x")') == '\'=HYPERLINK("http://x")'
    assert neutralise_cell("+62812") == "'+62812" and neutralise_cell("@SUM(A1)") == "'@SUM(A1)"
    assert neutralise_cell("Jalan rusak") == "Jalan rusak"


# --- the desk API through the real ingress ---------------------------------------------------------------


@pytest.fixture(scope="module")
def conformance_target(iso, pipeline_url) -> Target:
    return Target(pipeline_url, iso.env["CRM_KAFKA_BOOTSTRAP"], iso.tag)


class _DeskConformance(PushConformance):
    def valid(self, nonce: str, base_url: str) -> HttpCall:
        body = entry(entry_id=f"E-{nonce}", text=f"Trotoar rusak di depan kantor, laporan {nonce}")
        return call(self.adapter.route, body, TOKENS[self.adapter.channel])

    def malformed(self, nonce: str, base_url: str) -> HttpCall:
        return call(
            self.adapter.route, entry(entry_id=f"E-{nonce}", officer=None), TOKENS[self.adapter.channel]
        )

    def forged(self, nonce: str, base_url: str) -> HttpCall:
        other = "desk_kecamatan" if self.adapter.channel == "desk_kelurahan" else "desk_kelurahan"
        return call(self.adapter.route, self.valid(nonce, base_url).body, TOKENS[other])


@pytest.mark.stack
class TestDeskKelurahanConformance(_DeskConformance):
    adapter = DeskKelurahanSource


@pytest.mark.stack
class TestDeskKecamatanConformance(_DeskConformance):
    adapter = DeskKecamatanSource


@pytest.mark.stack
class TestDeskWalikotaConformance(_DeskConformance):
    adapter = DeskWalikotaSource


@pytest.mark.stack
class TestDeskBalaikotaConformance(_DeskConformance):
    adapter = DeskBalaikotaSource


@pytest.mark.stack
class TestDeskInspektoratConformance(_DeskConformance):
    adapter = DeskInspektoratSource


# --- CSV import ------------------------------------------------------------------------------------------

CSV_TEXT = """\
entry_id,nama,telepon,alamat,laporan,kategori
K-001,Bu Rina,0812-1111-2222,Jl. Gambir I,Lampu jalan mati di depan rumah sejak seminggu,PJU
K-002,Pak Joko,081233334444,Jl. Gambir II,"Got mampet, air meluber ke jalan, ""bau""\",Saluran
K-003,Bu Ani,12,Jl. Gambir III,Sampah tidak diangkut tiga hari,Sampah
,Anonim,,Jl. Gambir IV,Pohon besar miring hampir tumbang di taman,Pohon
=HYPERLINK("http://evil.example"),Pak Dedi,,Jl. Gambir V,pendek,Lain
"""


def run_import(iso, path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "desk-import",
            str(path),
            "--channel",
            "desk_kelurahan",
            "--office",
            "31.71.01.1001",
            "--officer",
            "Siti Aminah",
            *extra,
        ],
        env={**os.environ, **iso.env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.stack
def test_csv_import_reports_bad_lines_imports_the_rest_and_reimport_is_idempotent(
    iso, pipeline_url, tmp_path
):
    src = tmp_path / "kelurahan_gambir_mei.csv"
    src.write_text(CSV_TEXT, encoding="utf-8")
    errors = tmp_path / "errors.csv"
    first = run_import(iso, src, "--errors-out", str(errors))
    assert first.returncode == 2, first.stderr  # some lines were invalid
    assert f"{src}:4: phone '12' is not a valid Indonesian number" in first.stderr
    assert f"{src}:6: text is required" in first.stderr
    assert "3 imported, 2 invalid, 5 lines" in first.stdout

    topics = Topics(iso.tag)
    ingest = topics.ingest("desk_kelurahan")

    def imported() -> dict[str, dict]:
        return {
            v["report_id"]: v
            for _, v in read_to_end(iso.env["CRM_KAFKA_BOOTSTRAP"], ingest)
            if v.get("location", {}).get("desk_office") == "31.71.01.1001"
            and v["provider_id"].split(":", 1)[1].startswith(("K-", "csv:"))  # this file's lines only
        }

    reports = wait_for(lambda: imported() if len(imported()) >= 3 else None, 30, "imported reports")
    assert {r["provider_id"] for r in reports.values()} >= {"31.71.01.1001:K-001", "31.71.01.1001:K-002"}
    texts = {r["text"] for r in reports.values()}
    assert 'Got mampet, air meluber ke jalan, "bau"' in texts

    letters = [
        v
        for _, v in read_to_end(iso.env["CRM_KAFKA_BOOTSTRAP"], topics.deadletter)
        if v.get("stage") == "import" and v.get("meta", {}).get("file") == src.name
    ]
    assert sorted(v["meta"]["line"] for v in letters) == [4, 6]
    assert all(v["channel"] == "desk_kelurahan" and v["reason"] for v in letters)

    with errors.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["line"] for r in rows] == ["4", "6"]
    assert rows[1]["original_line"].startswith("'=HYPERLINK")  # a spreadsheet shows it, never runs it
    assert not any(cell.startswith(("=", "+", "-", "@")) for r in rows for cell in r.values())

    # Re-import of the same file: the same report ids, so downstream it is still one report each.
    second = run_import(iso, src, "--quiet")
    assert second.returncode == 2 and "3 imported" in second.stdout
    assert set(imported()) == set(reports)

    def stored() -> list[tuple]:
        return iso.query(
            "SELECT report_id FROM reports WHERE channel = 'desk_kelurahan' AND report_id::text = ANY(%s)",
            (list(reports),),
        )

    wait_until_rows = wait_for(
        lambda: stored() if len(stored()) == 3 else None, 60, "3 rows in the CRM store"
    )
    assert len(wait_until_rows) == 3


@pytest.mark.stack
def test_a_clean_file_exits_0_and_bad_usage_exits_2(iso, pipeline_url, tmp_path):
    good = tmp_path / "ok.csv"
    good.write_text(
        "laporan,alamat\nJalan berlubang besar di depan SDN 03 pagi ini,Jl. Kebon Sirih\n", encoding="utf-8"
    )
    done = run_import(iso, good)
    assert done.returncode == 0 and "1 imported, 0 invalid" in done.stdout, done.stderr

    wrong_office = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "desk-import",
            str(good),
            "--channel",
            "desk_kelurahan",
            "--office",
            "31.71",
            "--officer",
            "X",
        ],
        env={**os.environ, **iso.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong_office.returncode == 2 and "not a kelurahan office" in wrong_office.stderr

    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("foo,bar\n1,2\n", encoding="utf-8")
    result = run_import(iso, bad_header)
    assert result.returncode == 2 and f"{bad_header}:1:" in result.stderr

    missing = run_import(iso, tmp_path / "nope.csv")
    assert missing.returncode == 2 and "no such file" in missing.stderr
