"""Evaluate the triage processors (``make eval``): classification → agency, kelurahan resolution, grouping,
and throughput.

Reads the real 2023 CRM sample from ``../shared/data/crm_dev.csv`` (relative to the repository root; override
with ``CRM_DEV_CSV``) at run time only: its rows are never copied into the repository. Agencies are
scored against its ``dinas_final`` column (top-8 handling agencies + ``other``): an official agency name is
mapped to those upper-case labels through ``crm_labels`` in ``pipeline/data/agencies.v1.csv``; agencies
outside the top 8 count as ``other``; a report left for a person (``triage``) counts as wrong.

Grouping is scored on (a) hand-labelled pairs of real reports (``bench/grouping_eval.py``, the rule in
``docs/grouping-labels.md``), beside the heuristic gold it was scored on before (near-identical text in the
same kelurahan, found at run time) and (b) hand-written paraphrase groups in ``bench/data/`` with
distractors.

Usage: .venv/bin/python bench/eval_triage.py [--quick]   (--quick skips the 5-fold cross-validation)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.envelope import Location  # noqa: E402
from pipeline.processors.classify import load_lexicon_classifier  # noqa: E402
from pipeline.processors.group import CaseIndex, GroupItem  # noqa: E402
from pipeline.processors.locate import load_gazetteer  # noqa: E402
from pipeline.processors.normalise import normalise  # noqa: E402

DEV_CSV = Path(os.environ.get("CRM_DEV_CSV", ROOT.parent / "shared" / "data" / "crm_dev.csv"))
PARAPHRASES = ROOT / "bench" / "data" / "grouping_paraphrases.jsonl"
WIB = timezone(timedelta(hours=7))

TARGETS = {"default_acc": 0.60, "cv_acc": 0.75, "cv_f1": 0.65, "rate": 5000.0}


def load_dev() -> list[dict[str, str]]:
    if not DEV_CSV.is_file():
        sys.exit(f"eval: {DEV_CSV} not found (set CRM_DEV_CSV)")
    with DEV_CSV.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def agency_label_map(router, top: set[str]) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Official agency name → the sample's upper-case dinas_final label (or 'other')."""
    out = {}
    for agency in router.agency_table.values():
        hits = [label for label in agency.crm_labels if label in top]
        out[agency.name] = hits[0] if hits else "other"
    return out


def section(title: str) -> None:
    print(f"\n== {title}")


