"""The web-form adapter as a pure function over requests (the HTTP path is in test_e2e_web)."""

from __future__ import annotations

from urllib.parse import urlencode

import orjson
import pytest

from pipeline.settings import Settings
from pipeline.sources.base import InboundRequest, Rejected
from pipeline.sources.web import WebFormSource

SRC = WebFormSource(Settings(env="test"))


def _req(body: bytes, ctype: str = "application/json", **headers: str) -> InboundRequest:
    return InboundRequest("POST", WebFormSource.route, {"Content-Type": ctype, **headers}, {}, body)


def _json(**fields) -> InboundRequest:
    return _req(orjson.dumps(fields))


def test_json_submission_becomes_one_report_with_contact_kept_apart():
    result = SRC.parse(
        _json(
            text="Ada pohon tumbang di Jl. Ampera Raya",
            email="Warga@Example.COM",
            telepon="0812-3456-7890",
            lat=-6.29,
            lon=106.82,
            kategori="Pohon",
            rahasia="ya",
        )
    )
    [r] = result.reports
    assert r.channel == "web" and r.text == "Ada pohon tumbang di Jl. Ampera Raya"
    assert r.contact.email == "Warga@example.com" and r.contact.phone == "+6281234567890"
    assert r.reporter.id.startswith("rp-") and r.reporter.private is True
    assert (r.location.lat, r.location.lon) == (-6.29, 106.82)
    assert r.category_hint == "Pohon"


def test_form_encoded_submission_with_indonesian_field_names():
    body = urlencode(
        {
            "laporan": "Sampah menumpuk di gg. Melati 3 hari",
            "alamat": "Kel. Kalibaru",
            "foto": "https://example.org/a.jpg",
        }
    ).encode()
    [r] = SRC.parse(_req(body, "application/x-www-form-urlencoded; charset=UTF-8")).reports
    assert r.location.address == "Kel. Kalibaru" and r.attachments[0].url == "https://example.org/a.jpg"
    assert r.reporter.id == "anonymous" and r.contact is None


def test_same_submission_twice_maps_to_the_same_report_id():
    a = SRC.parse(_json(text="Jalan berlubang di depan SDN 01", email="a@b.id")).reports[0]
    b = SRC.parse(_json(text="Jalan  berlubang di depan SDN 01", email="a@b.id")).reports[0]
    assert a.report_id == b.report_id
    c = SRC.parse(_json(text="Jalan berlubang di depan SDN 02", email="a@b.id")).reports[0]
    assert c.report_id != a.report_id


def test_explicit_idempotency_key_wins():
    h = {"Idempotency-Key": "form-7f3"}
    a = SRC.parse(_req(orjson.dumps({"text": "Banjir setinggi lutut di RT 05"}), **h)).reports[0]
    b = SRC.parse(_req(orjson.dumps({"text": "Banjir setinggi lutut di RT 05 (ralat)"}), **h)).reports[0]
    assert a.report_id == b.report_id and a.provider_id == "sub:form-7f3"


@pytest.mark.parametrize(
    ("request_", "status", "code"),
    [
        (_json(text="pendek"), 400, "missing_text"),
        (_json(nama="Budi"), 400, "missing_text"),
        (_req(b"{not json"), 400, "malformed_json"),
        (_req(b"[1,2]"), 400, "malformed_json"),
        (_req(b"text=hello", "text/plain"), 415, "unsupported_media_type"),
        (_req(b""), 400, "empty_body"),
        (_req(b"laporan=\xff\xfe rusak", "application/x-www-form-urlencoded"), 400, "bad_encoding"),
        (_json(text="Jalan rusak parah sekali", email="not-an-email"), 400, "bad_email"),
        (_json(text="Jalan rusak parah sekali", phone="12"), 400, "bad_phone"),
        (_json(text="Jalan rusak parah sekali", lat=-6.2), 400, "bad_coordinates"),
        (_json(text="Jalan rusak parah sekali", lat="abc", lon=106.8), 400, "bad_coordinates"),
        (_json(text="Jalan rusak parah sekali", lat=48.85, lon=2.35), 400, "bad_coordinates"),
        (_json(text="Jalan rusak parah sekali", foto=["javascript:alert(1)"]), 400, "bad_attachments"),
        (_json(text="x" * 6000), 400, "too_long"),
        (_req(b"[" * 5000 + b"]" * 5000), 400, "malformed_json"),
    ],
)
def test_bad_input_is_refused_with_a_reason(request_, status, code):
    with pytest.raises(Rejected) as exc:
        SRC.parse(request_)
    assert exc.value.status == status and exc.value.code == code
    assert len(exc.value.reason) > 10
