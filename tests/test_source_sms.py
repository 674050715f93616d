"""``sms``: Twilio-compatible form webhooks (X-Twilio-Signature) and the generic gateway JSON format."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import urlencode

import orjson
import pytest

from pipeline.settings import Settings
from pipeline.sources.base import InboundRequest, Rejected
from pipeline.sources.conformance import HttpCall, PushConformance, Target
from pipeline.sources.sms import SmsGatewaySource

SETTINGS = Settings(env="test")
SRC = SmsGatewaySource(SETTINGS)
AUTH_TOKEN = SETTINGS.sms_twilio_auth_token.get_secret_value()
GW_SECRET = SETTINGS.sms_gateway_secret.get_secret_value()
ROUTE = SmsGatewaySource.route
FORM = "application/x-www-form-urlencoded"


def twilio_sign(token: str, url: str, params: dict[str, str]) -> str:
    """Computed as Twilio documents it, with Twilio's own validator when it is installed."""
    try:
        from twilio.request_validator import RequestValidator
    except ImportError:
        payload = url + "".join(k + params[k] for k in sorted(params))
        return base64.b64encode(hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()).decode()
    return RequestValidator(token).compute_signature(url, params)


def twilio_params(
    sid: str = "SM0123456789abcdef0123456789abcdef",
    body: str = "Lampu jalan mati di Jl. Kramat Raya",
    sender: str = "+6281234567890",
    **extra: str,
) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": "AC" + "0" * 32,
        "From": sender,
        "To": "+628111272206",
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        **extra,
    }


def twilio_call(
    params: dict[str, str], base_url: str, token: str = AUTH_TOKEN, signed_url: str | None = None
) -> HttpCall:
    sig = twilio_sign(token, signed_url or base_url.rstrip("/") + ROUTE, params)
    return HttpCall(ROUTE, urlencode(params).encode(), {"Content-Type": FORM, "X-Twilio-Signature": sig})


def gateway_call(message: dict | bytes, secret: str = GW_SECRET, stamp: int | None = None) -> HttpCall:
    body = message if isinstance(message, bytes) else orjson.dumps(message)
    ts = str(stamp if stamp is not None else int(time.time()))
    sig = "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-Gateway-Timestamp": ts, "X-Gateway-Signature": sig}
    return HttpCall(ROUTE, body, headers)


BASE = "http://127.0.0.1:8080"


def _accept(call: HttpCall, src: SmsGatewaySource = SRC, base: str = BASE):
    req = call.inbound(base)
    src.authenticate(req)
    return src.parse(req)


# --- Twilio ----------------------------------------------------------------------------------------------


def test_twilio_message_becomes_a_report_with_an_e164_sender():
    result = _accept(twilio_call(twilio_params(sender="whatsapp:+62 812-3456-7890"), BASE))
    [r] = result.reports
    assert r.channel == "sms" and r.provider_id == "SM0123456789abcdef0123456789abcdef"
    assert r.contact.phone == "+6281234567890" and r.reporter.id.startswith("rp-")
    assert r.text == "Lampu jalan mati di Jl. Kramat Raya" and result.status == 200


def test_twilio_retry_of_the_same_message_sid_is_the_same_report():
    a = _accept(twilio_call(twilio_params(), BASE)).reports[0]
    b = _accept(twilio_call(twilio_params(NumSegments="1", FromCity="JAKARTA"), BASE)).reports[0]
    assert a.report_id == b.report_id


def test_twilio_media_become_attachment_references():
    params = twilio_params(
        body="",
        NumMedia="1",
        MediaUrl0="https://api.twilio.com/2010-04-01/Media/ME1",
        MediaContentType0="image/jpeg",
    )
    [r] = _accept(twilio_call(params, BASE)).reports
    assert r.attachments[0].media_type == "image/jpeg" and r.text


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p, h: h.update({"X-Twilio-Signature": twilio_sign("wrong-token", BASE + ROUTE, p)}),
        lambda p, h: h.update(
            {"X-Twilio-Signature": twilio_sign(AUTH_TOKEN, "https://evil.example" + ROUTE, p)}
        ),
        lambda p, h: p.update({"Body": "changed after signing"}),
        lambda p, h: h.update({"X-Twilio-Signature": ""}),
    ],
)
def test_forged_twilio_requests_are_403(mutate):
    params = twilio_params()
    headers = {"Content-Type": FORM, "X-Twilio-Signature": twilio_sign(AUTH_TOKEN, BASE + ROUTE, params)}
    mutate(params, headers)
    req = InboundRequest("POST", ROUTE, headers, {}, urlencode(params).encode(), url=BASE + ROUTE)
    with pytest.raises(Rejected) as exc:
        SRC.authenticate(req)
    assert exc.value.status == 403