def expected_kelurahan(gaz) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Upper-case kelurahan name as the CRM writes it → Kemendagri code, from the gazetteer itself."""
    table = {p.name.upper(): p.code for p in gaz.places if p.level == "kelurahan"}
    # Spellings the CRM uses that the gazetteer writes as one word (checked by hand against the codes).
    table.update({"KALI BARU": "31.72.04.1004"})
    for p in gaz.places:
        if p.level == "kelurahan" and " " not in p.name:
            for m in re.finditer(r"(?<=[a-z])(?=(jati|baru|sari|kepa|pulo|besar))", p.name.lower()):
                spaced = (p.name[: m.start()] + " " + p.name[m.start() :]).upper()
                table.setdefault(spaced, p.code)
    return table


def eval_locate(rows, gaz) -> tuple[int, int, list]:  # type: ignore[no-untyped-def]
    table = expected_kelurahan(gaz)
    regions, ok, failures = [], 0, []
    for r in rows:
        region, why = gaz.locate(Location(address=r["location"]), r["description"])
        regions.append(region)
        name = re.sub(r"^KELURAHAN\s+", "", r["location"].strip().upper())
        want = table.get(name)
        got = region.kelurahan_code if region else None
        if want is not None and got == want:
            ok += 1
        else:
            failures.append((r["location"], want, got, why))
    section("kelurahan resolution from the location column")
    distinct = len({r["location"] for r in rows})
    print(f"resolved to the right gazetteer code: {ok}/{len(rows)}  ({distinct} distinct locations)")
    for f in failures[:10]:
        print("  MISS", f)
    return ok, len(rows), regions


def _at(r: dict[str, str]) -> datetime:
    return datetime(2000 + int(r["year"]), int(r["month"]), int(r["date"]), 12, 0, tzinfo=WIB)


def _pairs(groups: dict[str, list[str]]) -> set[frozenset[str]]:
    out = set()
    for members in groups.values():
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                out.add(frozenset((a, b)))
    return out


def score_grouping(items: list[GroupItem], truth: dict[str, str]) -> dict[str, float]:
    """Pairwise precision/recall of joined cases (and of joined-or-candidate) against ``truth`` groups."""
    index = CaseIndex()
    case_of, cand_of = {}, {}
    for item in sorted(items, key=lambda i: i.at):
        d = index.assign(item)
        case_of[item.report_id] = d.case_id
        if d.candidate_of:
            cand_of[item.report_id] = d.candidate_of
    gold_groups: dict[str, list[str]] = defaultdict(list)
    for rid, g in truth.items():
        gold_groups[g].append(rid)
    pred_groups: dict[str, list[str]] = defaultdict(list)
    for rid, c in case_of.items():
        pred_groups[c].append(rid)
    gold, pred = _pairs(gold_groups), _pairs(pred_groups)
    # candidates: a report marked as possible duplicate of a case is paired with that case's members
    loose = set(pred)
    for rid, c in cand_of.items():
        for other in pred_groups.get(c, []):
            loose.add(frozenset((rid, other)))
    tp, tp_loose = len(gold & pred), len(gold & loose)
    return {
        "gold_pairs": len(gold),
        "precision": tp / len(pred) if pred else 1.0,
        "recall": tp / len(gold) if gold else 1.0,
        "loose_precision": tp_loose / len(loose) if loose else 1.0,
        "loose_recall": tp_loose / len(gold) if gold else 1.0,
        "cases": len(pred_groups),
    }


def eval_grouping(rows, texts, regions) -> None:  # type: ignore[no-untyped-def]
    lex = load_lexicon_classifier()
    section("grouping into cases (pairwise precision / recall)")
    # (a) real repeats: the same complaint (near-identical text, difflib ratio ≥ 0.9, an independent
    # measure from the grouper's) re-filed in the same kelurahan on another day
    labels = lex.classify(texts)
    items = []
    for r, text, label, region in zip(rows, texts, labels, regions, strict=True):
        kel = region.kelurahan_code if region else None
        items.append(
            GroupItem(r["report_id"], label.category, text, _at(r), None, None, kel, label.candidates[1:])
        )
    from bench.grouping_eval import evaluate

    evaluate(items, [r["report_id"] for r in rows])
    real = score_grouping(items, _near_identical_groups(rows))
    print(f"heuristic gold: near-identical text in the same kelurahan ({real['gold_pairs']} pairs):")
    _print_scores(real)
    # (b) hand-written paraphrases with distractors
    items, truth = [], {}
    para = [json.loads(line) for line in PARAPHRASES.read_text(encoding="utf-8").splitlines() if line.strip()]
    ptexts = [normalise(p["text"]) for p in para]
    for i, (p, text, label) in enumerate(zip(para, ptexts, lex.classify(ptexts), strict=True)):
        rid = f"p{i:03d}-{p['group']}"
        at = datetime.fromisoformat(p["at"])
        kel = p["kelurahan_code"]
        items.append(
            GroupItem(rid, label.category, text, at, p.get("lat"), p.get("lon"), kel, label.candidates[1:])
        )
        truth[rid] = p["group"]
    syn = score_grouping(items, truth)
    print(f"hand-written paraphrases + distractors ({len(para)} reports, {syn['gold_pairs']} pairs):")
    _print_scores(syn)


def _print_scores(s: dict[str, float]) -> None:
    print(f"  merged into one case:      precision {s['precision']:.3f}  recall {s['recall']:.3f}")
    print(f"  merged or flagged as duplicate candidate: precision {s['loose_precision']:.3f}  "
          f"recall {s['loose_recall']:.3f}")  # fmt: skip


def _near_identical_groups(rows) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Union-find over pairs in the same kelurahan whose raw texts have a difflib ratio ≥ 0.9."""
    import difflib

    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    plain = [re.sub(r"\W+", " ", r["description"].lower()).strip() for r in rows]
    by_kel: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_kel[r["location"]].append(i)
    for members in by_kel.values():
        for x, i in enumerate(members):
            for j in members[x + 1 :]:
                sm = difflib.SequenceMatcher(None, plain[i], plain[j])
                if sm.real_quick_ratio() >= 0.9 and sm.quick_ratio() >= 0.9 and sm.ratio() >= 0.9:
                    parent[find(i)] = find(j)
    return {r["report_id"]: str(find(i)) for i, r in enumerate(rows)}


