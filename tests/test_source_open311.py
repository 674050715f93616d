"""The ``open311`` channel: GeoReport v2 POST requests as reports, offline and through the real ingress."""

from __future__ import annotations

from urllib.parse import urlencode

import orjson
import pytest
from lxml import etree as ET

from pipeline.open311.tokens import make_token, report_id_of
from pipeline.settings import Settings
from pipeline.sources.base import InboundRequest, Rejected
from pipeline.sources.conformance import HttpCall, PushConformance, Target
from pipeline.sources.open311 import Open311Source

SUBMIT_KEY = "dev-only-open311-submit"
READ_KEY = "dev-only-open311-public"
FORM = "application/x-www-form-urlencoded"
ROUTE_JSON = "/open311/v2/requests.json"
ROUTE_XML = "/open311/v2/requests.xml"


def _form(**fields: object) -> bytes:
    return urlencode({k: v for k, v in fields.items() if v is not None}, doseq=True).encode()


def _fields(nonce: str = "x", **extra: object) -> dict[str, object]:
    return {
        "api_key": SUBMIT_KEY,
        "service_code": "road_damage",
        "lat": "-6.1754",
        "long": "106.8650",
        "description": f"Jalan berlubang besar di depan pasar {nonce}",
        **extra,
    }


def _request(body: bytes, path: str = ROUTE_JSON, ctype: str = FORM, **headers: str) -> InboundRequest:
    return InboundRequest("POST", path, {"Content-Type": ctype, **headers}, {}, body)


@pytest.fixture(scope="module")
def src() -> Open311Source:
    return Open311Source(Settings(env="test"))


def test_a_spec_form_with_attributes_becomes_a_report(src):
    body = _form(
        **_fields(
            email="Warga@Example.COM",
            first_name="Dewi",
            last_name="Lestari",
            phone="0812-9999-0000",
            account_id="acct-7",
            address_string="Jl. Cempaka Putih Raya 12",
            media_url=["https://foto.example/a.jpg", "https://foto.example/b.jpg"],
        ),
        **{
            "attribute[kelurahan]": "31.71.05.1001",
            "attribute[private]": "true",
            "attribute[title]": "Aspal hancur",
            "attribute[report_url]": "https://fms.example/report/1",  # FixMyStreet's: ignored
        },
    )
    req = _request(body)
    src.authenticate(req)
    result = src.parse(req)
    (report,) = result.reports
    assert report.channel == "open311" and report.category_hint == "road_damage"
    assert report.text.startswith("Aspal hancur\n\nJalan berlubang")
    assert report.contact.name == "Dewi Lestari" and report.contact.email == "Warga@example.com"
    assert report.contact.phone == "+6281299990000" and report.contact.handle == "acct-7"
    assert report.reporter.private and report.reporter.id.startswith("rp-")
    assert (report.location.lat, report.location.lon) == (-6.1754, 106.865)
    assert report.location.address == (
        "Jl. Cempaka Putih Raya 12, Kel. Cempaka Putih Timur, Kec. Cempaka Putih, "
        "Kota Administrasi Jakarta Pusat"
    )
    assert [a.url for a in report.attachments] == ["https://foto.example/a.jpg", "https://foto.example/b.jpg"]
    assert result.status == 202 and result.response["account_id"] == "acct-7"
    assert report_id_of(src.settings, result.response["token"]) == report.report_id
    # the same request again (a client retrying) is the same report; a changed one is not
    assert src.parse(_request(body)).reports[0].report_id == report.report_id
    other = _form(**_fields(description="Jalan berlubang besar di depan pasar y"))
    assert src.parse(_request(other)).reports[0].report_id != report.report_id
    keyed = _request(body, **{"Idempotency-Key": "fms-42"})
    assert src.parse(keyed).reports[0].provider_id == "key:fms-42"


