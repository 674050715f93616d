"""The plug-in channel's way back: the WhatsApp example answers its reporters on WhatsApp.

The example is put on the path as pip would install it (its entry points in a dist-info folder), so the
core finds its reply sender through ``crm_pipeline.replies`` exactly as in a deployment. The reply
half of the conformance kit then runs against real PostgreSQL (the outbox) and the example's own
simulated WhatsApp Cloud API.
"""

from __future__ import annotations

import asyncio
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.crm.notify.replies import discover_replies
from pipeline.settings import Settings
from pipeline.sources.base import InboundRequest
from pipeline.sources.conformance import ReplyConformance
from tests.crm_helpers import prepare

pytestmark = pytest.mark.stack

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "whatsapp_channel"
TOKEN = "wa-reply-test-token"


def _dist_info(tmp: Path) -> Path:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    info = tmp / f"crm_whatsapp_channel-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = []
    for group, eps in project["entry-points"].items():
        lines += [f"[{group}]", *(f"{name} = {target}" for name, target in eps.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines))
    return tmp


@pytest.fixture(scope="module", autouse=True)
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The example installed for this module only (other tests see the core's channels alone)."""
    paths = [str(_dist_info(tmp_path_factory.mktemp("wa"))), str(EXAMPLE)]
    sys.path[:0] = paths
    discover_replies.cache_clear()
    try:
        yield
    finally:
        for p in paths:
            sys.path.remove(p)
        discover_replies.cache_clear()


@pytest.fixture(scope="module")
def reply_database(iso) -> str:
    asyncio.run(prepare(iso.settings()))
    return iso.env["CRM_DATABASE_URL"]


class TestWhatsAppReplies(ReplyConformance):
    @property
    def reply_sender(self) -> Any:  # imported once the example is on the path
        from crm_whatsapp_channel import WhatsAppReplySender

        return WhatsAppReplySender

    def report(self, nonce: str):
        """What the adapter makes of a citizen's WhatsApp message (the number is the way back)."""
        from crm_whatsapp_channel import WhatsAppCloudSource

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
        request = InboundRequest("POST", "/v1/channels/whatsapp/webhook", {}, {}, body)
        return WhatsAppCloudSource(self.settings()).parse(request).reports[0]

    def peer(self):
        from crm_whatsapp_channel.simulator import CloudApi

        return CloudApi(token=TOKEN)

    def delivered(self, peer, report) -> int:
        return sum(1 for to, _ in peer.sent if "+" + to == report.contact.phone)

    def sender(self, peer_url: str):
        from crm_whatsapp_channel import WhatsAppReplySender, WhatsAppSettings

        sender = WhatsAppReplySender(Settings(env="test"))
        sender.config = WhatsAppSettings(
            graph_base=f"{peer_url}/v19.0", access_token=TOKEN, phone_number_id="109876543210"
        )
        return sender