def test_no_signature_header_at_all_is_401():
    req = InboundRequest(
        "POST", ROUTE, {"Content-Type": FORM}, {}, urlencode(twilio_params()).encode(), url=BASE
    )
    with pytest.raises(Rejected) as exc:
        SRC.authenticate(req)
    assert exc.value.status == 401


def test_behind_a_proxy_the_configured_public_url_is_what_twilio_signed():
    src = SmsGatewaySource(Settings(env="test", sms_public_base_url="https://crm.jakarta.go.id/"))
    params = twilio_params()
    call = twilio_call(params, BASE, signed_url="https://crm.jakarta.go.id" + ROUTE + "?tenant=dki")
    call = HttpCall(call.path, call.body, call.headers, {"tenant": "dki"})
    assert _accept(call, src).reports
    with pytest.raises(Rejected):  # without the setting the public URL's signature does not match
        _accept(call, SRC)


# --- generic gateway ------------------------------------------------------------------------------------


def test_generic_gateway_message_joins_multipart_parts_in_order():
    msg = {
        "id": "gw-1",
        "from": "0812 3456 7890",
        "to": "08111272206",
        "received_at": "2024-05-01T08:00:00+07:00",
        "parts": [
            {"ref": "a1", "part": 2, "total": 3, "text": "i Jl. Panjang, "},
            {"ref": "a1", "part": 1, "total": 3, "text": "Pohon tumbang d"},
            {"ref": "a1", "part": 3, "total": 3, "text": "mohon segera."},
        ],
    }
    [r] = _accept(gateway_call(msg)).reports
    assert r.text == "Pohon tumbang di Jl. Panjang, mohon segera." and r.provider_id == "gw:gw-1"
    assert r.contact.phone == "+6281234567890" and r.source_at.hour == 1


def test_same_citizen_on_sms_and_web_gets_the_same_pseudonym():
    from pipeline.sources.web import WebFormSource

    [s] = _accept(
        gateway_call({"id": "gw-2", "from": "+62 812 3456 7890", "text": "Jalan rusak parah"})
    ).reports
    web = WebFormSource(SETTINGS).parse(
        InboundRequest(
            "POST",
            "/",
            {"Content-Type": "application/json"},
            {},
            orjson.dumps({"text": "Jalan rusak parah", "hp": "0812-3456-7890"}),
        )
    )
    assert s.reporter.id == web.reports[0].reporter.id


def test_gateway_signature_timestamp_and_replay_window():
    msg = {"id": "gw-3", "from": "081234567890", "text": "Banjir di Jl. Kemang Raya"}
    with pytest.raises(Rejected) as exc:
        _accept(gateway_call(msg, secret="wrong"))
    assert exc.value.status == 403 and exc.value.code == "bad_signature"
    with pytest.raises(Rejected) as exc:
        _accept(gateway_call(msg, stamp=int(time.time()) - 3600))
    assert exc.value.status == 403 and exc.value.code == "replayed"
    call = gateway_call(msg)
    with pytest.raises(Rejected) as exc:  # timestamp swapped after signing
        _accept(
            HttpCall(ROUTE, call.body, {**call.headers, "X-Gateway-Timestamp": str(int(time.time()) + 1)})
        )
    assert exc.value.status == 403


@pytest.mark.parametrize(
    ("message", "status", "code"),
    [
        ({"from": "0812345678", "text": "x"}, 400, "missing_field"),
        ({"id": "g", "text": "Jalan rusak"}, 400, "missing_field"),
        ({"id": "g", "from": "12", "text": "Jalan rusak"}, 400, "bad_phone"),
        ({"id": "g", "from": "081234567890"}, 400, "missing_text"),
        ({"id": "g", "from": "081234567890", "text": "  "}, 400, "missing_text"),
        (
            {"id": "g", "from": "081234567890", "parts": [{"part": 1, "total": 2, "text": "a"}]},
            422,
            "incomplete_multipart",
        ),
        (
            {"id": "g", "from": "081234567890", "parts": [{"part": 3, "total": 2, "text": "a"}]},
            400,
            "bad_parts",
        ),
        (
            {
                "id": "g",
                "from": "081234567890",
                "parts": [
                    {"ref": "a", "part": 1, "total": 2, "text": "a"},
                    {"ref": "b", "part": 2, "total": 2, "text": "b"},
                ],
            },
            400,
            "bad_parts",
        ),
        (b"{oops", 400, "malformed_json"),
    ],
)
def test_malformed_gateway_messages_are_refused_with_a_reason(message, status, code):
    with pytest.raises(Rejected) as exc:
        _accept(gateway_call(message))
    assert exc.value.status == status and exc.value.code == code


