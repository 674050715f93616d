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

Photos arrive as ``{"type": "image", "image": {"id": "<media id>", "mime_type": "image/jpeg",
"caption": "…"}}``: the report carries the attachment ``whatsapp-media:<media id>`` and the channel's
media fetcher (:class:`WhatsAppMediaFetcher`, entry point ``crm_pipeline.media``) downloads it for the
media stage: ``GET /<version>/<media id>`` with the access token gives a short-lived URL, fetched with
the same token. The URL expires within minutes; the media id lasts 30 days, so a retry asks again.

Settings: the channel declares its own (:class:`WhatsAppSettings`, ``CRM_WHATSAPP_*``), read from the
same environment as the core; the adapter, the media fetcher and the reply sender name it as their
``settings_model`` and find it, validated, as ``self.config`` (secrets masked in logs and in
``crm-pipeline channels --config``; development secrets refused with ``CRM_ENV=production``).

Statuses (sent/delivered/read) and message types that are not reports are answered as ``ignored`` and
counted through the adapter's metrics handle: ``crm_channel_ignored_total{channel="whatsapp",reason}``.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from pipeline.crm.notify.replies import Notification, ReplySender, SendError, post_json
from pipeline.envelope import Attachment, Contact, Report, Reporter, reporter_pseudonym
from pipeline.media.fetch import Fetched, FetchFailed, MediaFetcher, MediaItem
from pipeline.sources.base import InboundRequest, PushResult, PushSource, Rejected
from pipeline.sources.common import normalise_phone
from pipeline.sources.config import ChannelSettings

__all__ = ["WhatsAppCloudSource", "WhatsAppMediaFetcher", "WhatsAppReplySender", "WhatsAppSettings", "sign"]

MEDIA_PREFIX = "whatsapp-media:"
#: the text of a photo sent without a caption (docs/channels.md, "Messages without text")
MEDIA_ONLY_TEXT = "(foto tanpa keterangan)"


class WhatsAppSettings(ChannelSettings):
    """Declared settings (docs/channels.md): typed, secrets masked, dev secrets refused in production."""

    model_config = SettingsConfigDict(env_prefix="CRM_WHATSAPP_", extra="ignore")

    app_secret: SecretStr = Field(
        SecretStr("dev-only-whatsapp-app-secret"), description="signs the webhooks (X-Hub-Signature-256)"
    )
    verify_token: SecretStr = Field(
        SecretStr("dev-only-whatsapp-verify-token"), description="the webhook subscription handshake"
    )
    access_token: SecretStr = Field(
        SecretStr("dev-only-whatsapp-access-token"), description="Graph API token: media and replies"
    )
    graph_base: str = Field("https://graph.facebook.com/v19.0", description="Graph API base with version")
    phone_number_id: str = Field("", description="the business number replies are sent from")
    reply_template: str = Field(
        "", description="approved template for replies outside the 24-hour window (empty: none)"
    )


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _header(request: InboundRequest, name: str) -> str | None:
    return next((v for k, v in request.headers.items() if k.lower() == name.lower()), None)


class WhatsAppCloudSource(PushSource):
    channel: ClassVar[str] = "whatsapp"
    route: ClassVar[str] = "/v1/channels/whatsapp/webhook"
    settings_model = WhatsAppSettings  # loaded into self.config: validated, masked, production-checked

    def handshake(self, request: InboundRequest) -> tuple[int, str] | None:
        token = request.query.get("hub.verify_token", "")
        challenge = request.query.get("hub.challenge", "")
        if request.query.get("hub.mode") != "subscribe" or not challenge.isalnum():
            return 400, "expected hub.mode=subscribe and a hub.challenge"
        if not hmac.compare_digest(token.encode(), self.config.verify_token.get_secret_value().encode()):
            return 403, "hub.verify_token does not match"
        return 200, challenge

    def authenticate(self, request: InboundRequest) -> None:
        given = _header(request, "X-Hub-Signature-256")
        if not given:
            raise Rejected("missing X-Hub-Signature-256", status=401, code="unauthenticated")
        expected = sign(self.config.app_secret.get_secret_value(), request.body)
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
                statuses = len(value.get("statuses") or [])
                self.metrics.ignored(statuses, reason="status")
                ignored += statuses
                for message in value.get("messages") or []:
                    report = self._message(message, names)
                    if report is None:
                        self.metrics.ignored(reason="message_type")
                        ignored += 1
                    else:
                        reports.append(report)
        return PushResult(
            reports, response={"status": "ok", "accepted": len(reports), "ignored": ignored}, status=200
        )

    def _message(self, message: Any, names: dict[Any, Any]) -> Report | None:
        if not isinstance(message, dict) or not isinstance(message.get("id"), str):
            raise Rejected("a message without its 'id'", code="malformed_webhook", field="id")
        attachments: list[Attachment] = []
        if message.get("type") == "image" and isinstance(message.get("image"), dict):
            image = message["image"]
            if not isinstance(image.get("id"), str) or not image["id"].isalnum():
                raise Rejected(f"image message {message['id']} has no media id", code="malformed_webhook")
            mime = image.get("mime_type") if isinstance(image.get("mime_type"), str) else None
            attachments.append(Attachment(url=MEDIA_PREFIX + image["id"], media_type=mime))
            body = image.get("caption") if isinstance(image.get("caption"), str) else None
            body = body if body and body.strip() else MEDIA_ONLY_TEXT  # a photo without a caption
        elif message.get("type") != "text":
            return None  # audio, stickers, locations, … are not reports in this example
        else:
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
            attachments=attachments,
        )


