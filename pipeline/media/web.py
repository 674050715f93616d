"""Serving media where people look, wired into the consumer API (``crm-pipeline api``):

* ``GET /v1/reports/{ref}/media`` (scope ``media:read``): every attachment of a report with its state;
  stored ones with time-limited signed URLs (``CRM_MEDIA_URL_TTL_S``) of the EXIF-free public copy and
  the thumbnail, and of the original only for keys with ``media:original`` (the CRM roles that may read
  reporter contacts: the original keeps the phone model and GPS position). The GPS position of a photo
  is offered as ``location_candidate`` when the report itself has no coordinates.
* ``POST /v1/reports/{ref}/media`` (scope ``status:write``): an officer's "after" photo, the image as
  the body (``?event_id=`` ties it to a status change, ``?actor=``, ``?name=``); checked and stored
  like a citizen's photo; 413/415 with the reason when refused.
* ``GET /open311/v2/media/{sha256}.{ext}``: the public, EXIF-free copy that Open311 ``media_url``
  points at (no key, as Open311 clients fetch media; the address is the content's sha256).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import psycopg
from aiohttp import web
from psycopg.rows import dict_row

from .check import MediaRefused
from .stage import MediaKeeper
from .store import MediaStore, StoreUnavailable
from .urls import public_url

_PUBLIC = re.compile(r"^([0-9a-f]{64})\.(jpg|png)$")
MEDIA_SQL = """
SELECT m.kind, m.idx, m.state, m.code, m.reason, m.attempts, m.name, m.sha256, m.gps_lat, m.gps_lon,
       m.actor, m.status_event_id, m.updated_at, o.media_type, o.size, o.width, o.height,
       o.original_key, o.public_key, o.public_type, o.thumb_key
