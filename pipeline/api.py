"""The consumer API: Open311 GeoReport v2 (read) and officer status changes (write), served by aiohttp.

``crm-pipeline api`` serves, all JSON:

* ``GET /open311/v2/services.json``: one service per report category (the routing table).
* ``GET /open311/v2/requests.json``: service requests, filtered by ``service_request_id``,
  ``service_code``, ``status`` (open/closed), ``crm_status``, ``agency_responsible``, ``kelurahan``
  (Kemendagri code), ``region`` (kota code), ``start_date``/``end_date`` (ISO 8601, on the requested
  time; without either, the last 90 days as the spec says), paged with ``page`` (from 1) and
  ``page_size`` (default 50, at most 1000); ``Link: <…>; rel="next"`` when there is more.
* ``GET /open311/v2/requests/{id}.json``: one request (tracking number or report id), as a list.
* ``POST /v1/reports/{id}/status``: an officer's status change (``status``, ``note``, ``actor``,
  ``agency``/``agency_unit`` for Disposisi, optional ``event_id`` for retries): 201 applied, 200 a
  replay, 409 refused by the lifecycle, 422 bad input, 404 unknown report.
* ``GET /v1/reports/{id}/history``: the status history (officers).
* ``GET /v1/desk/notifications?office=``: what desks must tell walk-in reporters.

Every call needs an API key (``api_key`` query parameter as in Open311, or ``X-API-Key``), configured
in ``CRM_API_KEYS``: ``{key: {consumer, scopes, agencies}}``. Scopes: ``open311:read``,
``status:write``, ``desk:read``. A key with ``agencies`` sees and changes only those agencies'
requests. No key: 401; a key without the permission: 403. Reporter identity is never served: the
read connection runs as the ``crm_api`` database role, which cannot read contacts or reporter ids.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from .envelope import utcnow
from .processors.normalise import mask_pii
from .processors.route import load_router
from .settings import Settings, get_settings
from .status import OPEN311_STATUS, STATUSES, StatusEvent, TransitionError
from .status_service import StatusService

log = logging.getLogger("pipeline.api")

JURISDICTION = "jakarta.go.id"
MAX_PAGE_SIZE = 1000
CONFLICT_CODES = {"invalid_transition", "final_status", "same_assignment", "event_id_reused"}


@dataclass(frozen=True)
class ApiKey:
    consumer: str
    scopes: frozenset[str]
    agencies: frozenset[str] | None  # None: every agency

    def sees(self, agency: str | None) -> bool:
        return self.agencies is None or agency in self.agencies


def load_keys(settings: Settings) -> dict[str, ApiKey]:
    raw = orjson.loads(settings.api_keys.get_secret_value() or "{}")
    keys = {}
    for key, spec in raw.items():
        agencies = spec.get("agencies")
        keys[key] = ApiKey(
            consumer=spec.get("consumer") or "unnamed",
            scopes=frozenset(spec.get("scopes") or ["open311:read"]),
            agencies=frozenset(agencies) if agencies else None,
        )
    return keys


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def _error(status: int, description: str, code: str | None = None) -> web.Response:
    """Open311 errors: a list of {code, description}."""
    body: dict[str, Any] = {"code": status, "description": description}
    if code:
        body["error_code"] = code
    return _json([body], status)


class ApiError(Exception):
    def __init__(self, status: int, description: str, code: str | None = None) -> None:
        super().__init__(description)
        self.status, self.description, self.code = status, description, code


def _parse_time(name: str, value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{name} must be ISO 8601 (e.g. 2024-05-01T00:00:00+07:00)") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z") if t else None


def _list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


_SELECT = """
SELECT r.report_id::text AS report_id, r.tracking_number, r.status, r.category, r.text_original,
       r.text_public,
       r.agency, r.agency_unit, r.received_at, r.updated_at, r.expected_by, r.address, r.lat, r.lon,
       r.attachments, r.kota_code, r.kecamatan_code, r.kelurahan_code, r.region, r.case_id,
       (SELECT h.note FROM status_history h WHERE h.report_id = r.report_id
        ORDER BY h.changed_at DESC, h.history_id DESC LIMIT 1) AS status_note
