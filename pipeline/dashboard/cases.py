"""The report page's case panel: what grouping said of the report's case, and an officer's split and merge.

The dashboard holds no API key and writes nothing itself: ``POST /api/cases/{case_id}/split|merge``
forwards the officer's request, with the key the officer typed into the page (``X-API-Key``), to the
officer API (``CRM_DASHBOARD_OFFICER_API``, by default the API on ``CRM_API_HOST``/``CRM_API_PORT``), which
checks the key, applies the correction and keeps it as labelled pairs (``pipeline/crm/cases.py``)."""

from __future__ import annotations

from typing import Any

import aiohttp
import psycopg
from aiohttp import web

from ..settings import Settings


async def case_panel(conn: psycopg.AsyncConnection[Any], case_id: str) -> dict[str, Any] | None:
    """The case row (whatever columns this store's version has) and the cases that recur after it."""
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    await cur.execute("SELECT * FROM cases WHERE case_id = %s", (case_id,))
    row = await cur.fetchone()
    if row is None:
        return None
    keep = ("case_id", "support_count", "first_report_id", "first_at", "last_at", "occurrence",
            "previous_case_id", "candidates", "closed_at", "closed_reason", "merged_into")  # fmt: skip
    out = {k: (str(row[k]) if k == "first_report_id" else row[k]) for k in keep if k in row}
    if "previous_case_id" in row:
        await cur.execute(
            "SELECT case_id FROM cases WHERE previous_case_id = %s ORDER BY first_at", (case_id,)
        )
        out["next_case_ids"] = [r["case_id"] for r in await cur.fetchall()]
        # the link goes both ways: cases whose reports were flagged as perhaps this one
        await cur.execute(
            "SELECT case_id FROM cases WHERE %s = ANY(candidates) AND merged_into IS NULL ORDER BY first_at",
            (case_id,),
        )
        flagged = [r["case_id"] for r in await cur.fetchall()]
        out["candidates"] = list(dict.fromkeys([*(row["candidates"] or []), *flagged]))
    return out


def add_case_routes(app: web.Application, settings: Settings) -> None:
    base = (settings.dashboard_officer_api or f"http://{settings.api_host}:{settings.api_port}").rstrip("/")

    async def forward(request: web.Request) -> web.Response:
        key = request.headers.get("X-API-Key", "").strip()
        if not key:
            return web.json_response({"error": "type your officer API key (cases:write) first"}, status=401)
        action = request.match_info["action"]
        case_id = request.match_info["case_id"]
        body = await request.read()
        url = f"{base}/v1/cases/{case_id}/{action}"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
                session.post(
                    url, data=body, headers={"X-API-Key": key, "Content-Type": "application/json"}
                ) as resp,
            ):
                answer = await resp.read()
                return web.Response(body=answer, status=resp.status, content_type="application/json")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return web.json_response(
                {"error": f"the officer API at {base} did not answer: {exc}"}, status=502
            )

    app.router.add_post("/api/cases/{case_id}/{action:split|merge}", forward)
