"""The processor chain after exact dedup: normalise → classify → locate → route (→ group), on a batch.

Pure (no I/O), so the live worker and the offline ``crm-pipeline triage`` command run the same code.
``normalised_text`` is what routed topics may carry: :func:`normalise` masks phone numbers, e-mail
addresses and NIK before anything else. Grouping into cases runs when a :class:`CaseIndex` is given
(the offline command always gives one; the worker decides where its case store lives).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from ..envelope import Report, Triage, utcnow
from .classify import Classifier, load_classifier
from .group import CaseDecision, CaseIndex
from .locate import load_gazetteer
from .normalise import mask_names, mask_pii, normalise, warm_up
from .route import load_router


@dataclass
class TriageChain:
    classifier: Classifier = field(default_factory=load_classifier)
    gazetteer: object = field(default_factory=load_gazetteer)
    router: object = field(default_factory=load_router)
    cases: CaseIndex | None = None

    def process(self, reports: Sequence[Report]) -> list[Report]:
        # The reporter's own name never reaches what downstream consumers see (normalised or public).
        own = [
            mask_names(r.text, [r.contact.name]) if r.contact and r.contact.name else r.text for r in reports
        ]
        texts = [normalise(t) for t in own]
        labels = self.classifier.classify(texts)
        now = utcnow()
        for report, text, own_text, label in zip(reports, texts, own, labels, strict=True):
            region, where = self.gazetteer.locate(report.location, report.text)  # type: ignore[attr-defined]
            decision = self.router.route(label.category, label.confidence, region)  # type: ignore[attr-defined]
            report.triage = Triage(
                normalised_text=text,
                public_text=mask_pii(own_text),
                category=label.category,
                confidence=label.confidence,
                classifier=self.classifier.name,
                region=region,
                agency=decision.agency,
                agency_unit=decision.agency_unit,
                routed_to=decision.routed_to,
                route_reason=f"{decision.reason}; location: {where}",
                expected_by=report.received_at + timedelta(days=decision.expected_days),
                processed_at=now,
            )
            if self.cases is not None:
                apply_case(report, self.cases.assign(report))
        return list(reports)


def apply_case(report: Report, case: CaseDecision) -> None:
    """Record a grouping decision on a triaged report, with the reason officers will read."""
    assert report.triage is not None
    report.triage.case_id = case.case_id
    if case.recurs:
        report.triage.case_recurs, report.triage.case_occurrence = case.recurs, case.occurrence
    if case.candidates:
        report.triage.case_candidates = list(case.candidates)
    note = f"case: {case.reason}"
    if case.candidate_of:
        note += f"; duplicate candidate of {case.candidate_of} (score {case.score:.2f})"
    report.triage.route_reason = f"{report.triage.route_reason}; {note}"


def settle_heap() -> None:
    """Keep the collector off the long-lived tables (lexicon, gazetteer, router, token cache).

    Every full collection walked those millions of objects again; frozen, they are skipped, and a
    larger first-generation threshold lets a batch's short-lived objects die young. Decoding a
    batch cost the worker twice as much with the default settings, and collections were 15% of
    offline grouping.
    """
    warm_up()
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
