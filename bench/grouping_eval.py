"""Grouping scored on the hand-labelled pairs (``bench/data/grouping_labels.csv``; the rule and the sample:
``docs/grouping-labels.md``), for ``make eval``.

Every crm_dev report is grouped in filing order by the real :class:`~pipeline.processors.group.CaseIndex`;
a labelled pair is then

* **merged** when both reports ended in one case;
* a **candidate** when not merged but their two cases are linked for an officer: a report of one case
  was flagged a possible duplicate of the other case, or one case is the next occurrence of the other
  (recurring); the officer sees the link on either case and merges with one click;
* **apart** otherwise.

Precision and recall are of the merges; the candidate band's catch is the share of the true pairs not
merged that were flagged. The figures are on the labelled set as drawn (the hard middle band
over-represented) and, beside them, weighted back to the population of candidate pairs (each band by
its population over the pairs drawn from it). The curve re-runs the grouping at other join thresholds.
"""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.processors.group import CaseDecision, CaseIndex, GroupingPolicy, GroupItem, MemoryCaseStore

from .grouping_pairs import LABELS, META, pair_hash

TARGET_PRECISION, TARGET_RECALL, TARGET_CATCH = 0.95, 0.80, 0.95
JOIN_CURVE = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
CANDIDATE_CURVE = (0.1, 0.15, 0.2, 0.3, 0.4)
DOUBT_CURVE = (2.0, 0.3, 0.2, 0.1, 0.05)  # 2.0: never (no runner-up has that probability)


@dataclass(frozen=True)
class Pair:
    a: str  # report ids (recovered from the hashes at run time)
    b: str
    band: str
    label: int
    reason: str


def load_pairs(report_ids: Iterable[str], path: Path = LABELS) -> tuple[list[Pair], int]:
    """The labelled pairs whose reports are in the data, and how many could not be matched."""
    by_hash = {pair_hash(rid): rid for rid in report_ids}
    pairs, missing = [], 0
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            a, b = by_hash.get(row["a"]), by_hash.get(row["b"])
            if a is None or b is None:
                missing += 1
                continue
            pairs.append(Pair(a, b, row["band"], int(row["label"]), row["reason"]))
    return pairs, missing


def band_weights(path: Path = META) -> dict[str, float]:
    meta = json.loads(path.read_text(encoding="utf-8"))
    return {b["band"]: b["population"] / b["drawn"] for b in meta["bands"] if b["drawn"]}


def run(items: Sequence[GroupItem], policy: GroupingPolicy) -> tuple[dict[str, CaseDecision], float]:
    """Every item's decision, grouped in filing order, and the CPU µs per report it took (process time:
    less disturbed than wall time when others share the machine)."""
    index = CaseIndex(MemoryCaseStore(), policy)
    ordered = sorted(items, key=lambda i: (i.at, i.report_id))
    started = time.process_time()
    decisions = {it.report_id: index.assign(it) for it in ordered}
    return decisions, (time.process_time() - started) * 1e6 / max(1, len(ordered))


def case_links(decisions: dict[str, CaseDecision]) -> set[frozenset[str]]:
    """Pairs of cases an officer sees linked: duplicate candidates and recurrences."""
    links = set()
    for d in decisions.values():
        for other in (*d.candidates, d.candidate_of, d.recurs):
            if other and other != d.case_id:
                links.add(frozenset((d.case_id, other)))
    return links


def outcome(pair: Pair, decisions: dict[str, CaseDecision], links: set[frozenset[str]]) -> str:
    ca, cb = decisions[pair.a].case_id, decisions[pair.b].case_id
    if ca == cb:
        return "merged"
    return "candidate" if frozenset((ca, cb)) in links else "apart"


def figures(
    pairs: Sequence[Pair], decisions: dict[str, CaseDecision], weights: dict[str, float] | None = None
) -> dict[str, float]:
    """Merge precision and recall and the candidate band's catch (optionally band-weighted)."""
    tp = fp = fn = caught = 0.0
    links = case_links(decisions)
    for p in pairs:
        w = weights.get(p.band, 1.0) if weights else 1.0
        got = outcome(p, decisions, links)
        if got == "merged":
            tp, fp = (tp + w, fp) if p.label else (tp, fp + w)
        elif p.label:
            fn += w
            caught += w if got == "candidate" else 0.0
    return {
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "catch": caught / fn if fn else 1.0,
        "merged": tp + fp,
        "true_pairs": tp + fn,
    }


