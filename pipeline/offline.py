"""Offline triage and training over CSV files: ``crm-pipeline triage`` and ``crm-pipeline train``.

``triage`` runs the same :class:`~pipeline.processors.chain.TriageChain` as the live worker (normalise →
locate → classify → route → group) over a CSV, in batches, and writes one JSON object per row. The
location column may hold an address or place name, ``lat,lon`` coordinates, or a Kemendagri code.

``crm-pipeline train`` (:mod:`pipeline.learning.cli`) fits the trained classifier on a city's own
labelled history for ``crm-pipeline triage --model`` and the workers' model registry.

Exit codes: 0 done, 2 bad usage or bad input (the message names the file and, where it applies, the line).
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
BATCH = 500
MAX_TEXT = 20_000
MIN_EXAMPLES_PER_LABEL = 3

_COORDS = re.compile(r"^\s*(-?\d{1,2}\.\d+)\s*[,;]\s*(-?\d{1,3}\.\d+)\s*$")
_CHANNEL = re.compile(r"^[a-z][a-z0-9_]{1,39}$")
_CODE = re.compile(r"^\s*31(?:\.?\d{2}){1,2}(?:\.?\d{4})?\s*$")


class InputError(Exception):
    """Bad input: the message names the file (and line)."""


def _fail(message: str) -> int:
    print(f"crm-pipeline: {message}", file=sys.stderr)
    return EXIT_USAGE


def _open_csv(path: str, needed: dict[str, str | None]) -> tuple[Any, csv.DictReader]:
    """Open ``path`` and check that every needed column (option → column name) is in its header."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    csv.field_size_limit(10_000_000)
    fh = p.open(encoding="utf-8-sig", newline="")
    try:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
    except (UnicodeDecodeError, csv.Error) as exc:
        fh.close()
        raise InputError(f"{path}:1: cannot read the header: {exc}") from None
    if not header:
        fh.close()
        raise InputError(f"{path}: empty file (no header line)")
    for option, column in needed.items():
        if column is not None and column not in header:
            fh.close()
            raise InputError(f"{path}:1: {option} {column!r} is not a column (columns: {', '.join(header)})")
    return fh, reader


def _rows(path: str, reader: csv.DictReader) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        for row in reader:
            if None in row:
                raise InputError(f"{path}:{reader.line_num}: more fields than the header has")
            yield reader.line_num, row
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}:{reader.line_num}: {exc}") from None


def _location(value: str | None) -> Any:
    from .envelope import Location

    if not value or not value.strip():
        return Location()
    m = _COORDS.match(value)
    if m:
        lat, lon = float(m.group(1)), float(m.group(2))
        if -90 <= lat <= 90 and -180 <= lon <= 180:
            return Location(lat=lat, lon=lon)
    if _CODE.match(value):
        return Location(desk_office=value.strip())
    return Location(address=value.strip()[:1000])


def _output_row(row_id: str, report: Any) -> dict[str, Any]:
    t = report.triage
    region = t.region if t is not None else None
    return {
        "id": row_id,
        "category": t.category,
        "confidence": t.confidence,
        "agency": t.agency,
        "agency_unit": t.agency_unit,
        "routed_to": t.routed_to,
        "kota": region.kota if region else None,
        "kota_code": region.kota_code if region else None,
        "kecamatan": region.kecamatan if region else None,
        "kelurahan": region.kelurahan if region else None,
        "kelurahan_code": region.kelurahan_code if region else None,
        "case_id": t.case_id,
        "route_reason": t.route_reason,
        "route_threshold": t.route_threshold,
        "candidates": [c.model_dump() for c in t.candidates or ()],
    }


