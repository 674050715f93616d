"""The live operations dashboard: one aiohttp process, plain HTML/JS/CSS, live over server-sent events.

For the ops room and agency staff: intake per channel over time, consumer lag and dead letters, open
reports per agency and per kota/kecamatan in the CRM's status colours, the cases with the most
supporters, a map of today's reports over the kelurahan boundaries, and a page per report with its
path through the pipeline (channel → dedup → category → route → status history, with the reasons).

A collector builds one snapshot every ``CRM_DASHBOARD_REFRESH_S`` from the CRM store, the worker
group's lag and a tail of the dead-letter topic, and pushes it to every open page (``/events``).
Tables that the store does not have yet (cases, status history) are left out, not errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson
import psycopg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..deadletter import DeadLetter
from ..security import kafka_client_kwargs
from ..settings import Settings, get_settings
from ..topics import Topics
from . import geo
from .status import colours, final_statuses

log = logging.getLogger("pipeline.dashboard")

STATIC = resources.files("pipeline.dashboard") / "static"
TODAY = "date_trunc('day', now() AT TIME ZONE 'Asia/Jakarta') AT TIME ZONE 'Asia/Jakarta'"
INTAKE_MINUTES = 60


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS)


class DeadLetterTail:
    """Follows the dead-letter topic from its beginning: counts and the latest letters."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = Topics(settings.topic_namespace).deadletter
        self.total = 0
        self.today = 0
        self.by_code: Counter[str] = Counter()
        self.by_channel: Counter[str] = Counter()
        self.recent: deque[dict[str, Any]] = deque(maxlen=15)
        self.by_report: dict[str, list[dict[str, Any]]] = {}
        self.connected = False

    def add(self, d: DeadLetter) -> None:
        self.total += 1
        if d.failed_at.astimezone(UTC).date() == datetime.now(UTC).date():
            self.today += 1
        self.by_code[d.code] += 1
        self.by_channel[d.channel or "-"] += 1
        row = {
            "dead_letter_id": d.dead_letter_id,
            "failed_at": d.failed_at.isoformat(),
            "channel": d.channel,
            "stage": d.stage,
            "code": d.code,
            "reason": d.reason[:300],
            "report_id": d.report_id,
        }
        self.recent.appendleft(row)
        if d.report_id and len(self.by_report) < 100_000:
            self.by_report.setdefault(d.report_id, []).append(row)

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from ..ops.kafka import partitions_of

        while True:
            consumer = None
            try:
                parts = (await partitions_of(self.settings, [self.topic])).get(self.topic)
                if not parts:
                    await asyncio.sleep(5)
                    continue
                consumer = AIOKafkaConsumer(
                    **kafka_client_kwargs(self.settings),
                    group_id=None,
                    enable_auto_commit=False,
                    client_id="crm-dashboard",
                )
                await consumer.start()
                tps = [TopicPartition(self.topic, p) for p in parts]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                self.connected = True
                while True:
                    batch = await consumer.getmany(timeout_ms=1000)
                    for records in batch.values():
                        for r in records:
                            with contextlib.suppress(Exception):
                                self.add(DeadLetter.loads(r.value))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected = False
                log.warning("dead-letter tail interrupted, retrying: %s", exc)
                # start over from the beginning: reset the counts so nothing is counted twice
                self.__init__(self.settings)  # type: ignore[misc]
                await asyncio.sleep(3)
            finally:
                if consumer is not None:
                    with contextlib.suppress(Exception):
                        await consumer.stop()