@pytest.mark.parametrize("received_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_received_at_outside_the_utc_range_is_refused_not_a_crash(received_at):
    # year 1 at +01:00 is year 0 in UTC: the envelope's conversion raised OverflowError
    msg = {"id": "g", "from": "081234567890", "text": "Jalan rusak", "received_at": received_at}
    with pytest.raises(Rejected) as exc:
        _accept(gateway_call(msg))
    assert exc.value.status == 400 and exc.value.code == "bad_timestamp" and exc.value.field == "received_at"


def test_malformed_twilio_forms_are_refused():
    with pytest.raises(Rejected) as exc:
        _accept(twilio_call({"From": "+6281234567890", "Body": "hi"}, BASE))
    assert exc.value.code == "missing_field"
    with pytest.raises(Rejected) as exc:
        _accept(twilio_call(twilio_params(sender="not a number"), BASE))
    assert exc.value.code == "bad_phone"


def test_media_past_the_envelope_limits_are_refused_not_a_crash():
    # is_url() let a 2001-2008 character URL through (its pattern counts from after the scheme) and a
    # 101-character MediaContentType went to the envelope as is: pydantic's ValidationError escaped.
    url = "https://" + "a" * 1995
    with pytest.raises(Rejected) as exc:
        _accept(gateway_call({"id": "g", "from": "081234567890", "text": "Jalan rusak", "media": [url]}))
    assert exc.value.status == 400 and exc.value.code == "bad_attachments" and exc.value.field == "media"
    params = twilio_params(NumMedia="1", MediaUrl0="https://x.example/a.jpg", MediaContentType0="t" * 101)
    with pytest.raises(Rejected) as exc:
        _accept(twilio_call(params, BASE))
    assert (exc.value.status, exc.value.code, exc.value.field) == (400, "bad_field", "MediaContentType0")


# --- through the real ingress and Kafka ------------------------------------------------------------------


@pytest.fixture(scope="module")
def conformance_target(iso, pipeline_url) -> Target:
    return Target(pipeline_url, iso.env["CRM_KAFKA_BOOTSTRAP"], iso.tag)


@pytest.mark.stack
class TestSmsTwilioConformance(PushConformance):
    adapter = SmsGatewaySource

    def valid(self, nonce: str, base_url: str) -> HttpCall:
        return twilio_call(
            twilio_params(sid=f"SM{nonce}", body=f"Sampah menumpuk di Gg. Mawar {nonce}"), base_url
        )

    def malformed(self, nonce: str, base_url: str) -> HttpCall:
        return twilio_call(
            {"MessageSid": f"SM{nonce}", "From": "+6281234567890", "Body": "\x00" * 0}, base_url
        )

    def forged(self, nonce: str, base_url: str) -> HttpCall:
        params = twilio_params(sid=f"SM{nonce}", body=f"Sampah menumpuk di Gg. Mawar {nonce}")
        return twilio_call(params, base_url, token="AC-account-sid-is-not-a-secret")


@pytest.mark.stack
class TestSmsGatewayConformance(PushConformance):
    adapter = SmsGatewaySource

    def valid(self, nonce: str, base_url: str) -> HttpCall:
        return gateway_call(
            {
                "id": nonce,
                "from": "081311112222",
                "parts": [
                    {"ref": nonce, "part": 1, "total": 2, "text": f"Parkir liar di depan {nonce} "},
                    {"ref": nonce, "part": 2, "total": 2, "text": "Stasiun Tebet"},
                ],
            }
        )

    def malformed(self, nonce: str, base_url: str) -> HttpCall:
        return gateway_call(
            {
                "id": nonce,
                "from": "081311112222",
                "parts": [{"ref": nonce, "part": 2, "total": 2, "text": "Stasiun Tebet"}],
            }
        )

    def forged(self, nonce: str, base_url: str) -> HttpCall:
        call = self.valid(nonce, base_url)
        return gateway_call(call.body, secret="leaked-old-secret")
