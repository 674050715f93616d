"""The CRM store in PostgreSQL: versioned migrations and an idempotent, batched report sink."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib import resources
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from ..envelope import Report
from ..security import ContactCipher, seal_contact
from ..settings import Settings
from .base import BatchSink, PoisonRowError, TransientSinkError
from .bulk import copy_insert, copy_insert_returning
from .crm import record_intake

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 0x43524D  # advisory lock id: one migrator at a time


def _migrations() -> list[tuple[str, str]]:
    folder = resources.files("pipeline.sinks") / "migrations"
    files = sorted(p for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(p.name.removesuffix(".sql"), p.read_text(encoding="utf-8")) for p in files]


async def migrate(settings: Settings) -> list[str]:
    """Apply pending migrations in order, each in its own transaction. Safe to run concurrently."""
    applied: list[str] = []
    async with await psycopg.AsyncConnection.connect(settings.database_url.get_secret_value()) as conn:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {
                row[0]
                for row in await (await conn.execute("SELECT version FROM schema_migrations")).fetchall()
            }
            for version, sql in _migrations():
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)  # type: ignore[arg-type] - trusted package file
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied.append(version)
                log.info("applied migration %s", version)
    return applied


_REPORT_COLUMNS = (
    "report_id",
    "channel",
    "provider_id",
    "schema_version",
    "received_at",
    "source_at",
    "reporter_id",
    "private",
    "text_original",
    "text_normalised",
    "text_public",
    "category_hint",
    "lat",
    "lon",
    "address",
    "desk_office",
    "attachments",
    "raw_ref",
    "in_reply_to",
    "category",
    "confidence",
    "classifier",
    "kota_code",
    "kecamatan_code",
    "kelurahan_code",
    "region",
    "agency",
    "agency_unit",
    "routed_to",
    "route_reason",
    "case_id",
    "expected_by",
)
# A replayed or redelivered report changes nothing: the reports already stored are left out (_STORED)
# before the rest are copied in, or inserted with ON CONFLICT DO NOTHING (sinks/bulk.py).
_CONTACT_COLUMNS = ("report_id", "reporter_id", "name", "email", "phone", "handle", "key_id")
_STORED = "SELECT report_id FROM reports WHERE report_id = ANY(%s::uuid[])"


def _row(r: Report) -> tuple[Any, ...]:
    t = r.triage
    region = t.region if t else None
    loc = r.location
    return (
        r.report_id,
        r.channel,
        r.provider_id,
        r.schema_version,
        r.received_at,
        r.source_at,
        r.reporter.id,
        r.reporter.private,
        r.text,
        t.normalised_text if t else None,
        t.public_text if t else None,
        r.category_hint,
        loc.lat,
        loc.lon,
        loc.address,
        loc.desk_office,
        Jsonb([a.model_dump(exclude_none=True) for a in r.attachments], dumps=_dumps),
        Jsonb(r.raw_ref.model_dump(exclude_none=True), dumps=_dumps) if r.raw_ref else None,
        r.in_reply_to,
        t.category if t else None,
        t.confidence if t else None,
        t.classifier if t else None,
        region.kota_code if region else None,
        region.kecamatan_code if region else None,
        region.kelurahan_code if region else None,
        Jsonb(region.model_dump(exclude_none=True), dumps=_dumps) if region else None,
        t.agency if t else None,
        t.agency_unit if t else None,
        t.routed_to if t else None,
        t.route_reason if t else None,
        t.case_id if t else None,
        t.expected_by if t else None,
    )


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


class PostgresReportSink(BatchSink[Report]):
    """Writes a batch of reports (and, apart, their contacts) in one transaction."""

    def __init__(self, settings: Settings) -> None:
        self.dsn = settings.database_url.get_secret_value()
        self.cipher = ContactCipher.from_settings(settings)  # contacts are encrypted at rest (0003)
        # Idle connections. A write takes one for its transaction: the worker's agent instances
        # (CRM_WORKER_CONCURRENCY) write at the same time, and one connection carries one transaction.
        self._idle: list[psycopg.AsyncConnection] = []

    async def _acquire(self) -> psycopg.AsyncConnection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return await psycopg.AsyncConnection.connect(self.dsn, connect_timeout=5)

    async def write(self, batch: Sequence[Report]) -> int:
        if not batch:
            return 0
        conn = await self._connect_or_transient()
        try:
            try:
                fresh = await self._write(conn, batch, direct=True)
            except psycopg.errors.UniqueViolation:
                # Another writer stored one of these reports between the check and the copy (two
                # workers during a rebalance): again, through the staging path that tolerates it.
                fresh = await self._write(conn, batch, direct=False)
            self._idle.append(conn)
            return fresh
        except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as exc:
            self._idle.append(conn)  # the transaction was rolled back; the connection is fine
            raise PoisonRowError(f"{type(exc).__name__}: {exc}") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
            await conn.close()
            raise TransientSinkError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:  # cancelled mid-transaction: the connection's state is unknown
            await conn.close()
            raise

    async def _write(self, conn: psycopg.AsyncConnection, batch: Sequence[Report], direct: bool) -> int:
        """One transaction. ``direct``: the reports not stored yet are found first and copied
        straight into their tables, each row written once (issue #19: staging every row in a
        temporary table and moving it with ``INSERT … ON CONFLICT`` wrote it twice, with a
        speculative-insertion check per row, in every table a report touches)."""
        async with conn.transaction(), conn.cursor() as cur:
            if direct:
                first = list({r.report_id: r for r in reversed(batch)}.values())[::-1]  # one per id
                cur = await cur.execute(_STORED, ([r.report_id for r in first],))
                stored = {str(rid) for (rid,) in await cur.fetchall()}
                fresh = [r for r in first if r.report_id not in stored]
                await copy_insert(cur, "reports", _REPORT_COLUMNS, [_row(r) for r in fresh], direct=True)
            else:
                inserted = await copy_insert_returning(
                    cur, "reports", _REPORT_COLUMNS, [_row(r) for r in batch], ("report_id",)
                )
                # What follows an insert follows once: a replayed report (already stored) adds nothing.
                new_ids = {str(rid) for (rid,) in inserted}
                fresh = [r for r in batch if r.report_id in new_ids]
            contacts = [
                (
                    r.report_id,
                    r.reporter.id,
                    *seal_contact(
                        self.cipher,
                        r.report_id,
                        r.contact.name,
                        r.contact.email,
                        r.contact.phone,
                        r.contact.handle,
                    ),
                )
                for r in fresh
                if r.contact is not None
            ]
            await copy_insert(
                cur,
                "reporter_contacts",
                _CONTACT_COLUMNS,
                contacts,
                "ON CONFLICT (report_id) DO NOTHING",
                direct=direct,
            )
            # Issue #4: first status, assignment, case and acknowledgement, in the same transaction.
            await record_intake(cur, fresh, direct=direct)
        return len(fresh)

    async def _connect_or_transient(self) -> psycopg.AsyncConnection:
        try:
            return await self._acquire()
        except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
            raise TransientSinkError(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()


async def show_reports(settings: Settings, limit: int = 20) -> None:
    """Print the latest reports as stored (for ``make demo`` and for a quick look)."""
    async with await psycopg.AsyncConnection.connect(settings.database_url.get_secret_value()) as conn:
        rows = await (
            await conn.execute(
                "SELECT report_id, channel, received_at, status, coalesce(category, '-'), "
                "coalesce(agency, routed_to, '-'), left(text_original, 70) "
                "FROM reports ORDER BY received_at DESC LIMIT %s",
                (limit,),
            )
        ).fetchall()
    print(
        f"{'report_id':36}  {'channel':8} {'received (UTC)':19}  {'status':9} {'category':14} "
        f"{'route':16} text"
    )
    for rid, channel, received, status, category, route, text in rows:
        print(
            f"{rid!s:36}  {channel:8} {received:%Y-%m-%d %H:%M:%S}  {status:9} {category[:14]:14} "
            f"{route[:16]:16} {text}"
        )
    print(f"({len(rows)} shown)")