def band_table(pairs: Sequence[Pair], decisions: dict[str, CaseDecision]) -> list[str]:
    rows: dict[str, Counter] = {}
    links = case_links(decisions)
    for p in pairs:
        c = rows.setdefault(p.band, Counter())
        c["n"] += 1
        c["same"] += p.label
        got = outcome(p, decisions, links)
        c[f"{got}_{'same' if p.label else 'diff'}"] += 1
    out = ["  band  pairs  same | merged: right wrong | candidate: same diff | apart: same diff"]
    for band in sorted(rows):
        c = rows[band]
        out.append(
            f"  {band:4}  {c['n']:5}  {c['same']:4} |        {c['merged_same']:5} {c['merged_diff']:5} |"
            f"            {c['candidate_same']:4} {c['candidate_diff']:4} |        {c['apart_same']:4}"
            f" {c['apart_diff']:4}"
        )
    return out


def evaluate(items: Sequence[GroupItem], report_ids: Iterable[str]) -> dict[str, float]:
    """Print the labelled-set section of ``make eval``; returns the headline figures."""
    pairs, missing = load_pairs(report_ids)
    if not pairs:
        print("  no labelled pairs match this data (bench/data/grouping_labels.csv is for crm_dev)")
        return {}
    weights = band_weights()
    policy = GroupingPolicy()
    decisions, us = run(items, policy)
    got, pop = figures(pairs, decisions), figures(pairs, decisions, weights)
    same = sum(p.label for p in pairs)
    print(f"labelled pairs ({len(pairs)}, {same} the same problem; {missing} not in this data), "
          f"join at {policy.join_at_text}, candidates from {policy.candidate_at}:")  # fmt: skip
    print(f"  merged into one case:      precision {got['precision']:.3f}  recall {got['recall']:.3f}"
          f"   (targets ≥ {TARGET_PRECISION} at recall ≥ {TARGET_RECALL})")  # fmt: skip
    print(f"  true pairs not merged that were flagged as duplicate candidates: {got['catch']:.3f}"
          f"   (target ≥ {TARGET_CATCH})")  # fmt: skip
    print(f"  weighted to the population of pairs: precision {pop['precision']:.3f}  recall "
          f"{pop['recall']:.3f}  candidates catch {pop['catch']:.3f}")  # fmt: skip
    for line in band_table(pairs, decisions):
        print(line)
    print("  curve (join threshold without coordinates; the other rules as set):")
    print("    join at  precision  recall  | weighted: precision  recall")
    for join in JOIN_CURVE:
        d, _ = run(items, replace(policy, join_at_text=join))
        f, w = figures(pairs, d), figures(pairs, d, weights)
        mark = "  <- set" if join == policy.join_at_text else ""
        print(f"    {join:7.2f}  {f['precision']:9.3f}  {f['recall']:6.3f}  |  "
              f"{w['precision']:17.3f}  {w['recall']:6.3f}{mark}")  # fmt: skip
    print("  the rules for a join without coordinates (each changed alone):")
    rules = [("as set", {}), ("no template rule", {"template_kelurahan": 10**6}),
             ("no minimum length", {"min_words": 0}), ("min. 6 content words", {"min_words": 6}),
             ("min. 10 content words", {"min_words": 10}), ("1 unmatched word", {"max_unmatched": 1}),
             ("any wording (similarity only)", {"max_unmatched": 10**6, "min_words": 0}),
             ("cases open 60 days", {"max_age": policy.window})]  # fmt: skip
    for name, change in rules:
        d, _ = run(items, replace(policy, **change))
        f, w = figures(pairs, d), figures(pairs, d, weights)
        print(f"    {name:30}  precision {f['precision']:.3f}  recall {f['recall']:.3f}  |  weighted "
              f"{w['precision']:.3f}  {w['recall']:.3f}")  # fmt: skip
    print("  curve (candidate threshold): share of the true pairs not merged that are flagged")
    for cand in CANDIDATE_CURVE:
        d, _ = run(items, replace(policy, candidate_at=cand))
        mark = "  <- set" if cand == policy.candidate_at else ""
        print(f"    from {cand:4.2f}: {figures(pairs, d)['catch']:.3f}{mark}")
    print("  curve (filed under the first report's other categories from): catch, reports flagged")
    for at in DOUBT_CURVE:
        d, _ = run(items, replace(policy, doubt_at=at))
        mark = "  <- set" if at == policy.doubt_at else ""
        flagged = sum(1 for x in d.values() if x.candidates)
        catch = figures(pairs, d)["catch"]
        print(f"    {'never' if at > 1 else f'from {at:4.2f}'}: {catch:.3f}  {flagged:5}{mark}")
    print(f"  grouping cost: {us:.0f} µs of CPU per report in-process (the machine may be shared)")
    return {**got, "us_per_report": us}
