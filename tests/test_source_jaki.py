"""``jaki``: unit tests of parsing and authentication, and the conformance kit through the real ingress."""

from __future__ import annotations

import orjson
import pytest

from pipeline.settings import Settings
from pipeline.sources.base import InboundRequest, Rejected
from pipeline.sources.conformance import HttpCall, PushConformance, Target
from pipeline.sources.jaki import JakiSource

SETTINGS = Settings(env="test")
SRC = JakiSource(SETTINGS)
TOKEN = SETTINGS.jaki_token.get_secret_value()
ROUTE = JakiSource.route


def _req(body: dict | bytes, token: str | None = TOKEN, ctype: str = "application/json") -> InboundRequest:
    headers = {"Content-Type": ctype}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return InboundRequest("POST", ROUTE, headers, {}, raw)


def _report(**extra) -> dict:
    return {
        "report_id": "JAKI-2024-000123",
        "text": "Pohon tumbang menutup jalan di Jl. Ampera Raya",
        "category": "Pohon",
        "lat": -6.2921,
        "lon": 106.8162,
        "photo_urls": ["https://jaki.jakarta.go.id/media/p1.jpg"],
        "account_id": "u-9f2c",
        "created_at": "2024-05-01T08:00:00+07:00",
        **extra,
    }


def test_a_jaki_report_becomes_an_envelope_with_gps_and_a_private_reporter():
    [r] = SRC.parse(_req(_report())).reports
    assert r.channel == "jaki" and r.provider_id == "JAKI-2024-000123"
    assert (r.location.lat, r.location.lon) == (-6.2921, 106.8162)
    assert r.category_hint == "Pohon" and r.attachments[0].url.endswith("p1.jpg")
    assert r.reporter.private is True and r.reporter.id.startswith("rp-")  # private by default
    assert r.contact.handle == "u-9f2c" and r.source_at.isoformat() == "2024-05-01T01:00:00+00:00"
    assert b"u-9f2c" not in r.dumps_public()


def test_explicit_public_flag_and_nested_location():
    body = _report(private=False, location={"lat": -6.17, "lng": 106.83, "address": "Monas"})
    del body["lat"], body["lon"]
    [r] = SRC.parse(_req(body)).reports
    assert r.reporter.private is False and r.location.address == "Monas" and r.location.lon == 106.83


def test_the_same_report_id_is_the_same_report():
    a = SRC.parse(_req(_report())).reports[0]
    b = SRC.parse(_req(_report(text="Pohon tumbang (dikirim ulang)"))).reports[0]
    assert a.report_id == b.report_id


@pytest.mark.parametrize(
    ("token", "status"), [(None, 401), ("", 401), ("wrong-token", 403), (TOKEN + "x", 403)]
)
def test_bearer_token_is_required_and_checked(token, status):
    with pytest.raises(Rejected) as exc:
        SRC.authenticate(_req(_report(), token=token))
    assert exc.value.status == status


def test_non_bearer_scheme_is_401():
    req = InboundRequest("POST", ROUTE, {"Authorization": f"Basic {TOKEN}"}, {}, b"{}")
    with pytest.raises(Rejected) as exc:
        SRC.authenticate(req)
    assert exc.value.status == 401


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (_report(report_id=None), "missing_id"),
        (_report(text=" "), "missing_text"),
        (_report(lat=48.8, lon=2.3), "bad_coordinates"),
        (_report(lon=None), "bad_coordinates"),
        (_report(photo_urls=["file:///etc/passwd"]), "bad_attachments"),
        (_report(created_at="2024-05-01 08:00"), "bad_timestamp"),
        (_report(text={"a": 1}), "bad_field"),
        (b"{broken", "malformed_json"),
    ],
)
def test_malformed_reports_are_refused_with_a_reason(body, code):
    with pytest.raises(Rejected) as exc:
        SRC.parse(_req(body))
    assert exc.value.code == code and exc.value.status == 400


@pytest.mark.parametrize("created_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_time_that_is_not_in_utc_range_is_refused_not_a_crash(created_at):
    # Found by reading after a fuzz run: year 1 at +01:00 is year 0 in UTC; the envelope's UTC conversion
    # raised OverflowError instead of a refusal.
    with pytest.raises(Rejected) as exc:
        SRC.parse(_req(_report(created_at=created_at)))
    assert exc.value.status == 400 and exc.value.code == "bad_timestamp" and exc.value.field == "created_at"


def test_a_photo_url_past_the_envelope_limit_is_refused_not_a_crash():
    # is_url() let a 2001-2008 character URL through (its pattern counts from after the scheme): the
    # envelope's ValidationError escaped the parser
    with pytest.raises(Rejected) as exc:
        SRC.parse(_req(_report(photo_urls=["https://" + "a" * 1995])))
    assert exc.value.status == 400 and exc.value.code == "bad_attachments" and exc.value.field == "photo_urls"


def test_form_posts_are_415():
    with pytest.raises(Rejected) as exc:
        SRC.parse(_req(b"text=hello", ctype="application/x-www-form-urlencoded"))
    assert exc.value.status == 415


# --- through the real ingress and Kafka ------------------------------------------------------------------


@pytest.fixture(scope="module")
def conformance_target(iso, pipeline_url) -> Target:
    return Target(pipeline_url, iso.env["CRM_KAFKA_BOOTSTRAP"], iso.tag)


@pytest.mark.stack
class TestJakiConformance(PushConformance):
    adapter = JakiSource

    def _call(self, body: bytes, token: str) -> HttpCall:
        return HttpCall(ROUTE, body, {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})

    def valid(self, nonce: str, base_url: str) -> HttpCall:
        return self._call(
            orjson.dumps(_report(report_id=f"JAKI-{nonce}", text=f"Jalan berlubang {nonce}")), TOKEN
        )

    def malformed(self, nonce: str, base_url: str) -> HttpCall:
        return self._call(orjson.dumps({"report_id": f"JAKI-{nonce}", "lat": -6.2}), TOKEN)

    def forged(self, nonce: str, base_url: str) -> HttpCall:
        return self._call(self.valid(nonce, base_url).body, "stolen-" + nonce)
