"""Surges on the dashboard (issue #17): the open ones and those closed in the last hours, from the
CRM store's ``surges`` table (the worker's ``surge-alerts`` agent keeps it in step with the alerts)."""

from __future__ import annotations

from typing import Any

#: closed surges stay on the page this long, greyed out
RECENTLY_CLOSED_HOURS = 3


async def surge_rows(conn: Any) -> list[dict[str, Any]] | None:
    """Open and recently closed surges, latest change first; None when the store has no surges table."""
    have = await (await conn.execute("SELECT to_regclass('surges') IS NOT NULL")).fetchone()
    if not have or not have[0]:
        return None
    rows = await (
        await conn.execute(
            "SELECT surge_id::text, state, category, level, place, kota_code, kecamatan_code, "
            "kelurahan_code, count, expected, score, report_count, opened_at, updated_at, record->>'window', "
            "record->'places', record->'notify', record->>'agency_unit' FROM surges "
            "WHERE state <> 'closed' OR closed_at > now() - make_interval(hours => %s) "
            "ORDER BY (state = 'closed'), updated_at DESC LIMIT 50",
            (RECENTLY_CLOSED_HOURS,),
        )
    ).fetchall()
    out = []
    for r in rows:
        code = r[7] or r[6] or r[5]
        out.append(
            {
                "surge_id": r[0],
                "state": r[1],
                "category": r[2],
                "level": r[3],
                "place": r[4],
                "code": code,
                "count": r[8],
                "expected": r[9],
                "score": r[10],
                "report_count": r[11],
                "opened_at": r[12],
                "updated_at": r[13],
                "window": r[14],
                "places": [p["kelurahan"] or p["kelurahan_code"] for p in (r[15] or [])][:6],
                "notify": r[16] or [],
                "unit": r[17],
            }
        )
    return out