class WhatsAppMediaFetcher(MediaFetcher):
    """Downloads a WhatsApp media id for the media stage (the media half of the plug-in contract)."""

    channel: ClassVar[str] = "whatsapp"
    settings_model = WhatsAppSettings

    async def fetch(self, item: MediaItem) -> Fetched:
        ref = item.attachment.url
        if not ref.startswith(MEDIA_PREFIX):
            raise FetchFailed(f"not a WhatsApp media id: {ref[:80]!r}", permanent=True)
        auth = {"Authorization": f"Bearer {self.config.access_token.get_secret_value()}"}
        meta = await self.get(f"{self.config.graph_base.rstrip('/')}/{ref.removeprefix(MEDIA_PREFIX)}", auth)
        try:
            url = orjson.loads(meta.data)["url"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise FetchFailed("the Graph API's media answer has no 'url'") from None
        got = await self.get(url, auth)  # the download needs the token too
        return Fetched(got.data, got.content_type or item.attachment.media_type)


#: Graph API error code: the reporter's last message is older than 24 hours, free text is not allowed
OUTSIDE_WINDOW = 131047


class WhatsAppReplySender(ReplySender):
    """The answer-back half: the acknowledgement and status changes as WhatsApp messages to the reporter.

    ``POST {graph_base}/{phone_number_id}/messages`` with the access token. Within 24 hours of the
    reporter's last message a free-text message is allowed; later, WhatsApp refuses it (error 131047)
    and the sender uses the approved template ``CRM_WHATSAPP_REPLY_TEMPLATE`` (the text as its one body
    parameter) when one is set; without one the refusal is permanent and the row ends undelivered.
    The Cloud API has no idempotency key: the outbox's one row per report and step is what keeps it to
    one message.
    """

    channel: ClassVar[str] = "whatsapp"
    settings_model = WhatsAppSettings

    def url(self) -> str:
        if not self.config.phone_number_id:
            raise SendError(
                "CRM_WHATSAPP_PHONE_NUMBER_ID is not set: no number to answer from", permanent=True
            )
        return f"{self.config.graph_base.rstrip('/')}/{self.config.phone_number_id}/messages"

    def message(self, n: Notification, template: bool = False) -> dict[str, Any]:
        if not n.phone:
            raise SendError("the report has no WhatsApp number to answer", permanent=True)
        to = n.phone.lstrip("+")
        if template:
            return {
                "messaging_product": "whatsapp",
                "to": to,
                "type": "template",
                "template": {
                    "name": self.config.reply_template,
                    "language": {"code": "id"},
                    "components": [{"type": "body", "parameters": [{"type": "text", "text": n.body}]}],
                },
            }
        return {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": n.body[:4096]}}

    async def send(self, n: Notification) -> str:
        headers = {"Authorization": f"Bearer {self.config.access_token.get_secret_value()}"}
        try:
            data = await post_json(self.url(), self.message(n), headers)
        except SendError as exc:
            if not (exc.permanent and str(OUTSIDE_WINDOW) in str(exc) and self.config.reply_template):
                raise
            data = await post_json(self.url(), self.message(n, template=True), headers)
        ids = [m.get("id") for m in data.get("messages") or [] if isinstance(m, dict)]
        return str(ids[0]) if ids and ids[0] else ""
