"""The whole test suite a channel package needs: the core's conformance kit, plus its own parsing cases."""

from __future__ import annotations

import time

import orjson
from crm_whatsapp_channel import MEDIA_ONLY_TEXT, WhatsAppCloudSource, WhatsAppSettings, sign

from pipeline.settings import Settings
from pipeline.sources.conformance import HttpCall, PushConformance

SECRET = WhatsAppSettings().app_secret.get_secret_value()
ROUTE = WhatsAppCloudSource.route


def webhook(msg_id: str, text: str, sender: str = "6281234567890") -> dict:
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "1029384756",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "628111272206", "phone_number_id": "1122"},
                            "contacts": [{"profile": {"name": "Budi"}, "wa_id": sender}],
                            "messages": [
                                {
                                    "from": sender,
                                    "id": msg_id,
                                    "timestamp": str(int(time.time())),
                                    "type": "text",
                                    "text": {"body": text},
                                }
                            ],
                            "statuses": [{"id": "wamid.old", "status": "read"}],
                        },
                    }
                ],
            }
        ],
    }


def signed(payload: dict | bytes, secret: str = SECRET) -> HttpCall:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return HttpCall(
        ROUTE, body, {"Content-Type": "application/json", "X-Hub-Signature-256": sign(secret, body)}
    )


class TestWhatsAppConformance(PushConformance):
    adapter = WhatsAppCloudSource

    def valid(self, nonce: str, base_url: str) -> HttpCall:
        return signed(webhook(f"wamid.{nonce}", f"Jalan berlubang di Jl. Pemuda, mohon diperbaiki {nonce}"))

    def malformed(self, nonce: str, base_url: str) -> HttpCall:
        return signed(webhook(f"wamid.{nonce}", "   "))

    def forged(self, nonce: str, base_url: str) -> HttpCall:
        return signed(self.valid(nonce, base_url).body, secret="not-the-app-secret")  # noqa: S106


def test_sender_is_normalised_and_statuses_are_not_reports():
    src = WhatsAppCloudSource(Settings(env="test"))
    result = src.parse(signed(webhook("wamid.1", "Sampah menumpuk di Pasar Minggu")).inbound())
    [r] = result.reports
    assert (
        r.contact.phone == "+6281234567890" and r.contact.name == "Budi" and result.response["ignored"] == 1
    )


def test_a_photo_without_caption_is_a_report_and_statuses_are_counted_as_ignored():
    src = WhatsAppCloudSource(Settings(env="test"))
    payload = webhook("wamid.photo1", "unused")
    message = payload["entry"][0]["changes"][0]["value"]["messages"][0]
    del message["text"]
    message.update(type="image", image={"id": "1234567890", "mime_type": "image/jpeg"})
    before = src.metrics.value("ignored", reason="status")
    [r] = src.parse(signed(payload).inbound()).reports
    assert r.text == MEDIA_ONLY_TEXT and r.attachments[0].url == "whatsapp-media:1234567890"
    assert src.metrics.value("ignored", reason="status") == before + 1  # the "read" receipt beside it
