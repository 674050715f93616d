"""One sender per destination. ``send(notification)`` returns the channel's id for the sent message or
raises :class:`~pipeline.crm.notify.notification.SendError`.

Privacy: a message text never names the reporter (see ``messages.py``). Where a channel offers both a
public reply and a private one, a reporter who asked to stay private only gets the private one (X: a
DM instead of a reply tweet, which would show "replying to @…"; Facebook: a private reply to the
comment instead of a public comment).
"""

from __future__ import annotations

from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import aiohttp
import aiosmtplib

from ...envelope import utcnow
from ...settings import Settings
from .messages import subject
from .notification import Notification, SendError
from .replies import post_json


class EmailSender:
    """Replies by e-mail through the city's relay; for e-mail reports a threaded reply."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.domain = settings.email_ack_from.rpartition("@")[2] or "jakarta.go.id"

    def build(self, n: Notification) -> EmailMessage:
        if not n.email:
            raise SendError("the report has no e-mail address to answer", permanent=True)
        msg = EmailMessage()
        msg["From"] = Address("Jakarta CRM (DKI Jakarta)", addr_spec=self.s.email_ack_from)
        msg["To"] = n.email
        msg["Subject"] = subject(n.tracking_number, n.to_status or "Menunggu")
        msg["Date"] = format_datetime(utcnow())
        # Stable per row: a resend after a crash carries the same id, so mail clients can drop it.
        msg["Message-ID"] = f"<crm.{n.outbox_id}.{n.report_id}@{self.domain}>"
        if n.channel == "email" and not n.provider_id.startswith("sha256:"):
            original = f"<{n.provider_id}>"
            msg["In-Reply-To"] = original
            msg["References"] = original
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-CRM-Tracking-Number"] = n.tracking_number
        msg.set_content(n.body + "\n\n-- \nJakarta CRM, Pemprov DKI Jakarta\n")
        return msg

    async def send(self, n: Notification) -> str:
        msg = self.build(n)
        pw = self.s.email_relay_password.get_secret_value() if self.s.email_relay_password else None
        try:
            await aiosmtplib.send(
                msg,
                sender="",  # null return path: bounces of automatic replies do not loop back
                hostname=self.s.email_relay_host,
                port=self.s.email_relay_port,
                start_tls=self.s.email_relay_starttls,
                username=self.s.email_relay_username,
                password=pw,
                timeout=self.s.email_relay_timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise SendError(f"relay refused the recipient: {exc}", permanent=True) from exc
        except aiosmtplib.SMTPResponseException as exc:
            permanent = 500 <= exc.code < 600
            raise SendError(f"relay answered {exc.code} {exc.message}", permanent=permanent) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise SendError(f"relay unreachable: {exc!r}", destination_down=True) from exc
        return str(msg["Message-ID"])


class SmsSender:
    """The SMS gateway's send API: ``POST {to, text, reference}`` with a bearer token."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings

    async def send(self, n: Notification) -> str:
        if not n.phone:
            raise SendError("the report has no phone number to answer", permanent=True)
        ref = f"crm-{n.outbox_id}"
        data = await post_json(
            self.s.notify_sms_url,
            {"to": n.phone, "text": n.body[:640], "reference": ref},
            {
                "Authorization": f"Bearer {self.s.notify_sms_token.get_secret_value()}",
                "Idempotency-Key": ref,
            },
        )
        return str(data.get("id") or data.get("message_id") or ref)


class MetaSender:
    """Facebook/Instagram through the Graph API: comment replies, private replies, Messenger."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings

    def url(self, path: str) -> str:
        return f"{self.s.notify_meta_graph_base.rstrip('/')}/{self.s.notify_meta_graph_version}/{path}"

    def request(self, n: Notification) -> tuple[str, dict[str, Any]]:
        """(url, JSON body) for this notification: public comment reply only for non-private reporters."""
        pid = n.provider_id
        if pid.startswith(("m_", "mid.")):  # a Messenger/Instagram DM: answer in the conversation
            if not n.handle:
                raise SendError("no sender id to answer the message", permanent=True)
            return self.url("me/messages"), {
                "recipient": {"id": n.handle},
                "messaging_type": "MESSAGE_TAG",
                "tag": "ACCOUNT_UPDATE",
                "message": {"text": n.body},
            }
        if n.private:
            # Private reply to the comment: nothing appears on the public page.
            return self.url("me/messages"), {"recipient": {"comment_id": pid}, "message": {"text": n.body}}
        return self.url(f"{pid}/comments"), {"message": n.body}

    async def send(self, n: Notification) -> str:
        url, body = self.request(n)
        token = self.s.notify_meta_page_token.get_secret_value()
        data = await post_json(url, body, {"Authorization": f"Bearer {token}"})
        return str(data.get("id") or data.get("message_id") or "")


class _RebasedSession:
    """Lets tweepy's AsyncClient talk to a configurable X API host (a proxy, or a local test server)."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self._session = session
        self._base = base.rstrip("/")

    def request(self, method: str, url: Any, **kw: Any) -> Any:
        return self._session.request(method, str(url).replace("https://api.twitter.com", self._base, 1), **kw)


class TwitterSender:
    """X: a reply tweet to a public mention, a DM for DMs and for reporters who asked to stay private."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings

    async def send(self, n: Notification) -> str:
        from tweepy.asynchronous import AsyncClient
        from tweepy.errors import HTTPException, TweepyException

        kind, _, item_id = n.provider_id.partition(":")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            client = AsyncClient(bearer_token=self.s.notify_twitter_token.get_secret_value())
            client.session = _RebasedSession(http, self.s.notify_twitter_api_base)  # type: ignore[assignment]
            try:
                if kind == "tweet" and not n.private:
                    resp = await client.create_tweet(
                        text=n.body[:280], in_reply_to_tweet_id=item_id, user_auth=False
                    )
                    return str(resp.data["id"])
                participant = await self._participant(client, n)
                resp = await client.create_direct_message(
                    participant_id=participant, text=n.body, user_auth=False
                )
                return str((resp.data or {}).get("dm_event_id", ""))
            except HTTPException as exc:
                status = getattr(exc.response, "status", 0) or 0
                down = status >= 500 or status == 429
                raise SendError(
                    f"X API answered {status}: {exc}", destination_down=down, permanent=not down
                ) from exc
            except (TimeoutError, TweepyException, aiohttp.ClientError, OSError) as exc:
                raise SendError(f"X API unreachable: {exc!r}", destination_down=True) from exc

    @staticmethod
    async def _participant(client: Any, n: Notification) -> str:
        handle = n.handle or ""
        if handle.startswith("x:"):
            return handle[2:]
        if handle.startswith("@"):
            user = await client.get_user(username=handle[1:], user_auth=False)
            return str(user.data["id"])
        raise SendError("no X account to send a direct message to", permanent=True)


def default_senders(settings: Settings) -> dict[str, Any]:
    senders: dict[str, Any] = {
        "sms": SmsSender(settings),
        "meta": MetaSender(settings),
        "twitter": TwitterSender(settings),
    }
    if settings.notify_email_enabled:
        senders["email"] = EmailSender(settings)
    return senders


def _msgid(domain: str) -> str:  # pragma: no cover - kept for ad-hoc sends
    return make_msgid(domain=domain)