FROM report_media m LEFT JOIN media_objects o ON o.sha256 = m.sha256
WHERE m.report_id = %s::uuid ORDER BY m.kind, m.idx
"""


class MediaRoutes:
    def __init__(self, api: Any) -> None:  # pipeline.crm.api.Api (not imported: no cycle)
        self.api = api
        self.settings = api.settings
        self._store: MediaStore | None = None
        self._keeper: MediaKeeper | None = None

    @property
    def store(self) -> MediaStore:
        if self._store is None:
            self._store = MediaStore(self.settings)
        return self._store

    @property
    def keeper(self) -> MediaKeeper:
        if self._keeper is None:
            self._keeper = MediaKeeper(self.settings, self.store)
        return self._keeper

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/v1/reports/{ref}/media", self.list_media)
        app.router.add_post("/v1/reports/{ref}/media", self.upload)
        app.router.add_get("/open311/v2/media/{name}", self.public)

    async def _report(self, request: web.Request, scope: str) -> tuple[Any, dict[str, Any]]:
        from ..open311.api import ApiError

        key = self.api.auth(request, scope)
        row = await self.api._one(request.match_info["ref"])
        if row is None or not key.sees(row["agency"]):
            raise ApiError(404, f"no report {request.match_info['ref']!r}")
        return key, row

    async def list_media(self, request: web.Request) -> web.Response:
        key, row = await self._report(request, "media:read")
        rows = await self.api._fetch(MEDIA_SQL, [row["report_id"]])
        original = "media:original" in key.scopes
        has_location = row["lat"] is not None and row["lon"] is not None
        out = []
        for m in rows:
            item: dict[str, Any] = {
                "kind": m["kind"],
                "index": m["idx"],
                "state": m["state"],
                "name": m["name"],
                "updated_at": m["updated_at"].isoformat(),
            }
            if m["state"] in ("failed", "refused") or m["code"] in ("fetch_retry", "store_unavailable"):
                item.update(code=m["code"], reason=m["reason"], attempts=m["attempts"])
            if m["kind"] == "after":
                item.update(actor=m["actor"], event_id=m["status_event_id"])
            if m["state"] == "stored" and m["public_key"]:
                item.update(
                    sha256=m["sha256"],
                    media_type=m["media_type"],
                    size=m["size"],
                    width=m["width"],
                    height=m["height"],
                    url=self.store.signed_url(m["public_key"]),
                    thumbnail_url=self.store.signed_url(m["thumb_key"]),
                    public_url=public_url(self.settings, request, m["public_key"]),
                    expires_in=self.settings.media_url_ttl_s,
                )
                if original:
                    item["original_url"] = self.store.signed_url(m["original_key"])
                if m["gps_lat"] is not None and not has_location:
                    item["location_candidate"] = {"lat": m["gps_lat"], "lon": m["gps_lon"], "source": "exif"}
            out.append(item)
        return web.json_response(
            {"report_id": row["report_id"], "tracking_number": row["tracking_number"], "media": out},
            dumps=lambda o: orjson.dumps(o).decode(),
        )

    async def upload(self, request: web.Request) -> web.Response:
        from ..open311.api import ApiError

        key, row = await self._report(request, "status:write")
        limit = self.settings.media_max_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(
                413,
                f"{request.content_length / 1e6:.1f} MB is larger than the {limit / 1e6:.1f} MB limit"
                " for a photo",
                "too_large",
            )
        body = bytearray()
        async for chunk in request.content.iter_chunked(256 * 1024):
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"more than the {limit / 1e6:.1f} MB limit for a photo", "too_large")
        name = request.query.get("name")
        try:
            checked = self.keeper.check(bytes(body), name=name, declared=request.content_type)
        except MediaRefused as exc:
            raise ApiError(413 if exc.code == "too_large" else 415, exc.reason, exc.code) from None
        try:
            keys = await self.keeper.put(checked, bytes(body))
        except StoreUnavailable as exc:
            raise ApiError(
                503, f"the media store is unavailable, try again: {exc}", "store_unavailable"
            ) from None
        actor = f"{key.consumer}:{request.query.get('actor') or 'petugas'}"[:200]
        event_id = request.query.get("event_id")
        dsn = self.settings.database_url.get_secret_value()
        async with (
            await psycopg.AsyncConnection.connect(dsn) as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            await MediaKeeper.record_object(cur, checked, keys)  # type: ignore[arg-type]
            # One photo once per status change: the same bytes for the same event is a retry.
            await cur.execute(
                "SELECT idx FROM report_media WHERE report_id = %s::uuid AND kind = 'after' AND sha256 = %s"
                " AND status_event_id IS NOT DISTINCT FROM %s",
                (row["report_id"], checked.sha256, event_id),
            )
            found = await cur.fetchone()
            if found is None:
                await cur.execute(
                    "INSERT INTO report_media (report_id, kind, idx, channel, source_url, name,"
                    " declared_type, state, attempts, sha256, gps_lat, gps_lon, actor, status_event_id)"
                    " SELECT %s::uuid, 'after', coalesce(max(idx) + 1, 0), 'officer', 'upload', %s, %s,"
                    " 'stored', 1, %s, %s, %s, %s, %s FROM report_media"
                    " WHERE report_id = %s::uuid AND kind = 'after' RETURNING idx",
                    (
                        row["report_id"],
                        name,
                        request.content_type,
                        checked.sha256,
                        checked.gps[0] if checked.gps else None,
                        checked.gps[1] if checked.gps else None,
                        actor,
                        event_id,
                        row["report_id"],
                    ),
                )
                found = await cur.fetchone()
            await conn.commit()
        assert found is not None
        return web.json_response(
            {
                "kind": "after",
                "index": found["idx"],
                "sha256": checked.sha256,
                "media_type": checked.media_type,
                "url": self.store.signed_url(keys.public),
                "public_url": public_url(self.settings, request, keys.public),
            },
            status=201,
        )

    async def public(self, request: web.Request) -> web.Response:
        m = _PUBLIC.match(request.match_info["name"])
        if m is None:
            raise web.HTTPNotFound()
        sha, ext = m.groups()
        try:
            got = await self.store.get(f"public/{sha[:2]}/{sha}.{ext}")
        except StoreUnavailable:
            return web.Response(status=503, headers={"Retry-After": "10"}, text="media store unavailable")
        if got is None:
            raise web.HTTPNotFound()
        data, ctype = got
        return web.Response(
            body=data, content_type=ctype, headers={"Cache-Control": "public, max-age=86400, immutable"}
        )
