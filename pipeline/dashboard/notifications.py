"""Undelivered notifications on the dashboard (issue #20): what the outbox gave up on, per destination,
and desk notifications no desk acknowledged within the retry schedule's horizon."""

from __future__ import annotations

from typing import Any

from ..crm.notify.outbox import give_up_after, undelivered
from ..settings import Settings


async def undelivered_rows(conn: Any, settings: Settings) -> dict[str, Any] | None:
    """The latest undelivered rows and the count per destination; None before the outbox exists."""
    have = await (await conn.execute("SELECT to_regclass('notify.outbox') IS NOT NULL")).fetchone()
    if not have or not have[0]:
        return None
    rows = await undelivered(conn, limit=500, desk_overdue=give_up_after(settings))
    by_destination: dict[str, int] = {}
    for r in rows:
        by_destination[r["destination"]] = by_destination.get(r["destination"], 0) + 1
    latest = [
        {
            "tracking_number": r["tracking_number"] or r["agency"] or "-",
            "destination": r["destination"],
            "kind": r["kind"],
            "to_status": r["to_status"],
            "attempts": r["attempts"],
            "error": (r["last_error"] or "")[:200],
            "created_at": r["created_at"].isoformat(),
        }
        for r in rows[:20]
    ]
    return {"total": len(rows), "by_destination": by_destination, "latest": latest}
