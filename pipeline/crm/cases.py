"""Cases for officers: what a case holds and why, when it closes, and correcting grouping.

* **Closing.** A case closes when every report of it is Selesai or TL Ditolak (:func:`close_if_done`, in
  the status service's transaction), or when an officer merges it into another. Grouping is told through
  Redis (:func:`tell_grouping`): a later report of the same problem opens a new case linked to this one
  (``previous_case_id``, ``occurrence``). Grouping also stops joining a case 30 days after its first
  report (``pipeline/processors/group.py``).
* **Reading.** :meth:`CaseService.case` returns a case with every member's score against the rest of the
  case and what drove it (text similarity, distance, days, shared and differing words, named places),
  its previous and next occurrences and the open cases grouping flagged as perhaps the same problem.
* **Correcting.** :meth:`CaseService.split` moves one report out of a case into a case of its own;
  :meth:`CaseService.merge` moves every report of one case into another. Each is a row of
  ``case_corrections`` (``event_id`` makes a retry a replay) and the pairs of reports it says something
  about go to ``case_pair_labels`` (label 0 for a split, 1 for a merge): the live store's labelled pairs,
  counted by ``crm-pipeline cases quality --since DATE`` (:meth:`CaseService.quality`).

These are case corrections; officers' re-routing corrections of the classifier are separate (#16).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import datetime
from typing import Any

import orjson
import psycopg
import redis.asyncio as aioredis
from aiohttp import web
from psycopg.rows import dict_row

from ..processors import redis_batch
from ..processors.cases_redis import mark_closed, split_out, store_ttl_s
from ..processors.group import GroupItem, explain
from ..settings import Settings
from .status import FINAL

log = logging.getLogger("pipeline.cases")

FINAL_STATUSES = FINAL  # Selesai, TL Ditolak
#: reports of a case listed (with their explanations) and labelled pairs a correction records, at most
MAX_MEMBERS = 200
MAX_PAIRS = 500

_CLOSE = """
UPDATE cases AS c SET closed_at = now(), updated_at = now(),
    closed_reason = CASE WHEN EXISTS (SELECT 1 FROM reports r
                                      WHERE r.case_id = c.case_id AND r.status = 'Selesai')
                         THEN 'Selesai' ELSE 'TL Ditolak' END
WHERE c.case_id = (SELECT case_id FROM reports WHERE report_id = %s::uuid) AND c.closed_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM reports r WHERE r.case_id = c.case_id
                  AND r.status NOT IN ('Selesai', 'TL Ditolak'))
RETURNING c.case_id, c.closed_reason
"""

_RECOUNT = """
UPDATE cases AS c SET support_count = s.n, first_report_id = s.first_id, first_at = s.first_at,
    last_at = s.last_at, updated_at = now()
FROM (SELECT count(*) AS n, (array_agg(report_id ORDER BY received_at, report_id))[1] AS first_id,
             min(received_at) AS first_at, max(received_at) AS last_at
      FROM reports WHERE case_id = %(case)s) AS s
WHERE c.case_id = %(case)s AND s.n > 0
"""


class CaseError(Exception):
    """A refused case request: HTTP status, a code and the reason officers read."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason


async def close_if_done(conn: psycopg.AsyncConnection[Any], report_id: str) -> list[tuple[str, str]]:
    """Close the report's case if every report of it is now final; the (case, reason) closed."""
    cur = await conn.execute(_CLOSE, (report_id,))
    rows = await cur.fetchall()
    return [(r[0], r[1]) if isinstance(r, tuple) else (r["case_id"], r["closed_reason"]) for r in rows]


async def _redis(settings: Settings) -> aioredis.Redis:
    return aioredis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)


async def tell_grouping(settings: Settings, closed: list[tuple[str, str]]) -> None:
    """Mark closed cases in grouping's Redis so no report joins them any more. Best effort: the store is
    the record; if Redis is down, grouping still stops joining the case when it reaches its maximum age."""
    if not closed:
        return
    client = await _redis(settings)
    try:
        for case_id, reason in closed:
            await mark_closed(client, settings.topic_namespace, case_id, reason, store_ttl_s())
    except (aioredis.RedisError, OSError) as exc:
        log.warning("could not tell grouping that %s closed: %s", [c for c, _ in closed], exc)
    finally:
        await redis_batch.aclose(client)


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


