"""Helpers shared by replay and backfill: time filters, the 'already stored' check, the summary."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import psycopg

from ..settings import Settings

log = logging.getLogger("pipeline.ops")

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """``2025-01-31``, ``2025-01-31T08:00:00+07:00`` (UTC if no zone) or relative: ``30m``, ``6h``, ``2d``."""
    text = text.strip()
    m = _RELATIVE.match(text)
    if m:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO 8601 (2025-01-31, 2025-01-31T08:00+07:00) or 30m / 6h / 2d"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def already_stored(settings: Settings, report_ids: Iterable[str]) -> set[str] | None:
    """Which of these report ids the CRM store has; None when the store cannot be asked."""
    ids = sorted(set(report_ids))
    if not ids:
        return set()
    try:
        with psycopg.connect(settings.database_url.get_secret_value(), connect_timeout=5) as conn:
            found: set[str] = set()
            for i in range(0, len(ids), 5000):
                rows = conn.execute(
                    "SELECT report_id::text FROM reports WHERE report_id = ANY(%s::uuid[])",
                    (ids[i : i + 5000],),
                ).fetchall()
                found.update(r[0] for r in rows)
            return found
    except psycopg.Error as exc:
        log.warning("could not ask the CRM store which reports exist (%s); publishing all", exc)
        return None
