"""``whatsapp``: the WhatsApp Business Cloud API webhook, as a channel package outside the core.

WhatsApp Cloud API webhooks are Meta webhooks: the same GET handshake (``hub.verify_token``) and the same
``X-Hub-Signature-256`` HMAC over the raw body with the app secret. The payload differs::

    {"object": "whatsapp_business_account",
     "entry": [{"id": "<WABA id>", "changes": [{"field": "messages", "value": {
         "messaging_product": "whatsapp",
         "metadata": {"display_phone_number": "628111272206", "phone_number_id": "…"},
         "contacts": [{"profile": {"name": "Budi"}, "wa_id": "6281234567890"}],
         "messages": [{"from": "6281234567890", "id": "wamid.HBgM…", "timestamp": "1714540800",
                       "type": "text", "text": {"body": "Lampu jalan mati …"}}]}}]}]}

``statuses`` (sent/delivered/read) are not reports. The message ``id`` (``wamid…``) is the provider id.

Settings: a channel package declares its own, read from the same ``CRM_`` environment as the core
(here ``CRM_WHATSAPP_APP_SECRET`` and ``CRM_WHATSAPP_VERIFY_TOKEN``), so a deployment stays described by
environment variables alone.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.envelope import Contact, Report, Reporter, reporter_pseudonym
from pipeline.settings import Settings
from pipeline.sources.base import InboundRequest, PushResult, PushSource, Rejected
from pipeline.sources.common import normalise_phone

__all__ = ["WhatsAppCloudSource", "WhatsAppSettings", "sign"]


class WhatsAppSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRM_WHATSAPP_", extra="ignore")

    app_secret: SecretStr = SecretStr("dev-only-whatsapp-app-secret")
    verify_token: SecretStr = SecretStr("dev-only-whatsapp-verify-token")


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _header(request: InboundRequest, name: str) -> str | None:
    return next((v for k, v in request.headers.items() if k.lower() == name.lower()), None)


class WhatsAppCloudSource(PushSource):
    channel: ClassVar[str] = "whatsapp"
    route: ClassVar[str] = "/v1/channels/whatsapp/webhook"

    def __init__(self, settings: Settings, wa: WhatsAppSettings | None = None) -> None:
        super().__init__(settings)
        self.wa = wa or WhatsAppSettings()

    def handshake(self, request: InboundRequest) -> tuple[int, str] | None:
        token = request.query.get("hub.verify_token", "")
        challenge = request.query.get("hub.challenge", "")
        if request.query.get("hub.mode") != "subscribe" or not challenge.isalnum():
            return 400, "expected hub.mode=subscribe and a hub.challenge"
        if not hmac.compare_digest(token.encode(), self.wa.verify_token.get_secret_value().encode()):
            return 403, "hub.verify_token does not match"
        return 200, challenge

    def authenticate(self, request: InboundRequest) -> None:
        given = _header(request, "X-Hub-Signature-256")
        if not given:
            raise Rejected("missing X-Hub-Signature-256", status=401, code="unauthenticated")
        expected = sign(self.wa.app_secret.get_secret_value(), request.body)
        if not hmac.compare_digest(given.strip().encode(), expected.encode()):
            raise Rejected("X-Hub-Signature-256 does not match the body", status=403, code="bad_signature")

    def parse(self, request: InboundRequest) -> PushResult:
        try:
            data = orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            raise Rejected(f"malformed JSON: {exc}", code="malformed_json") from None
        if not isinstance(data, dict) or data.get("object") != "whatsapp_business_account":
            raise Rejected("expected object 'whatsapp_business_account'", code="unsupported_object")
        if not isinstance(data.get("entry"), list):
            raise Rejected("webhook has no 'entry' list", code="malformed_webhook")
        reports: list[Report] = []
        ignored = 0
        for entry in data["entry"]:
            for change in (entry.get("changes") or []) if isinstance(entry, dict) else []:
                value = change.get("value") if isinstance(change, dict) else None
                if not isinstance(value, dict):
                    raise Rejected("a change without a 'value' object", code="malformed_webhook")
                names = {
                    c.get("wa_id"): (c.get("profile") or {}).get("name") for c in value.get("contacts") or []
                }
                ignored += len(value.get("statuses") or [])
                for message in value.get("messages") or []:
                    report = self._message(message, names)
                    if report is None:
                        ignored += 1
                    else:
                        reports.append(report)
        return PushResult(
            reports, response={"status": "ok", "accepted": len(reports), "ignored": ignored}, status=200
        )

    def _message(self, message: Any, names: dict[Any, Any]) -> Report | None:
        if not isinstance(message, dict) or not isinstance(message.get("id"), str):
            raise Rejected("a message without its 'id'", code="malformed_webhook", field="id")
        if message.get("type") != "text":
            return None  # media would be fetched by id from the Graph API; not part of this example
        body = (message.get("text") or {}).get("body")
        if not isinstance(body, str) or not body.strip():
            raise Rejected(f"text message {message['id']} has no body", code="missing_text")
        try:
            phone = normalise_phone(str(message.get("from", "")))
        except ValueError:
            raise Rejected(
                f"'from' {message.get('from')!r} is not a phone number", code="bad_phone"
            ) from None
        stamp = message.get("timestamp")
        return Report.create(
            channel=self.channel,
            provider_id=message["id"],
            source_at=datetime.fromtimestamp(int(stamp), UTC) if str(stamp).isdigit() else None,
            # Same pseudonym as the same number on SMS, web or desks: one citizen across channels.
            reporter=Reporter(id=reporter_pseudonym(self.reporter_key, "phone", phone)),
            contact=Contact(phone=phone, name=names.get(message.get("from"))),
            text=body.strip(),
        )
