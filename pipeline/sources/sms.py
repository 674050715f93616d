"""``sms``: SMS/WhatsApp 08111272206 through a gateway webhook, in two formats on one route.

**Twilio-compatible** (``application/x-www-form-urlencoded``, header ``X-Twilio-Signature``): the
signature is base64(HMAC-SHA1(auth token, URL + every POST parameter as key+value, sorted by key)), where
URL is the full URL the provider called, query string included. Behind a proxy the ingress does not see
that URL, so ``CRM_SMS_PUBLIC_BASE_URL`` (e.g. ``https://crm.jakarta.go.id``) names the public origin; the
URL as the ingress saw it is accepted too. Twilio joins a concatenated SMS before it posts (``NumSegments``
tells how many parts it had). ``MessageSid`` is the provider id: a retry of the same message is the same
report. ``From`` may be ``whatsapp:+62…``.

**Generic gateway** (``application/json``, headers ``X-Gateway-Timestamp`` (unix seconds) and
``X-Gateway-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>``, secret
``CRM_SMS_GATEWAY_SECRET``; a timestamp further than ``CRM_SMS_REPLAY_WINDOW_S`` from now is refused)::

    {"id": "gw-20240501-0001", "from": "0812 3456 7890", "to": "08111272206",
     "text": "…",                                   # or, for a concatenated SMS:
     "parts": [{"ref": "a1", "part": 1, "total": 2, "text": "…"},
               {"ref": "a1", "part": 2, "total": 2, "text": "…"}],
     "received_at": "2024-05-01T08:00:00+07:00", "media": ["https://…"]}

Parts are joined in part order once all ``total`` are present; an incomplete set is refused (422) so the
gateway sends the whole message again. Phone numbers are normalised to E.164 (+62…).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from ..envelope import Attachment, Contact, Report, Reporter, max_length, reporter_pseudonym
from .base import InboundRequest, PushResult, PushSource, Rejected
from .common import decode_utf8, header, is_url, normalise_phone, parse_body, parse_timestamp
from .config import core_view

MAX_TEXT = 5000
MAX_PARTS = 20
MAX_MEDIA_TYPE = max_length(Attachment, "media_type")
TWILIO_HEADER = "X-Twilio-Signature"
GATEWAY_SIG_HEADER = "X-Gateway-Signature"
GATEWAY_TS_HEADER = "X-Gateway-Timestamp"
NO_TEXT = "(pesan tanpa teks)"


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """Twilio's request signature: base64 HMAC-SHA1 of the URL followed by the sorted POST parameters."""
    payload = url + "".join(k + v for k, v in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def gateway_signature(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _form_pairs(request: InboundRequest) -> list[tuple[str, str]]:
    try:
        return parse_qsl(decode_utf8(request.body), keep_blank_values=True, max_num_fields=200)
    except ValueError as exc:
        raise Rejected(f"malformed form body: {exc}", code="malformed_form") from None


def _phone(raw: Any, name: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise Rejected(f"'{name}' (the sender's number) is required", code="missing_field", field=name)
    value = raw.strip()
    if value.lower().startswith("whatsapp:"):
        value = value.split(":", 1)[1]
    try:
        return normalise_phone(value)
    except ValueError:
        raise Rejected(f"'{name}' {raw!r} is not a phone number", code="bad_phone", field=name) from None


SmsSettings = core_view(
    "SmsSettings",
    "CRM_SMS_",
    ["sms_twilio_auth_token", "sms_public_base_url", "sms_gateway_secret", "sms_replay_window_s"],
)


class SmsGatewaySource(PushSource):
    channel: ClassVar[str] = "sms"
    route: ClassVar[str] = "/v1/channels/sms/inbound"
    settings_model = SmsSettings

    # -- authentication -----------------------------------------------------------------------------
    def signed_urls(self, request: InboundRequest) -> list[str]:
        """The URLs the provider may have signed: the configured public one, and the one we were called on."""
        urls: list[str] = []
        base = self.config.public_base_url
        if base:
            parts = urlsplit(request.url) if request.url else None
            query = f"?{parts.query}" if parts and parts.query else ""
            urls.append(base.rstrip("/") + request.path + query)
        if request.url:
            urls.append(request.url)
        return urls

    def authenticate(self, request: InboundRequest) -> None:
        if header(request, TWILIO_HEADER) is not None:
            self._check_twilio(request)
        elif header(request, GATEWAY_SIG_HEADER) is not None:
            self._check_gateway(request)
        else:
            raise Rejected(
                f"missing {TWILIO_HEADER} (Twilio-compatible) or {GATEWAY_SIG_HEADER} (generic gateway)",
                status=401,
                code="unauthenticated",
            )

    def _check_twilio(self, request: InboundRequest) -> None:
        given = (header(request, TWILIO_HEADER) or "").strip().encode()
        token = self.config.twilio_auth_token.get_secret_value()
        try:
            params = (
                _form_pairs(request) if request.content_type == "application/x-www-form-urlencoded" else []
            )
        except Rejected:
            params = []  # the signature cannot match a body we cannot read; parse() never sees it
        for url in self.signed_urls(request):
            if hmac.compare_digest(given, twilio_signature(token, url, params).encode()):
                return
        raise Rejected(f"{TWILIO_HEADER} does not match the request", status=403, code="bad_signature")

    def _check_gateway(self, request: InboundRequest) -> None:
        stamp = (header(request, GATEWAY_TS_HEADER) or "").strip()
        if not stamp.isdigit() or len(stamp) > 12:
            raise Rejected(f"missing or malformed {GATEWAY_TS_HEADER}", status=401, code="unauthenticated")
        given = (header(request, GATEWAY_SIG_HEADER) or "").strip().encode()
        expected = gateway_signature(self.config.gateway_secret.get_secret_value(), stamp, request.body)
        if not hmac.compare_digest(given, expected.encode()):
            raise Rejected(f"{GATEWAY_SIG_HEADER} does not match the body", status=403, code="bad_signature")
        if abs(time.time() - int(stamp)) > self.config.replay_window_s:
            raise Rejected(f"{GATEWAY_TS_HEADER} is outside the replay window", status=403, code="replayed")

    # -- parsing ------------------------------------------------------------------------------------
    def parse(self, request: InboundRequest) -> PushResult:
        if header(request, TWILIO_HEADER) is not None:
            report = self._parse_twilio(request)
        else:
            report = self._parse_gateway(request)
        return PushResult(
            [report], response={"status": "accepted", "report_id": report.report_id}, status=200
        )

    def _build(
        self, provider_id: str, sender: str, text: str, media: list[Attachment], source_at: Any = None
    ) -> Report:
        text = text.strip()
        if not text and not media:
            raise Rejected("the message has no text", code="missing_text", field="Body")
        if len(text) > MAX_TEXT:
            raise Rejected(f"the message is too long ({len(text)} characters)", code="too_long", field="Body")
        return Report.create(
            channel=self.channel,
            provider_id=provider_id,
            source_at=source_at,
            reporter=Reporter(id=reporter_pseudonym(self.reporter_key, "phone", sender)),
            contact=Contact(phone=sender),
            text=text or NO_TEXT,
            attachments=media,
        )

    def _parse_twilio(self, request: InboundRequest) -> Report:
        if request.content_type != "application/x-www-form-urlencoded":
            raise Rejected(
                "Twilio-style requests must be form-encoded", status=415, code="unsupported_media_type"
            )
        if not request.body:
            raise Rejected("empty body", code="empty_body")
        data = parse_body(request)
        sid = data.get("MessageSid") or data.get("SmsSid") or data.get("SmsMessageSid")
        if not isinstance(sid, str) or not sid.strip() or len(sid) > 100:
            raise Rejected("MessageSid is required", code="missing_field", field="MessageSid")
        sender = _phone(data.get("From"), "From")
        body = data.get("Body", "")
        if not isinstance(body, str):
            raise Rejected("Body must be given once", code="bad_field", field="Body")
        try:
            count = int(data.get("NumMedia") or 0)
        except (TypeError, ValueError):
            raise Rejected("NumMedia must be a number", code="bad_field", field="NumMedia") from None
        media = []
        for n in range(min(max(count, 0), 10)):
            url = data.get(f"MediaUrl{n}")
            if isinstance(url, str) and is_url(url):
                ctype = data.get(f"MediaContentType{n}")
                if isinstance(ctype, str) and len(ctype.strip()) > MAX_MEDIA_TYPE:
                    # the envelope's ValidationError escaped the parser: refused with the reason instead
                    raise Rejected(
                        f"MediaContentType{n} is longer than {MAX_MEDIA_TYPE} characters",
                        code="bad_field",
                        field=f"MediaContentType{n}",
                    )
                media.append(Attachment(url=url, media_type=ctype if isinstance(ctype, str) else None))
        return self._build(sid.strip(), sender, body, media)

    def _parse_gateway(self, request: InboundRequest) -> Report:
        if request.content_type != "application/json":
            raise Rejected("generic gateway requests must be JSON", status=415, code="unsupported_media_type")
        data = parse_body(request)
        msg_id = data.get("id")
        if not isinstance(msg_id, str | int) or isinstance(msg_id, bool) or not str(msg_id).strip():
            raise Rejected("'id' (the gateway's message id) is required", code="missing_field", field="id")
        sender = _phone(data.get("from"), "from")
        if "parts" in data and data["parts"] is not None:
            text = self._join_parts(data["parts"])
        else:
            text = data.get("text")
            if not isinstance(text, str):
                raise Rejected("'text' (or 'parts') is required", code="missing_text", field="text")
        media_raw = data.get("media") or []
        if not isinstance(media_raw, list) or len(media_raw) > 10:
            raise Rejected("'media' must be a list of at most 10 URLs", code="bad_attachments", field="media")
        media = []
        for url in media_raw:
            if not isinstance(url, str) or not is_url(url):
                raise Rejected(
                    f"media URL {url!r} is not an http(s) URL", code="bad_attachments", field="media"
                )
            media.append(Attachment(url=url))
        return self._build(
            f"gw:{str(msg_id).strip()[:200]}",
            sender,
            text,
            media,
            parse_timestamp(data.get("received_at"), "received_at"),
        )

    @staticmethod
    def _join_parts(parts: Any) -> str:
        if not isinstance(parts, list) or not parts or len(parts) > MAX_PARTS:
            raise Rejected(f"'parts' must be a list of 1-{MAX_PARTS} parts", code="bad_parts", field="parts")
        by_number: dict[int, str] = {}
        refs, totals = set(), set()
        for p in parts:
            if not isinstance(p, dict) or not isinstance(p.get("text"), str):
                raise Rejected("each part needs 'part', 'total' and 'text'", code="bad_parts", field="parts")
            try:
                number, total = int(p["part"]), int(p["total"])
            except (KeyError, TypeError, ValueError):
                raise Rejected(
                    "each part needs numeric 'part' and 'total'", code="bad_parts", field="parts"
                ) from None
            if not 1 <= number <= total <= MAX_PARTS:
                raise Rejected(f"part {number} of {total} is out of range", code="bad_parts", field="parts")
            if number in by_number and by_number[number] != p["text"]:
                raise Rejected(
                    f"part {number} is sent twice with different text", code="bad_parts", field="parts"
                )
            by_number[number] = p["text"]
            refs.add(str(p.get("ref", "")))
            totals.add(total)
        if len(refs) > 1 or len(totals) > 1:
            raise Rejected(
                "parts belong to different messages (ref/total differ)", code="bad_parts", field="parts"
            )
        (total,) = totals
        missing = sorted(set(range(1, total + 1)) - set(by_number))
        if missing:
            raise Rejected(
                f"incomplete multipart message: part(s) {', '.join(map(str, missing))} of {total} missing",
                status=422,
                code="incomplete_multipart",
                field="parts",
            )
        # Concatenated SMS split mid-word, so the parts are joined as they are, without separators.
        return "".join(by_number[n] for n in range(1, total + 1))
