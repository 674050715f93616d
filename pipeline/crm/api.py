"""The consumer API: Open311 GeoReport v2 and officer status changes, served by aiohttp.

``crm-pipeline api`` serves:

* Open311 GeoReport v2 under ``/open311/v2/``, every endpoint as ``.json`` and ``.xml``: discovery,
  services, service definitions, requests (read and ``POST``), one request, tokens
  (``pipeline/open311/api.py``; reads need no key, ``POST`` a key with ``open311:submit``);
* ``POST /v1/reports/{id}/status``: an officer's status change (``status``, ``note``, ``actor``,
  ``agency``/``agency_unit`` for Disposisi, optional ``event_id`` for retries): 201 applied, 200 a
  replay, 409 refused by the lifecycle, 422 bad input, 404 unknown report;
* ``POST /v1/reports/{id}/route/confirm``: an officer confirms the routed agency (a label the triage
  classifier learns from; a re-route is a Disposisi status change): 201 recorded, 200 a replay,
  409 when the report waits in triage with no agency;
* ``GET /v1/reports/{id}/history``: the status history (officers);
* ``GET /v1/desk/notifications?office=``: what desks must tell walk-in reporters;
  ``POST /v1/desk/notifications/{id}/ack`` (``{"how": "delivered"|"printed", "officer": …, "office": …}``):
  the desk told the reporter or handed a printout, so the notification is delivered;
* ``GET /v1/cases/{case_id}``: a case, each report with its score against the rest of the case and what
  drove it; ``POST /v1/cases/{case_id}/split`` (``{"report": …}``) and ``POST /v1/cases/{case_id}/merge``
  (``{"other": …}``): officers' corrections of grouping, kept as labelled pairs (``pipeline/crm/cases.py``);
* ``GET /openapi.json``: the contract of all of it (``docs/openapi.json``).

Keys are configured in ``CRM_API_KEYS`` (``pipeline/open311/keys.py`` names the scopes). A key with
``agencies`` changes only those agencies' requests. No key where one is needed: 401; a key without the
permission: 403. Reporter identity is never served: the read connection runs as the ``crm_api``
database role, which cannot read contacts or reporter ids.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from ..ingress import push_context, push_handler
from ..open311.api import ApiError, Open311Routes, error_response, fetch_one, iso
from ..open311.keys import DESK_READ, STATUS_WRITE, ApiKey, KeyRefused, load_keys, presented, require
from ..settings import Settings, get_settings
from ..sources.open311 import Open311Source
from .status import StatusEvent, TransitionError
from .status_service import StatusService

log = logging.getLogger("pipeline.api")

CONFLICT_CODES = {"invalid_transition", "final_status", "same_assignment", "event_id_reused"}
__all__ = ["ApiError", "ApiKey", "create_app", "load_keys", "serve"]


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


class Api:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = load_keys(settings)
        self.pool: AsyncConnectionPool | None = None
        self.status = StatusService(settings)
        self.open311 = Open311Routes(settings, self.keys, self._fetch)

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
        from ..openapi import serve_document

        app = web.Application(middlewares=[self.errors], client_max_size=self.settings.max_body_bytes * 4)
        app.on_startup.append(self.on_startup)
        app.on_cleanup.append(self.on_cleanup)
        # Open311 POST goes to Kafka through the ingress's own handler (publisher and rate limiter).
        submit = Open311Source(self.settings)
        app.cleanup_ctx.append(push_context(self.settings, "crm-api", [submit]))
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/openapi.json", serve_document("api"))
        self.open311.add_routes(app, submit=push_handler(submit, self.settings))
        app.router.add_post("/v1/reports/{ref}/status", self.change_status)
        app.router.add_post("/v1/reports/{ref}/route/confirm", self.confirm_route)
        app.router.add_get("/v1/reports/{ref}/history", self.history)
        app.router.add_get("/v1/desk/notifications", self.desk)
        app.router.add_post("/v1/desk/notifications/{outbox_id}/ack", self.desk_ack)
        from ..media.web import MediaRoutes  # issue #21: signed URLs, public copies, "after" photos

        MediaRoutes(self).add_to(app)
        from .cases import CaseRoutes  # issue #23: cases, split and merge

        CaseRoutes(self).add_to(app)
        return app

    @web.middleware
    async def errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Every refusal as the spec's error list (in the format the path asks for)."""
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(request, exc)
        except KeyRefused as exc:
            return error_response(request, ApiError(exc.status, exc.reason, exc.code))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            kept = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
            return error_response(request, ApiError(exc.status, exc.reason, "http", kept))

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    # ------------------------------------------------------------------------------------ auth
    def auth(self, request: web.Request, scope: str) -> ApiKey:
        return require(self.keys, presented(request.query, request.headers, {}), scope)

    async def _fetch(self, query: sql.Composable | str, params: list[Any]) -> list[dict[str, Any]]:
        assert self.pool is not None
        async with self.pool.connection() as conn:
            return list(await (await conn.execute(query, params)).fetchall())  # type: ignore[arg-type]

    async def _one(self, ref: str) -> dict[str, Any] | None:
        return await fetch_one(self._fetch, ref)

    # ---------------------------------------------------------------------------------- officers
    async def _report_to_act_on(self, request: web.Request, verb: str) -> tuple[ApiKey, dict[str, Any]]:
        """The key and the report of an officer's write: 404 for no such report, 403 for another agency's."""
        key = self.auth(request, STATUS_WRITE)
        ref = request.match_info["ref"]
        row = await self._one(ref)
        if row is None:
            raise ApiError(404, f"no report {ref!r}")
        if not key.sees(row["agency"]):
            raise ApiError(403, f"this API key ({key.consumer}) may not {verb} reports of {row['agency']}")
        return key, row

    async def change_status(self, request: web.Request) -> web.Response:
        key, row = await self._report_to_act_on(request, "change")
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

    async def confirm_route(self, request: web.Request) -> web.Response:
        """The agency the pipeline routed to is right: a label for the classifier (issue #16)."""
        key, row = await self._report_to_act_on(request, "judge")
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            unknown = set(body) - {"actor", "event_id"}
            if unknown:
                raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
            actor = str(body.get("actor") or "petugas")[:100]
            event_id = body.get("event_id")
            if event_id is not None and (not isinstance(event_id, str) or not 1 <= len(event_id) <= 200):
                raise ValueError("event_id must be a string of 1 to 200 characters")
        except ValueError as exc:
            raise ApiError(422, f"invalid confirmation: {exc}", "invalid_body") from None
        try:
            label, replayed = await self.status.confirm_route(
                str(row["report_id"]), f"{key.consumer}:{actor}"[:200], event_id
            )
        except TransitionError as exc:
            status = 404 if exc.code == "unknown_report" else 409
            raise ApiError(status, exc.reason, exc.code) from None
        label["labelled_at"] = iso(label["labelled_at"])
        return _json(label, status=200 if replayed else 201)

    async def history(self, request: web.Request) -> web.Response:
        key = self.auth(request, STATUS_WRITE)
        row = await self._one(request.match_info["ref"])
        if row is None or not key.sees(row["agency"]):
            raise ApiError(404, f"no report {request.match_info['ref']!r}")
        rows = await self._fetch(
            "SELECT from_status, to_status, note, agency, agency_unit, changed_at FROM status_history "
            "WHERE report_id = %s::uuid ORDER BY changed_at, history_id",
            [row["report_id"]],
        )
        for r in rows:
            r["changed_at"] = iso(r["changed_at"])
        return _json({"tracking_number": row["tracking_number"], "status": row["status"], "history": rows})

    async def desk(self, request: web.Request) -> web.Response:
        from .notify.outbox import desk_notifications

        self.auth(request, DESK_READ)
        assert self.pool is not None
        async with self.pool.connection() as conn:
            rows = await desk_notifications(conn, request.query.get("office"))
        for r in rows:
            r["created_at"] = iso(r["created_at"])
        return _json(rows)

    async def desk_ack(self, request: web.Request) -> web.Response:
        """The desk told the reporter (``how: delivered``) or handed a printout (``printed``)."""
        from .notify.outbox import DeskAckError, acknowledge_desk

        self.auth(request, DESK_READ)
        try:
            outbox_id = int(request.match_info["outbox_id"])
            if not 0 < outbox_id < 2**63:
                raise ValueError(f"no notification {outbox_id}")
            body = orjson.loads(await request.read() or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            how, officer = body.get("how", "delivered"), body.get("officer")
            if how not in ("delivered", "printed"):
                raise ValueError("'how' is 'delivered' (told in person) or 'printed' (handed a printout)")
            if not isinstance(officer, str) or not officer.strip() or len(officer) > 200:
                raise ValueError("'officer' names who told the reporter (1-200 characters)")
            office = body.get("office") or request.query.get("office")
            if office is not None and (not isinstance(office, str) or len(office) > 40):
                raise ValueError("'office' is the desk's office code (a string)")
        except (ValueError, orjson.JSONDecodeError) as exc:
            raise ApiError(422, f"invalid acknowledgement: {exc}", "invalid_body") from None
        assert self.pool is not None
        try:
            async with self.pool.connection() as conn:
                row = await acknowledge_desk(conn, outbox_id, office, how, officer.strip())
        except DeskAckError as exc:
            raise ApiError(404, str(exc), "unknown_notification") from None
        row["sent_at"] = iso(row["sent_at"])
        return _json(row)


def create_app(settings: Settings | None = None) -> web.Application:
    return Api(settings or get_settings()).app()


def serve(host: str | None = None, port: int | None = None) -> None:  # pragma: no cover - CLI
    settings = get_settings()
    web.run_app(
        create_app(settings), host=host or settings.api_host, port=port or settings.api_port, print=None
    )
