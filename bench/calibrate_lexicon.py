"""Fit the lexicon classifier's calibration (``pipeline/data/lexicon.v1.calibration.json``) on real reports.

The untrained default classifier has a raw score, not a probability. This script runs it over the real
2023 CRM sample, once with the citizen's category hint and once on the text alone, checks each
decision's agency against the agency that handled the report, and fits the isotonic map raw score →
probability of the right agency (one map per predicted category and hint agreement, shrunk toward the
global map), with the precision curve the router reads its threshold from. The file holds numbers
only (knots and curve points), never a row of the sample.

Usage: .venv/bin/python bench/calibrate_lexicon.py [--check]   (--check: print the fit, do not write)
"""

from __future__ import annotations

import argparse
import json
import sys

from crm_dev import load_sample

from pipeline.processors.calibration import Calibration
from pipeline.processors.classify import LEXICON_CALIBRATION, calibration_group, load_lexicon_classifier


def fit() -> Calibration:
    sample = load_sample()
    lex = load_lexicon_classifier(calibrated=False)
    # every report twice: as sent with the citizen's category, and as text alone (most channels but
    # JAKI carry no category, and their decisions deserve their own, lower, confidence)
    signals = sample.signals() + sample.signals(hint=False)
    gold = sample.gold + sample.gold
    out = lex.classify(signals)
    raw = [c.confidence for c in out]
    correct = [sample.label_of(c.category) == g for c, g in zip(out, gold, strict=True)]
    groups = [
        calibration_group(c.category or "-", lex.hints(s.category_hint) if lex.hints else None)
        for c, s in zip(out, signals, strict=True)
    ]
    return Calibration.fit(
        raw, correct, groups, source="crm_dev.csv (2023 CRM sample)", reports=len(raw), classifier=lex.name
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="print the fit, leave the packaged file alone")
    args = ap.parse_args()
    cal = fit()
    # the curve's own points tell the coverage at the usual targets
    for target in (0.8, 0.9, 0.95):
        t = cal.threshold_for(target)
        print(f"target precision {target:.2f}: threshold {t if t is None else round(t, 3)}, "
              f"coverage {cal.coverage_at(t):.3f}")  # fmt: skip
    doc = {"format": "crm-triage-calibration", "version": 1, "calibration": cal.to_dict()}
    if args.check:
        return 0
    LEXICON_CALIBRATION.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {LEXICON_CALIBRATION}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
