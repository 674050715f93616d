"""Draw, show and store the hand-labelled repeat pairs that ``make eval`` scores grouping on.

The rule a pair is labelled by, and why the sample is drawn as it is: ``docs/grouping-labels.md``.

    python bench/grouping_pairs.py sample --seed 23 --out /tmp/pairs.jsonl  # pairs + texts (scratch)
    python bench/grouping_pairs.py show /tmp/pairs.jsonl 0 50                # read them to label them
    python bench/grouping_pairs.py store /tmp/pairs.jsonl /tmp/labels.tsv    # hashed labels -> bench/data/

crm_dev is read at run time only: the scratch file holds texts and must stay outside the repository; the
stored file holds hashes of report ids, bands and labels.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LABELS = ROOT / "bench" / "data" / "grouping_labels.csv"
META = ROOT / "bench" / "data" / "grouping_labels.meta.json"
HASH_KEY = "crm-pipeline/grouping-labels/v1:"
WIB = timezone(timedelta(hours=7))
MAX_GAP_DAYS = 90
PER_REPORT = 2  # drawn pairs a report may appear in
#: (band, lower bound of the grouping text score, pairs drawn): the hard middle over-represented
BANDS: list[tuple[str, float, int]] = [
    ("b0", 0.0, 50),
    ("b1", 0.2, 70),
    ("b2", 0.3, 110),
    ("b3", 0.4, 110),
    ("b4", 0.5, 110),
    ("b5", 0.6, 100),
    ("b6", 0.8, 80),
]
REASONS = {
    1: {"resubmit", "sameplace", "samedetail"},
    0: {"otherproblem", "otherplace", "unplaced", "template", "newoccurrence"},
}


def pair_hash(report_id: str) -> str:
    """The stored stand-in for a report id (see docs/grouping-labels.md)."""
    return hashlib.sha256((HASH_KEY + report_id).encode()).hexdigest()[:16]


def band_of(score: float) -> str:
    name = BANDS[0][0]
    for b, lo, _ in BANDS:
        if score >= lo:
            name = b
    return name


def report_at(r: dict[str, str]) -> datetime:
    return datetime(2000 + int(r["year"]), int(r["month"]), int(r["date"]), 12, 0, tzinfo=WIB)


def _plain(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def template_spread(rows: list[dict[str, str]]) -> dict[str, int]:
    """Report id -> in how many kelurahan its exact (punctuation-free) text was filed."""
    kels: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        kels[_plain(r["description"])].add(r["location"])
    return {r["report_id"]: len(kels[_plain(r["description"])]) for r in rows}


def candidate_pairs(rows: list[dict[str, str]]) -> list[tuple[float, int, int]]:
    """(score, i, j) for every pair in one kelurahan at most MAX_GAP_DAYS apart, i filed no later than j."""
    from pipeline.processors.group import fingerprint, text_similarity
    from pipeline.processors.normalise import normalise

    fps = [fingerprint(normalise(r["description"])) for r in rows]
    ats = [report_at(r) for r in rows]
    by_kel: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_kel[r["location"]].append(i)
    out = []
    for members in by_kel.values():
        members.sort(key=lambda i: (ats[i], rows[i]["report_id"]))
        for x, i in enumerate(members):
            for j in members[x + 1 :]:
                if (ats[j] - ats[i]).days > MAX_GAP_DAYS:
                    break
                out.append((text_similarity(fps[i], fps[j]), i, j))
    return out


def draw(rows: list[dict[str, str]], seed: int) -> tuple[list[tuple[str, float, int, int]], Counter]:
    """The drawn pairs (band, score, i, j) and each band's population."""
    pairs = candidate_pairs(rows)
    by_band: dict[str, list[tuple[float, int, int]]] = defaultdict(list)
    for p in pairs:
        by_band[band_of(p[0])].append(p)
    population = Counter({b: len(v) for b, v in by_band.items()})
    rng = random.Random(seed)
    used: Counter = Counter()
    drawn = []
    for band, _, quota in reversed(BANDS):  # the scarce top bands first
        pool = sorted(by_band[band], key=lambda p: (rows[p[1]]["report_id"], rows[p[2]]["report_id"]))
        rng.shuffle(pool)
        got = 0
        for score, i, j in pool:
            if got == quota:
                break
            if used[i] >= PER_REPORT or used[j] >= PER_REPORT:
                continue
            used[i] += 1
            used[j] += 1
            drawn.append((band, score, i, j))
            got += 1
    rng.shuffle(drawn)  # label in random order, not band by band
    return drawn, population