def test_json_bodies_address_id_and_multivalue_attributes(src):
    data = {
        "api_key": SUBMIT_KEY,
        "service_code": "flood_drainage",
        "address_id": "3171051001",
        "description": "Saluran air mampet sejak kemarin",
        "attribute": {"private": "false"},
    }
    (report,) = src.parse(_request(orjson.dumps(data), ctype="application/json")).reports
    assert report.location.address.startswith("Kel. Cempaka Putih Timur") and not report.reporter.private
    assert report.reporter.id == "anonymous" and report.contact is None
    form = _form(**_fields(), **{"attribute[title][]": ["a", "b"]})
    with pytest.raises(Rejected) as exc:
        src.parse(_request(form))
    assert exc.value.field == "attribute[title]"


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"service_code": None}, 400, "missing_service_code"),
        ({"service_code": "not_a_service"}, 404, "unknown_service_code"),
        ({"jurisdiction_id": "elsewhere.gov"}, 404, "unknown_jurisdiction"),
        ({"lat": None, "long": None}, 400, "missing_location"),
        ({"lat": "51.5", "long": "-0.12"}, 400, "bad_coordinates"),
        ({"lat": None, "long": None, "address_id": "99.99"}, 400, "unknown_address_id"),
        ({"description": ""}, 400, "missing_text"),
        ({"description": "x" * 4001}, 400, "too_long"),
        ({"email": "not-an-address"}, 400, "bad_email"),
        ({"phone": "12"}, 400, "bad_phone"),
        ({"media_url": "ftp://x/y"}, 400, "bad_attachments"),
        ({"attribute[kelurahan]": "31.00"}, 400, "bad_attribute"),
        ({"attribute[private]": "maybe"}, 400, "bad_field"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(src, change, status, code):
    fields = {k: v for k, v in {**_fields(), **change}.items() if v is not None}
    with pytest.raises(Rejected) as exc:
        src.parse(_request(_form(**fields)))
    assert (exc.value.status, exc.value.code) == (status, code) and exc.value.reason


def test_keys_scopes_and_what_is_kept_of_the_body(src):
    body = _form(**_fields())
    src.authenticate(_request(body))
    src.authenticate(_request(_form(**{**_fields(), "api_key": None}), **{"X-API-Key": SUBMIT_KEY}))
    for fields, status in (({**_fields(), "api_key": None}, 401), ({**_fields(), "api_key": "nope"}, 401)):
        with pytest.raises(Rejected) as exc:
            src.authenticate(_request(_form(**{k: v for k, v in fields.items() if v})))
        assert exc.value.status == status
    with pytest.raises(Rejected) as exc:  # a read-only key may not submit
        src.authenticate(_request(_form(**{**_fields(), "api_key": READ_KEY})))
    assert exc.value.status == 403 and "open311:submit" in exc.value.reason
    kept = src.scrub(body, FORM)
    assert b"api_key" not in kept and SUBMIT_KEY.encode() not in kept
    assert src.parse(_request(kept)).reports[0].report_id == src.parse(_request(body)).reports[0].report_id
    as_json = orjson.dumps(_fields())
    assert SUBMIT_KEY.encode() not in src.scrub(as_json, "application/json")
    assert src.scrub(b"\xff\xfe", FORM) == b"\xff\xfe"


def test_answers_are_spec_shaped_in_both_formats(src):
    ok_json, ctype = src.respond(_request(b""), 202, {"token": "t-1", "service_notice": "n"})
    assert ctype == "application/json" and orjson.loads(ok_json) == [{"token": "t-1", "service_notice": "n"}]
    ok_xml, ctype = src.respond(_request(b"", ROUTE_XML), 202, {"token": "t-1"})
    assert ctype == "text/xml"
    assert ET.fromstring(ok_xml).find("request/token").text == "t-1"
    err, _ = src.respond(_request(b"", ROUTE_XML), 404, {"error": "service_code 'x' not found", "code": "c"})
    root = ET.fromstring(err)
    assert root.tag == "errors" and root.find("error/code").text == "404"
    assert root.find("error/description").text == "service_code 'x' not found"
    err, _ = src.respond(_request(b""), 401, {"error": "no key", "code": "no_api_key"})
    assert orjson.loads(err) == [{"code": 401, "description": "no key", "error_code": "no_api_key"}]


def test_tokens_are_issued_by_this_city_only():
    settings = Settings(env="test")
    rid = "0b6f2a57-3c55-5d35-9f0a-8a9e0b1c2d3e"
    token = make_token(settings, rid)
    assert report_id_of(settings, token) == rid and report_id_of(settings, token.upper()) == rid
    assert report_id_of(settings, rid) is None
    assert report_id_of(settings, token[:-1] + ("0" if token[-1] != "0" else "1")) is None
    assert report_id_of(Settings(env="test", reporter_id_key="another-key"), token) is None


# ---------------------------------------------------------------------------- through the real ingress
@pytest.fixture(scope="module")
def conformance_target(iso, pipeline_url) -> Target:
    return Target(pipeline_url, iso.env["CRM_KAFKA_BOOTSTRAP"], iso.tag)


@pytest.mark.stack
class TestOpen311Conformance(PushConformance):
    adapter = Open311Source

    def valid(self, nonce: str, base_url: str) -> HttpCall:
        return HttpCall(ROUTE_JSON, _form(**_fields(nonce)), {"Content-Type": FORM})

    def malformed(self, nonce: str, base_url: str) -> HttpCall:
        fields = {**_fields(nonce), "api_key": None, "service_code": None}
        body = _form(**{k: v for k, v in fields.items() if v})
        return HttpCall(ROUTE_XML, body, {"Content-Type": FORM, "X-API-Key": SUBMIT_KEY})

    def forged(self, nonce: str, base_url: str) -> HttpCall:
        return HttpCall(
            ROUTE_JSON, _form(**{**_fields(nonce), "api_key": "stolen-" + nonce}), {"Content-Type": FORM}
        )
