"""Test-only fault hooks of the fault-injection suite (tests/chaos), registered as a plug-in.

``chaos_poison`` (entry-point group ``crm_pipeline.triage_hooks``, see ``pipeline/hooks.py``): with
``CRM_CHAOS_POISON_MARKER`` set, the triage chain raises for any report whose text contains the marker,
as a processor bug would. The worker then isolates that report, retries it a bounded number of times
and dead-letters it while the rest of the batch flows on.

This directory is a plug-in distribution (``crm_chaos_hooks-0.dist-info``) that only the processes the
suite starts see: ``chaoslib`` puts it on their ``PYTHONPATH``. Nothing installs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.envelope import Report
from pipeline.settings import Settings


class PoisonError(RuntimeError):
    """Raised on purpose by the chaos hook."""


class PoisonedChain:
    """Wraps a triage chain; raises for texts carrying the marker, delegates everything else."""

    def __init__(self, chain: Any, marker: str) -> None:
        object.__setattr__(self, "_chain", chain)
        object.__setattr__(self, "_marker", marker)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chain, name)

    def __setattr__(self, name: str, value: Any) -> None:  # e.g. the worker giving the chain a case index
        setattr(self._chain, name, value)

    def process(self, reports: Sequence[Report]) -> list[Report]:
        for report in reports:
            if self._marker in report.text:
                raise PoisonError(f"chaos poison marker in report {report.report_id}")
        return self._chain.process(reports)


def poison_hook(chain: Any, settings: Settings) -> Any:
    """The triage hook: poison the chain when the marker is set, leave it alone otherwise."""
    marker = settings.chaos_poison_marker
    return PoisonedChain(chain, marker) if marker else chain
