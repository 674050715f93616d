"""The real 2023 CRM sample (``../shared/data/crm_dev.csv``) as the evaluation and calibration scripts see it.

Read at run time only: its rows are never copied into the repository. Override the path with
``CRM_DEV_CSV``. Agencies are scored against its ``dinas_final`` column (top-8 handling agencies +
``other``): an official agency name is mapped to those upper-case labels through ``crm_labels`` in
``pipeline/data/agencies.v1.csv``; agencies outside the top 8 count as ``other``.
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.envelope import Location, Region  # noqa: E402
from pipeline.processors.classify import Signals  # noqa: E402
from pipeline.processors.locate import load_gazetteer  # noqa: E402
from pipeline.processors.normalise import normalise  # noqa: E402
from pipeline.processors.route import Router, load_router  # noqa: E402

DEV_CSV = Path(os.environ.get("CRM_DEV_CSV", ROOT.parent / "shared" / "data" / "crm_dev.csv"))


@dataclass
class Sample:
    rows: list[dict[str, str]]
    texts: list[str]  # normalised
    regions: list[Region | None]
    gold: list[str]  # dinas_final
    router: Router

    def signals(self, hint: bool = True, place: bool = True) -> list[Signals]:
        return [
            Signals(t, r["category"] if hint else None, None, g if place else None)
            for t, r, g in zip(self.texts, self.rows, self.regions, strict=True)
        ]

    def label_of_agency(self) -> dict[str, str]:
        """Official agency name → the sample's upper-case dinas_final label (or 'other')."""
        top = set(self.gold) - {"other"}
        out = {}
        for agency in self.router.agency_table.values():
            hits = [label for label in agency.crm_labels if label in top]
            out[agency.name] = hits[0] if hits else "other"
        return out

    def label_of(self, category_or_agency: str | None) -> str:
        """A classifier label (project category, agency name or dinas_final label) as a dinas_final label."""
        if not category_or_agency:
            return "triage"
        if category_or_agency in set(self.gold):
            return category_or_agency
        agency = self.router.agency_for_label(category_or_agency)
        return self.label_of_agency()[agency.name] if agency is not None else "other"


def load_sample(located: bool = True) -> Sample:
    if not DEV_CSV.is_file():
        sys.exit(f"crm_dev: {DEV_CSV} not found (set CRM_DEV_CSV)")
    with DEV_CSV.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    gaz = load_gazetteer()
    texts = [normalise(r["description"]) for r in rows]
    regions = [
        gaz.locate(Location(address=r["location"]), r["description"])[0] if located else None for r in rows
    ]
    return Sample(rows, texts, regions, [r["dinas_final"] for r in rows], load_router())
