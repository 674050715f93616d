"""``facebook`` and ``governor_social``: Meta Graph API webhooks.

* Subscription: Meta sends ``GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…``; we echo the
  challenge when the verify token matches (:meth:`MetaWebhookSource.handshake`).
* Every POST carries ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body, app secret>``:
  missing is 401, wrong is 403 (constant-time compare). Each channel has its own app secret and verify
  token (``CRM_FACEBOOK_*``, ``CRM_GOVERNOR_SOCIAL_*``).
* Replay window: entries carry ``time``; a signed body older than ``CRM_META_REPLAY_WINDOW_S`` is refused
  (Meta retries for up to 36 hours, so the window is a little longer). Within it, a replay is harmless:
  provider ids make it the same report.
* One POST can batch several entries, each with several ``changes`` or ``messaging`` events. Every
  citizen message becomes one report; everything else (likes, edits, deletions, delivery/read receipts,
  the page's own replies, echoes) is counted as ignored. Meta expects a fast 200 whatever we did with
  the events, so the answer is 200 ``{"status": "ok", "accepted": n, "ignored": m}``.

Provider ids: the comment id, post id, Messenger ``mid`` or Instagram comment id, as Meta gives them.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson
from pydantic import ValidationError

from ..envelope import Attachment, Contact, Report, Reporter, reporter_pseudonym
from .base import InboundRequest, PushResult, PushSource, Rejected
from .common import header, in_utc_range
from .config import core_view

MAX_TEXT = 20000
SIGNATURE_HEADER = "X-Hub-Signature-256"


def sign(secret: str, body: bytes) -> str:
    """The header value Meta sends for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _epoch(value: Any) -> datetime | None:
    """Meta timestamps: seconds (feed), milliseconds (messaging) or ISO 8601 strings (some fields).
    None when absent or unreadable: :func:`_time` refuses an unreadable one."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        try:
            # a huge integer (a digit string) overflows the division, not only fromtimestamp
            seconds = value / 1000 if value > 1e11 else value
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        # isdigit() alone admits '²' and other digits int() refuses (ValueError escaped the parser)
        if value.isascii() and value.isdigit():
            return _epoch(int(value)) if len(value) <= 20 else None
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("+0000", "+00:00"))
        except ValueError:
            return None
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        # 0001-01-01T00:00+01:00 is year 0 in UTC: the envelope's conversion raised OverflowError
        return parsed if in_utc_range(parsed) else None
    return None


def _time(value: Any, name: str) -> datetime | None:
    """A time Meta sent (``time``, ``created_time``, ``timestamp``): None if absent, refused if unreadable."""
    when = _epoch(value)
    if when is None and value is not None:
        raise Rejected(
            f"{name} {str(value)[:100]!r} is not a Unix time or an ISO 8601 time (years 1-9999)",
            code="bad_timestamp",
            field=name,
        )
    return when


def _load(body: bytes) -> dict[str, Any]:
    if not body:
        raise Rejected("empty body: Meta webhooks are JSON", code="empty_body")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Rejected(f"malformed JSON: {exc}", code="malformed_json") from None
    if not isinstance(data, dict):
        raise Rejected("webhook body must be a JSON object", code="malformed_json")
    return data


def _id(value: Any) -> str | None:
    if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
        out = str(value).strip()
        return out if len(out) <= 300 else None
    return None


class MetaWebhookSource(PushSource):
    """Shared by both Meta channels; subclasses name the channel, its secrets and the objects it takes."""

    methods: ClassVar[tuple[str, ...]] = ("POST",)
    #: webhook ``object`` values this channel subscribes to
    objects: ClassVar[frozenset[str]] = frozenset({"page"})

    # -- secrets ------------------------------------------------------------------------------------
    def app_secret(self) -> str:
        return self.config.app_secret.get_secret_value()

    def verify_token(self) -> str:
        return self.config.verify_token.get_secret_value()

    # -- the contract --------------------------------------------------------------------------------
    def handshake(self, request: InboundRequest) -> tuple[int, str] | None:
        mode = request.query.get("hub.mode")
        token = request.query.get("hub.verify_token", "")
        challenge = request.query.get("hub.challenge", "")
        if mode != "subscribe":
            return 400, "expected hub.mode=subscribe"
        if not hmac.compare_digest(token.encode(), self.verify_token().encode()):
            return 403, "hub.verify_token does not match"
        if not challenge or len(challenge) > 200 or not challenge.isprintable() or "<" in challenge:
            return 400, "hub.challenge missing or malformed"
        return 200, challenge

    def authenticate(self, request: InboundRequest) -> None:
        given = header(request, SIGNATURE_HEADER)
        if not given:
            raise Rejected(f"missing {SIGNATURE_HEADER} header", status=401, code="unauthenticated")
        expected = sign(self.app_secret(), request.body)
        if not hmac.compare_digest(given.strip().encode(), expected.encode()):
            raise Rejected(f"{SIGNATURE_HEADER} does not match the body", status=403, code="bad_signature")
        # Replay window: only possible once the signature proved the body (and its times) authentic.
        try:
            data = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return  # parse() refuses it with the reason, and dead-letters it
        entries = data.get("entry") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            return
        oldest = time.time() - self.config.meta_replay_window_s
        for entry in entries:
            # an unreadable time is refused (400) rather than let through the replay check
            when = _time(entry.get("time"), "time") if isinstance(entry, dict) else None
            if when is not None and when.timestamp() < oldest:
                raise Rejected(
                    f"webhook entry time {when.isoformat()} is outside the replay window",
                    status=403,
                    code="replayed",
                )

    def parse(self, request: InboundRequest) -> PushResult:
        data = _load(request.body)
        obj = data.get("object")
        if not isinstance(obj, str) or obj not in self.objects:
            raise Rejected(
                f"webhook object {obj!r} is not subscribed on channel {self.channel} "
                f"(expected {', '.join(sorted(self.objects))})",
                code="unsupported_object",
                field="object",
            )
        entries = data.get("entry")
        if not isinstance(entries, list) or not entries:
            raise Rejected("webhook has no 'entry' list", code="malformed_webhook", field="entry")
        reports: list[Report] = []
        ignored = 0
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise Rejected(f"entry[{i}] is not an object", code="malformed_webhook", field="entry")
            account_id = _id(entry.get("id"))
            events: list[Report | None] = []
            changes, messaging = entry.get("changes"), entry.get("messaging")
            if changes is None and messaging is None:
                raise Rejected(f"entry[{i}] has neither 'changes' nor 'messaging'", code="malformed_webhook")
            try:
                if changes is not None:
                    if not isinstance(changes, list):
                        raise Rejected(f"entry[{i}].changes is not a list", code="malformed_webhook")
                    events += [self._change(obj, account_id, c, i) for c in changes]
                if messaging is not None:
                    if not isinstance(messaging, list):
                        raise Rejected(f"entry[{i}].messaging is not a list", code="malformed_webhook")
                    events += [self._message(obj, account_id, m, i) for m in messaging]
            except ValidationError as exc:
                # A value past the envelope's limits (a 201-character sender id as the handle, a media
                # type of 101 characters, a photo URL over 2000): refused, not a 500.
                error = exc.errors()[0]
                where = ".".join(str(part) for part in error["loc"]) or "value"
                raise Rejected(
                    f"entry[{i}]: {where}: {error['msg']}",
                    code="too_long" if error["type"] == "string_too_long" else "malformed_webhook",
                    field=where,
                ) from None
            for report in events:
                if report is None or report.provider_id in seen:
                    ignored += 1
                    self.metrics.ignored(reason="not_a_report" if report is None else "repeated_in_batch")
                    continue
                seen.add(report.provider_id)
                reports.append(report)
        return PushResult(
            reports,
            response={
                "status": "ok",
                "accepted": len(reports),
                "ignored": ignored,
                "report_ids": [r.report_id for r in reports],
            },
            status=200,
        )

    # -- events --------------------------------------------------------------------------------------
    def _report(
        self,
        *,
        provider_id: str,
        text: str,
        sender_id: str | None,
        sender_kind: str,
        name: str | None = None,
        handle: str | None = None,
        when: datetime | None = None,
        in_reply_to: str | None = None,
        attachments: list[Attachment] | None = None,
    ) -> Report:
        if len(text) > MAX_TEXT:
            raise Rejected(f"message {provider_id} is too long ({len(text)} characters)", code="too_long")
        reporter = (
            Reporter(id=reporter_pseudonym(self.reporter_key, sender_kind, sender_id))
            if sender_id
            else Reporter(id="anonymous")
        )
        contact = Contact(name=(name or None) and name[:200], handle=(handle or sender_id or None))
        return Report.create(
            channel=self.channel,
            provider_id=provider_id,
            source_at=when,
            reporter=reporter,
            contact=contact if (contact.name or contact.handle) else None,
            text=text,
            in_reply_to=in_reply_to,
            attachments=attachments or [],
        )

    def _change(self, obj: str, account_id: str | None, change: Any, i: int) -> Report | None:
        if not isinstance(change, dict) or not isinstance(change.get("value"), dict):
            raise Rejected(f"entry[{i}] has a change without a 'value' object", code="malformed_webhook")
        fld, value = change.get("field"), change["value"]
        if obj == "page" and fld == "feed":
            return self._feed(account_id, value)
        if obj == "instagram" and fld in ("comments", "live_comments"):
            return self._ig_comment(value)
        if obj == "instagram" and fld == "mentions":
            # Mentions carry only media/comment ids; the text needs a Graph API call (not done here).
            return self._ig_mention(value)
        return None  # other subscribed fields (ratings, reactions, …) are not reports

    def _feed(self, page_id: str | None, value: dict[str, Any]) -> Report | None:
        item, verb = value.get("item"), value.get("verb")
        if verb != "add" or item not in ("comment", "post", "status", "photo", "video"):
            return None  # edits, hides, removals, likes and reactions are not new reports
        sender = value.get("from") if isinstance(value.get("from"), dict) else {}
        sender_id = _id(sender.get("id"))
        if sender_id is not None and sender_id == page_id:
            return None  # the page answering a citizen
        text = value.get("message")
        if not isinstance(text, str) or not text.strip():
            if item in ("photo", "video") or value.get("photos") or value.get("photo"):
                text = "(foto/video tanpa teks)"
            else:
                return None
        if item == "comment":
            provider_id = _id(value.get("comment_id"))
            parent = _id(value.get("parent_id")) or _id(value.get("post_id"))
        else:
            provider_id = _id(value.get("post_id"))
            parent = None
        if provider_id is None:
            raise Rejected(f"feed {item} without its id", code="malformed_webhook", field="comment_id")
        urls = value.get("photos") if isinstance(value.get("photos"), list) else []
        if isinstance(value.get("photo"), str):
            urls = [*urls, value["photo"]]
        return self._report(
            provider_id=provider_id,
            text=text.strip(),
            sender_id=sender_id,
            sender_kind="fb",
            name=sender.get("name") if isinstance(sender.get("name"), str) else None,
            when=_time(value.get("created_time"), "created_time"),
            in_reply_to=parent,
            attachments=[Attachment(url=u) for u in urls if isinstance(u, str) and u.startswith("https://")][
                :20
            ],
        )

    def _ig_comment(self, value: dict[str, Any]) -> Report | None:
        provider_id = _id(value.get("id"))
        text = value.get("text")
        if provider_id is None:
            raise Rejected("instagram comment without its id", code="malformed_webhook", field="id")
        if not isinstance(text, str) or not text.strip():
            return None
        sender = value.get("from") if isinstance(value.get("from"), dict) else {}
        username = sender.get("username") if isinstance(sender.get("username"), str) else None
        media = value.get("media") if isinstance(value.get("media"), dict) else {}
        return self._report(
            provider_id=provider_id,
            text=text.strip(),
            sender_id=_id(sender.get("id")),
            sender_kind="ig",
            handle=f"@{username}" if username else None,
            in_reply_to=_id(value.get("parent_id")) or _id(media.get("id")),
        )

    def _ig_mention(self, value: dict[str, Any]) -> Report | None:
        text = value.get("text") or value.get("caption")
        provider_id = _id(value.get("comment_id")) or _id(value.get("media_id"))
        if provider_id is None:
            raise Rejected("instagram mention without comment_id or media_id", code="malformed_webhook")
        if not isinstance(text, str) or not text.strip():
            return None
        return self._report(provider_id=provider_id, text=text.strip(), sender_id=None, sender_kind="ig")

    def _message(self, obj: str, account_id: str | None, event: Any, i: int) -> Report | None:
        if not isinstance(event, dict):
            raise Rejected(
                f"entry[{i}] has a messaging event that is not an object", code="malformed_webhook"
            )
        message = event.get("message")
        if not isinstance(message, dict):
            return None  # delivery, read, postback, reaction events
        if message.get("is_echo") or message.get("is_deleted"):
            return None
        mid = _id(message.get("mid"))
        if mid is None:
            raise Rejected(f"entry[{i}] message without 'mid'", code="malformed_webhook", field="mid")
        sender = event.get("sender") if isinstance(event.get("sender"), dict) else {}
        sender_id = _id(sender.get("id"))
        if sender_id is not None and sender_id == account_id:
            return None
        attachments: list[Attachment] = []
        raw_attachments = message.get("attachments")
        if raw_attachments is not None and not isinstance(raw_attachments, list):
            # iterating an int raised TypeError; a string or an object were read as attachments
            raise Rejected(
                f"entry[{i}] message {mid}: 'attachments' is not a list",
                code="malformed_webhook",
                field="attachments",
            )
        for att in raw_attachments or []:
            payload = att.get("payload") if isinstance(att, dict) else None
            url = payload.get("url") if isinstance(payload, dict) else None
            if isinstance(url, str) and url.startswith("https://") and len(url) <= 2000:
                attachments.append(
                    Attachment(
                        url=url, media_type=att.get("type") if isinstance(att.get("type"), str) else None
                    )
                )
        text = message.get("text")
        if not isinstance(text, str) or not text.strip():
            if not attachments:
                return None  # stickers and the like
            text = "(lampiran tanpa teks)"
        reply = message.get("reply_to") if isinstance(message.get("reply_to"), dict) else {}
        return self._report(
            provider_id=mid,
            text=text.strip(),
            sender_id=sender_id,
            sender_kind="ig" if obj == "instagram" else "fb",
            when=_time(event.get("timestamp"), "timestamp"),
            in_reply_to=_id(reply.get("mid")),
            attachments=attachments[:20],
        )


FacebookSettings = core_view(
    "FacebookSettings",
    "CRM_FACEBOOK_",
    ["facebook_app_secret", "facebook_verify_token"],
    shared=["meta_replay_window_s"],
)
GovernorSocialSettings = core_view(
    "GovernorSocialSettings",
    "CRM_GOVERNOR_SOCIAL_",
    ["governor_social_app_secret", "governor_social_verify_token"],
    shared=["meta_replay_window_s"],
)


class FacebookPageSource(MetaWebhookSource):
    """The provincial Facebook page: feed comments/posts and Messenger messages."""

    channel: ClassVar[str] = "facebook"
    route: ClassVar[str] = "/v1/channels/facebook/webhook"
    settings_model = FacebookSettings
    objects: ClassVar[frozenset[str]] = frozenset({"page"})


class GovernorSocialSource(MetaWebhookSource):
    """The Governor's accounts: a Facebook page and an Instagram professional account, one Meta app."""

    channel: ClassVar[str] = "governor_social"
    route: ClassVar[str] = "/v1/channels/governor_social/webhook"
    settings_model = GovernorSocialSettings
    objects: ClassVar[frozenset[str]] = frozenset({"page", "instagram"})
