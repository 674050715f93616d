"""``twitter``: X/Twitter @DKIJakarta, polled with tweepy over the X API v2.

Two streams, one cursor (JSON ``{"mentions": since_id, "dm": last_event_id}``):

* mentions — ``GET /2/users/:id/mentions?since_id=…`` paged with ``pagination_token`` (newest first)
  until the page that reaches ``since_id``; the new ``since_id`` is the first page's
  ``meta.newest_id``. A stream is only advanced when every page up to the old cursor was read, so an
  interruption (429, network) mid-way publishes nothing of that stream and the next poll reads it again.
* direct messages — ``GET /2/dm_events?event_types=MessageCreate`` (the endpoint has no ``since_id``):
  paged newest first until an event id at or below the stored one; events @DKIJakarta sent itself are
  skipped.

Provider ids are ``tweet:<tweet id>`` and ``dm:<dm event id>`` (X ids are snowflakes; the prefix keeps
the two kinds apart). A mention replying to an earlier tweet gets ``in_reply_to = tweet:<that id>``, so
a citizen's follow-up joins their thread. Reporter pseudonym: keyed hash of the author's numeric X id
(stable across username changes); ``contact.handle`` is ``@username``.

Authentication: an OAuth 2.0 user-context access token of @DKIJakarta (scopes tweet.read users.read
dm.read) as the bearer token — one credential for both endpoints. Rate limits: tweepy is created with
``wait_on_rate_limit=False`` so a 429 comes back as ``TooManyRequests`` with ``x-rate-limit-reset``;
the adapter returns what is complete with ``retry_at`` = that reset time and the runner waits, never
crashes. The API host is ``CRM_TWITTER_API_BASE``: tweepy hard-codes ``https://api.twitter.com``, so the
client gets an aiohttp session that rebases its URLs (tests point it at a local X API v2 double).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, ClassVar

import aiohttp
import orjson
import tweepy
from pydantic import ValidationError
from tweepy.asynchronous import AsyncClient

from ..envelope import Attachment, Contact, Report, Reporter, reporter_pseudonym
from ..settings import Settings
from .base import PollSource
from .common import in_utc_range
from .config import core_view
from .poller import PollAuthError, PolledBatch, PollError

X_HOST = "https://api.twitter.com"
TWEET_FIELDS = [
    "id",
    "text",
    "author_id",
    "created_at",
    "conversation_id",
    "referenced_tweets",
    "lang",
    "attachments",
]
DM_FIELDS = ["id", "text", "event_type", "created_at", "sender_id", "dm_conversation_id", "attachments"]
USER_FIELDS = ["id", "name", "username"]
MEDIA_FIELDS = ["media_key", "type", "url", "preview_image_url"]


class _RebasedSession:
    """What tweepy needs of an aiohttp session (``request``), with the X host swapped for ours."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    def request(self, method: str, url: Any, **kwargs: Any) -> Any:
        url = str(url)
        if url.startswith(X_HOST):
            url = self.base + url[len(X_HOST) :]
        return self.session.request(method, url, **kwargs)

    async def close(self) -> None:
        await self.session.close()


class _Page:
    def __init__(self, body: bytes) -> None:
        self.body = body
        doc = orjson.loads(body)
        if not isinstance(doc, dict):
            raise ValueError("an X API page must be a JSON object")
        items, includes, meta = doc.get("data") or [], doc.get("includes") or {}, doc.get("meta") or {}
        # Fuzzing (issue #6): a page of the wrong shape is refused as a whole, never half-read.
        if not isinstance(includes, dict) or not isinstance(meta, dict):
            raise ValueError("an X API page needs 'includes' and 'meta' objects")
        if not isinstance(items, list):
            items = []  # /2/users/me answers one object in 'data' (read by user_id())
        users, media = includes.get("users") or [], includes.get("media") or []
        if not isinstance(users, list) or not isinstance(media, list):
            raise ValueError("'includes.users' and 'includes.media' must be lists")
        self.data: list[dict[str, Any]] = [d for d in items if isinstance(d, dict)]
        self.bad: list[Any] = [d for d in items if not isinstance(d, dict)]
        self.users = {u["id"]: u for u in users if isinstance(u, dict) and isinstance(u.get("id"), str)}
        self.media = {
            m["media_key"]: m for m in media if isinstance(m, dict) and isinstance(m.get("media_key"), str)
        }
        self.meta: dict[str, Any] = meta


class _Interrupted(Exception):
    def __init__(self, retry_at: float | None = None, reject: tuple[bytes, str] | None = None) -> None:
        self.retry_at = retry_at
        self.reject = reject


