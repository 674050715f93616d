"""A worker's view of the model registry: the live model routes, the shadow decides beside it.

The watcher polls the registry (``CRM_MODEL_POLL_S``) and, when the live or shadow model changed, loads
the new artifact off the event loop and swaps it onto the triage chain. A batch keeps the classifier
it started with, so a promotion takes effect from the next batch: no restart, no report lost. When the
registry has no live model (or cannot be read) the chain keeps what it has; at start that is the
built-in lexicon classifier.

While a shadow runs, each batch's live and shadow decisions are recorded (``model_decisions``) for
``crm-pipeline model compare``; without a shadow nothing extra is computed or written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import psycopg
from prometheus_client import Counter, Gauge

from ..envelope import Report
from ..processors.chain import TriageChain
from ..processors.classify import Classifier, load_lexicon_classifier
from .registry import Decision, ModelRegistry, RegistryError, record_decisions

log = logging.getLogger("pipeline.learning")

MODEL_INFO = Gauge(
    "crm_triage_model_info", "the model a worker routes with (1) and its shadow", ["role", "model"]
)
MODEL_SWAPS = Counter("crm_triage_model_swaps_total", "live or shadow models loaded by a worker", ["role"])
SHADOW_DECISIONS = Counter(
    "crm_shadow_decisions_total", "reports a shadow model decided, by agreement with the live one", ["agrees"]
)


class ModelWatcher:
    def __init__(self, dsn: str, chain: TriageChain, interval_s: float = 10.0) -> None:
        self.registry = ModelRegistry(dsn)
        self.dsn = dsn
        self.chain = chain
        self.interval_s = interval_s
        self.live_id: str | None = None
        self.shadow: Classifier | None = None
        self.shadow_id: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._gauge(None, "live", chain.classifier.name)

    def _gauge(self, old: str | None, role: str, new: str | None) -> None:
        if old is not None:
            MODEL_INFO.labels(role, old).set(0)
        if new is not None:
            MODEL_INFO.labels(role, new).set(1)

    async def refresh(self) -> bool:
        """Follow the registry once; True when a model changed."""
        try:
            live_id, shadow_id = await asyncio.to_thread(self.registry.roles)
        except (psycopg.Error, OSError) as exc:
            log.warning("model registry unreadable, keeping %s: %s", self.chain.classifier.name, exc)
            return False
        changed = False
        if live_id != self.live_id:
            try:
                model: Classifier = (
                    await asyncio.to_thread(self.registry.load, live_id)
                    if live_id
                    else load_lexicon_classifier()
                )
            except (RegistryError, ValueError, psycopg.Error) as exc:
                log.error(
                    "cannot load live model %s, keeping %s: %s", live_id, self.chain.classifier.name, exc
                )
                return False
            self._gauge(self.chain.classifier.name, "live", model.name)
            self.chain.classifier = model  # the next batch routes with it
            log.info("routing with model %s", model.name)
            self.live_id = live_id
            MODEL_SWAPS.labels("live").inc()
            changed = True
        if shadow_id != self.shadow_id:
            shadow = None
            if shadow_id:
                try:
                    shadow = await asyncio.to_thread(self.registry.load, shadow_id)
                except (RegistryError, ValueError, psycopg.Error) as exc:
                    log.error("cannot load shadow model %s: %s", shadow_id, exc)
                    return changed
            self._gauge(self.shadow_id, "shadow", shadow_id)
            self.shadow, self.shadow_id = shadow, shadow_id
            log.info("shadow model %s", shadow_id or "off")
            MODEL_SWAPS.labels("shadow").inc()
            changed = True
        return changed

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.refresh()

    def start(self) -> None:
        if self._task is None and self.interval_s > 0:
            self._task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._conn is not None:
            await self._conn.close()

    # ------------------------------------------------------------------ shadow decisions
    def decisions(self, reports: Sequence[Report]) -> list[Decision]:
        """The batch's live decisions and the shadow's on the same reports (empty without a shadow)."""
        shadow, shadow_id = self.shadow, self.shadow_id
        if shadow is None or shadow_id is None or not reports:
            return []
        out: list[Decision] = []
        for report, (label, route) in zip(reports, self.chain.decide(shadow, reports), strict=True):
            t = report.triage
            if t is None:
                continue
            live_named = t.candidates[0].agency if t.candidates else t.agency
            named = self._named(label.category)
            out.append(
                Decision(
                    report.report_id,
                    t.classifier or "-",
                    "live",
                    t.category,
                    live_named,
                    t.confidence,
                    t.routed_to or "triage",
                )
            )
            out.append(
                Decision(
                    report.report_id,
                    shadow_id,
                    "shadow",
                    label.category,
                    named,
                    label.confidence,
                    route.routed_to,
                )
            )
            SHADOW_DECISIONS.labels(str(named == live_named).lower()).inc()
        return out

    def _named(self, label: str | None) -> str | None:
        agency = self.chain.router.agency_for_label(label) if label else None  # type: ignore[attr-defined]
        return agency.name if agency is not None else None

    async def record(self, decisions: list[Decision]) -> None:
        """Kept beside the batch's rows; a failure is logged, never holds the reports back."""
        if not decisions:
            return
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, connect_timeout=5
                )
            await record_decisions(self._conn, decisions)
        except (psycopg.Error, OSError) as exc:
            log.warning("could not record %d model decisions: %s", len(decisions), exc)
            self._conn = None