def triage_main(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from .envelope import Report, Reporter, utcnow
    from .ops.backfill import Mapping, when_reported
    from .processors.chain import TriageChain, settle_heap
    from .processors.classify import ModelFileError
    from .processors.group import CaseIndex
    from .processors.locate import load_gazetteer
    from .processors.route import RoutingTableError, load_router
    from .processors.trained import load_classifier
    from .settings import get_settings

    needed = {"--id-column": args.id_column, "--text-column": args.text_column}
    needed["--location-column"] = getattr(args, "location_column", None)
    needed["--time-column"] = getattr(args, "time_column", None)
    needed["--category-column"] = getattr(args, "category_column", None)
    needed["--channel-column"] = getattr(args, "channel_column", None)
    # Grouping needs each report's own time: a history replayed as if it all happened now would merge
    # reports filed years apart into one open case.
    timing = Mapping(time_column=needed["--time-column"])
    try:
        classifier = load_classifier(getattr(args, "model", None))
        target = getattr(args, "target_precision", None)
        if target is not None and not 0 < target <= 1:
            raise InputError(f"--target-precision {target} must be in (0, 1]")
        chain = TriageChain(
            classifier,
            load_gazetteer(),
            load_router(),
            cases=CaseIndex(),
            target_precision=target or get_settings().route_target_precision,
        )
        settle_heap()
        fh, reader = _open_csv(args.input, needed)
        have = set(reader.fieldnames or ())
    except (InputError, ModelFileError, RoutingTableError) as exc:
        return _fail(str(exc))
    try:
        out = open(args.out, "wb")
    except OSError as exc:
        fh.close()
        return _fail(f"{args.out}: cannot write: {exc.strerror or exc}")

    started, cpu_started = time.perf_counter(), time.process_time()
    n = skipped = 0
    received = utcnow()
    anonymous = Reporter(id="anonymous")
    batch: list[tuple[str, Report]] = []

    def flush() -> None:
        chain.process([r for _, r in batch])
        out.write(b"".join(orjson.dumps(_output_row(i, r)) + b"\n" for i, r in batch))
        batch.clear()

    try:
        with fh, out:
            for line, row in _rows(args.input, reader):
                row_id = (row.get(args.id_column) or "").strip()
                if not row_id:
                    raise InputError(f"{args.input}:{line}: empty {args.id_column!r}")
                text = (row.get(args.text_column) or "").strip()
                if not text:
                    skipped += 1
                    out.write(orjson.dumps(_empty_row(row_id)) + b"\n")
                    continue
                try:
                    loc = _location(row.get(args.location_column) if args.location_column else None)
                    try:
                        made = when_reported(row, timing, have)
                    except ValueError as exc:
                        raise InputError(f"{args.input}:{line}: {exc}") from None
                    hint = (row.get(args.category_column) or "").strip()[:200] if args.category_column else ""
                    channel = (row.get(args.channel_column) or "").strip() if args.channel_column else ""
                    report = Report.create(
                        channel=channel if _CHANNEL.match(channel) else "offline",
                        category_hint=hint or None,
                        provider_id=row_id[:500],
                        received_at=received,
                        source_at=made,
                        reporter=anonymous,
                        text=text[:MAX_TEXT],
                        location=loc,
                    )
                except ValidationError as exc:
                    msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                    raise InputError(f"{args.input}:{line}: {msg}") from None
                batch.append((row_id, report))
                n += 1
                if len(batch) >= BATCH:
                    flush()
            if batch:
                flush()
    except InputError as exc:
        return _fail(str(exc))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    rate = n / elapsed if elapsed > 0 else 0.0
    cpu_rate = n / cpu if cpu > 0 else 0.0
    note = f", {skipped} with empty text left for a person" if skipped else ""
    print(
        f"triaged {n} reports in {elapsed:.2f}s ({rate:,.0f}/s; {cpu_rate:,.0f}/s of CPU time) "
        f"with {classifier.name}{note} → {args.out}",
        file=sys.stderr,
    )
    return EXIT_OK


def _empty_row(row_id: str) -> dict[str, Any]:
    return {
        "id": row_id,
        "category": None,
        "confidence": 0.0,
        "agency": None,
        "agency_unit": None,
        "routed_to": "triage",
        "kota": None,
        "kota_code": None,
        "kecamatan": None,
        "kelurahan": None,
        "kelurahan_code": None,
        "case_id": None,
        "route_reason": "empty text: a person must look at it",
        "route_threshold": None,
        "candidates": [],
    }
