"""Reply senders of the built-in channels that answer in the channel itself: JAKI and LAPOR!.

Both are registered in the ``crm_pipeline.replies`` entry-point group of this package's
``pyproject.toml``, exactly as a channel package registers its own (see :mod:`.replies`).

JAKI: a signed callback to the JAKI backend, which shows it in the reporter's app::

    POST {CRM_JAKI_REPLY_URL}
    Content-Type: application/json
    X-CRM-Timestamp: <unix seconds>
    X-CRM-Signature: sha256=<hex HMAC-SHA256(CRM_JAKI_REPLY_SECRET, "<timestamp>.<raw body>")>
    Idempotency-Key: crm-<outbox id>

    {"report_id": "<JAKI's report id>", "account_id": "<JAKI account>" | null,
     "tracking_number": "JKT-…", "kind": "ack" | "status", "status": "Menunggu" | …,
     "message": "<text for the citizen>", "event": "ack" | "status:<event id>"}

The backend verifies the signature and a timestamp within five minutes, answers 2xx with
``{"id": "<its notification id>"}``; a repeat of an ``Idempotency-Key`` it has seen is answered as
before without a second push to the phone.

LAPOR!: the follow-up (tindak lanjut) endpoint of the integration API, with the token the poller uses::

    POST {CRM_LAPOR_API_BASE}/v1/integrasi/laporan/<LAPOR! id>/tindak-lanjut
    X-Lapor-Token: <CRM_LAPOR_TOKEN>            (header name: CRM_LAPOR_TOKEN_HEADER)
    Idempotency-Key: crm-<outbox id>

    {"content": "<text>", "status": "<CRM status>", "reference": "crm-<outbox id>",
     "tracking_number": "JKT-…"}

As for the poll API (``pipeline/sources/lapor.py``), this shape is an assumption to be checked against
the real integration agreement; only this class changes if it is wrong.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import ClassVar
from urllib.parse import quote

import orjson
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from ...sources.config import ChannelSettings
from .replies import Notification, ReplySender, SendError, idempotency_key, post_json


class JakiReplySettings(ChannelSettings):
    model_config = SettingsConfigDict(env_prefix="CRM_JAKI_REPLY_", extra="ignore")

    url: str = Field(
        "http://127.0.0.1:8089/jaki/v1/crm/callbacks", description="JAKI backend's callback endpoint (POST)"
    )
    secret: SecretStr = Field(
        SecretStr("dev-only-jaki-reply-secret"), description="HMAC key shared with the JAKI backend"
    )
    timeout_s: float = Field(30.0, gt=0, description="per callback")


def jaki_signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class JakiReplySender(ReplySender):
    channel: ClassVar[str] = "jaki"
    settings_model = JakiReplySettings

    def request(self, n: Notification, now: float | None = None) -> tuple[bytes, dict[str, str]]:
        body = orjson.dumps(
            {
                "report_id": n.provider_id,
                "account_id": n.handle,
                "tracking_number": n.tracking_number,
                "kind": n.kind,
                "status": n.to_status or n.status,
                "message": n.body,
                "event": n.event_key,
            }
        )
        stamp = str(int(now if now is not None else time.time()))
        return body, {
            "X-CRM-Timestamp": stamp,
            "X-CRM-Signature": jaki_signature(self.config.secret.get_secret_value(), stamp, body),
            "Idempotency-Key": idempotency_key(n),
        }

    async def send(self, n: Notification) -> str:
        body, headers = self.request(n)
        data = await post_json(self.config.url, body, headers, timeout_s=self.config.timeout_s)
        return str(data.get("id") or idempotency_key(n))


class LaporReplySender(ReplySender):
    channel: ClassVar[str] = "lapor1708"

    def url(self, n: Notification) -> str:
        base = self.settings.lapor_api_base.rstrip("/")
        return f"{base}/v1/integrasi/laporan/{quote(n.provider_id, safe='')}/tindak-lanjut"

    async def send(self, n: Notification) -> str:
        if not n.provider_id:
            raise SendError("the report has no LAPOR! id to follow up", permanent=True)
        s = self.settings
        data = await post_json(
            self.url(n),
            {
                "content": n.body,
                "status": n.to_status or n.status,
                "reference": idempotency_key(n),
                "tracking_number": n.tracking_number,
            },
            {s.lapor_token_header: s.lapor_token.get_secret_value(), "Idempotency-Key": idempotency_key(n)},
        )
        return str(data.get("id") or data.get("tindak_lanjut_id") or idempotency_key(n))
