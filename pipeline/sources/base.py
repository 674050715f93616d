"""The contract every channel adapter keeps.

Two shapes, after Ushahidi's data sources and Kafka Connect's SourceTask:

* :class:`PushSource` — the provider calls us. It names an HTTP route; the ingress
  (``pipeline.ingress``) reads the body (size-capped), asks the adapter to ``authenticate`` and
  ``parse`` it, publishes what comes back and answers the provider.
* :class:`PollSource` — we call the provider. ``fetch(cursor)`` returns new reports and the next
  cursor; the runner publishes the reports and only then persists the cursor.

An adapter never talks to Kafka itself and never decides what is a duplicate beyond choosing the
provider's own message id: that keeps adapters small and the delivery guarantees in one place.
Adapters are discovered through the ``crm_pipeline.sources`` entry-point group, so a channel owner
can ship a 14th channel as a separate package.

Around the two shapes, every adapter may use (all optional, so older adapters keep working):

* ``settings_model``: its declared settings (:class:`~pipeline.sources.config.ChannelSettings`), loaded
  into ``self.config`` when the adapter is built, i.e. when the ingress or the poller starts;
* ``start()`` / ``stop()``: awaited once by the process that runs the adapter, before the first request
  or poll and when it stops (open and close a client session, check a token…);
* ``self.metrics``: Prometheus counters with the channel label (:mod:`pipeline.sources.metrics`);
* an ``async def parse``: the ingress awaits it (fetch a media lookup while parsing); a plain ``def``
  stays supported.
"""

from __future__ import annotations

import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import orjson

from ..envelope import Report, Reporter, reporter_pseudonym
from ..settings import Settings
from .config import ChannelSettings
from .metrics import ChannelMetrics

log = logging.getLogger("pipeline.sources")


class Rejected(Exception):
    """The input is refused. ``reason`` is written for the person who has to fix it."""

    def __init__(self, reason: str, *, status: int = 400, code: str = "invalid", field: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.code = code
        self.field = field


@dataclass(frozen=True)
class InboundRequest:
    """A push request, independent of the web framework, so adapters are testable as plain functions."""

    method: str
    path: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes
    remote: str | None = None
    url: str = ""

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


@dataclass
class PushResult:
    """What a push adapter made of one request. ``response`` overrides the default 202 JSON body."""

    reports: list[Report]
    response: Mapping[str, object] | None = None
    status: int = 202


@dataclass
class PollBatch:
    reports: list[Report]
    next_cursor: str | None
    rejects: list[tuple[bytes, str]] = field(default_factory=list)


class SourceAdapter(ABC):
    #: the channel id, e.g. ``web``; also names the ingest topic
    channel: ClassVar[str]
    mode: ClassVar[Literal["push", "poll"]]
    #: declared settings, loaded (validated, production-checked) into ``self.config``; None: none
    settings_model: ClassVar[type[ChannelSettings] | None] = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config: Any = self.settings_model.load(settings) if self.settings_model else None

    @property
    def reporter_key(self) -> bytes:
        return self.settings.reporter_id_key.get_secret_value().encode()

    @property
    def metrics(self) -> ChannelMetrics:
        """Counters labelled with this channel (``self.metrics.ignored(n, reason=…)``, ``count(…)``)."""
        found = self.__dict__.get("_metrics")
        if found is None:
            found = self.__dict__["_metrics"] = ChannelMetrics(self.channel)
        return found

    def account_reporter(self, account_id: str) -> Reporter:
        """The reporter of an account-only channel (an app account, a chat id: no phone or e-mail).

        Keyed by channel, so the same number on two chat apps stays two accounts; keep the account in
        ``contact.handle`` so the reply sender gets it back."""
        return Reporter(id=reporter_pseudonym(self.reporter_key, self.channel, str(account_id)))

    async def start(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Awaited once before the first request or poll (open a session, check credentials…).
        An exception stops the process from starting, with the channel named."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Awaited once when the process stops (close what ``start`` opened)."""


class PushSource(SourceAdapter):
    mode = "push"
    #: route under the ingress, e.g. ``/v1/channels/web/reports``
    route: ClassVar[str]
    methods: ClassVar[Sequence[str]] = ("POST",)
    #: the status of the answer to authentic input that ``parse`` refuses, when the provider must not
    #: see a 4xx (Telegram retries every non-2xx and holds back later updates until one succeeds):
    #: e.g. 200. The refusal is counted and dead-lettered with its reason all the same. None: 4xx.
    refused_status: ClassVar[int | None] = None

    def authenticate(self, request: InboundRequest) -> None:
        """Raise :class:`Rejected` (401/403) unless the request provably comes from the provider."""

    def handshake(self, request: InboundRequest) -> tuple[int, str] | None:
        """Answer a provider's verification GET (Meta webhooks); None when the adapter has none."""
        return None

    @abstractmethod
    def parse(self, request: InboundRequest) -> PushResult | Awaitable[PushResult]:
        """Turn an authenticated request into reports, or raise :class:`Rejected` with a reason.

        May be ``async def`` (the ingress awaits it), e.g. to look a media id up while parsing."""

    def respond(self, request: InboundRequest, status: int, body: Mapping[str, object]) -> tuple[bytes, str]:
        """The answer's bytes and content type. JSON by default; a channel whose clients expect another
        shape (Open311: error lists, XML) renders ``body`` (``{"error", "code", ...}`` on a refusal, the
        result's ``response`` otherwise) its own way."""
        return orjson.dumps(body), "application/json"

    def scrub(self, body: bytes, content_type: str | None) -> bytes:
        """The body as it may be kept (raw topic, dead letters): a credential sent in the body is removed."""
        return body


class PollSource(SourceAdapter):
    mode = "poll"
    #: seconds between polls when the provider has nothing new
    interval_s: ClassVar[float] = 30.0

    @abstractmethod
    async def fetch(self, cursor: str | None) -> PollBatch:
        """Reports newer than ``cursor`` and the cursor that covers them."""


async def parse_request(adapter: PushSource, request: InboundRequest) -> PushResult:
    """``adapter.parse(request)``, awaited when the adapter's ``parse`` is async."""
    result = adapter.parse(request)
    if inspect.isawaitable(result):
        result = await result
    return result  # type: ignore[return-value]


class AdapterStartError(RuntimeError):
    """An adapter's ``start()`` failed: the process does not start (the channel is named)."""


async def start_adapters(adapters: Sequence[SourceAdapter]) -> None:
    """Start every adapter, logging its declared settings (secrets masked); on a failure, stop the ones
    already started and raise :class:`AdapterStartError`."""
    started: list[SourceAdapter] = []
    for adapter in adapters:
        if adapter.config is not None:
            log.info("channel %s settings: %r", adapter.channel, adapter.config)
        try:
            await adapter.start()
        except Exception as exc:
            await stop_adapters(started)
            raise AdapterStartError(f"channel {adapter.channel}: start() failed: {exc!r}") from exc
        started.append(adapter)


async def stop_adapters(adapters: Sequence[SourceAdapter]) -> None:
    """Stop every adapter (last started first); a failing ``stop()`` is logged, the others still stop."""
    for adapter in reversed(adapters):
        try:
            await adapter.stop()
        except Exception:
            log.exception("channel %s: stop() failed", adapter.channel)