def load_rows() -> list[dict[str, str]]:
    from bench.eval_triage import load_dev

    return load_dev()


def cmd_sample(args: argparse.Namespace) -> int:
    rows = load_rows()
    spread = template_spread(rows)
    drawn, population = draw(rows, args.seed)
    out = Path(args.out)
    if out.resolve().is_relative_to(ROOT):
        sys.exit("sample: the scratch file holds crm_dev texts; write it outside the repository")
    with out.open("w", encoding="utf-8") as fh:
        for n, (band, score, i, j) in enumerate(drawn):
            a, b = rows[i], rows[j]
            rec = {
                "n": n,
                "band": band,
                "score": round(score, 3),
                "gap_days": (report_at(b) - report_at(a)).days,
                "kelurahan": a["location"],
                "a": {k: a[k] for k in ("report_id", "date", "month", "category", "description")},
                "b": {k: b[k] for k in ("report_id", "date", "month", "category", "description")},
                "spread": [spread[a["report_id"]], spread[b["report_id"]]],
            }
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"{len(drawn)} pairs -> {out}; population per band: {dict(sorted(population.items()))}")
    meta = {
        "seed": args.seed,
        "hash": f"sha256('{HASH_KEY}' + report_id)[:16]",
        "max_gap_days": MAX_GAP_DAYS,
        "bands": [
            {"band": b, "from": lo, "drawn": sum(d[0] == b for d in drawn), "population": population[b]}
            for b, lo, _ in BANDS
        ],
    }
    META.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return 0


def _read_pairs(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def cmd_show(args: argparse.Namespace) -> int:
    for rec in _read_pairs(args.pairs)[args.start : args.stop]:
        a, b = rec["a"], rec["b"]
        print(f"#{rec['n']} {rec['band']} s={rec['score']} gap={rec['gap_days']}d {rec['kelurahan']} "
              f"spread={rec['spread']}")  # fmt: skip
        for side, r in (("A", a), ("B", b)):
            text = " ".join(r["description"].split())
            print(f"  {side} {r['date']}/{r['month']} [{r['category'].strip()[:30]}] {text[: args.width]}")
    return 0


def read_labels(path: str) -> dict[int, tuple[int, str]]:
    """Label lines ``n label reason`` (whitespace separated, ``#`` comments)."""
    out: dict[int, tuple[int, str]] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3 or parts[1] not in ("0", "1") or parts[2] not in REASONS[int(parts[1])]:
            sys.exit(f"{path}:{lineno}: want 'n 0|1 reason' with a reason of that label, got {line!r}")
        n = int(parts[0])
        if n in out:
            sys.exit(f"{path}:{lineno}: pair {n} labelled twice")
        out[n] = (int(parts[1]), parts[2])
    return out


def cmd_store(args: argparse.Namespace) -> int:
    pairs = _read_pairs(args.pairs)
    labels = read_labels(args.labels)
    missing = [p["n"] for p in pairs if p["n"] not in labels]
    rows = []
    for p in pairs:
        if p["n"] in labels:
            label, reason = labels[p["n"]]
            a, b = pair_hash(p["a"]["report_id"]), pair_hash(p["b"]["report_id"])
            rows.append((a, b, p["band"], label, reason))
    write_labels(rows)
    print(f"{len(rows)} labelled pairs -> {LABELS.relative_to(ROOT)}; {len(missing)} not labelled yet")
    return 0


def write_labels(rows: Iterable[tuple[str, str, str, int, str]]) -> None:
    with LABELS.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["a", "b", "band", "label", "reason"])
        w.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample", help="draw the pairs (with texts) into a scratch file")
    s.add_argument("--seed", type=int, default=23)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_sample)
    s = sub.add_parser("show", help="print drawn pairs for labelling")
    s.add_argument("pairs")
    s.add_argument("start", type=int, nargs="?", default=0)
    s.add_argument("stop", type=int, nargs="?", default=None)
    s.add_argument("--width", type=int, default=400)
    s.set_defaults(func=cmd_show)
    s = sub.add_parser("store", help="write the labels, keyed by hashed report ids, to bench/data/")
    s.add_argument("pairs")
    s.add_argument("labels")
    s.set_defaults(func=cmd_store)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