FROM reports r
"""


class Api:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = load_keys(settings)
        self.router = load_router()
        self.pool: AsyncConnectionPool | None = None
        self.status = StatusService(settings)

    # ------------------------------------------------------------------------------- lifecycle
    async def on_startup(self, app: web.Application) -> None:
        role = self.settings.api_db_role

        async def configure(conn: Any) -> None:
            if role:
                await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))

        self.pool = AsyncConnectionPool(
            self.settings.database_url.get_secret_value(),
            min_size=1,
            max_size=8,
            kwargs={"autocommit": True, "row_factory": dict_row},
            configure=configure,
            open=False,
        )
        await self.pool.open(wait=True, timeout=15)

    async def on_cleanup(self, app: web.Application) -> None:
        if self.pool is not None:
            await self.pool.close()
        await self.status.stop()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.errors])
        app.on_startup.append(self.on_startup)
        app.on_cleanup.append(self.on_cleanup)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/open311/v2/services.json", self.services)
        app.router.add_get("/open311/v2/requests.json", self.requests)
        app.router.add_get("/open311/v2/requests/{ref}.json", self.request)
        app.router.add_post("/v1/reports/{ref}/status", self.change_status)
        app.router.add_get("/v1/reports/{ref}/history", self.history)
        app.router.add_get("/v1/desk/notifications", self.desk)
        return app

    @web.middleware
    async def errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return _error(exc.status, exc.description, exc.code)

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    # ------------------------------------------------------------------------------------ auth
    def auth(self, request: web.Request, scope: str) -> ApiKey:
        token = request.query.get("api_key") or request.headers.get("X-API-Key")
        if not token:
            raise ApiError(401, "an API key is required (api_key parameter or X-API-Key header)")
        key = self.keys.get(token)
        if key is None:
            raise ApiError(401, "unknown API key")
        if scope not in key.scopes:
            raise ApiError(403, f"this API key ({key.consumer}) lacks the permission {scope!r}")
        return key

    async def _fetch(self, query: sql.Composable | str, params: list[Any]) -> list[dict[str, Any]]:
        assert self.pool is not None
        async with self.pool.connection() as conn:
            return list(await (await conn.execute(query, params)).fetchall())  # type: ignore[arg-type]

    # --------------------------------------------------------------------------------- open311
    async def services(self, request: web.Request) -> web.Response:
        self.auth(request, "open311:read")
        out = [
            {
                "service_code": rule.category,
                "service_name": rule.category.replace("_", " ").capitalize(),
                "description": rule.note,
                "metadata": False,
                "type": "realtime",
                "keywords": ", ".join(rule.crm_categories),
                "group": rule.agency.name,
            }
            for rule in self.router.rules.values()  # type: ignore[attr-defined]
        ]
        return _json(out)

    def _out(self, row: dict[str, Any]) -> dict[str, Any]:
        attachments = row.get("attachments") or []
        region = row.get("region") or {}
        return {
            "service_request_id": row["tracking_number"],
            "status": OPEN311_STATUS.get(row["status"], "open"),
            "status_notes": row["status_note"],
            "service_name": (row["category"] or "belum dikategorikan").replace("_", " ").capitalize(),
            "service_code": row["category"],
            # The worker's public text masks the reporter's own name too; older rows fall back.
            "description": row["text_public"] or mask_pii(row["text_original"]),
            "agency_responsible": row["agency"],
            "service_notice": row["agency_unit"],
            "requested_datetime": _iso(row["received_at"]),
            "updated_datetime": _iso(row["updated_at"]),
            "expected_datetime": _iso(row["expected_by"]),
            "address": row["address"],
            "address_id": None,
            "zipcode": None,
            "lat": row["lat"],
            "long": row["lon"],
            "media_url": attachments[0].get("url") if attachments else None,
            # Extensions (Open311 clients ignore what they do not know):
            "report_id": row["report_id"],
            "crm_status": row["status"],
            "kota": region.get("kota"),
            "kota_code": row["kota_code"],
            "kecamatan_code": row["kecamatan_code"],
            "kelurahan": region.get("kelurahan"),
            "kelurahan_code": row["kelurahan_code"],
            "case_id": row["case_id"],
        }

    async def requests(self, request: web.Request) -> web.Response:
        key = self.auth(request, "open311:read")
        q = request.query
        where: list[sql.Composable] = []
        params: list[Any] = []

        def add(clause: str, value: Any) -> None:
            where.append(sql.SQL(clause))
            params.append(value)

        jurisdiction = q.get("jurisdiction_id")
        if jurisdiction and jurisdiction != JURISDICTION:
            raise ApiError(
                404, f"unknown jurisdiction_id {jurisdiction!r}; this endpoint serves {JURISDICTION}"
            )
        if ids := _list(q.get("service_request_id")):
            add("r.tracking_number = ANY(%s)", ids)
        if codes := _list(q.get("service_code")):
            add("r.category = ANY(%s)", codes)
        if statuses := _list(q.get("status")):
            bad = [s for s in statuses if s not in ("open", "closed")]
            if bad:
                raise ApiError(400, f"status must be open or closed, not {', '.join(bad)}")
            if statuses == ["closed"]:
                add("r.status = ANY(%s)", ["Selesai", "TL Ditolak"])
            elif statuses == ["open"]:
                add("NOT (r.status = ANY(%s))", ["Selesai", "TL Ditolak"])
        if crm := _list(q.get("crm_status")):
            unknown = [s for s in crm if s not in STATUSES]
            if unknown:
                raise ApiError(400, f"unknown crm_status {', '.join(unknown)}; known: {', '.join(STATUSES)}")
            add("r.status = ANY(%s)", crm)
        agencies = _list(q.get("agency_responsible"))
        if agencies:
            denied = [a for a in agencies if not key.sees(a)]
            if denied:
                raise ApiError(403, f"this API key ({key.consumer}) may not read {', '.join(denied)}")
            add("r.agency = ANY(%s)", agencies)
        elif key.agencies is not None:
            add("r.agency = ANY(%s)", sorted(key.agencies))
        if kel := _list(q.get("kelurahan")):
            add("(r.kelurahan_code = ANY(%s) OR r.region->>'kelurahan' = ANY(%s))", kel)
            params.append(kel)
        if kota := _list(q.get("region")):
            add("(r.kota_code = ANY(%s) OR r.region->>'kota' = ANY(%s))", kota)
            params.append(kota)
        start = _parse_time("start_date", q.get("start_date"))
        end = _parse_time("end_date", q.get("end_date"))
        if start is None and end is None:
            start = utcnow() - timedelta(days=90)
        if start is not None:
            add("r.received_at >= %s", start)
        if end is not None:
            add("r.received_at < %s", end)
        try:
            page = int(q.get("page", "1"))
            size = int(q.get("page_size", "50"))
        except ValueError:
            raise ApiError(400, "page and page_size must be whole numbers") from None
        if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            raise ApiError(400, f"page must be >= 1 and page_size within 1..{MAX_PAGE_SIZE}")
        query = sql.SQL(_SELECT)
        if where:
            query = query + sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where)
        query = query + sql.SQL(" ORDER BY r.received_at DESC, r.report_id LIMIT %s OFFSET %s")
        rows = await self._fetch(query, [*params, size + 1, (page - 1) * size])
        headers = {}
        if len(rows) > size:
            rows = rows[:size]
            nxt = request.url.update_query(page=str(page + 1))
            headers["Link"] = f'<{nxt.without_query_params("api_key").path_qs}>; rel="next"'
        return _json([self._out(r) for r in rows], headers=headers)

    async def _one(self, ref: str) -> dict[str, Any] | None:
        try:
            uuid.UUID(ref)
            clause = "r.report_id = %s::uuid"
        except ValueError:
            clause = "r.tracking_number = %s"
        rows = await self._fetch(sql.SQL(_SELECT + " WHERE " + clause), [ref])  # type: ignore[arg-type]
        return rows[0] if rows else None

    async def request(self, request: web.Request) -> web.Response:
        key = self.auth(request, "open311:read")
        row = await self._one(request.match_info["ref"])
        if row is None:
            raise ApiError(404, f"no service request {request.match_info['ref']!r}")
        if not key.sees(row["agency"]):
            raise ApiError(403, f"this API key ({key.consumer}) may not read requests of {row['agency']}")
        return _json([self._out(row)])

    # ---------------------------------------------------------------------------------- officers
    async def change_status(self, request: web.Request) -> web.Response:
        key = self.auth(request, "status:write")
        ref = request.match_info["ref"]
        row = await self._one(ref)
        if row is None:
            raise ApiError(404, f"no report {ref!r}")
        if not key.sees(row["agency"]):
            raise ApiError(403, f"this API key ({key.consumer}) may not change reports of {row['agency']}")
        try:
            body = orjson.loads(await request.read())
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            actor = str(body.pop("actor", "") or "petugas")
            event = StatusEvent(report_id=row["report_id"], actor=f"{key.consumer}:{actor}"[:200], **body)
        except (ValueError, TypeError, ValidationError) as exc:
            msg = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise ApiError(422, f"invalid status change: {msg}", "invalid_body") from None
        try:
            change, replayed = await self.status.apply(event)
        except TransitionError as exc:
            status = 404 if exc.code == "unknown_report" else 409 if exc.code in CONFLICT_CODES else 422
            raise ApiError(status, exc.reason, exc.code) from None
        return _json(change.model_dump(mode="json"), status=200 if replayed else 201)

    async def history(self, request: web.Request) -> web.Response:
        key = self.auth(request, "status:write")
        row = await self._one(request.match_info["ref"])
        if row is None or not key.sees(row["agency"]):
            raise ApiError(404, f"no report {request.match_info['ref']!r}")
        rows = await self._fetch(
            "SELECT from_status, to_status, note, agency, agency_unit, changed_at FROM status_history "
            "WHERE report_id = %s::uuid ORDER BY changed_at, history_id",
            [row["report_id"]],
        )
        for r in rows:
            r["changed_at"] = _iso(r["changed_at"])
        return _json({"tracking_number": row["tracking_number"], "status": row["status"], "history": rows})

    async def desk(self, request: web.Request) -> web.Response:
        from .notify.outbox import desk_notifications

        self.auth(request, "desk:read")
        assert self.pool is not None
        async with self.pool.connection() as conn:
            rows = await desk_notifications(conn, request.query.get("office"))
        for r in rows:
            r["created_at"] = _iso(r["created_at"])
        return _json(rows)


def create_app(settings: Settings | None = None) -> web.Application:
    return Api(settings or get_settings()).app()


def serve(host: str | None = None, port: int | None = None) -> None:  # pragma: no cover - CLI
    settings = get_settings()
    web.run_app(
        create_app(settings), host=host or settings.api_host, port=port or settings.api_port, print=None
    )
