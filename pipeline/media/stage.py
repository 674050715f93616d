"""The media stage: its own process (``crm-pipeline media run``), off the report's path.

It consumes the normalised topic (reports already triaged; the worker stores and routes them without
waiting for media) and, for each report with attachments, records one ``report_media`` row per
attachment as ``pending`` in the CRM store before committing the offset. A fetch loop then claims due
rows (``FOR UPDATE SKIP LOCKED``, so several media processes share the work), fetches each attachment
with its channel's fetcher, checks it, writes the original, the EXIF-free public copy and a thumbnail
to the object store (content-addressed: stored once), and marks the row ``stored``.

* A fetch that fails is retried after ``CRM_MEDIA_RETRY_FIRST_S``, then ``…×CRM_MEDIA_RETRY_FACTOR``,
  and after ``CRM_MEDIA_MAX_ATTEMPTS`` failures the row is ``failed``: on the dashboard and in
  ``crm-pipeline media failed``, never dropped silently.
* Content that may not be kept (not an image, too large, undecodable) is ``refused`` with the reason.
* The object store being down is not the attachment's failure: the row stays pending (no attempt is
  counted) and is retried every few seconds, so an outage loses no photo.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import orjson
import psycopg
from aiokafka import AIOKafkaConsumer
from prometheus_client import Counter
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ..envelope import Attachment, RawRef, Report, utcnow
from ..security import kafka_client_kwargs
from ..settings import Settings
from ..topics import Topics
from .check import Checked, MediaRefused, check_image
from .fetch import Fetchers, FetchFailed, MediaItem, TooLarge, connector
from .store import Keys, MediaStore, StoreUnavailable

log = logging.getLogger("pipeline.media")

MEDIA = Counter("crm_media_total", "attachments by outcome", ["channel", "outcome"])

#: a claimed row is invisible to other media processes this long (a crashed process's rows come back)
LEASE_S = 300
#: wait for the worker's store write of a report seen on the normalised topic, then give up on it
STORE_WAIT_S = 120.0
STORE_RETRY_MAX_S = 15.0


def allowed_types(settings: Settings) -> frozenset[str]:
    return frozenset(t.strip() for t in settings.media_allowed_types.split(",") if t.strip())


class MediaKeeper:
    """Writes an accepted image to the object store and records it: shared by the stage and the
    officers' uploads. Objects first, rows after: a crash in between only repeats no-op writes."""

    def __init__(self, settings: Settings, store: MediaStore | None = None) -> None:
        self.settings = settings
        self.store = store or MediaStore(settings)
        self.allowed = allowed_types(settings)

    def check(self, data: bytes, name: str | None = None, declared: str | None = None) -> Checked:
        return check_image(
            data, max_bytes=self.settings.media_max_bytes, allowed=self.allowed, name=name, declared=declared
        )

    async def put(self, checked: Checked, original: bytes) -> Keys:
        keys = Keys.for_sha(
            checked.sha256, checked.ext, "png" if checked.public_type == "image/png" else "jpg"
        )
        await self.store.put_once(keys.original, original, checked.media_type)
        await self.store.put_once(keys.public, checked.public, checked.public_type)
        await self.store.put_once(keys.thumb, checked.thumb, "image/jpeg")
        return keys

    @staticmethod
    async def record_object(cur: psycopg.AsyncCursor[Any], checked: Checked, keys: Keys) -> None:
        await cur.execute(
            "INSERT INTO media_objects (sha256, media_type, size, width, height, original_key, public_key,"
            " public_type, thumb_key, had_exif) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
            " ON CONFLICT (sha256) DO NOTHING",
            (
                checked.sha256,
                checked.media_type,
                checked.size,
                checked.width,
                checked.height,
                keys.original,
                keys.public,
                checked.public_type,
                keys.thumb,
                checked.had_exif,
            ),
        )


@dataclass
class Due:
    report_id: str
    kind: str
    idx: int
    channel: str
    source_url: str
    name: str | None
    declared_type: str | None
    attempts: int
    provider_id: str
    raw_ref: dict[str, Any] | None
    received_at: datetime


