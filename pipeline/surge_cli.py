"""``crm-pipeline surge``: fit the baseline, replay history offline, look at the live surges.

* ``surge run``: a surge worker (the Faust app of ``pipeline/surge_stage.py``), beside the triage workers.
* ``surge fit HISTORY.csv --id-column C --text-column C --location-column C --time-column C
  [--category-column C] [--out FILE]`` (or ``surge fit --from-store [--days N]``): the expected rates
  per place × category and hour of the week, for ``CRM_SURGE_BASELINE``.
* ``surge replay FILE.csv ... [--out OUT.jsonl]``: the same triage and detector as the worker, offline,
  one JSON object per surge state change (``surge_id``, ``state``, ``at``, ``kota``, ``kecamatan``,
  ``kelurahan``, ``kelurahan_code``, ``category``, ``count``, ``expected``, ``score``, ``report_ids``);
  ``report_ids`` are the file's own ids.
* ``surge list [--all] [--json]`` and ``surge show ID [--json]``: the surges the live system has raised
  (the CRM store's ``surges`` table, filled from ``<ns>.alerts.v1``).

Exit codes: 0 done, 1 failed (store unreachable, unknown id), 2 bad usage or bad input (the message
names the file and, where it applies, the line).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
BATCH = 500
DEFAULT_BASELINE_OUT = "surge_baseline.json"


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"crm-pipeline: {message}", file=sys.stderr)
    return code


def add_surge_command(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("surge", surge_main, "surges: fit the baseline, replay a CSV offline, list or show live surges")
    sub = p.add_subparsers(dest="surge_action", required=True, metavar="ACTION")

    def csv_options(q: argparse.ArgumentParser, required: bool) -> None:
        q.add_argument("--id-column", required=required)
        q.add_argument("--text-column", required=required)
        q.add_argument("--location-column", required=required, help="address, place name, 'lat,lon' or code")
        q.add_argument("--time-column", required=required, help="ISO 8601 time (WIB unless it says)")
        q.add_argument(
            "--category-column",
            help="the report's category (ours, or a CRM label of the routing table); else it is classified",
        )
        q.add_argument("--model", help="trained classifier (default: the built-in lexicon classifier)")

    q = sub.add_parser("run", help="run a surge worker: counts, the detector and the alerts (Faust)")
    q.add_argument("--loglevel", default="info")

    q = sub.add_parser("fit", help="learn expected rates per place, category and hour of the week")
    q.add_argument("input", nargs="?", help="CSV of past reports (or --from-store)")
    csv_options(q, required=False)
    q.add_argument("--from-store", action="store_true", help="learn from the CRM store's reports instead")
    q.add_argument("--days", type=int, default=180, help="with --from-store: how far back (default 180)")
    q.add_argument(
        "--out", default=DEFAULT_BASELINE_OUT, help=f"baseline file (default {DEFAULT_BASELINE_OUT})"
    )
    q.add_argument("--thresholds", help="thresholds CSV (default: the packaged one)")

    q = sub.add_parser("replay", help="run a CSV through triage and the detector; one line per state change")
    q.add_argument("input", help="CSV of reports")
    csv_options(q, required=True)
    q.add_argument("--out", help="JSON Lines file (default: standard output)")
    q.add_argument(
        "--baseline", help="baseline file from `surge fit` (default: CRM_SURGE_BASELINE or priors)"
    )
    q.add_argument("--thresholds", help="thresholds CSV (default: CRM_SURGE_THRESHOLDS or the packaged one)")
    q.add_argument("--windows", help="the three windows (default: CRM_SURGE_WINDOWS, 15m,1h,6h)")

    q = sub.add_parser("list", help="open surges of the live system (with --all: closed ones too)")
    q.add_argument("--all", action="store_true", help="closed surges too (latest first)")
    q.add_argument("--limit", type=int, default=50)
    q.add_argument("--json", action="store_true", help="one JSON object per line")

    q = sub.add_parser("show", help="one surge: its latest state and every change")
    q.add_argument("surge_id")
    q.add_argument("--json", action="store_true")


def surge_main(args: argparse.Namespace) -> int:
    action = args.surge_action
    if action == "run":
        from .surge_stage import run_surge_worker

        run_surge_worker(loglevel=args.loglevel)
        return EXIT_OK
    if action == "fit":
        return fit_main(args)
    if action == "replay":
        return replay_main(args)
    from .surge_store import list_main, show_main

    return list_main(args) if action == "list" else show_main(args)


# -------------------------------------------------------------------------------------- CSV → hits
def _category_map() -> dict[str, str]:
    from .processors.route import load_router

    router = load_router()
    out = {c.lower(): c for c in router.categories()}
    for cat, rule in router.rules.items():
        for label in rule.crm_categories:
            out.setdefault(label.strip().lower(), cat)
    return out


def csv_hits(args: argparse.Namespace) -> Iterator[Any]:
    """Each row of the CSV through the triage chain (as ``crm-pipeline triage`` runs it), as a hit
    whose report id is the file's own id. Rows without text, time, category or place are skipped."""
    from pydantic import ValidationError

    from .envelope import Report, Reporter, utcnow
    from .offline import InputError, _location, _open_csv, _rows
    from .ops.backfill import Mapping, when_reported
    from .processors.chain import TriageChain, settle_heap
    from .processors.group import CaseIndex
    from .processors.surge import Hit
    from .processors.trained import load_classifier

    needed = {
        "--id-column": args.id_column,
        "--text-column": args.text_column,
        "--location-column": args.location_column,
        "--time-column": args.time_column,
        "--category-column": getattr(args, "category_column", None),
    }
    chain = TriageChain(load_classifier(getattr(args, "model", None)), cases=CaseIndex())
    settle_heap()
    categories = _category_map() if needed["--category-column"] else {}
    fh, reader = _open_csv(args.input, needed)
    have = set(reader.fieldnames or ())
    timing = Mapping(time_column=args.time_column)
    received = utcnow()
    anonymous = Reporter(id="anonymous")
    batch: list[tuple[str, str | None, Report]] = []

    def flush() -> Iterator[Hit]:
        chain.process([r for _, _, r in batch])
        for row_id, given, report in batch:
            t = report.triage
            if t is None or report.source_at is None:
                continue
            category = given or t.category
            region = t.region
            if not category or region is None or not region.kota_code:
                continue
            yield Hit(
                row_id,
                report.source_at.timestamp(),
                category,
                region.kota_code,
                region.kecamatan_code,
                region.kelurahan_code,
                t.case_id,
            )
        batch.clear()

    with fh:
        for line, row in _rows(args.input, reader):
            row_id = (row.get(args.id_column) or "").strip()
            if not row_id:
                raise InputError(f"{args.input}:{line}: empty {args.id_column!r}")
            text = (row.get(args.text_column) or "").strip()
            if not text:
                continue
            try:
                made = when_reported(row, timing, have)
            except ValueError as exc:
                raise InputError(f"{args.input}:{line}: {exc}") from None
            if made is None:
                raise InputError(f"{args.input}:{line}: empty {args.time_column!r}")
            given = None
            if needed["--category-column"]:
                label = (row.get(args.category_column) or "").strip().lower()
                given = categories.get(label)
            try:
                report = Report.create(
                    channel="offline",
                    provider_id=row_id[:500],
                    received_at=received,
                    source_at=made,
                    reporter=anonymous,
                    text=text[:20_000],
                    location=_location(row.get(args.location_column)),
                )
            except ValidationError as exc:
                msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise InputError(f"{args.input}:{line}: {msg}") from None
            batch.append((row_id, given, report))
            if len(batch) >= BATCH:
                yield from flush()
        if batch:
            yield from flush()


