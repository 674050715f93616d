"""Routing. PLACEHOLDER: the triage issue (#8) routes by category and region through the routing table.

Contract: ``route(category, confidence, region)`` returns a :class:`RouteDecision` that always says
why; ``agencies()`` names every agency that may receive reports (one routed topic each).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..envelope import Region

DEFAULT_EXPECTED_DAYS = 7


@dataclass(frozen=True, slots=True)
class RouteDecision:
    routed_to: str  # "agency" or "triage"
    agency: str | None
    agency_unit: str | None
    reason: str
    expected_days: int = DEFAULT_EXPECTED_DAYS


class PlaceholderRouter:
    def agencies(self) -> list[str]:
        return []

    def kota_codes(self) -> list[str]:
        return []

    def route(self, category: str | None, confidence: float, region: Region | None) -> RouteDecision:
        return RouteDecision("triage", None, None, "placeholder router: every report needs a person until #8")


def load_router(path: str | None = None) -> PlaceholderRouter:
    return PlaceholderRouter()
