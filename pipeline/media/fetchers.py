"""Built-in media fetchers: Meta (Graph API renews expired CDN URLs), e-mail (parts of the raw message
on the raw topic) and SMS (Twilio MMS media behind HTTP basic auth). Every other built-in channel's
attachments are plain URLs (HttpFetcher)."""

from __future__ import annotations

import base64
import hashlib
import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from ..security import kafka_client_kwargs
from ..sources.email import _leaves
from .fetch import Fetched, FetchFailed, MediaFetcher, MediaItem, TooLarge

#: how far around the report's arrival the raw record is looked for on its partition
RAW_SEEK_BEFORE_MS = 10 * 60 * 1000
RAW_SCAN_MAX_RECORDS = 20_000


class MetaMediaFetcher(MediaFetcher):
    """Facebook/Instagram media URLs (fbcdn) are signed and expire. The URL from the webhook is tried
    first; when it has expired (403/404/410), the Graph API is asked for the object's current media
    URL with the page token (``CRM_NOTIFY_META_PAGE_TOKEN``) and that one is fetched."""

    channel: ClassVar[str] = "facebook"

    async def fetch(self, item: MediaItem) -> Fetched:
        try:
            return await self.get(item.attachment.url)
        except TooLarge:
            raise
        except FetchFailed as first:
            fresh = await self._renew(item)
            if fresh is None:
                raise FetchFailed(f"{first.reason}; the Graph API gave no current URL") from None
            return await self.get(fresh)

    async def _renew(self, item: MediaItem) -> str | None:
        s = self.settings
        token = s.notify_meta_page_token.get_secret_value()
        base = f"{s.notify_meta_graph_base.rstrip('/')}/{s.notify_meta_graph_version}/{item.provider_id}"
        messenger = item.provider_id.startswith(("m_", "mid.", "aWdf"))
        for fields in ("attachments",) if messenger else ("attachment", "full_picture"):
            try:
                async with self.http.get(
                    base, params={"fields": fields}, headers={"Authorization": f"Bearer {token}"}
                ) as resp:
                    if resp.status >= 500:
                        raise FetchFailed(f"Graph API answered {resp.status}")
                    if resp.status >= 400:
                        continue
                    data = orjson.loads(await resp.read())
            except (OSError, TimeoutError, orjson.JSONDecodeError) as exc:
                raise FetchFailed(f"Graph API: {type(exc).__name__}: {exc}") from None
            except Exception as exc:  # aiohttp.ClientError and friends
                raise FetchFailed(f"Graph API: {type(exc).__name__}: {exc}") from None
            url = _media_url(data, item.index)
            if url:
                return url
        return None


class GovernorSocialMediaFetcher(MetaMediaFetcher):
    channel: ClassVar[str] = "governor_social"


def _media_url(data: Any, index: int) -> str | None:
    if not isinstance(data, dict):
        return None
    att = data.get("attachment")
    if isinstance(att, dict):
        src = ((att.get("media") or {}).get("image") or {}).get("src")
        if isinstance(src, str):
            return src
        if isinstance(att.get("url"), str):
            return att["url"]
    if isinstance(data.get("full_picture"), str):
        return data["full_picture"]
    listed = (
        (data.get("attachments") or {}).get("data") if isinstance(data.get("attachments"), dict) else None
    )
    if isinstance(listed, list) and 0 <= index < len(listed) and isinstance(listed[index], dict):
        got = listed[index]
        for candidate in ((got.get("image_data") or {}).get("url"), got.get("file_url"), got.get("url")):
            if isinstance(candidate, str):
                return candidate
    return None


_TWILIO_MEDIA = re.compile(r"/Accounts/(AC[0-9a-fA-F]{32})/Messages/[^/]+/Media/")


class SmsMediaFetcher(MediaFetcher):
    """Twilio MMS ``MediaUrl``s need HTTP basic auth when the account enforces it (the default for new
    accounts): the account SID (named in the URL's path) and the auth token (``CRM_SMS_TWILIO_AUTH_TOKEN``).
    A generic gateway's media URLs are fetched as they are."""

    channel: ClassVar[str] = "sms"

    async def fetch(self, item: MediaItem) -> Fetched:
        url = item.attachment.url
        found = _TWILIO_MEDIA.search(url)
        headers = {}
        if found:
            token = self.settings.sms_twilio_auth_token.get_secret_value()
            pair = base64.b64encode(f"{found.group(1)}:{token}".encode()).decode()
            headers["Authorization"] = f"Basic {pair}"
        return await self.get(url, headers)


class EmailMediaFetcher(MediaFetcher):
    """E-mail attachments are parts of the raw message, which is on the raw topic keyed by its sha256
    (``raw:<topic>/<sha256>?part=<n>&sha256=<part sha256>``). The record is found on its key's
    partition by seeking to the report's arrival time, so nothing but the raw topic is needed."""

    channel: ClassVar[str] = "email"

    async def fetch(self, item: MediaItem) -> Fetched:
        url = item.attachment.url
        if not url.startswith("raw:"):
            raise FetchFailed(f"not an e-mail part reference: {url[:80]!r}", permanent=True)
        parts = urlsplit(url)
        topic, _, key = parts.path.rpartition("/")
        topic = topic or parts.netloc
        q = parse_qs(parts.query)
        try:
            index, digest = int(q["part"][0]), q["sha256"][0]
        except (KeyError, ValueError, IndexError):
            raise FetchFailed(f"malformed e-mail part reference {url[:120]!r}", permanent=True) from None
        raw = await self._raw(topic, key, item.received_at_ms)
        msg: EmailMessage = BytesParser(policy=policy.default).parsebytes(raw)  # type: ignore[assignment]
        leaves = _leaves(msg)
        if not 0 <= index < len(leaves):
            raise FetchFailed(f"the raw message has no part {index}", permanent=True)
        part = leaves[index]
        data = part.get_payload(decode=True) or b""
        if hashlib.sha256(data).hexdigest() != digest:
            raise FetchFailed(f"part {index} of the raw message does not match its sha256", permanent=True)
        if len(data) > self.max_bytes:
            raise TooLarge(f"{len(data) / 1e6:.1f} MB is larger than the {self.max_bytes / 1e6:.1f} MB limit")
        return Fetched(data, part.get_content_type(), part.get_filename())

    async def _raw(self, topic: str, key: str, around_ms: int) -> bytes:
        consumer = AIOKafkaConsumer(
            **kafka_client_kwargs(self.settings), enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                raise FetchFailed(f"raw topic {topic} not found")
            every = sorted(partitions)
            tp = TopicPartition(topic, DefaultPartitioner()(key.encode(), every, every))
            consumer.assign([tp])
            found = await consumer.offsets_for_times({tp: max(0, around_ms - RAW_SEEK_BEFORE_MS)})
            end = (await consumer.end_offsets([tp]))[tp]
            start = found[tp].offset if found.get(tp) else end
            consumer.seek(tp, start)
            seen = 0
            while seen < RAW_SCAN_MAX_RECORDS:
                position = await consumer.position(tp)
                if position >= end:
                    break
                batch = await consumer.getmany(tp, timeout_ms=2000, max_records=500)
                for record in batch.get(tp, []):
                    seen += 1
                    if record.key == key.encode():
                        return record.value
            raise FetchFailed(f"raw message {key[:12]}… not found on {topic} (partition {tp.partition})")
        finally:
            await consumer.stop()