class Collector:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dsn = settings.database_url.get_secret_value()
        self.deadletters = DeadLetterTail(settings)
        self.subscribers: set[asyncio.Queue[bytes]] = set()
        self.latest: bytes | None = None
        self.snapshot: dict[str, Any] = {}
        self.lag: dict[str, Any] = {"total": None, "partitions": [], "error": "not sampled yet"}
        self._lag_at = 0.0
        self.errors: dict[str, str] = {}

    # ------------------------------------------------------------------ store queries
    async def _store(self, conn: psycopg.AsyncConnection) -> dict[str, Any]:
        final = final_statuses()

        async def rows(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
            return await (await conn.execute(sql, params)).fetchall()  # type: ignore[arg-type]

        have = (
            await rows("SELECT to_regclass('cases') IS NOT NULL, to_regclass('status_history') IS NOT NULL")
        )[0]
        has_tracking = bool(
            await rows(
                "SELECT 1 FROM information_schema.columns WHERE table_name = 'reports' "
                "AND column_name = 'tracking_number' AND table_schema = current_schema()"
            )
        )
        out: dict[str, Any] = {"features": {"cases_table": have[0], "status_history": have[1]}}

        total, today, open_ = (
            await rows(
                f"SELECT count(*), count(*) FILTER (WHERE received_at >= {TODAY}), "  # noqa: S608 - constants
                "count(*) FILTER (WHERE status <> ALL(%s)) FROM reports",
                (final,),
            )
        )[0]
        out["totals"] = {"stored": total, "today": today, "open": open_}

        minutes = await rows(
            "SELECT date_trunc('minute', received_at), channel, count(*) FROM reports "
            "WHERE received_at >= now() - make_interval(mins => %s) GROUP BY 1, 2",
            (INTAKE_MINUTES,),
        )
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        buckets = [int(now.timestamp()) - 60 * i for i in range(INTAKE_MINUTES - 1, -1, -1)]
        series: dict[str, list[int]] = {}
        for minute, channel, n in minutes:
            ts = int(minute.timestamp())
            if ts in buckets:
                series.setdefault(channel, [0] * len(buckets))[buckets.index(ts)] = n
        out["intake"] = {"buckets": buckets, "series": series}
        out["channels_today"] = dict(
            await rows(
                f"SELECT channel, count(*) FROM reports WHERE received_at >= {TODAY} "  # noqa: S608
                "GROUP BY 1 ORDER BY 2 DESC"
            )
        )

        by_agency: dict[str, dict[str, int]] = {}
        for agency, status, n in await rows(
            "SELECT coalesce(agency, 'Triage (belum dirutekan)'), status, count(*) FROM reports "
            "WHERE status <> ALL(%s) GROUP BY 1, 2",
            (final,),
        ):
            by_agency.setdefault(agency, {})[status] = n
        out["open_by_agency"] = sorted(
            ({"agency": a, "statuses": s, "total": sum(s.values())} for a, s in by_agency.items()),
            key=lambda r: -r["total"],
        )
        by_region: dict[tuple[str, str], dict[str, int]] = {}
        for kota, kec, status, n in await rows(
            "SELECT coalesce(region->>'kota', '(wilayah belum diketahui)'), "
            "coalesce(region->>'kecamatan', '-'), status, count(*) FROM reports "
            "WHERE status <> ALL(%s) GROUP BY 1, 2, 3",
            (final,),
        ):
            by_region.setdefault((kota, kec), {})[status] = n
        out["open_by_region"] = sorted(
            (
                {"kota": k, "kecamatan": c, "statuses": s, "total": sum(s.values())}
                for (k, c), s in by_region.items()
            ),
            key=lambda r: (r["kota"], -r["total"]),
        )

        cases: list[tuple[Any, ...]] = []
        if have[0]:
            cases = await rows(
                "SELECT c.case_id, c.support_count, c.category, "
                "coalesce(r.region->>'kelurahan', c.kelurahan_code), c.last_at, "
                "left(r.text_original, 140), r.status FROM cases c "
                "LEFT JOIN reports r ON r.report_id = c.first_report_id "
                "ORDER BY c.support_count DESC, c.last_at DESC LIMIT 8"
            )
        if not cases:  # no cases table yet, or nothing in it: group the reports by their case id
            cases = await rows(
                "SELECT case_id, count(*), max(category), max(region->>'kelurahan'), max(received_at), "
                "left(min(text_original), 140), min(status) FROM reports WHERE case_id IS NOT NULL "
                "GROUP BY case_id HAVING count(*) > 1 ORDER BY 2 DESC, 5 DESC LIMIT 8"
            )
        out["top_cases"] = [
            {
                "case_id": c[0],
                "supporters": c[1],
                "category": c[2],
                "kelurahan": c[3],
                "last_at": c[4],
                "text": c[5],
                "status": c[6],
            }
            for c in cases
        ]

        out["map"] = {
            "kelurahan": dict(
                await rows(
                    f"SELECT kelurahan_code, count(*) FROM reports WHERE received_at >= {TODAY} "  # noqa: S608
                    "AND kelurahan_code IS NOT NULL GROUP BY 1"
                )
            ),
            "points": [],
        }
        for rid, lat, lon, category, status in await rows(
            f"SELECT report_id::text, lat, lon, category, status FROM reports WHERE received_at >= {TODAY} "  # noqa: S608
            "AND lat IS NOT NULL AND lon IS NOT NULL ORDER BY received_at DESC LIMIT 3000"
        ):
            xy = geo.project_point(lat, lon)
            if xy:
                out["map"]["points"].append({"id": rid, "x": xy[0], "y": xy[1], "c": category, "s": status})

        from .surges import surge_rows  # issue #17: open surges on the map and in a list

        out["surges"] = await surge_rows(conn)
        from .notifications import undelivered_rows  # issue #20: what never reached the citizen

        out["undelivered"] = await undelivered_rows(conn, self.settings)
        from .models import model_rows  # issue #16: the live model, its shadow, how right each is

        out["models"] = await model_rows(conn)

        tracking = "tracking_number" if has_tracking else "NULL"
        out["recent"] = [
            {
                "report_id": r[0],
                "tracking_number": r[1],
                "received_at": r[2],
                "channel": r[3],
                "category": r[4],
                "agency": r[5],
                "kelurahan": r[6],
                "status": r[7],
                "text": r[8],
            }
            for r in await rows(
                f"SELECT report_id::text, {tracking}, received_at, channel, category, "  # noqa: S608
                "coalesce(agency, routed_to), region->>'kelurahan', status, left(text_original, 90) "
                "FROM reports ORDER BY received_at DESC LIMIT 12"
            )
        ]
        from ..media.dashboard import media_totals  # issue #21: photos kept, waiting, not kept

        out["media"] = await media_totals(conn)
        return out

    async def _sample_lag(self) -> None:
        from ..ops.lag import consumer_lag
        from ..ops.telemetry import CONSUMER_LAG_TOTAL

        try:
            parts = await asyncio.wait_for(consumer_lag(self.settings), 15)
            self.lag = {
                "total": sum(p.lag for p in parts),
                "partitions": [p.__dict__ for p in parts if p.lag or p.end],
                "error": None,
            }
            CONSUMER_LAG_TOTAL.set(self.lag["total"])
        except Exception as exc:
            self.lag = {**self.lag, "error": f"{type(exc).__name__}: {exc}"[:200]}

    async def collect(self) -> dict[str, Any]:
        if time.monotonic() - self._lag_at > max(self.settings.dashboard_refresh_s * 2, 4):
            self._lag_at = time.monotonic()
            await self._sample_lag()
        snap: dict[str, Any] = {"generated_at": datetime.now(UTC).isoformat(), "colours": colours()}
        try:
            async with await psycopg.AsyncConnection.connect(
                self.dsn, connect_timeout=5, options="-c statement_timeout=8000"
            ) as conn:
                snap.update(await self._store(conn))
            self.errors.pop("store", None)
        except Exception as exc:
            self.errors["store"] = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("dashboard could not read the CRM store: %s", exc)
            snap.update({k: v for k, v in self.snapshot.items() if k not in snap})
        dl = self.deadletters
        snap["dead_letters"] = {
            "total": dl.total,
            "today": dl.today,
            "by_code": dict(dl.by_code.most_common()),
            "by_channel": dict(dl.by_channel.most_common()),
            "recent": list(dl.recent)[:10],
            "connected": dl.connected,
        }
        snap["lag"] = self.lag
        snap["errors"] = dict(self.errors)
        return snap

    async def run(self) -> None:
        while True:
            try:
                self.snapshot = await self.collect()
                self.latest = b"event: snapshot\ndata: " + _dumps(self.snapshot) + b"\n\n"
                for q in list(self.subscribers):
                    if q.full():
                        with contextlib.suppress(asyncio.QueueEmpty):
                            q.get_nowait()
                    q.put_nowait(self.latest)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dashboard snapshot failed")
            await asyncio.sleep(self.settings.dashboard_refresh_s)

    # ------------------------------------------------------------------ one report
    async def report(self, ident: str) -> dict[str, Any] | None:
        async with await psycopg.AsyncConnection.connect(
            self.dsn, connect_timeout=5, options="-c statement_timeout=8000"
        ) as conn:
            conn.row_factory = psycopg.rows.dict_row  # type: ignore[assignment]
            cur = await conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'reports' "
                "AND table_schema = current_schema()"
            )
            cols = {r["column_name"] for r in await cur.fetchall()}
            where = "report_id::text = %s"
            if "tracking_number" in cols:
                where += " OR tracking_number = %s"
                params: tuple[Any, ...] = (ident, ident)
            else:
                params = (ident,)
            row = await (
                await conn.execute(f"SELECT * FROM reports WHERE {where} LIMIT 1", params)  # noqa: S608
            ).fetchone()
            if row is None:
                return None
            rid = str(row["report_id"])
            history: list[dict[str, Any]] = []
            case: dict[str, Any] | None = None
            flags = await (
                await conn.execute(
                    "SELECT to_regclass('status_history') IS NOT NULL AS h, "
                    "to_regclass('cases') IS NOT NULL AS c"
                )
            ).fetchone()
            if flags and flags["h"]:
                history = await (
                    await conn.execute(
                        "SELECT from_status, to_status, actor, note, agency, agency_unit, changed_at "
                        "FROM status_history WHERE report_id = %s ORDER BY changed_at, history_id",
                        (rid,),
                    )
                ).fetchall()
            if row.get("case_id"):
                if flags and flags["c"]:
                    from .cases import case_panel  # issue #23: recurrence, candidates, split/merge

                    case = await case_panel(conn, row["case_id"])
                if case is None:
                    n = await (
                        await conn.execute(
                            "SELECT count(*) AS n FROM reports WHERE case_id = %s", (row["case_id"],)
                        )
                    ).fetchone()
                    case = {"case_id": row["case_id"], "support_count": n["n"] if n else 1}
            from ..media.dashboard import report_media  # issue #21: thumbnails, failed fetches

            media = await report_media(conn, rid)
        report = {k: v for k, v in row.items() if k not in ("reporter_id",)}
        report["report_id"] = rid
        return {
            "report": report,
            "media": media,
            "case": case,
            "history": history,
            "dead_letters": self.deadletters.by_report.get(rid, []),
            "colours": colours(),
            "dedup": {
                "ttl_days": self.settings.dedup_ttl_s // 86400,
                "text_window_s": self.settings.dedup_text_window_s,
            },
        }