class CaseService:
    """Reads and corrects cases in the CRM store (owner connection, as the status service)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self.settings.database_url.get_secret_value(), connect_timeout=5, row_factory=dict_row
        )

    # ------------------------------------------------------------------------------------ reading
    async def case(self, case_id: str) -> dict[str, Any] | None:
        async with await self._connect() as conn:
            row = await (await conn.execute("SELECT * FROM cases WHERE case_id = %s", (case_id,))).fetchone()
            if row is None:
                return None
            members = await (
                await conn.execute(
                    "SELECT report_id::text, tracking_number, received_at, status, agency, category, "
                    "kelurahan_code, lat, lon, coalesce(text_normalised, text_original) AS text_normalised, "
                    "coalesce(text_public, text_original) AS text, route_reason FROM reports "
                    "WHERE case_id = %s ORDER BY received_at, report_id LIMIT %s",
                    (case_id, MAX_MEMBERS),
                )
            ).fetchall()
            later = await (
                await conn.execute(
                    "SELECT case_id FROM cases WHERE previous_case_id = %s ORDER BY first_at", (case_id,)
                )
            ).fetchall()
            flagged = await (  # the link goes both ways: cases whose reports were flagged as perhaps this one
                await conn.execute(
                    "SELECT case_id FROM cases WHERE %s = ANY(candidates) AND merged_into IS NULL "
                    "ORDER BY first_at",
                    (case_id,),
                )
            ).fetchall()
        items = [
            GroupItem(
                m["report_id"],
                m["category"],
                m["text_normalised"] or "",
                m["received_at"],
                m["lat"],
                m["lon"],
                m["kelurahan_code"],
            )
            for m in members
        ]
        out_members = []
        for m, it in zip(members, items, strict=True):
            why = explain(it, [o for o in items if o is not it]) if len(items) > 1 else {"score": None}
            out_members.append(
                {
                    "report_id": m["report_id"],
                    "tracking_number": m["tracking_number"],
                    "received_at": _iso(m["received_at"]),
                    "status": m["status"],
                    "agency": m["agency"],
                    "text": m["text"],
                    "route_reason": m["route_reason"],
                    "score": why.pop("score"),
                    "explanation": why,
                }
            )
        return {
            "case_id": row["case_id"],
            "category": row["category"],
            "kelurahan_code": row["kelurahan_code"],
            "first_at": _iso(row["first_at"]),
            "last_at": _iso(row["last_at"]),
            "support_count": row["support_count"],
            "occurrence": row["occurrence"],
            "previous_case_id": row["previous_case_id"],
            "next_case_ids": [r["case_id"] for r in later],
            "candidates": list(dict.fromkeys([*(row["candidates"] or []), *(r["case_id"] for r in flagged)])),
            "closed_at": _iso(row["closed_at"]),
            "closed_reason": row["closed_reason"],
            "merged_into": row["merged_into"],
            "members": out_members,
        }

    async def agencies(self, case_ids: list[str]) -> set[str | None]:
        """The agencies holding reports of these cases (what an agency-bound key may see)."""
        async with await self._connect() as conn:
            rows = await (
                await conn.execute("SELECT DISTINCT agency FROM reports WHERE case_id = ANY(%s)", (case_ids,))
            ).fetchall()
        return {r["agency"] for r in rows}

    # --------------------------------------------------------------------------------- correcting
    async def split(
        self, case_id: str, report_ref: str, actor: str, note: str | None = None, event_id: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Move one report out of ``case_id`` into a new case. Returns (correction, replayed)."""
        event_id = event_id or f"split:{uuid.uuid4()}"
        async with await self._connect() as conn, conn.transaction():
            done = await self._replay(conn, event_id, "split", case_id)
            if done is not None:
                return done, True
            case = await self._lock_case(conn, case_id)
            report = await self._report(conn, report_ref)
            if report is None:
                raise CaseError(404, "unknown_report", f"no report {report_ref!r}")
            if report["case_id"] != case_id:
                raise CaseError(409, "not_in_case", f"report {report_ref} is not in case {case_id}")
            members = [
                r["report_id"]
                for r in await (
                    await conn.execute(
                        "SELECT report_id::text FROM reports WHERE case_id = %s "
                        "ORDER BY received_at, report_id "
                        "FOR UPDATE",
                        (case_id,),
                    )
                ).fetchall()
            ]
            if len(members) < 2:
                raise CaseError(409, "single_report", f"case {case_id} has one report: nothing to split")
            rid = report["report_id"]
            new_case = f"case-{rid}-{hashlib.sha256(event_id.encode()).hexdigest()[:8]}"
            correction = await self._record(conn, event_id, "split", case_id, new_case, rid, actor, note)
            await conn.execute(
                "UPDATE reports SET case_id = %s, updated_at = now() WHERE report_id = %s::uuid",
                (new_case, rid),
            )
            await conn.execute(
                "INSERT INTO cases (case_id, category, kelurahan_code, first_report_id, first_at, last_at, "
                "support_count) VALUES (%s, %s, %s, %s::uuid, %s, %s, 1)",
                (
                    new_case,
                    report["category"] or case["category"],
                    report["kelurahan_code"] or case["kelurahan_code"],
                    rid,
                    report["received_at"],
                    report["received_at"],
                ),
            )
            await conn.execute(_RECOUNT, {"case": case_id})
            pairs = [(rid, m, 0, True) for m in members if m != rid][:MAX_PAIRS]
            await self._pairs(conn, correction["correction_id"], pairs)
            correction["pairs"] = len(pairs)
        item = GroupItem(
            rid,
            report["category"] or case["category"],
            report["text"] or "",
            report["source_at"] or report["received_at"],
            report["lat"],
            report["lon"],
            report["kelurahan_code"] or case["kelurahan_code"],
        )
        await self._tell_split(item, case_id, new_case)
        return correction, False

    async def merge(
        self, case_id: str, other_id: str, actor: str, note: str | None = None, event_id: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Move every report of ``other_id`` into ``case_id``; ``other_id`` is closed as merged."""
        event_id = event_id or f"merge:{uuid.uuid4()}"
        if other_id == case_id:
            raise CaseError(422, "same_case", "a case cannot be merged into itself")
        async with await self._connect() as conn, conn.transaction():
            done = await self._replay(conn, event_id, "merge", case_id)
            if done is not None:
                return done, True
            first, second = sorted((case_id, other_id))  # lock in one order: two merges cannot deadlock
            locked = {first: await self._lock_case(conn, first), second: await self._lock_case(conn, second)}
            for cid, row in locked.items():
                if row["merged_into"]:
                    raise CaseError(409, "already_merged", f"case {cid} was merged into {row['merged_into']}")

            async def reports_of(cid: str) -> list[str]:
                cur = await conn.execute(
                    "SELECT report_id::text FROM reports WHERE case_id = %s ORDER BY received_at, report_id "
                    "FOR UPDATE",
                    (cid,),
                )
                return [r["report_id"] for r in await cur.fetchall()]

            kept, moved = await reports_of(case_id), await reports_of(other_id)
            correction = await self._record(conn, event_id, "merge", case_id, other_id, None, actor, note)
            await conn.execute(
                "UPDATE reports SET case_id = %s, updated_at = now() WHERE case_id = %s", (case_id, other_id)
            )
            await conn.execute(_RECOUNT, {"case": case_id})
            await conn.execute(
                "UPDATE cases SET candidates = array_remove(candidates, %s), updated_at = now() "
                "WHERE case_id = %s",
                (other_id, case_id),
            )
            await conn.execute(  # whoever flagged the merged case now flags the case it went into
                "UPDATE cases SET candidates = array_replace(candidates, %s, %s), updated_at = now() "
                "WHERE %s = ANY(candidates) AND case_id <> %s",
                (other_id, case_id, other_id, case_id),
            )
            await conn.execute(
                "UPDATE cases SET merged_into = %s, closed_at = now(), closed_reason = 'merged', "
                "updated_at = now() WHERE case_id = %s",
                (case_id, other_id),
            )
            pairs = [(a, b, 1, False) for a in kept for b in moved][:MAX_PAIRS]
            await self._pairs(conn, correction["correction_id"], pairs)
            correction["pairs"] = len(pairs)
            correction["moved"] = len(moved)
        await tell_grouping(self.settings, [(other_id, f"merged:{case_id}")])
        return correction, False

    async def _lock_case(self, conn: psycopg.AsyncConnection[Any], case_id: str) -> dict[str, Any]:
        row = await (
            await conn.execute("SELECT * FROM cases WHERE case_id = %s FOR UPDATE", (case_id,))
        ).fetchone()
        if row is None:
            raise CaseError(404, "unknown_case", f"no case {case_id!r}")
        return row

    @staticmethod
    async def _report(conn: psycopg.AsyncConnection[Any], ref: str) -> dict[str, Any] | None:
        try:
            rid: str | None = str(uuid.UUID(ref))
        except ValueError:
            rid = None
        cur = await conn.execute(
            "SELECT report_id::text, tracking_number, case_id, category, kelurahan_code, received_at, "
            "source_at, lat, lon, coalesce(text_normalised, text_original) AS text "
            "FROM reports WHERE " + ("report_id = %s::uuid" if rid else "tracking_number = %s"),
            (rid or ref,),
        )
        return await cur.fetchone()

    async def _replay(
        self, conn: psycopg.AsyncConnection[Any], event_id: str, kind: str, case_id: str
    ) -> dict[str, Any] | None:
        row = await (
            await conn.execute("SELECT * FROM case_corrections WHERE event_id = %s", (event_id,))
        ).fetchone()
        if row is None:
            return None
        if row["kind"] != kind or row["case_id"] != case_id:
            raise CaseError(409, "event_id_reused", f"event {event_id!r} is another correction's")
        n = await (
            await conn.execute(
                "SELECT count(*) AS n FROM case_pair_labels WHERE correction_id = %s", (row["correction_id"],)
            )
        ).fetchone()
        return {**self._public(row), "pairs": n["n"] if n else 0}

    async def _record(
        self,
        conn: psycopg.AsyncConnection[Any],
        event_id: str,
        kind: str,
        case_id: str,
        other: str,
        report_id: str | None,
        actor: str,
        note: str | None,
    ) -> dict[str, Any]:
        row = await (
            await conn.execute(
                "INSERT INTO case_corrections "
                "(event_id, kind, case_id, other_case_id, report_id, actor, note) "
                "VALUES (%s, %s, %s, %s, %s::uuid, %s, %s) RETURNING *",
                (event_id, kind, case_id, other, report_id, actor[:200], (note or "")[:2000] or None),
            )
        ).fetchone()
        assert row is not None
        return self._public(row)

    @staticmethod
    def _public(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "correction_id": row["correction_id"],
            "event_id": row["event_id"],
            "kind": row["kind"],
            "case_id": row["case_id"],
            "other_case_id": row["other_case_id"],
            "report_id": str(row["report_id"]) if row["report_id"] else None,
            "actor": row["actor"],
            "note": row["note"],
            "created_at": _iso(row["created_at"]),
        }

    @staticmethod
    async def _pairs(conn: psycopg.AsyncConnection[Any], correction_id: int, pairs: list[tuple]) -> None:
        if not pairs:
            return
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO case_pair_labels (correction_id, report_a, report_b, label, grouped_together) "
                "VALUES (%s, %s::uuid, %s::uuid, %s, %s) ON CONFLICT DO NOTHING",
                [(correction_id, *p) for p in pairs],
            )

    async def _tell_split(self, item: GroupItem, case_id: str, new_case: str) -> None:
        """Grouping learns the split: a redelivered copy of the report keeps its new case (grouping reads
        its decision first), and a repeat of it joins the new case rather than the old one."""
        client = await _redis(self.settings)
        try:
            await split_out(client, self.settings.topic_namespace, item, case_id, new_case)
        except (aioredis.RedisError, OSError) as exc:
            log.warning("could not tell grouping about the split of %s: %s", item.report_id, exc)
        finally:
            await redis_batch.aclose(client)

    # ----------------------------------------------------------------------------------- quality
    async def quality(self, since: datetime) -> dict[str, Any]:
        """Grouping on the live store since ``since``: its merges, the officers' corrections of them and
        the labelled pairs those made, cases opened, recurring, closed."""
        q = {
            "reports": "SELECT count(*) AS n FROM reports WHERE received_at >= %(s)s",
            "joined": "SELECT count(*) AS n FROM reports WHERE received_at >= %(s)s "
            "AND route_reason LIKE '%%case: joined case%%'",
            "cases_opened": "SELECT count(*) AS n FROM reports WHERE received_at >= %(s)s "
            "AND route_reason LIKE '%%case: new case%%'",
            "recurring": "SELECT count(*) AS n FROM cases WHERE first_at >= %(s)s AND occurrence > 1",
            "flagged": "SELECT count(*) AS n FROM cases WHERE first_at >= %(s)s "
            "AND cardinality(candidates) > 0",
            "splits": "SELECT count(*) AS n FROM case_corrections WHERE created_at >= %(s)s "
            "AND kind = 'split'",
            "merges": "SELECT count(*) AS n FROM case_corrections WHERE created_at >= %(s)s "
            "AND kind = 'merge'",
            "split_grouped": "SELECT count(*) AS n FROM case_corrections k JOIN reports r USING (report_id) "
            "WHERE k.created_at >= %(s)s AND k.kind = 'split' "
            "AND r.route_reason LIKE '%%case: joined case%%'",
            "merges_flagged": "SELECT count(*) AS n FROM case_corrections k WHERE k.created_at >= %(s)s "
            "AND k.kind = 'merge' AND EXISTS (SELECT 1 FROM cases t, cases c WHERE t.case_id = k.case_id "
            "AND c.case_id = k.other_case_id "
            "AND (c.case_id = ANY(t.candidates) OR t.case_id = ANY(c.candidates)))",
            "pairs_same": "SELECT count(*) AS n FROM case_pair_labels p JOIN case_corrections k "
            "USING (correction_id) WHERE k.created_at >= %(s)s AND p.label = 1",
            "pairs_different": "SELECT count(*) AS n FROM case_pair_labels p JOIN case_corrections k "
            "USING (correction_id) WHERE k.created_at >= %(s)s AND p.label = 0",
        }
        out: dict[str, Any] = {"since": since.isoformat()}
        async with await self._connect() as conn:
            for name, sql in q.items():
                row = await (await conn.execute(sql, {"s": since})).fetchone()  # type: ignore[arg-type]
                out[name] = row["n"] if row else 0
            closed = await (
                await conn.execute(
                    "SELECT closed_reason, count(*) AS n FROM cases WHERE closed_at >= %s GROUP BY 1",
                    (since,),
                )
            ).fetchall()
        out["closed"] = {r["closed_reason"]: r["n"] for r in closed}
        joined = out["joined"]
        # Of grouping's merges, the share officers left standing (no split of the report since).
        out["merge_precision"] = round(1 - out["split_grouped"] / joined, 3) if joined else None
        return out


def format_quality(q: dict[str, Any]) -> str:
    precision = "-" if q["merge_precision"] is None else f"{q['merge_precision']:.3f}"
    closed = ", ".join(f"{k} {v}" for k, v in sorted(q["closed"].items())) or "none"
    return "\n".join(
        [
            f"cases on the live store since {q['since']}",
            f"  reports stored            {q['reports']}",
            f"  joined to a case          {q['joined']}  (grouping's merges)",
            f"  cases opened              {q['cases_opened']}  ({q['recurring']} recurring, "
            f"{q['flagged']} with duplicate candidates)",
            f"  cases closed              {closed}",
            f"  officer corrections       {q['splits']} split, {q['merges']} merge "
            f"({q['merges_flagged']} of the merges had been flagged as candidates)",
            f"  labelled pairs            {q['pairs_different']} different (splits), "
            f"{q['pairs_same']} the same (merges)",
            f"  merge precision           {precision}  (grouping's merges not split out again: "
            f"{q['joined'] - q['split_grouped']} of {q['joined']})",
        ]
    )


# ------------------------------------------------------------------------------------- HTTP routes
class CaseRoutes:
    """``GET /v1/cases/{case_id}``, ``POST /v1/cases/{case_id}/split``, ``POST /v1/cases/{case_id}/merge``
    on the officer API (``api`` gives the key check and the error format)."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.service = CaseService(api.settings)

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/v1/cases/{case_id}", self.get)
        app.router.add_post("/v1/cases/{case_id}/split", self.split)
        app.router.add_post("/v1/cases/{case_id}/merge", self.merge)

    def _key(self, request: web.Request, write: bool) -> Any:
        from ..open311.keys import CASES_WRITE, STATUS_WRITE, KeyRefused

        if write:
            return self.api.auth(request, CASES_WRITE)
        try:
            return self.api.auth(request, CASES_WRITE)
        except KeyRefused as exc:
            if exc.status != 403:
                raise
            return self.api.auth(request, STATUS_WRITE)

    async def _visible(self, key: Any, case_ids: list[str]) -> None:
        """A key bound to agencies works on cases with reports of its agencies (others look absent)."""
        if key.agencies is None:
            return
        for cid in case_ids:
            if not any(key.sees(a) for a in await self.service.agencies([cid])):
                raise CaseError(404, "unknown_case", f"no case {cid!r}")

    def _case_id(self, request: web.Request) -> str:
        case_id = request.match_info["case_id"]
        if "\x00" in case_id or len(case_id) > 200:
            raise self._error(CaseError(404, "unknown_case", "no such case"))
        return case_id

    def _error(self, exc: CaseError) -> Exception:
        from ..open311.api import ApiError

        return ApiError(exc.status, exc.reason, exc.code)

    async def get(self, request: web.Request) -> web.Response:
        key = self._key(request, write=False)
        case_id = self._case_id(request)
        try:
            await self._visible(key, [case_id])
            found = await self.service.case(case_id)
        except CaseError as exc:
            raise self._error(exc) from None
        if found is None:
            raise self._error(CaseError(404, "unknown_case", f"no case {case_id!r}"))
        return web.Response(body=orjson.dumps(found), content_type="application/json")

    async def _body(self, request: web.Request, required: str) -> dict[str, Any]:
        try:
            body = orjson.loads(await request.read() or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            value = body.get(required)
            if not isinstance(value, str) or not value.strip() or len(value) > 200:
                raise ValueError(f"'{required}' is required (1-200 characters)")
            for name in ("actor", "note", "event_id"):
                if body.get(name) is not None and not isinstance(body[name], str):
                    raise ValueError(f"'{name}' must be a string")
            for name in (required, "actor", "note", "event_id"):
                if "\x00" in (body.get(name) or ""):
                    raise ValueError(f"'{name}' holds a NUL character")
            if len(body.get("actor") or "") > 200 or len(body.get("note") or "") > 2000:
                raise ValueError("'actor' is at most 200 characters, 'note' at most 2000")
            if body.get("event_id") is not None and not 1 <= len(body["event_id"]) <= 200:
                raise ValueError("'event_id' is 1-200 characters")
        except (ValueError, orjson.JSONDecodeError) as exc:
            raise self._error(CaseError(422, "invalid_body", f"invalid correction: {exc}")) from None
        return body

    async def split(self, request: web.Request) -> web.Response:
        key = self._key(request, write=True)
        case_id = self._case_id(request)
        body = await self._body(request, "report")
        actor = f"{key.consumer}:{body.get('actor') or 'petugas'}"[:200]
        try:
            await self._visible(key, [case_id])
            out, replayed = await self.service.split(
                case_id, body["report"].strip(), actor, body.get("note"), body.get("event_id")
            )
        except CaseError as exc:
            raise self._error(exc) from None
        return web.Response(
            body=orjson.dumps(out), status=200 if replayed else 201, content_type="application/json"
        )

    async def merge(self, request: web.Request) -> web.Response:
        key = self._key(request, write=True)
        case_id = self._case_id(request)
        body = await self._body(request, "other")
        actor = f"{key.consumer}:{body.get('actor') or 'petugas'}"[:200]
        try:
            await self._visible(key, [case_id, body["other"].strip()])
            out, replayed = await self.service.merge(
                case_id, body["other"].strip(), actor, body.get("note"), body.get("event_id")
            )
        except CaseError as exc:
            raise self._error(exc) from None
        return web.Response(
            body=orjson.dumps(out), status=200 if replayed else 201, content_type="application/json"
        )
