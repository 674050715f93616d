"""The answer-back half of the kit for this channel: the outbox answers WhatsApp reporters on WhatsApp.

Runs against the real outbox on ``CRM_CONFORMANCE_DATABASE_URL`` and this package's own stand-in of the
Cloud API (:mod:`crm_whatsapp_channel.simulator`); offline, only the registration and settings checks run.
"""

from __future__ import annotations

import orjson
from crm_whatsapp_channel import WhatsAppCloudSource, WhatsAppReplySender, WhatsAppSettings
from crm_whatsapp_channel.simulator import CloudApi

from pipeline.envelope import Report
from pipeline.sources.base import InboundRequest
from pipeline.sources.conformance import ReplyConformance

TOKEN = "wa-reply-test-token"  # noqa: S105 - the simulator's token


class TestWhatsAppReplies(ReplyConformance):
    reply_sender = WhatsAppReplySender

    def report(self, nonce: str) -> Report:
        """What the adapter makes of a citizen's WhatsApp message (the number is the way back)."""
        number = "62812" + str(int(nonce, 16) % 10**8).zfill(8)
        value = {
            "messaging_product": "whatsapp",
            "contacts": [{"profile": {"name": "Rina"}, "wa_id": number}],
            "messages": [
                {"from": number, "id": f"wamid.{nonce}", "timestamp": "1714540800", "type": "text",
                 "text": {"body": f"Lampu jalan mati di Jl. Pemuda {nonce}"}}
            ],
        }  # fmt: skip
        body = orjson.dumps(
            {"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [{"value": value}]}]}
        )
        request = InboundRequest("POST", WhatsAppCloudSource.route, {}, {}, body)
        return WhatsAppCloudSource(self.settings()).parse(request).reports[0]

    def peer(self) -> CloudApi:
        return CloudApi(token=TOKEN)

    def delivered(self, peer: CloudApi, report: Report) -> int:
        return sum(1 for to, _ in peer.sent if "+" + to == report.contact.phone)

    def sender(self, peer_url: str) -> WhatsAppReplySender:
        sender = WhatsAppReplySender(self.settings())
        sender.config = WhatsAppSettings(
            graph_base=f"{peer_url}/v19.0", access_token=TOKEN, phone_number_id="109876543210"
        )
        return sender