def _snowflake(value: Any) -> int | None:
    # isdigit() alone admits '\u00b2' and other digits int() refuses: the ValueError escaped _pages() and
    # crashed every poll of the stream. X ids are 64-bit: at most 20 digits.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        return int(value)
    return None


TwitterSettings = core_view(
    "TwitterSettings",
    "CRM_TWITTER_",
    [
        "twitter_api_base",
        "twitter_bearer_token",
        "twitter_user_id",
        "twitter_poll_interval_s",
        "twitter_max_pages",
        "twitter_poll_dms",
    ],
    optional_secrets=["bearer_token"],  # empty: X is not polled (each cycle reports the auth error)
)


class TwitterSource(PollSource):
    channel: ClassVar[str] = "twitter"
    settings_model = TwitterSettings

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.interval_s = settings.twitter_poll_interval_s  # type: ignore[misc]
        self._client: AsyncClient | None = None
        self._user_id: str | None = settings.twitter_user_id or None

    async def aclose(self) -> None:
        if self._client is not None and self._client.session is not None:
            await self._client.session.close()
        self._client = None

    async def stop(self) -> None:
        await self.aclose()

    def client(self) -> AsyncClient:
        if self._client is None:
            self._client = AsyncClient(
                bearer_token=self.settings.twitter_bearer_token.get_secret_value(),
                return_type=aiohttp.ClientResponse,
                wait_on_rate_limit=False,
            )
            self._client.session = _RebasedSession(self.settings.twitter_api_base)  # type: ignore[assignment]
        return self._client

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> _Page:
        try:
            resp = await fn(*args, **kwargs)
            # tweepy read the body before releasing the response; text() returns it (read() would not)
            body = (await resp.text(encoding="utf-8", errors="surrogateescape")).encode(
                "utf-8", "surrogateescape"
            )
        except tweepy.TooManyRequests as exc:
            reset = float(exc.reset_time) if exc.reset_time else time.time() + self.interval_s
            raise _Interrupted(retry_at=reset) from None
        except (tweepy.Unauthorized, tweepy.Forbidden) as exc:
            raise PollAuthError(f"X API refused the credentials: {exc}") from exc
        except (tweepy.HTTPException, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise PollError(f"X API call failed: {exc!r}") from exc
        try:
            return _Page(body)
        except ValueError as exc:
            raise _Interrupted(reject=(body, f"malformed_json: X API page: {exc}")) from None

    async def user_id(self) -> str:
        if self._user_id is None:
            page = await self._call(self.client().get_me, user_auth=False, user_fields=USER_FIELDS)
            raw = orjson.loads(page.body).get("data") or {}
            if not raw.get("id"):
                raise PollError("X API /2/users/me answered without a user id")
            self._user_id = str(raw["id"])
        return self._user_id

    async def fetch(self, cursor: str | None) -> PolledBatch:
        state: dict[str, str] = orjson.loads(cursor) if cursor else {}
        me = await self.user_id()
        batch = PolledBatch(reports=[], next_cursor=None)
        new_state = dict(state)
        streams = [("mentions", self._mentions)]
        if self.settings.twitter_poll_dms:
            streams.append(("dm", self._dms))
        for name, fetch_stream in streams:
            try:
                advanced = await fetch_stream(me, state.get(name), batch)
            except _Interrupted as stop:
                if stop.reject:
                    batch.rejects.append(stop.reject)
                if stop.retry_at:
                    batch.retry_at = max(batch.retry_at or 0, stop.retry_at)
                    break  # the reset is per app and user: the other stream would be refused too
                continue
            if advanced:
                new_state[name] = advanced
        if new_state != state:
            batch.next_cursor = orjson.dumps(new_state).decode()
        return batch

    async def _pages(self, fn: Any, *args: Any, stop_at: int | None, **params: Any) -> list[_Page]:
        """Every page newest-first until ``stop_at`` is reached (or the end); _Interrupted if cut off."""
        pages: list[_Page] = []
        token = None
        for _ in range(self.settings.twitter_max_pages):
            page = await self._call(fn, *args, pagination_token=token, max_results=100, **params)
            pages.append(page)
            token = page.meta.get("next_token")
            ids = [i for i in (_snowflake(d.get("id")) for d in page.data) if i is not None]
            if not token or (stop_at is not None and ids and min(ids) <= stop_at):
                return pages
        raise PollError(f"more than {self.settings.twitter_max_pages} pages new: raise CRM_TWITTER_MAX_PAGES")

    async def _mentions(self, me: str, since: str | None, batch: PolledBatch) -> str | None:
        floor = _snowflake(since)
        pages = await self._pages(
            self.client().get_users_mentions,
            me,
            stop_at=None,
            since_id=since,
            user_auth=False,
            expansions=["author_id", "attachments.media_keys"],
            tweet_fields=TWEET_FIELDS,
            user_fields=USER_FIELDS,
            media_fields=MEDIA_FIELDS,
        )
        newest = pages[0].meta.get("newest_id") if pages else None
        top = floor
        for page in pages:
            for bad in page.bad:
                batch.rejects.append((orjson.dumps(bad), "bad_item: a mention must be a JSON object"))
            for tweet in page.data:
                tid = _snowflake(tweet.get("id"))
                if tid is not None and floor is not None and tid <= floor:
                    continue  # overlap with the cursor
                if tid is not None:
                    top = max(top or 0, tid)
                if tweet.get("author_id") == me:
                    continue
                self._add(batch, tweet, page, "tweet")
        best = max(filter(None, (_snowflake(newest), top)), default=None)
        return str(best) if best is not None and best != floor else None

    async def _dms(self, me: str, last: str | None, batch: PolledBatch) -> str | None:
        floor = _snowflake(last)
        pages = await self._pages(
            self.client().get_direct_message_events,
            stop_at=floor,
            user_auth=False,
            event_types="MessageCreate",
            dm_event_fields=DM_FIELDS,
            expansions=["sender_id", "attachments.media_keys"],
            user_fields=USER_FIELDS,
            media_fields=MEDIA_FIELDS,
        )
        top = floor
        for page in pages:
            for bad in page.bad:
                batch.rejects.append((orjson.dumps(bad), "bad_item: a DM event must be a JSON object"))
            for event in page.data:
                eid = _snowflake(event.get("id"))
                if eid is not None and floor is not None and eid <= floor:
                    continue
                if eid is not None:
                    top = max(top or 0, eid)
                if (
                    event.get("sender_id") == me
                    or event.get("event_type", "MessageCreate") != "MessageCreate"
                ):
                    continue
                self._add(batch, event, page, "dm")
        return str(top) if top is not None and top != floor else None

    def _add(self, batch: PolledBatch, item: dict[str, Any], page: _Page, kind: str) -> None:
        author_id = item.get("author_id") if kind == "tweet" else item.get("sender_id")
        # Ids from the provider are looked up only when they are strings: a malformed item (a list
        # where an id belongs) must become a dead letter, not a crash of the whole page.
        author = (page.users.get(author_id) if isinstance(author_id, str) else None) or {}
        attachments = item.get("attachments")
        media_keys = attachments.get("media_keys") if isinstance(attachments, dict) else None
        media = [page.media[k] for k in (media_keys or []) if isinstance(k, str) and k in page.media]
        raw = orjson.dumps({"data": item, "includes": {"users": [author] if author else [], "media": media}})
        try:
            report = self.to_report(item, kind, author_id, author, media)
        except (ValueError, ValidationError, TypeError) as exc:
            reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            batch.rejects.append((raw, f"bad_item: X {kind} {item.get('id')!r}: {reason}"))
            return
        batch.reports.append(report)
        batch.raws[report.report_id] = (raw, "application/json")

    def to_report(
        self,
        item: dict[str, Any],
        kind: str,
        author_id: Any,
        author: dict[str, Any],
        media: list[dict[str, Any]],
    ) -> Report:
        item_id = item.get("id")
        if _snowflake(item_id) is None:
            raise ValueError(f"id must be a numeric string, got {item_id!r}")
        text = item.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text is missing or empty")
        if not isinstance(author_id, str) or not author_id.isdigit():
            raise ValueError(f"{'author_id' if kind == 'tweet' else 'sender_id'} is missing")
        username = author.get("username")
        contact = Contact(
            name=author.get("name") or None, handle=f"@{username}" if username else f"x:{author_id}"
        )
        created = item.get("created_at")
        source_at = (
            datetime.fromisoformat(created.replace("Z", "+00:00")) if isinstance(created, str) else None
        )
        if source_at is not None and source_at.tzinfo is not None and not in_utc_range(source_at):
            raise ValueError(f"created_at {created!r} is out of range (before year 1 or after 9999 in UTC)")
        in_reply_to = None
        for ref in item.get("referenced_tweets") or []:
            if isinstance(ref, dict) and ref.get("type") == "replied_to" and ref.get("id"):
                in_reply_to = f"tweet:{ref['id']}"
        attachments = [
            Attachment(url=m.get("url") or m.get("preview_image_url"), media_type=m.get("type"))
            for m in media
            if m.get("url") or m.get("preview_image_url")
        ]
        return Report.create(
            channel=self.channel,
            provider_id=f"{kind}:{item_id}",
            source_at=source_at,
            reporter=Reporter(id=reporter_pseudonym(self.reporter_key, "twitter", author_id)),
            contact=contact,
            text=text.strip(),
            attachments=attachments,
            in_reply_to=in_reply_to,
        )
