"""Backfill: historical CRM exports (CSV) through the pipeline, on the ``backfill`` channel.

Each row becomes an envelope on ``<ns>.ingest.backfill.v1`` (and its row, as JSON, on the raw
topic), so it is deduplicated, triaged, routed and stored like any live report. The report id is
``uuid5("backfill", <id column>)``: running the same export twice stores nothing twice, and rows the
store already has are counted and not published again.

The whole file is checked before anything is published: a missing column or a bad row stops the
run with exit code 2 and ``FILE:LINE: reason`` messages (``--skip-invalid`` publishes the good rows).
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import orjson

from ..envelope import Location, RawRef, Report, Reporter
from ..publish import Publisher, make_producer
from ..settings import Settings
from ..sources.base import SourceAdapter
from ..topics import Topics
from .common import already_stored

CHANNEL = "backfill"
MAX_TEXT = 20000


class BackfillSource(SourceAdapter):
    """Registers the ``backfill`` channel (its ingest topic, and the worker's subscription to it).

    Neither a push nor a poll source: ``crm-pipeline backfill FILE.csv`` feeds it.
    """

    channel: ClassVar[str] = CHANNEL
    mode: ClassVar[str] = "batch"  # type: ignore[assignment]


@dataclass
class Mapping:
    id_column: str = "report_id"
    text_column: str = "description"
    location_column: str | None = "location"
    category_column: str | None = "category"
    time_column: str | None = None  # ISO 8601 date or datetime; else day/month/year columns if present
    day_month_year: tuple[str, str, str] = ("date", "month", "year")
    timezone_hours: int = 7  # exports are in WIB (UTC+7) unless the time says otherwise


class InputError(Exception):
    """The file cannot be used as it is (exit code 2)."""


@dataclass
class Parsed:
    reports: list[tuple[int, Report, bytes]] = field(default_factory=list)  # (line, report, raw row)
    errors: list[str] = field(default_factory=list)
    rows: int = 0
    repeated: int = 0


def when_reported(row: dict[str, str], m: Mapping, have: set[str]) -> datetime | None:
    """When a historical row was reported: its time column, else its day/month/year columns."""
    from datetime import timedelta, timezone

    tz = timezone(timedelta(hours=m.timezone_hours))
    if m.time_column:
        value = (row.get(m.time_column) or "").strip()
        if not value:
            return None
        try:
            t = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{m.time_column} {value!r} is not an ISO 8601 date or time") from None
        return (t if t.tzinfo else t.replace(tzinfo=tz)).astimezone(UTC)
    d, mo, y = m.day_month_year
    if {d, mo, y} <= have:
        parts = [(row.get(c) or "").strip() for c in (d, mo, y)]
        if not all(parts):
            return None
        try:
            day, month, year = (int(p) for p in parts)
            year = year + 2000 if year < 100 else year
            return datetime(year, month, day, 12, tzinfo=tz).astimezone(UTC)
        except ValueError:
            raise ValueError(f"{d}/{mo}/{y} {'/'.join(parts)!r} is not a date") from None
    return None


def parse_file(path: Path, m: Mapping, limit: int | None = None) -> Parsed:
    name = str(path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"{name}: cannot open: {exc.strerror or exc}") from None
    out = Parsed()
    seen: dict[str, tuple[int, str]] = {}
    with handle:
        reader = csv.DictReader(handle)
        try:
            header = reader.fieldnames or []
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(f"{name}:1: cannot read the header: {exc}") from None
        have = set(header)
        if not header:
            raise InputError(f"{name}: empty file (a header row is required)")
        for col in (m.id_column, m.text_column, m.time_column):
            if col and col not in have:
                raise InputError(
                    f"{name}:1: missing column {col!r} (the file has: {', '.join(header)}); "
                    "name the right one with --id-column / --text-column / --time-column"
                )
        start = 2
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except (csv.Error, UnicodeDecodeError) as exc:
                raise InputError(f"{name}:{reader.line_num}: unreadable CSV: {exc}") from None
            line, start = start, reader.line_num + 1
            out.rows += 1
            if None in row:
                out.errors.append(f"{name}:{line}: more fields than the header has")
                continue
            rid = (row.get(m.id_column) or "").strip()
            text = " ".join((row.get(m.text_column) or "").split())
            if not rid:
                out.errors.append(f"{name}:{line}: empty {m.id_column}")
                continue
            if not text:
                out.errors.append(f"{name}:{line}: empty {m.text_column} (report {rid})")
                continue
            if len(text) > MAX_TEXT:
                out.errors.append(f"{name}:{line}: {m.text_column} longer than {MAX_TEXT} characters")
                continue
            if rid in seen:
                first_line, first_text = seen[rid]
                if first_text != text:
                    out.errors.append(
                        f"{name}:{line}: {m.id_column} {rid!r} repeats line {first_line} "
                        "with a different text"
                    )
                else:
                    out.repeated += 1
                continue
            try:
                when = when_reported(row, m, have)
            except ValueError as exc:
                out.errors.append(f"{name}:{line}: {exc}")
                continue
            address = (row.get(m.location_column) or "").strip() if m.location_column else ""
            category = (row.get(m.category_column) or "").strip() if m.category_column else ""
            seen[rid] = (line, text)
            fields = {"received_at": when} if when else {}
            report = Report.create(
                channel=CHANNEL,
                provider_id=rid,
                source_at=when,
                reporter=Reporter(id="anonymous"),
                text=text,
                category_hint=category[:200] or None,
                location=Location(address=address[:1000] or None),
                **fields,
            )
            out.reports.append((line, report, orjson.dumps(row)))
            if limit is not None and len(out.reports) >= limit:
                break
    return out


@dataclass
class BackfillSummary:
    rows: int = 0
    published: int = 0
    already_stored: int = 0
    invalid: int = 0
    repeated: int = 0

    def text(self, name: str) -> str:
        return (
            f"backfill {name}: {self.rows} row(s) read; {self.published} published, "
            f"{self.already_stored} already stored (skipped), {self.repeated} repeated in the file, "
            f"{self.invalid} invalid (skipped)"
        )


async def publish(settings: Settings, parsed: Parsed, progress: bool = True) -> BackfillSummary:
    from tqdm import tqdm

    topics = Topics(settings.topic_namespace)
    summary = BackfillSummary(rows=parsed.rows, invalid=len(parsed.errors), repeated=parsed.repeated)
    stored = already_stored(settings, [r.report_id for _, r, _ in parsed.reports]) or set()
    todo = [(r, raw) for _, r, raw in parsed.reports if r.report_id not in stored]
    summary.already_stored = len(parsed.reports) - len(todo)
    producer = make_producer(settings, client_id="crm-backfill")
    await producer.start()
    try:
        publisher = Publisher(settings, producer)
        bar = tqdm(total=len(todo), desc="backfilling", unit="report", disable=not progress)
        for i in range(0, len(todo), 250):
            records: list[tuple[str, bytes | None, bytes]] = []
            for report, raw in todo[i : i + 250]:
                sha = hashlib.sha256(raw).hexdigest()
                report.raw_ref = RawRef(
                    topic=topics.raw, key=sha, sha256=sha, size=len(raw), content_type="application/json"
                )
                records.append((topics.raw, sha.encode(), raw))
                records.append((topics.ingest(CHANNEL), report.report_id.encode(), report.dumps()))
            await publisher.send_many_retrying(records)
            n = len(records) // 2
            summary.published += n
            bar.update(n)
        bar.close()
    finally:
        await producer.stop()
    return summary
