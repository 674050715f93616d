"""The answer-back half of the channel contract: a reply sender per channel, found through entry points.

A channel that can answer its reporters on the channel itself registers a :class:`ReplySender` in the
``crm_pipeline.replies`` entry-point group, under its channel id (the same id as its adapter)::

    [project.entry-points."crm_pipeline.replies"]
    whatsapp = "crm_whatsapp_channel:WhatsAppReplySender"

From then on the acknowledgement and every status change of a report that came in on that channel is
queued for the destination named like the channel, and the outbox runner (``crm-pipeline notify``)
calls ``send`` with the same guarantees as for the built-in senders: one outbox row per report and
event (a replayed intake or status event queues nothing new), a retry schedule per row and a pause per
destination when the provider is down, ``crm_notifications_total{destination,outcome}``, and after
``CRM_NOTIFY_MAX_ATTEMPTS`` (or a permanent refusal) the row is ``failed``: listed as undelivered by
``crm-pipeline notify undelivered`` and on the dashboard.

``send`` returns the provider's id for the message, or raises :class:`SendError`
(``destination_down=True`` for 5xx/429/unreachable: the destination pauses; ``permanent=True`` for a
refusal that a retry cannot fix). Send :func:`idempotency_key` along where the provider supports one:
a crash between the provider's answer and the outbox commit resends the same row with the same key.
The JAKI and LAPOR! reply senders of this package are registered the same way.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any, ClassVar

import aiohttp

from ...settings import Settings
from ...sources.config import ChannelSettings
from .notification import Notification, SendError

__all__ = [
    "GROUP",
    "Notification",
    "ReplyRegistryError",
    "ReplySender",
    "SendError",
    "discover_replies",
    "idempotency_key",
    "post_json",
]

GROUP = "crm_pipeline.replies"
log = logging.getLogger("pipeline.notify")


class ReplySender:
    """Answers a channel's reporters on that channel. Subclass, set ``channel``, implement ``send``."""

    #: the channel id (the adapter's); also the outbox destination
    channel: ClassVar[str]
    #: declared settings (:class:`~pipeline.sources.config.ChannelSettings`), loaded into ``self.config``
    settings_model: ClassVar[type[ChannelSettings] | None] = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config: Any = self.settings_model.load(settings) if self.settings_model else None

    async def start(self) -> None:
        """Called once before the first send (open a client session, fetch a token…)."""

    async def stop(self) -> None:
        """Called when the notifier stops."""

    async def send(self, n: Notification) -> str:
        """Deliver ``n.body`` to the reporter of ``n.report_id``; the provider's message id."""
        raise NotImplementedError


class ReplyRegistryError(RuntimeError):
    pass


@lru_cache(maxsize=1)
def discover_replies() -> dict[str, type[ReplySender]]:
    """Every installed reply sender by channel id; a bad or doubled registration is a deployment error."""
    found: dict[str, type[ReplySender]] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, ReplySender)):
            raise ReplyRegistryError(f"entry point {ep.name!r} ({ep.value}) is not a ReplySender subclass")
        if cls.channel != ep.name:
            raise ReplyRegistryError(f"entry point {ep.name!r} names a reply sender for {cls.channel!r}")
        if cls.channel in found:
            raise ReplyRegistryError(f"two reply senders claim channel {cls.channel!r}")
        found[cls.channel] = cls
    return found


def idempotency_key(n: Notification) -> str:
    """Stable per outbox row: a resend after a crash carries the same key."""
    return f"crm-{n.outbox_id}"


async def post_json(
    url: str, body: dict[str, Any] | bytes, headers: dict[str, str], timeout_s: float = 30
) -> dict[str, Any]:
    """POST JSON the way every provider call of the outbox does: 5xx/429/unreachable pause the
    destination, other 4xx are permanent; the decoded JSON answer (``{}`` when there is none)."""
    data = body if isinstance(body, bytes) else None
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
            kwargs: dict[str, Any] = {"data": data} if data is not None else {"json": body}
            hdrs = {"Content-Type": "application/json", **headers}
            async with session.post(url, headers=hdrs, **kwargs) as resp:
                text = await resp.text()
                if resp.status >= 500 or resp.status == 429:
                    raise SendError(f"{url} answered {resp.status}: {text[:300]}", destination_down=True)
                if resp.status >= 400:
                    raise SendError(f"{url} answered {resp.status}: {text[:300]}", permanent=True)
                try:
                    decoded = await resp.json(content_type=None)
                except ValueError:
                    decoded = {}
                return decoded if isinstance(decoded, dict) else {}
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise SendError(f"{url} unreachable: {exc!r}", destination_down=True) from exc
