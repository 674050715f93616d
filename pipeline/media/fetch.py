"""The media half of the channel plug-in contract: one fetcher per channel.

A channel package that receives media registers a :class:`MediaFetcher` in the entry-point group
``crm_pipeline.media`` under its channel id (the same id as its source adapter)::

    [project.entry-points."crm_pipeline.media"]
    whatsapp = "crm_whatsapp_channel:WhatsAppMediaFetcher"

The media stage calls ``fetch(item)`` for each attachment of a stored report, with the channel's own
credentials (the fetcher reads them from its settings), and gets the bytes back. The fetcher only
fetches: sniffing, limits, EXIF stripping, storing and retries are the stage's, the same for every
channel. A channel without a fetcher gets :class:`HttpFetcher` (plain GET of http(s) URLs).

Raise :class:`FetchFailed` for a failure worth retrying (network, 5xx, an expired URL that could not
be renewed yet), ``FetchFailed(..., permanent=True)`` for one that never heals (404 on a provider's
id, an attachment reference this fetcher does not understand).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from ..envelope import Attachment, RawRef
from ..settings import Settings

GROUP = "crm_pipeline.media"
MAX_REDIRECTS = 5


class FetchFailed(Exception):
    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class TooLarge(FetchFailed):
    """More bytes than the size cap: refused at once, never retried."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, permanent=True)


@dataclass(frozen=True)
class MediaItem:
    """One attachment of one report, as the fetcher sees it."""

    report_id: str
    channel: str
    provider_id: str
    index: int
    attachment: Attachment
    raw_ref: RawRef | None
    received_at_ms: int


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str | None = None
    name: str | None = None


class MediaFetcher(ABC):
    #: the channel id this fetcher serves (equal to the entry-point name)
    channel: ClassVar[str] = "*"
    #: declared settings (``pipeline.sources.config.ChannelSettings``), loaded into ``self.config``
    settings_model: ClassVar[Any] = None

    def __init__(self, settings: Settings, http: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.http = http
        self.max_bytes = settings.media_max_bytes
        self.config: Any = self.settings_model.load(settings) if self.settings_model else None

    @abstractmethod
    async def fetch(self, item: MediaItem) -> Fetched:
        """The attachment's bytes, or raise :class:`FetchFailed`."""

    async def get(self, url: str, headers: Mapping[str, str] | None = None) -> Fetched:
        """GET with the size cap enforced while reading (a 50 MB answer is cut at the cap, not read whole).

        Helper for fetchers: 404/410 are permanent, other non-2xx answers and network errors retryable.
        Redirects are followed here, each hop checked like the first: URLs come from citizens, and none
        may reach the city's internal network (see :class:`PublicResolver`).
        """
        for _ in range(MAX_REDIRECTS + 1):
            check_public_url(url, self.settings)
            try:
                async with self.http.get(url, headers=dict(headers or {}), allow_redirects=False) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
                        url = urljoin(url, resp.headers["Location"])
                        continue
                    return await self._read(url, resp)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise FetchFailed(f"{type(exc).__name__} fetching from {_host(url)}: {exc}"[:500]) from None
        raise FetchFailed(f"more than {MAX_REDIRECTS} redirects from {_host(url)}", permanent=True)

    async def _read(self, url: str, resp: aiohttp.ClientResponse) -> Fetched:
        if resp.status in (404, 410):
            raise FetchFailed(f"HTTP {resp.status} from {_host(url)}", permanent=True)
        if resp.status >= 300:
            raise FetchFailed(f"HTTP {resp.status} from {_host(url)}")
        if resp.content_length is not None and resp.content_length > self.max_bytes:
            raise TooLarge(
                f"{resp.content_length / 1e6:.1f} MB is larger than the "
                f"{self.max_bytes / 1e6:.1f} MB limit for a photo"
            )
        chunks, total = [], 0
        async for chunk in resp.content.iter_chunked(256 * 1024):
            total += len(chunk)
            if total > self.max_bytes:
                raise TooLarge(
                    f"more than the {self.max_bytes / 1e6:.1f} MB limit for a photo (stopped reading)"
                )
            chunks.append(chunk)
        return Fetched(b"".join(chunks), resp.headers.get("Content-Type"))


class HttpFetcher(MediaFetcher):
    """Any channel whose attachments are plain http(s) URLs (web form, JAKI photo URLs, X media, …)."""

    async def fetch(self, item: MediaItem) -> Fetched:
        url = item.attachment.url
        if not url.startswith(("http://", "https://")):
            raise FetchFailed(
                f"no fetcher for channel {item.channel!r} understands {url[:80]!r}", permanent=True
            )
        return await self.get(url)


def _host(url: str) -> str:
    return url.split("/", 3)[2] if "://" in url else url[:40]


@lru_cache(maxsize=1)
def discover() -> dict[str, type[MediaFetcher]]:
    found: dict[str, type[MediaFetcher]] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, MediaFetcher)):
            raise RuntimeError(f"entry point {ep.name!r} ({ep.value}) is not a MediaFetcher subclass")
        if ep.name in found:
            raise RuntimeError(f"two media fetchers claim channel {ep.name!r}")
        found[ep.name] = cls
    return found


def _public(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    return addr.is_global and not addr.is_multicast


class PrivateAddress(FetchFailed):
    def __init__(self, host: str) -> None:
        super().__init__(
            f"{host} is an internal address; media are only fetched from the public internet", permanent=True
        )


def check_public_url(url: str, settings: Settings) -> None:
    """An IP literal in a URL skips the resolver, so it is checked here (names: PublicResolver)."""
    if settings.media_fetch_allow_private:
        return
    host = urlsplit(url).hostname or ""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return
    if not _public(str(literal)):
        raise PrivateAddress(host)


class PublicResolver(AbstractResolver):
    """Resolves names to public addresses only, and the connection goes to the address checked here
    (no second lookup a DNS rebinding could change): a citizen's URL never reaches loopback, the
    private ranges or the cloud metadata address. ``CRM_MEDIA_FETCH_ALLOW_PRIVATE`` turns it off
    (local tests, whose peers listen on 127.0.0.1)."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        public = [r for r in found if _public(r["host"])]
        if not public:
            raise PrivateAddress(host)
        return public

    async def close(self) -> None:
        await self._inner.close()


def connector(settings: Settings) -> aiohttp.TCPConnector:
    """The fetchers' connector: the extra CA if configured, and public addresses only."""
    resolver = None if settings.media_fetch_allow_private else PublicResolver()
    return aiohttp.TCPConnector(ssl=ssl_context(settings), resolver=resolver)


def ssl_context(settings: Settings) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if settings.media_fetch_ca_file:
        ctx.load_verify_locations(settings.media_fetch_ca_file)
    return ctx


class Fetchers:
    """One fetcher instance per channel, created on first use; HttpFetcher for the rest."""

    def __init__(self, settings: Settings, http: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.http = http
        self._by_channel: dict[str, MediaFetcher] = {}
        self._default = HttpFetcher(settings, http)

    def for_channel(self, channel: str) -> MediaFetcher:
        if channel not in self._by_channel:
            cls: Any = discover().get(channel)
            self._by_channel[channel] = cls(self.settings, self.http) if cls else self._default
        return self._by_channel[channel]
