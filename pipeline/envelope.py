"""The canonical report envelope: what every channel adapter produces and every stage reads.

One versioned schema for the whole pipeline. ``SCHEMA_VERSION`` follows the policy in
``docs/schema.md``: within a major version changes are additive only; the major version is part of
every topic name (``...v1``). The JSON Schema shipped to downstream consumers
(``pipeline/schemas/report.v1.schema.json``) is generated from these models and a test keeps the
two in step.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

# 1.1: triage.public_text; 1.2: triage.candidates, route_threshold, case_recurs, case_occurrence,
# case_candidates (all additive)
SCHEMA_VERSION = "1.2"
SCHEMA_MAJOR = 1

#: Namespace for report ids; changing it would re-key every report ever stored, so it is frozen.
REPORT_ID_NAMESPACE = uuid.UUID("6b1f0f43-1d7e-5b55-9a43-0c2d6a5e6c01")

ChannelId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,39}$")]


def report_id_for(channel: str, provider_id: str) -> str:
    """Stable id: a redelivered message (same channel, same provider id) maps to the same report."""
    return str(uuid.uuid5(REPORT_ID_NAMESPACE, f"{channel}\x1f{provider_id}"))


def reporter_pseudonym(key: bytes, kind: str, value: str) -> str:
    """Pseudonymous reporter id: a keyed hash of one normalised contact detail.

    The same e-mail address or phone number yields the same pseudonym on every channel (so repeat
    reporters and spammers can be recognised) while the routed topics never carry the contact itself.
    """
    digest = hmac.new(key, f"{kind}:{value.strip().lower()}".encode(), hashlib.sha256).hexdigest()
    return f"rp-{digest[:32]}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, str_strip_whitespace=True)


class Reporter(_Model):
    """Who reported, as routed topics may see it: a pseudonym and the privacy choice only."""

    id: str = Field(description="pseudonymous reporter id (keyed hash of a contact detail), or 'anonymous'")
    private: bool = Field(False, description="the citizen asked not to be named in anything public")


class Contact(_Model):
    """How to reach the reporter. Internal only: stripped from every routed projection."""

    name: str | None = Field(None, max_length=200)
    email: str | None = Field(None, max_length=320)
    phone: str | None = Field(None, max_length=32, description="E.164, e.g. +628111272206")
    handle: str | None = Field(None, max_length=200, description="account id or @handle on the channel")


class Location(_Model):
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    address: str | None = Field(
        None, max_length=1000, description="free-text address as the citizen wrote it"
    )
    desk_office: str | None = Field(
        None, max_length=200, description="office where a walk-in report was taken (Kemendagri code or name)"
    )


class Attachment(_Model):
    """A reference to media kept elsewhere; bytes never travel on the report topics."""

    url: str = Field(max_length=2000)
    media_type: str | None = Field(None, max_length=100)
    name: str | None = Field(None, max_length=300)
    size: int | None = Field(None, ge=0)


class RawRef(_Model):
    """Pointer to the raw payload exactly as the provider sent it (on the raw topic, keyed by report id)."""

    topic: str
    key: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    content_type: str | None = None


class Region(_Model):
    #: immutable, so the gazetteer hands out one instance per place instead of building one per report
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    kota: str | None = None
    kota_code: str | None = None
    kecamatan: str | None = None
    kecamatan_code: str | None = None
    kelurahan: str | None = None
    kelurahan_code: str | None = None


class AgencyCandidate(_Model):
    agency: str
    probability: float = Field(ge=0, le=1)


class Triage(_Model):
    """What the stream processors decided, with the reason, filled in stage by stage."""

    normalised_text: str | None = None
    public_text: str | None = Field(
        None,
        description="the citizen's text for public views: contact details and the reporter's name masked",
    )
    category: str | None = None
    confidence: float | None = Field(None, ge=0, le=1)
    classifier: str | None = None
    region: Region | None = None
    agency: str | None = None
    agency_unit: str | None = None
    route_reason: str | None = None
    routed_to: str | None = Field(None, description="'agency', 'triage' (needs a person)")
    candidates: list[AgencyCandidate] | None = Field(
        None,
        description="on a report left for a person: the classifier's most likely agencies with the "
        "probability that each is right, best first (up to three), what the admin picks from",
    )
    route_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="the confidence above which this classifier dispatches without a person (from the "
        "target precision, or the routing table's override for the category)",
    )
    case_id: str | None = None
    case_recurs: str | None = Field(
        None,
        description="the closed case of this problem's previous occurrence, when this report opened a case",
    )
    case_occurrence: int | None = Field(
        None, ge=1, description="which occurrence of a recurring problem the case is"
    )
    case_candidates: list[str] | None = Field(
        None, description="open cases that may be the same problem, for an officer to merge"
    )
    expected_by: datetime | None = None
    processed_at: datetime | None = None
    #: the classifier's other labels with their probabilities, for grouping's flags across categories:
    #: in-process only, never serialised nor in the schema (a replay is triaged again)
    runners_up: SkipJsonSchema[tuple[tuple[str, float], ...]] = Field(default=(), exclude=True, repr=False)


class Report(_Model):
    """One citizen report, in the canonical envelope."""

    schema_version: str = SCHEMA_VERSION
    report_id: str = Field(description="uuid5(channel, provider_id): stable across redeliveries")
    channel: ChannelId
    provider_id: str = Field(min_length=1, max_length=500, description="the channel's own message id")
    received_at: datetime = Field(description="when the pipeline accepted it (UTC)")
    source_at: datetime | None = Field(None, description="when the citizen sent it, per the provider")
    reporter: Reporter
    contact: Contact | None = Field(None, description="internal topics only; never on routed topics")
    text: str = Field(min_length=1, max_length=20000)
    category_hint: str | None = Field(None, max_length=200, description="category the citizen picked, if any")
    location: Location = Field(default_factory=Location)
    attachments: list[Attachment] = Field(default_factory=list, max_length=50)
    raw_ref: RawRef | None = None
    in_reply_to: str | None = Field(None, description="provider id this message answers (threads)")
    triage: Triage | None = None

    @field_validator("received_at", "source_at")
    @classmethod
    def _aware_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must carry a timezone")
        return value.astimezone(UTC)

    @classmethod
    def create(cls, *, channel: str, provider_id: str, **fields: Any) -> Report:
        fields.setdefault("received_at", utcnow())
        return cls(
            report_id=report_id_for(channel, provider_id), channel=channel, provider_id=provider_id, **fields
        )

    def dumps(self) -> bytes:
        return orjson.dumps(self.model_dump(exclude_none=True))

    @classmethod
    def loads(cls, data: bytes | str) -> Report:
        return cls.model_validate_json(data)  # pydantic-core's own parser: one pass, ~20% faster

    def public(self, dumped: dict[str, Any] | None = None) -> dict[str, Any]:
        """What routed topics carry: no contact details; a private reporter is not even pseudonymous.
        ``dumped``: this report's ``model_dump(exclude_none=True)`` when the caller has it already (the
        worker dumps a report once for both of its topics: the dump was half of encoding them)."""
        if dumped is None:
            data = self.model_dump(exclude_none=True, exclude={"contact"})
        else:
            data = {k: v for k, v in dumped.items() if k != "contact"}
        if self.reporter.private:
            data["reporter"] = {"id": "private", "private": True}
        return data

    def dumps_public(self) -> bytes:
        return orjson.dumps(self.public())


def max_length(model: type[BaseModel], name: str) -> int:
    """A string field's ``max_length``: adapters refuse longer values with a reason before building
    the envelope, from the envelope's own limit rather than a copy of it."""
    for rule in model.model_fields[name].metadata:
        limit = getattr(rule, "max_length", None)
        if isinstance(limit, int):
            return limit
    raise LookupError(f"{model.__name__}.{name} has no max_length")


def json_schema() -> dict[str, Any]:
    schema = Report.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://jakarta.go.id/schemas/crm/report.v1.schema.json"
    schema["title"] = f"CRM report envelope v{SCHEMA_VERSION}"
    return schema
