"""The dashboard's view of report media: thumbnails on the report page (served from the object store
through the dashboard, so the store stays private) and the attachments that were not kept, with why."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from aiohttp import web
from psycopg.rows import dict_row

from ..settings import Settings
from .store import MediaStore, StoreUnavailable

_THUMB = re.compile(r"^([0-9a-f]{64})\.jpg$")


async def report_media(conn: psycopg.AsyncConnection[Any], report_id: str) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT to_regclass('report_media') IS NOT NULL AS t")
    found = await cur.fetchone()
    if not found or not found["t"]:
        return []
    await cur.execute(
        "SELECT kind, idx, state, code, reason, attempts, sha256, name, actor, updated_at"
        " FROM report_media WHERE report_id = %s ORDER BY kind DESC, idx",
        (report_id,),
    )
    rows = list(await cur.fetchall())
    for r in rows:
        if r["state"] == "stored" and r["sha256"]:
            r["thumbnail"] = f"/media/thumb/{r['sha256']}.jpg"
    return rows


async def media_totals(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
    """Attachments by state, and the latest ones not kept (failed fetches, refused content)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT to_regclass('report_media') IS NOT NULL AS t")
    found = await cur.fetchone()
    if not found or not found["t"]:
        return {}
    await cur.execute("SELECT state, count(*) AS n FROM report_media GROUP BY state")
    out: dict[str, Any] = {r["state"]: r["n"] for r in await cur.fetchall()}
    await cur.execute(
        "SELECT report_id::text, kind, idx, state, code, reason, updated_at FROM report_media"
        " WHERE state IN ('failed', 'refused') ORDER BY updated_at DESC LIMIT 10"
    )
    out["not_kept"] = list(await cur.fetchall())
    return out


def add_thumbnail_route(app: web.Application, settings: Settings) -> None:
    store: list[MediaStore] = []

    async def thumbnail(request: web.Request) -> web.Response:
        m = _THUMB.match(request.match_info["name"])
        if m is None:
            raise web.HTTPNotFound()
        sha = m.group(1)
        if not store:
            store.append(MediaStore(settings))
        try:
            got = await store[0].get(f"thumb/{sha[:2]}/{sha}.jpg")
        except StoreUnavailable:
            return web.Response(status=503, headers={"Retry-After": "10"}, text="media store unavailable")
        if got is None:
            raise web.HTTPNotFound()
        return web.Response(
            body=got[0], content_type="image/jpeg", headers={"Cache-Control": "max-age=86400"}
        )

    app.router.add_get("/media/thumb/{name}", thumbnail)