COLLECTOR: web.AppKey[Collector] = web.AppKey("collector", Collector)


def _static(name: str, ctype: str) -> web.Response:
    return web.Response(body=(STATIC / name).read_bytes(), content_type=ctype, charset="utf-8")


async def index(_: web.Request) -> web.Response:
    return _static("index.html", "text/html")


async def report_page(_: web.Request) -> web.Response:
    return _static("report.html", "text/html")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    types = {".js": "application/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    ext = name[name.rfind(".") :]
    if "/" in name or ".." in name or ext not in types or not (STATIC / name).is_file():
        raise web.HTTPNotFound()
    return _static(name, types[ext])


async def api_snapshot(request: web.Request) -> web.Response:
    c = request.app[COLLECTOR]
    snap = c.snapshot or await c.collect()
    return web.Response(body=_dumps(snap), content_type="application/json")


async def api_map(_: web.Request) -> web.Response:
    m = geo.svg_map()
    body = {"width": m["width"], "height": m["height"], "areas": m["areas"]}
    return web.Response(
        body=_dumps(body), content_type="application/json", headers={"Cache-Control": "max-age=3600"}
    )


async def api_report(request: web.Request) -> web.Response:
    found = await request.app[COLLECTOR].report(request.match_info["id"])
    if found is None:
        return web.Response(status=404, body=b'{"error": "no such report"}', content_type="application/json")
    return web.Response(body=_dumps(found), content_type="application/json")


async def events(request: web.Request) -> web.StreamResponse:
    c = request.app[COLLECTOR]
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await resp.prepare(request)
    q: asyncio.Queue[bytes] = asyncio.Queue(maxsize=2)
    c.subscribers.add(q)
    try:
        await resp.write(b"retry: 2000\n\n")
        if c.latest:
            await resp.write(c.latest)
        while True:
            try:
                data = await asyncio.wait_for(q.get(), 15)
            except TimeoutError:
                data = b": keep-alive\n\n"
            await resp.write(data)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        c.subscribers.discard(q)
    return resp


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    from ..ops.health import readiness

    result = await readiness(request.app[COLLECTOR].settings, need=("kafka", "database"))
    return web.Response(
        status=200 if result["ready"] else 503, body=_dumps(result), content_type="application/json"
    )


async def metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(settings: Settings | None = None) -> web.Application:
    settings = settings or get_settings()
    app = web.Application()
    collector = Collector(settings)
    app[COLLECTOR] = collector
    app.router.add_get("/", index)
    app.router.add_get("/report/{id}", report_page)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/snapshot", api_snapshot)
    app.router.add_get("/api/map", api_map)
    app.router.add_get("/api/report/{id}", api_report)
    app.router.add_get("/events", events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    from ..media.dashboard import add_thumbnail_route

    add_thumbnail_route(app, settings)
    from .cases import add_case_routes  # issue #23: an officer's split and merge, through the officer API

    add_case_routes(app, settings)

    async def background(app: web.Application):
        tasks = [asyncio.create_task(collector.deadletters.run()), asyncio.create_task(collector.run())]
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    app.cleanup_ctx.append(background)
    return app


async def serve(host: str | None = None, port: int | None = None) -> None:
    settings = get_settings()
    host, port = host or settings.dashboard_host, port or settings.dashboard_port
    runner = web.AppRunner(build_app(settings), access_log=None, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("dashboard on http://%s:%s", host, port)
    print(f"dashboard: http://{host}:{port}/", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
