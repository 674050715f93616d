"""What the outbox hands a sender and what a sender raises: shared by :mod:`.outbox` and :mod:`.senders`.

Kept apart so the senders need nothing of the outbox and the outbox can import the senders (no cycle).
"""

from __future__ import annotations

from dataclasses import dataclass


class SendError(Exception):
    """A send failed. ``destination_down``: the relay/gateway itself failed (pause the destination)."""

    def __init__(self, message: str, *, destination_down: bool = False, permanent: bool = False) -> None:
        super().__init__(message)
        self.destination_down = destination_down
        self.permanent = permanent


@dataclass
class Notification:
    """A due outbox row with what the sender needs (contact details only here, never in the row).

    A row for an agency about a surge (issue #17, destination ``agency``) names the surge and the
    agency instead of a report: its report fields are None."""

    outbox_id: int
    report_id: str | None
    event_key: str
    channel: str
    destination: str
    kind: str
    to_status: str | None
    body: str
    attempts: int
    provider_id: str | None
    in_reply_to: str | None
    private: bool | None
    tracking_number: str | None
    status: str | None
    email: str | None = None
    phone: str | None = None
    handle: str | None = None
    name: str | None = None  # for a private greeting only; never put in public text
    surge_id: str | None = None
    agency: str | None = None
