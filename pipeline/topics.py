"""Topic names and their creation.

Conventions (``<ns>`` is ``CRM_TOPIC_NAMESPACE``, ``v1`` the envelope's major version):

=================================  ===========================================================
``<ns>.ingest.<channel>.v1``        one per channel: envelopes as the adapter produced them
``<ns>.raw.v1``                     raw payloads exactly as received, keyed by report id
``<ns>.normalised.v1``              accepted, normalised, de-duplicated reports with triage (internal)
``<ns>.routed.agency.<slug>.v1``    public projection, one topic per responsible agency
``<ns>.routed.region.<kota>.v1``    public projection, one topic per kota (Kemendagri code)
``<ns>.triage.v1``                  reports that need a person (low confidence, unresolved)
``<ns>.deadletter.v1``              anything that could not be processed, with raw payload and reason
``<ns>.status.v1``                  officer actions (status events), keyed by report id
``<ns>.status-changes.v1``          accepted status changes, keyed by report id
``<ns>.escalation.v1``              reports past their expected-by date, once per report and due date
``<ns>.surge-hits.v1``              one small record per triaged report, keyed by kota|category (internal)
``<ns>.alerts.v1``                  surge state changes, keyed by surge id (docs/alerts.md)
=================================  ===========================================================

Topics are created explicitly with partition counts and replication settings; the pipeline never
relies on broker auto-creation.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from .envelope import SCHEMA_MAJOR
from .security import kafka_client_kwargs
from .settings import Settings

_SLUG = re.compile(r"[^a-z0-9]+")


def slug(name: str) -> str:
    return _SLUG.sub("-", name.lower()).strip("-")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    config: dict[str, str] = field(default_factory=dict)


class Topics:
    """Names every topic of one namespace. Pure: no broker needed."""

    def __init__(self, namespace: str = "crm", major: int = SCHEMA_MAJOR) -> None:
        self.ns = namespace
        self.v = f"v{major}"

    def ingest(self, channel: str) -> str:
        return f"{self.ns}.ingest.{channel}.{self.v}"

    @property
    def raw(self) -> str:
        return f"{self.ns}.raw.{self.v}"

    @property
    def normalised(self) -> str:
        return f"{self.ns}.normalised.{self.v}"

    def routed_agency(self, agency: str) -> str:
        return f"{self.ns}.routed.agency.{slug(agency)}.{self.v}"

    def routed_region(self, kota_code: str) -> str:
        return f"{self.ns}.routed.region.{kota_code.replace('.', '')}.{self.v}"

    @property
    def triage(self) -> str:
        return f"{self.ns}.triage.{self.v}"

    @property
    def deadletter(self) -> str:
        return f"{self.ns}.deadletter.{self.v}"

    # Status lifecycle (issue #4): officer actions in, accepted changes and escalations out.
    @property
    def status(self) -> str:
        return f"{self.ns}.status.{self.v}"

    @property
    def status_changes(self) -> str:
        return f"{self.ns}.status-changes.{self.v}"

    @property
    def escalation(self) -> str:
        return f"{self.ns}.escalation.{self.v}"

    # Surges (issue #17): the worker's hits, repartitioned by kota × category, and the alerts out.
    @property
    def surge_hits(self) -> str:
        return f"{self.ns}.surge-hits.{self.v}"

    @property
    def alerts(self) -> str:
        return f"{self.ns}.alerts.{self.v}"


def topic_specs(
    settings: Settings, channels: Iterable[str], agencies: Iterable[str] = (), kota_codes: Iterable[str] = ()
) -> list[TopicSpec]:
    t = Topics(settings.topic_namespace)
    parts, rf = settings.topic_partitions, settings.topic_replication
    common = {"min.insync.replicas": str(min(settings.topic_min_insync_replicas, rf))}
    keep_long = {**common, "retention.ms": str(30 * 24 * 3600 * 1000)}
    specs = [TopicSpec(t.ingest(c), parts, rf, keep_long) for c in sorted(set(channels))]
    specs += [
        TopicSpec(t.raw, parts, rf, {**keep_long, "compression.type": "producer"}),
        TopicSpec(t.normalised, parts, rf, keep_long),
        TopicSpec(t.triage, parts, rf, keep_long),
        # Dead letters are the evidence that nothing was lost: keep them until someone replays them.
        TopicSpec(t.deadletter, parts, rf, {**common, "retention.ms": "-1"}),
        TopicSpec(t.status, parts, rf, keep_long),
        TopicSpec(t.status_changes, parts, rf, keep_long),
        TopicSpec(t.escalation, parts, rf, keep_long),
        # hits only matter for the longest window; a day covers any replay after an outage
        TopicSpec(t.surge_hits, parts, rf, {**common, "retention.ms": str(24 * 3600 * 1000)}),
        TopicSpec(t.alerts, parts, rf, keep_long),
    ]
    specs += [TopicSpec(t.routed_agency(a), parts, rf, keep_long) for a in sorted(set(agencies))]
    specs += [TopicSpec(t.routed_region(k), parts, rf, keep_long) for k in sorted(set(kota_codes))]
    return specs


async def ensure_topics(settings: Settings, specs: list[TopicSpec]) -> dict[str, str]:
    """Create missing topics; report what exists with fewer partitions than asked. Idempotent."""
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings), client_id="crm-topics")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        result = {s.name: "exists" for s in specs if s.name in existing}
        if missing:
            new = [NewTopic(s.name, s.partitions, s.replication, topic_configs=s.config) for s in missing]
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # a concurrent creator won the race; that is fine
            result.update({s.name: "created" for s in missing})
        # Metadata propagation on the broker is asynchronous; wait until every topic is visible.
        for _ in range(100):
            if {s.name for s in specs} <= set(await admin.list_topics()):
                break
            await asyncio.sleep(0.1)
        return result
    finally:
        await admin.close()


async def describe_partitions(settings: Settings, names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings), client_id="crm-topics")
    await admin.start()
    try:
        described = await admin.describe_topics(names)
        return {d["topic"]: len(d["partitions"]) for d in described if not d.get("error_code")}
    finally:
        await admin.close()
