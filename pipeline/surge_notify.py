"""Telling agencies of surges: outbox rows with destination ``agency``, sent by e-mail (issue #17).

The worker's ``surge-alerts`` agent queues one row per agency a surge names (``pipeline/surge_store.py``);
``crm-pipeline notify`` sends it like any other row: retries with backoff, the destination paused while
the relay is down, ``failed`` after the last attempt. Each agency's address comes from
``CRM_SURGE_NOTIFY_ADDRESSES`` (JSON: agency_id → address), else from
``CRM_SURGE_NOTIFY_ADDRESS_TEMPLATE`` (``{agency_id}`` filled in; the default's ``.invalid`` domain
never delivers, so a deployment that forgot to configure addresses sees failed rows, not mail to
strangers). Every message about one surge is threaded under one root id, so a mailbox shows the surge
as one conversation: opened, grown, closed.
"""

from __future__ import annotations

from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

import orjson

from .crm.notify.notification import Notification, SendError
from .crm.notify.senders import EmailSender
from .envelope import utcnow
from .processors.route import load_router
from .settings import Settings


class AgencySender(EmailSender):
    """An e-mail to the agency's operations address through the city's relay."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        try:
            self.addresses: dict[str, str] = orjson.loads(settings.surge_notify_addresses)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"CRM_SURGE_NOTIFY_ADDRESSES is not JSON: {exc}") from None
        self.template = settings.surge_notify_address_template
        self.router = load_router()

    def address(self, agency: str) -> str:
        found = self.router.agency_for_label(agency)
        agency_id = found.agency_id if found is not None else agency
        address = self.addresses.get(agency_id) or self.addresses.get(agency)
        if not address and self.template:
            address = self.template.format(agency_id=agency_id)
        if not address:
            raise SendError(f"no address for agency {agency!r} (CRM_SURGE_NOTIFY_ADDRESSES)", permanent=True)
        return address

    def build(self, n: Notification) -> EmailMessage:
        if not n.agency or not n.surge_id:
            raise SendError("an agency row needs its agency and surge id", permanent=True)
        msg = EmailMessage()
        msg["From"] = Address("Jakarta CRM (DKI Jakarta)", addr_spec=self.s.email_ack_from)
        msg["To"] = self.address(n.agency)
        msg["Subject"] = n.body.split(": ", 1)[0][:200]
        msg["Date"] = format_datetime(utcnow())
        msg["Message-ID"] = f"<crm.surge.{n.outbox_id}.{n.surge_id}@{self.domain}>"
        root = f"<crm.surge.{n.surge_id}@{self.domain}>"
        msg["In-Reply-To"] = root
        msg["References"] = root
        msg["Auto-Submitted"] = "auto-generated"
        msg["X-CRM-Surge-Id"] = n.surge_id
        msg["X-CRM-Surge-State"] = n.to_status or ""
        msg.set_content(n.body + "\n\n-- \nJakarta CRM, Pemprov DKI Jakarta (deteksi lonjakan laporan)\n")
        return msg
