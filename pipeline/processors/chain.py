"""The processor chain after exact dedup: normalise → locate → classify → route (→ group), on a batch.

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

from ..envelope import AgencyCandidate, Region, Report, Triage, utcnow
from .classify import Classification, Classifier, Signals
from .group import CaseDecision, CaseIndex
from .locate import load_gazetteer
from .normalise import mask_names, mask_pii, normalise, normalise_masked, warm_up
from .route import RouteDecision, load_router
from .trained import load_classifier

#: the precision automatic dispatch aims at unless settings say otherwise (CRM_ROUTE_TARGET_PRECISION)
DEFAULT_TARGET_PRECISION = 0.95


@dataclass
class TriageChain:
    classifier: Classifier = field(default_factory=load_classifier)
    gazetteer: object = field(default_factory=load_gazetteer)
    router: object = field(default_factory=load_router)
    cases: CaseIndex | None = None
    target_precision: float = DEFAULT_TARGET_PRECISION

    def process(self, reports: Sequence[Report]) -> list[Report]:
        # The reporter's own name never reaches what downstream consumers see (normalised or public).
        own = [
            mask_names(r.text, [r.contact.name]) if r.contact and r.contact.name else r.text for r in reports
        ]
        public = [mask_pii(t) for t in own]
        texts = [normalise_masked(t) for t in public]
        # Place before class: where a report is decides who handles the same complaint.
        located = [self.gazetteer.locate(r.location, r.text) for r in reports]  # type: ignore[attr-defined]
        classifier = self.classifier  # one model for the whole batch, even if a promotion swaps it meanwhile
        signals = [
            Signals(text, r.category_hint, r.channel, region)
            for r, text, (region, _) in zip(reports, texts, located, strict=True)
        ]
        labels = classifier.classify(signals)
        threshold, source = self.threshold(classifier)
        now = utcnow()
        for report, text, public_text, (region, where), label in zip(
            reports, texts, public, located, labels, strict=True
        ):
            decision = self.router.route(label.category, label.confidence, region, threshold, source)  # type: ignore[attr-defined]
            report.triage = Triage(
                normalised_text=text,
                public_text=public_text,
                category=label.category,
                confidence=label.confidence,
                classifier=classifier.name,
                region=region,
                agency=decision.agency,
                agency_unit=decision.agency_unit,
                routed_to=decision.routed_to,
                route_reason=f"{decision.reason}; location: {where}",
                # what the admin picks from: only reports that wait for a person need them
                candidates=(self.candidates(label) or None) if decision.routed_to == "triage" else None,
                route_threshold=decision.threshold,
                expected_by=report.received_at + timedelta(days=decision.expected_days),
                processed_at=now,
            )
            report.triage.runners_up = label.candidates[1:]
            if self.cases is not None:
                apply_case(report, self.cases.assign(report))
        return list(reports)

    def threshold(self, classifier: Classifier) -> tuple[float | None, str]:
        """The classifier's confidence bar for the target precision, and how to say where it came from."""
        t = classifier.threshold_for(self.target_precision)
        if t is None:
            return None, ""
        return t, f"{classifier.name} at precision {self.target_precision:.2f}"

    def candidates(self, label: Classification) -> list[AgencyCandidate]:
        """The classifier's labels as agencies, best first, at most three. The decision's own agency
        carries its calibrated confidence; a runner-up naming an agency already listed adds nothing
        (the calibration already counted it)."""
        by_agency: dict[str, float] = {}
        for lab, p in label.candidates:
            agency = self.router.agency_for_label(lab)  # type: ignore[attr-defined]
            if agency is not None and agency.name not in by_agency:
                by_agency[agency.name] = p
        ranked = sorted(by_agency.items(), key=lambda kv: -kv[1])[:3]
        # built unvalidated: the names come from the agencies table and p from the classifier, in [0, 1]
        return [
            AgencyCandidate.model_construct(agency=a, probability=round(min(p, 1.0), 4)) for a, p in ranked
        ]

    def decide(
        self, classifier: Classifier, reports: Sequence[Report]
    ) -> list[tuple[Classification, RouteDecision]]:
        """What ``classifier`` would decide for reports this chain already triaged (a shadow model):
        the same text, hint, channel and place, routed by the same table, acted on by nobody."""
        signals = [
            Signals(
                r.triage.normalised_text or "" if r.triage else normalise(r.text),
                r.category_hint,
                r.channel,
                r.triage.region if r.triage else None,
            )
            for r in reports
        ]
        labels = classifier.classify(signals)
        threshold, source = self.threshold(classifier)
        regions: list[Region | None] = [s.region for s in signals]
        return [
            (label, self.router.route(label.category, label.confidence, region, threshold, source))  # type: ignore[attr-defined]
            for label, region in zip(labels, regions, strict=True)
        ]


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
