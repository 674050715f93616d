"""The Open311 GeoReport v2 endpoints of ``crm-pipeline api``, every one as ``.json`` and ``.xml``.

* ``GET discovery``, ``GET services``, ``GET services/{service_code}`` (the definition, attributes);
* ``GET requests`` (filters and paging below), ``GET requests/{id}``, ``GET tokens/{token}``;
* ``POST requests``: the ``open311`` channel (``pipeline/sources/open311.py``) mounted here through the
  ingress's own handler, so a report takes the same path as from the ingress (Kafka, dead letters,
  rate limits) and integrators have one base URL.

Reads need no key: without one a client sees public fields (the text with contact details and names
masked, as routed topics carry it) and is rate-limited per client (``CRM_OPEN311_PUBLIC_PER_MIN`` /
``_BURST``, 429 with ``Retry-After``). A key with ``open311:read`` is not limited; with
``open311:private`` it also sees its agencies' private fields. An unknown key is refused (401) rather
than silently treated as none. Errors are the spec's list of ``{code, description}``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from psycopg import sql

from ..crm.status import OPEN311_STATUS, STATUSES
from ..envelope import utcnow
from ..processors.normalise import mask_pii
from ..settings import Settings
from . import JURISDICTION
from .formats import CONTENT_TYPES, FORMATS, render, render_errors
from .keys import READ, ApiKey, presented
from .services import definition, find_kelurahan, service_name, services
from .tokens import report_id_of

MAX_PAGE_SIZE = 1000
BASE = "/open311/v2"
FMT = "{format:(?:json|xml)}"
SPEC = "http://wiki.open311.org/GeoReport_v2"
CHANGESET = "2025-01-01T00:00:00Z"  # when the shape of these endpoints last changed (discovery)

Fetch = Callable[[sql.Composable | str, list[Any]], Awaitable[list[dict[str, Any]]]]

SELECT = """
SELECT r.report_id::text AS report_id, r.tracking_number, r.status, r.category, r.text_original,
       r.text_public, r.channel, r.routed_to, r.route_reason, r.confidence, r.category_hint, r.private,
       r.agency, r.agency_unit, r.received_at, r.updated_at, r.expected_by, r.address, r.lat, r.lon,
       r.attachments, r.kota_code, r.kecamatan_code, r.kelurahan_code, r.region, r.case_id,
       (SELECT h.note FROM status_history h WHERE h.report_id = r.report_id
        ORDER BY h.changed_at DESC, h.history_id DESC LIMIT 1) AS status_note,
       (SELECT o.public_key FROM report_media m JOIN media_objects o ON o.sha256 = m.sha256
        WHERE m.report_id = r.report_id AND m.kind = 'citizen' AND m.state = 'stored'
        ORDER BY m.idx LIMIT 1) AS media_public_key
FROM reports r
"""


class ApiError(Exception):
    def __init__(
        self, status: int, description: str, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(description)
        self.status, self.description, self.code, self.headers = status, description, code, headers


def fmt_of(request: web.Request) -> str:
    fmt = request.match_info.get("format", "json")
    return fmt if fmt in FORMATS else "json"


def error_response(request: web.Request, exc: ApiError) -> web.Response:
    body, ctype = render_errors(fmt_of(request), exc.status, exc.description, exc.code)
    return web.Response(body=body, status=exc.status, content_type=ctype, headers=exc.headers)


def parse_time(name: str, value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{name} must be ISO 8601 (e.g. 2024-05-01T00:00:00+07:00)", "bad_date") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z") if t else None


def _list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


async def fetch_one(fetch: Fetch, ref: str) -> dict[str, Any] | None:
    """A report by tracking number (``JKT-…``) or report id."""
    try:
        uuid.UUID(ref)
        clause = "r.report_id = %s::uuid"
    except ValueError:
        clause = "r.tracking_number = %s"
    rows = await fetch(sql.SQL(SELECT + " WHERE " + clause), [ref])  # type: ignore[arg-type]
    return rows[0] if rows else None


def public_fields(row: dict[str, Any], media_base: str = "") -> dict[str, Any]:
    """What anyone may read: the spec's fields, the masked text, places; never who reported.
    ``media_url`` is the EXIF-free public copy kept by the media stage (issue #21), never the
    provider's own URL (which can expire or carry the provider's signature)."""
    region = row.get("region") or {}
    kelurahan = find_kelurahan(row.get("kelurahan_code"))
    return {
        "service_request_id": row["tracking_number"],
        "status": OPEN311_STATUS.get(row["status"], "open"),
        "status_notes": row["status_note"],
        "service_name": service_name(row["category"]),
        "service_code": row["category"],
        # The worker's public text masks the reporter's own name too; older rows fall back.
        "description": row["text_public"] or mask_pii(row["text_original"]),
        "agency_responsible": row["agency"],
        "service_notice": row["agency_unit"],
        "requested_datetime": iso(row["received_at"]),
        "updated_datetime": iso(row["updated_at"]),
        "expected_datetime": iso(row["expected_by"]),
        "address": row["address"],
        "address_id": row["kelurahan_code"],
        "zipcode": kelurahan.zipcode if kelurahan else None,
        "lat": row["lat"],
        "long": row["lon"],
        "media_url": _media_url(row, media_base),
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


def _media_url(row: dict[str, Any], media_base: str) -> str | None:
    """Only ever our EXIF-free public copy, once the media stage stored it: a sender's own URL can carry
    a provider's signature or the EXIF (an officer sees it among the private ``media_urls``)."""
    from ..media.urls import public_path

    if row.get("media_public_key"):
        return media_base + public_path(row["media_public_key"])
    return None