# ------------------------------------------------------------------------------------------- fit
def fit_main(args: argparse.Namespace) -> int:
    from .offline import InputError
    from .processors.classify import ModelFileError
    from .processors.route import RoutingTableError
    from .processors.surge import fit_baseline, read_thresholds

    try:
        rules = read_thresholds(args.thresholds)
    except RoutingTableError as exc:
        return _fail(str(exc))
    started = time.perf_counter()
    try:
        if args.from_store:
            if args.input:
                return _fail("surge fit: give a CSV file or --from-store, not both")
            rows, source = _store_history(args.days), f"CRM store, last {args.days} days"
        else:
            if not args.input:
                return _fail("surge fit: give a CSV file of past reports, or --from-store")
            missing = [
                o
                for o in ("id_column", "text_column", "location_column", "time_column")
                if not getattr(args, o)
            ]
            if missing:
                return _fail(
                    "surge fit "
                    + args.input
                    + ": needs "
                    + ", ".join("--" + m.replace("_", "-") for m in missing)
                )
            rows = [(h.at, h.category, h.codes()) for h in csv_hits(args)]
            source = Path(args.input).name
        baseline = fit_baseline(rows, rules, source=source)
    except (InputError, ModelFileError) as exc:
        return _fail(str(exc))
    except ValueError as exc:
        return _fail(f"surge fit: {exc}")
    except OSError as exc:  # the store is unreachable
        return _fail(f"surge fit: {exc}", EXIT_FAILED)
    try:
        Path(args.out).write_bytes(baseline.dumps())
    except OSError as exc:
        return _fail(f"{args.out}: cannot write: {exc.strerror or exc}")
    print(
        f"fitted on {len(rows)} reports over {baseline.history_days:.0f} days ({len(baseline.key_daily)} "
        f"place x category rates) in {time.perf_counter() - started:.1f}s → {args.out}; "
        f"use it with CRM_SURGE_BASELINE={args.out}",
        file=sys.stderr,
    )
    return EXIT_OK