class MediaStage:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_namespace)
        self.keeper = MediaKeeper(settings)
        self.pool = AsyncConnectionPool(
            settings.database_url.get_secret_value(),
            min_size=1,
            max_size=settings.media_fetch_concurrency + 2,
            kwargs={"autocommit": True},
            open=False,
        )
        self.wake = asyncio.Event()
        self.http: aiohttp.ClientSession | None = None
        self.fetchers: Fetchers | None = None
        self._store_backoff = 1.0

    # ---------------------------------------------------------------------------------- intake
    @staticmethod
    def rows_for(report: Report) -> list[tuple[Any, ...]]:
        return [
            (report.report_id, "citizen", i, report.channel, a.url, a.name, a.media_type)
            for i, a in enumerate(report.attachments)
        ]

    async def record_pending(self, reports: list[Report]) -> int:
        """Pending rows for every attachment (a redelivery adds none). Waits for reports the worker has
        not committed yet; a report that never reaches the store (refused there: dead-lettered) is
        given up after STORE_WAIT_S."""
        waiting = [r for r in reports if r.attachments]
        added, deadline, delay = 0, asyncio.get_running_loop().time() + STORE_WAIT_S, 0.2
        while waiting:
            async with self.pool.connection() as conn:
                ids = [r.report_id for r in waiting]
                stored = {
                    str(row[0])
                    for row in await (
                        await conn.execute(
                            "SELECT report_id FROM reports WHERE report_id = ANY(%s::uuid[])", (ids,)
                        )
                    ).fetchall()
                }
                ready = [r for r in waiting if r.report_id in stored]
                rows = [row for r in ready for row in self.rows_for(r)]
                if rows:
                    async with conn.cursor() as cur:
                        await cur.executemany(
                            "INSERT INTO report_media (report_id, kind, idx, channel, source_url, name,"
                            " declared_type) VALUES (%s,%s,%s,%s,%s,%s,%s)"
                            " ON CONFLICT (report_id, kind, idx) DO NOTHING",
                            rows,
                            returning=False,
                        )
                        added += max(cur.rowcount, 0)
            waiting = [r for r in waiting if r.report_id not in stored]
            if not waiting:
                break
            if asyncio.get_running_loop().time() > deadline:
                for r in waiting:
                    log.warning("report %s never reached the store; its media are not fetched", r.report_id)
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        if added:
            self.wake.set()
        return added

    async def consume(self) -> None:
        consumer = AIOKafkaConsumer(
            self.topics.normalised,
            **kafka_client_kwargs(self.settings),
            group_id=f"{self.settings.worker_app_id}-media",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=(int(STORE_WAIT_S) + 180) * 1000,
        )
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=1000, max_records=500)
                reports: list[Report] = []
                for records in batch.values():
                    for record in records:
                        try:
                            report = Report.loads(record.value)
                        except Exception as exc:  # the worker wrote it; a bad record is a bug, not a stop
                            log.error("undecodable record on %s: %s", self.topics.normalised, exc)
                            continue
                        if report.attachments:
                            reports.append(report)
                if reports:
                    await self._until_recorded(reports)
                if batch:
                    await consumer.commit()
        finally:
            await consumer.stop()

    async def _until_recorded(self, reports: list[Report]) -> None:
        delay = 0.5
        while True:
            try:
                await self.record_pending(reports)
                return
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
                log.warning("CRM store unavailable, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    # ---------------------------------------------------------------------------------- fetching
    async def claim(self, limit: int) -> list[Due]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                """
                WITH due AS (
                    SELECT report_id, kind, idx FROM report_media
                    WHERE state = 'pending' AND next_attempt_at <= now()
                    ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED)
                UPDATE report_media m SET next_attempt_at = now() + make_interval(secs => %s)
                FROM due, reports r
                WHERE m.report_id = due.report_id AND m.kind = due.kind AND m.idx = due.idx
                  AND r.report_id = m.report_id
                RETURNING m.report_id::text, m.kind, m.idx, m.channel, m.source_url, m.name,
                          m.declared_type, m.attempts, r.provider_id, r.raw_ref, r.received_at
                """,
                (limit, LEASE_S),
            )
            return [Due(**row) for row in await cur.fetchall()]

    async def fetch_loop(self) -> None:
        limit = self.settings.media_fetch_concurrency
        while True:
            try:
                due = await self.claim(limit)
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
                log.warning("CRM store unavailable for the fetch loop: %s", exc)
                due = []
                await asyncio.sleep(2)
            if due:
                await asyncio.gather(*(self.process(d) for d in due))
                continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=1.0)

    async def process(self, due: Due) -> str:
        """One attachment, start to end; returns the row's new state."""
        assert self.fetchers is not None
        item = MediaItem(
            report_id=due.report_id,
            channel=due.channel,
            provider_id=due.provider_id,
            index=due.idx,
            attachment=Attachment(url=due.source_url, name=due.name, media_type=due.declared_type),
            raw_ref=RawRef(**due.raw_ref) if due.raw_ref else None,
            received_at_ms=int(due.received_at.timestamp() * 1000),
        )
        try:
            fetched = await asyncio.wait_for(
                self.fetchers.for_channel(due.channel).fetch(item),
                timeout=self.settings.media_fetch_timeout_s,
            )
        except TooLarge as exc:
            return await self._finish(due, "refused", exc.reason, "too_large", attempt=True)
        except FetchFailed as exc:
            return await self._failed_attempt(due, exc.reason, permanent=exc.permanent)
        except TimeoutError:
            return await self._failed_attempt(
                due, f"no answer within {self.settings.media_fetch_timeout_s:.0f} s"
            )
        try:
            checked = self.keeper.check(
                fetched.data, name=due.name or fetched.name, declared=due.declared_type
            )
        except MediaRefused as exc:
            return await self._finish(due, "refused", exc.reason, exc.code, attempt=True)
        try:
            keys = await self.keeper.put(checked, fetched.data)
        except StoreUnavailable as exc:
            return await self._store_down(due, str(exc))
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await MediaKeeper.record_object(cur, checked, keys)
            await cur.execute(
                "UPDATE report_media SET state = 'stored', sha256 = %s, gps_lat = %s, gps_lon = %s,"
                " attempts = attempts + 1, reason = NULL, code = NULL, updated_at = now()"
                " WHERE report_id = %s AND kind = %s AND idx = %s",
                (
                    checked.sha256,
                    checked.gps[0] if checked.gps else None,
                    checked.gps[1] if checked.gps else None,
                    due.report_id,
                    due.kind,
                    due.idx,
                ),
            )
        self._store_backoff = 1.0
        MEDIA.labels(due.channel, "stored").inc()
        log.info("stored %s/%s #%d as %s", due.report_id, due.kind, due.idx, checked.sha256[:12])
        return "stored"

    async def _failed_attempt(self, due: Due, reason: str, permanent: bool = False) -> str:
        attempts = due.attempts + 1
        if permanent or attempts >= self.settings.media_max_attempts:
            return await self._finish(
                due, "failed", f"{reason} (after {attempts} attempts)", "fetch_failed", attempt=True
            )
        wait = self.settings.media_retry_first_s * self.settings.media_retry_factor ** (attempts - 1)
        log.info(
            "fetch of %s #%d failed (%d): %s; retry in %.0fs", due.report_id, due.idx, attempts, reason, wait
        )
        MEDIA.labels(due.channel, "retry").inc()
        await self._update(
            "attempts = attempts + 1, reason = %s, code = 'fetch_retry', next_attempt_at = %s",
            (reason[:1000], utcnow() + timedelta(seconds=wait)),
            due,
        )
        return "pending"

    async def _store_down(self, due: Due, reason: str) -> str:
        wait, self._store_backoff = self._store_backoff, min(self._store_backoff * 2, STORE_RETRY_MAX_S)
        log.warning("object store unavailable, %s #%d waits %.0fs: %s", due.report_id, due.idx, wait, reason)
        MEDIA.labels(due.channel, "store_unavailable").inc()
        await self._update(
            "reason = %s, code = 'store_unavailable', next_attempt_at = %s",
            (reason[:1000], utcnow() + timedelta(seconds=wait)),
            due,
        )
        return "pending"

    async def _finish(self, due: Due, state: str, reason: str, code: str, attempt: bool) -> str:
        log.warning("media %s #%d of %s: %s (%s)", state, due.idx, due.report_id, reason, code)
        MEDIA.labels(due.channel, state).inc()
        await self._update(
            "state = %s, reason = %s, code = %s" + (", attempts = attempts + 1" if attempt else ""),
            (state, reason[:1000], code),
            due,
        )
        return state

    async def _update(self, assignments: str, params: tuple[Any, ...], due: Due) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                f"UPDATE report_media SET {assignments}, updated_at = now()"  # noqa: S608 - fixed fragments
                " WHERE report_id = %s AND kind = %s AND idx = %s",
                (*params, due.report_id, due.kind, due.idx),
            )

    async def probe_store(self, every_s: float = 2.0) -> None:
        """While the object store is down, ask it every few seconds; once it answers, the photos that
        waited for it are due at once (instead of each waiting out its own backoff)."""
        while True:
            await asyncio.sleep(every_s)
            if self._store_backoff <= 1.0:
                continue
            self.keeper.store._bucket_ok = False
            try:
                await self.keeper.store.ensure_bucket()
            except StoreUnavailable:
                continue
            self._store_backoff = 1.0
            try:
                async with self.pool.connection() as conn:
                    await conn.execute(
                        "UPDATE report_media SET next_attempt_at = now()"
                        " WHERE state = 'pending' AND code = 'store_unavailable'"
                    )
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
                log.warning("could not release the photos waiting for the store: %s", exc)
                continue
            log.info("object store answers again; photos waiting for it are due")
            self.wake.set()

    # ---------------------------------------------------------------------------------- running
    async def run(self) -> None:
        await self.pool.open(wait=True, timeout=30)
        timeout = aiohttp.ClientTimeout(total=self.settings.media_fetch_timeout_s, connect=10)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector(self.settings)) as http:
            self.http = http
            self.fetchers = Fetchers(self.settings, http)
            try:
                await asyncio.gather(self.consume(), self.fetch_loop(), self.probe_store())
            finally:
                await self.pool.close()


async def failed(settings: Settings, limit: int = 100) -> list[dict[str, Any]]:
    """Attachments that are not kept, newest first: fetches that failed for good and refused content."""
    async with await psycopg.AsyncConnection.connect(settings.database_url.get_secret_value()) as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "SELECT m.report_id::text, r.tracking_number, m.channel, m.kind, m.idx, m.state, m.code,"
            " m.reason, m.attempts, m.updated_at FROM report_media m JOIN reports r USING (report_id)"
            " WHERE m.state IN ('failed', 'refused') ORDER BY m.updated_at DESC LIMIT %s",
            (limit,),
        )
        return list(await cur.fetchall())


def dumps_rows(rows: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(rows, option=orjson.OPT_INDENT_2)