def private_fields(row: dict[str, Any]) -> dict[str, Any]:
    """What the agency handling a request also sees: the text as written, how it came and was routed."""
    return {
        "description_original": row["text_original"],
        "channel": row["channel"],
        "category_hint": row["category_hint"],
        "classifier_confidence": row["confidence"],
        "routed_to": row["routed_to"],
        "route_reason": row["route_reason"],
        "reporter_private": row["private"],
        "media_urls": [a.get("url") for a in row.get("attachments") or [] if a.get("url")],
    }


class Open311Routes:
    """The handlers; ``fetch`` runs a query on the API's read-only connection pool."""

    def __init__(self, settings: Settings, keys: dict[str, ApiKey], fetch: Fetch) -> None:
        self.settings = settings
        self.keys = keys
        self.fetch = fetch

    def add_routes(self, app: web.Application, submit: Any | None = None) -> None:
        r = app.router
        r.add_get(f"{BASE}/discovery.{FMT}", self.discovery)
        r.add_get(f"{BASE}/services.{FMT}", self.services)
        r.add_get(f"{BASE}/services/{{code}}.{FMT}", self.service_definition)
        r.add_get(f"{BASE}/requests.{FMT}", self.requests)
        if submit is not None:
            r.add_post(f"{BASE}/requests.{FMT}", submit)
        r.add_get(f"{BASE}/requests/{{ref}}.{FMT}", self.request)
        r.add_get(f"{BASE}/tokens/{{token}}.{FMT}", self.token)

    # ------------------------------------------------------------------------------------- who
    async def reader(self, request: web.Request) -> ApiKey | None:
        """The caller's key, or None for a public reader (who is then rate-limited per client)."""
        token = presented(request.query, request.headers, {})
        if token:
            key = self.keys.get(token)
            if key is None:
                raise ApiError(
                    401,
                    "unknown API key (reads need none: leave it out for public fields)",
                    "unknown_api_key",
                )
            if READ in key.scopes:
                return key
        from ..ingress import LIMITER

        limiter = request.app.get(LIMITER)
        if limiter is not None:
            decision = await limiter.check_reader(limiter.client_ip(request.remote, request.headers))
            if not decision.allowed:
                raise ApiError(
                    429,
                    f"too many requests without an API key; retry after {decision.retry_after_s}s "
                    "(an API key with open311:read is not limited)",
                    "rate_limited",
                    {"Retry-After": str(decision.retry_after_s)},
                )
        return None

    def respond(self, request: web.Request, root: str, data: Any, headers: dict[str, str] | None = None):
        body, ctype = render(fmt_of(request), root, data)
        return web.Response(body=body, content_type=ctype, headers=headers)

    @staticmethod
    def check_jurisdiction(request: web.Request) -> None:
        jurisdiction = request.query.get("jurisdiction_id")
        if jurisdiction and jurisdiction != JURISDICTION:
            raise ApiError(
                404,
                f"jurisdiction_id {jurisdiction!r} not found; this endpoint serves {JURISDICTION}",
                "unknown_jurisdiction",
            )

    def view(self, row: dict[str, Any], key: ApiKey | None, request: web.Request) -> dict[str, Any]:
        from ..media.urls import public_base

        out = public_fields(row, public_base(self.settings, request))
        if key is not None and key.sees_private(row["agency"]):
            out.update(private_fields(row))
        return out

    # ---------------------------------------------------------------------------------- handlers
    async def discovery(self, request: web.Request) -> web.Response:
        await self.reader(request)
        base = f"{request.scheme}://{request.host}{BASE}"
        data = {
            "changeset": CHANGESET,
            "contact": "Jakarta CRM, Pemprov DKI Jakarta (docs/consumers.md)",
            "key_service": "API keys for POST requests: ask the CRM operators (CRM_API_KEYS)",
            "endpoints": [
                {
                    "specification": SPEC,
                    "url": base,
                    "changeset": CHANGESET,
                    "type": "production",
                    "formats": [CONTENT_TYPES["json"], CONTENT_TYPES["xml"]],
                }
            ],
        }
        return self.respond(request, "discovery", data)

    async def services(self, request: web.Request) -> web.Response:
        await self.reader(request)
        self.check_jurisdiction(request)
        return self.respond(request, "services", services())

    async def service_definition(self, request: web.Request) -> web.Response:
        await self.reader(request)
        self.check_jurisdiction(request)
        code = request.match_info["code"]
        found = definition(code)
        if found is None:
            raise ApiError(
                404, f"service_code {code!r} not found (GET services lists them)", "unknown_service_code"
            )
        return self.respond(request, "service_definition", found)

    async def requests(self, request: web.Request) -> web.Response:
        key = await self.reader(request)
        self.check_jurisdiction(request)
        q = request.query
        where: list[sql.Composable] = []
        params: list[Any] = []

        def add(clause: str, *values: Any) -> None:
            where.append(sql.SQL(clause))
            params.extend(values)

        if ids := _list(q.get("service_request_id")):
            add("r.tracking_number = ANY(%s)", ids)  # the spec: this overrides every other argument
        else:
            if codes := _list(q.get("service_code")):
                add("r.category = ANY(%s)", codes)
            if statuses := _list(q.get("status")):
                bad = [s for s in statuses if s not in ("open", "closed")]
                if bad:
                    raise ApiError(400, f"status must be open or closed, not {', '.join(bad)}", "bad_status")
                if set(statuses) == {"closed"}:
                    add("r.status = ANY(%s)", ["Selesai", "TL Ditolak"])
                elif set(statuses) == {"open"}:
                    add("NOT (r.status = ANY(%s))", ["Selesai", "TL Ditolak"])
            if crm := _list(q.get("crm_status")):
                unknown = [s for s in crm if s not in STATUSES]
                if unknown:
                    raise ApiError(
                        400,
                        f"unknown crm_status {', '.join(unknown)}; known: {', '.join(STATUSES)}",
                        "bad_status",
                    )
                add("r.status = ANY(%s)", crm)
            if agencies := _list(q.get("agency_responsible")):
                add("r.agency = ANY(%s)", agencies)
            elif key is not None and key.agencies is not None:
                add("r.agency = ANY(%s)", sorted(key.agencies))  # an agency's key: its queue by default
            if kel := _list(q.get("kelurahan")):
                add("(r.kelurahan_code = ANY(%s) OR r.region->>'kelurahan' = ANY(%s))", kel, kel)
            if kota := _list(q.get("region")):
                add("(r.kota_code = ANY(%s) OR r.region->>'kota' = ANY(%s))", kota, kota)
            start = parse_time("start_date", q.get("start_date"))
            end = parse_time("end_date", q.get("end_date"))
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
            raise ApiError(400, "page and page_size must be whole numbers", "bad_page") from None
        if not 1 <= page <= 100_000 or not 1 <= size <= MAX_PAGE_SIZE:
            raise ApiError(400, f"page must be 1..100000 and page_size within 1..{MAX_PAGE_SIZE}", "bad_page")
        query = sql.SQL(SELECT)
        if where:
            query = query + sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where)
        query = query + sql.SQL(" ORDER BY r.received_at DESC, r.report_id LIMIT %s OFFSET %s")
        rows = await self.fetch(query, [*params, size + 1, (page - 1) * size])
        headers = {}
        if len(rows) > size:
            rows = rows[:size]
            nxt = request.url.update_query(page=str(page + 1))
            headers["Link"] = f'<{nxt.without_query_params("api_key").path_qs}>; rel="next"'
        return self.respond(request, "service_requests", [self.view(r, key, request) for r in rows], headers)

    async def request(self, request: web.Request) -> web.Response:
        key = await self.reader(request)
        self.check_jurisdiction(request)
        ref = request.match_info["ref"]
        row = await fetch_one(self.fetch, ref)
        if row is None:
            raise ApiError(404, f"service_request_id {ref!r} not found", "unknown_request")
        return self.respond(request, "service_requests", [self.view(row, key, request)])

    async def token(self, request: web.Request) -> web.Response:
        await self.reader(request)
        self.check_jurisdiction(request)
        token = request.match_info["token"]
        report_id = report_id_of(self.settings, token)
        if report_id is None:
            raise ApiError(404, f"token {token!r} not found: it was not issued here", "unknown_token")
        rows = await self.fetch("SELECT tracking_number FROM reports WHERE report_id = %s::uuid", [report_id])
        item: dict[str, Any] = {
            "service_request_id": rows[0]["tracking_number"] if rows else None,
            "token": token,
        }
        if not rows:
            item["service_notice"] = (
                "pending: the request is accepted and not stored yet; ask again in a few seconds"
            )
        return self.respond(request, "service_requests", [item])