def eval_throughput(rows, copies: int = 12) -> float:  # type: ignore[no-untyped-def]
    """The real ``crm-pipeline triage`` over the sample repeated ``copies`` times (in a temp file)."""
    from pipeline.cli import main as cli_main

    gaz = load_gazetteer()
    kel_names = [p.name for p in gaz.places if p.level == "kelurahan"]
    section(f"throughput: crm-pipeline triage over crm_dev × {copies} (temporary file, deleted after)")
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.csv", Path(tmp) / "out.jsonl"
        with src.open("w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "text", "location"])
            for k in range(copies):
                for i, r in enumerate(rows):
                    # copy 0 keeps the real kelurahan; later copies move to another kelurahan, so the copies
                    # are new reports elsewhere rather than thousands of duplicates of the same complaint
                    other = kel_names[(i * 7 + k * 31) % len(kel_names)]
                    loc = r["location"] if k == 0 else f"Kelurahan {other}"
                    w.writerow([f"{r['report_id']}-{k}", r["description"], loc])
        n = len(rows) * copies
        argv = ["triage", str(src), "--id-column", "id", "--text-column", "text",
                "--location-column", "location", "--out", str(out)]  # fmt: skip
        rates = []
        for _ in range(3):  # the machine may be shared: three runs, the best one counts
            started = time.perf_counter()
            rc = cli_main(argv)
            took = time.perf_counter() - started
            rates.append(n / took)
            lines = sum(1 for _ in out.open(encoding="utf-8"))
            assert rc == 0 and lines == n, (rc, lines)
    rate = max(rates)
    runs = ", ".join(f"{r:,.0f}" for r in rates)
    print(f"{n} reports per run; runs (the first with cold word caches): {runs} reports/s")
    print(f"best {rate:,.0f} reports/s on one core (target ≥ {TARGETS['rate']:,.0f})")
    return rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the trained model's cross-validation")
    args = ap.parse_args()
    rows = load_dev()
    print(f"crm_dev: {len(rows)} reports from {DEV_CSV}")
    gaz = load_gazetteer()
    texts = [normalise(r["description"]) for r in rows]
    ok, n, regions = eval_locate(rows, gaz)
    sys.path.insert(0, str(ROOT / "bench"))
    from eval_classify import run as eval_dispatch  # triage dispatch (issue #16)

    dispatch = eval_dispatch(quick=args.quick)
    eval_grouping(rows, texts, regions)
    rate = eval_throughput(rows)
    section("summary")
    acc = dispatch["default"]["acc"]
    print(f"default accuracy {acc:.3f} | kelurahan {ok}/{n} | throughput {rate:,.0f}/s", end="")
    t = dispatch.get("trained")
    print(
        f" | CV accuracy {t['acc']:.3f} macro-F1 {t['f1']:.3f} coverage at ≥95% precision {t['coverage']:.3f}"
        if t
        else ""
    )
    from eval_surge import run as eval_surges  # surge detection on generated weeks (issue #17)

    eval_surges(seeds=1 if args.quick else 3)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