def _store_history(days: int) -> list[tuple[float, str, list[str]]]:
    import psycopg

    from .settings import get_settings

    settings = get_settings()
    try:
        with psycopg.connect(settings.database_url.get_secret_value(), connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT extract(epoch FROM coalesce(least(source_at, received_at), received_at)), category, "
                "kelurahan_code, kecamatan_code, kota_code FROM reports WHERE category IS NOT NULL "
                "AND kota_code IS NOT NULL AND received_at > now() - make_interval(days => %s)",
                (days,),
            ).fetchall()
    except psycopg.Error as exc:
        raise OSError(f"the CRM store: {exc}") from None
    return [(float(t), cat, [c for c in (kel, kec, kota) if c]) for t, cat, kel, kec, kota in rows]


# ---------------------------------------------------------------------------------------- replay
def replay_main(args: argparse.Namespace) -> int:
    from .offline import InputError
    from .processors.classify import ModelFileError
    from .processors.route import RoutingTableError
    from .processors.surge import Baseline, SurgeConfig, SurgeDetector, replay
    from .settings import get_settings

    settings = get_settings()
    try:
        config = SurgeConfig.load(
            args.thresholds or settings.surge_thresholds, args.windows or settings.surge_windows
        )
        baseline_path = args.baseline or settings.surge_baseline
        baseline = Baseline.load(baseline_path) if baseline_path else Baseline()
    except (RoutingTableError, ValueError) as exc:
        return _fail(str(exc))
    started = time.perf_counter()
    try:
        hits = sorted(csv_hits(args), key=lambda h: h.at)
    except (InputError, ModelFileError) as exc:
        return _fail(str(exc))
    try:
        out = open(args.out, "wb") if args.out else sys.stdout.buffer
    except OSError as exc:
        return _fail(f"{args.out}: cannot write: {exc.strerror or exc}")
    n = opened = 0
    with out if args.out else _nullcontext():
        for record in replay(hits, SurgeDetector(config, baseline)):
            out.write(orjson.dumps(record.replay_row()) + b"\n")
            n += 1
            opened += record.state == "opened"
    print(
        f"replayed {len(hits)} reports in {time.perf_counter() - started:.1f}s: {opened} surges, "
        f"{n} state changes{' → ' + args.out if args.out else ''} (baseline: {baseline.source})",
        file=sys.stderr,
    )
    return EXIT_OK


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
