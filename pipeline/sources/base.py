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
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import orjson

from ..envelope import Report
from ..settings import Settings


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

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def reporter_key(self) -> bytes:
        return self.settings.reporter_id_key.get_secret_value().encode()


class PushSource(SourceAdapter):
    mode = "push"
    #: route under the ingress, e.g. ``/v1/channels/web/reports``
    route: ClassVar[str]
    methods: ClassVar[Sequence[str]] = ("POST",)

    def authenticate(self, request: InboundRequest) -> None:
        """Raise :class:`Rejected` (401/403) unless the request provably comes from the provider."""

    def handshake(self, request: InboundRequest) -> tuple[int, str] | None:
        """Answer a provider's verification GET (Meta webhooks); None when the adapter has none."""
        return None

    @abstractmethod
    def parse(self, request: InboundRequest) -> PushResult:
        """Turn an authenticated request into reports, or raise :class:`Rejected` with a reason."""

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
