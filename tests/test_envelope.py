from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from pipeline.envelope import (
    SCHEMA_VERSION,
    Contact,
    Location,
    Report,
    Reporter,
    json_schema,
    report_id_for,
    reporter_pseudonym,
)

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "pipeline" / "schemas" / "report.v1.schema.json"


def _report(**kw) -> Report:
    base = dict(
        channel="web",
        provider_id="sub:abc",
        reporter=Reporter(id="rp-1"),
        contact=Contact(email="warga@example.com", phone="+6281234567890"),
        text="Pohon tumbang menutup jalan di Jl. Kemang Raya",
        location=Location(lat=-6.26, lon=106.81, address="Jl. Kemang Raya"),
    )
    base.update(kw)
    return Report.create(**base)


def test_report_id_is_stable_per_channel_and_provider_id():
    assert report_id_for("web", "m-1") == report_id_for("web", "m-1")
    assert report_id_for("web", "m-1") != report_id_for("email", "m-1")
    assert report_id_for("web", "m-1") != report_id_for("web", "m-2")
    assert _report().report_id == _report().report_id


def test_roundtrip_through_orjson_keeps_everything():
    r = _report(source_at=datetime(2026, 11, 1, 8, 30, tzinfo=UTC))
    back = Report.loads(r.dumps())
    assert back == r
    assert back.schema_version == SCHEMA_VERSION


def test_naive_timestamps_are_refused():
    with pytest.raises(ValidationError, match="timezone"):
        _report(source_at=datetime(2026, 11, 1, 8, 30))


def test_public_projection_has_no_contact_and_hides_private_reporter():
    r = _report()
    assert "contact" not in r.public()
    assert r.public()["reporter"]["id"] == "rp-1"
    private = _report(reporter=Reporter(id="rp-1", private=True))
    assert private.public()["reporter"] == {"id": "private", "private": True}
    assert b"warga@example.com" not in private.dumps_public()
    assert b"warga@example.com" in private.dumps()  # internal topics keep it for the way back


def test_pseudonym_is_keyed_and_normalised():
    a = reporter_pseudonym(b"k1", "email", "Warga@Example.com ")
    assert a == reporter_pseudonym(b"k1", "email", "warga@example.com")
    assert a != reporter_pseudonym(b"k2", "email", "warga@example.com")
    assert "warga" not in a


def test_unknown_fields_are_refused():
    data = json.loads(_report().dumps())
    data["surprise"] = 1
    with pytest.raises(ValidationError):
        Report.model_validate(data)


def test_shipped_json_schema_matches_the_model_and_validates_envelopes():
    shipped = json.loads(SCHEMA_FILE.read_text())
    assert shipped == json_schema(), "run `make schema` to regenerate pipeline/schemas/report.v1.schema.json"
    jsonschema.validate(json.loads(_report().dumps()), shipped)
    jsonschema.validate(json.loads(_report(reporter=Reporter(id="x", private=True)).dumps_public()), shipped)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"report_id": "x"}, shipped)
