"""The outbox: enqueueing (inside the caller's transaction) and the runner that sends due rows.

Keys: ``(report_id, event_key)`` is unique, ``event_key`` is ``ack`` or ``status:<event id>``, so a
replayed intake or status event never queues a second message. The runner claims due rows with
``FOR UPDATE SKIP LOCKED`` (several runners may run), sends each, and records the attempt: ``sent``
with the channel's message id, or the error, ``attempts + 1`` and ``next_attempt_at`` per the
schedule (first retry after ``notify_retry_first_s``, then every ``notify_retry_every_s``), ``failed``
after ``notify_max_attempts``. A destination that is down (relay unreachable, gateway 5xx) is paused
with the same schedule, so its other rows wait instead of failing one by one.

Destinations: ``email`` (threaded replies), ``sms``, ``twitter``, ``meta``, and every channel with a
registered reply sender under its own id (``jaki``, ``lapor1708``, plug-in channels; :mod:`.replies`);
``desk`` rows are not sent
but listed for the desk that took the report (state ``desk`` until the desk marks them ``delivered``);
``none`` rows (no way back to the citizen) are recorded as ``skipped``.
``agency`` rows name a surge and an agency instead of a report (issue #17): the agency is told by
e-mail (``pipeline/surge_notify.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from prometheus_client import Counter
from psycopg import AsyncCursor, sql
from psycopg.rows import dict_row, tuple_row

from ...envelope import utcnow
from ...security import ContactCipher, DecryptError, decrypt_contact_row
from ...settings import Settings
from ...sinks.bulk import copy_insert
from ...surge_notify import AgencySender
from .messages import ack_text, status_text
from .notification import Notification, SendError
from .replies import discover_replies
from .senders import default_senders

log = logging.getLogger("pipeline.notify")

NOTIFICATIONS = Counter("crm_notifications_total", "outbox send attempts", ["destination", "outcome"])

SOCIAL = {"facebook": "meta", "governor_social": "meta", "instagram": "meta", "twitter": "twitter"}


def destination_for(channel: str, has_email: bool, has_phone: bool) -> str:
    """The way back: the channel the report came from (its registered reply sender, see
    :mod:`.replies`); channels without one (web) fall back to e-mail, then SMS."""
    if channel in discover_replies():
        return channel
    if channel == "email":
        return "email" if has_email else "none"
    if channel == "sms":
        return "sms" if has_phone else "none"
    if channel in SOCIAL:
        return SOCIAL[channel]
    if channel.startswith("desk_"):
        return "desk"
    if has_email:
        return "email"
    if has_phone:
        return "sms"
    return "none"


_TARGETS = """
SELECT r.report_id::text, r.channel, r.tracking_number, r.desk_office,
       coalesce(c.email, '') <> '', coalesce(c.phone, '') <> ''
FROM reports r LEFT JOIN reporter_contacts c USING (report_id)
WHERE r.report_id = ANY(%s::uuid[])
"""
_OUTBOX_COLUMNS = (
    "report_id", "event_key", "channel", "destination", "kind", "to_status", "body", "state", "desk_office",
)  # fmt: skip
_ENQUEUE = """
INSERT INTO notify.outbox (report_id, event_key, channel, destination, kind, to_status, body, state,
                           desk_office)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (report_id, event_key) DO NOTHING
"""


def _state(destination: str) -> str:
    return {"desk": "desk", "none": "skipped"}.get(destination, "pending")


async def _targets(cur: AsyncCursor, report_ids: Sequence[str]) -> list[tuple[Any, ...]]:
    async with cur.connection.cursor(row_factory=tuple_row) as own:  # whatever the caller's row factory
        await own.execute(_TARGETS, (list(report_ids),))
        return list(await own.fetchall())


async def enqueue_acks(cur: AsyncCursor, report_ids: Sequence[str], direct: bool = False) -> None:
    """One acknowledgement per report (with its tracking number), in the caller's transaction.
    ``direct``: the reports were stored by this transaction, so no acknowledgement exists yet."""
    if not report_ids:
        return
    rows = []
    for rid, channel, tracking, desk_office, has_email, has_phone in await _targets(cur, report_ids):
        dest = destination_for(channel, has_email, has_phone)
        rows.append((rid, "ack", channel, dest, "ack", None, ack_text(tracking), _state(dest), desk_office))
    await copy_insert(
        cur,
        "notify.outbox",
        _OUTBOX_COLUMNS,
        rows,
        "ON CONFLICT (report_id, event_key) DO NOTHING",
        direct=direct,
    )


async def enqueue_status(
    cur: AsyncCursor, report_id: str, event_id: str, status: str, agency: str | None, note: str | None
) -> None:
    """The citizen's copy of a status change, in the status change's transaction."""
    for rid, channel, tracking, desk_office, has_email, has_phone in await _targets(cur, [report_id]):
        dest = destination_for(channel, has_email, has_phone)
        body = status_text(tracking, status, agency, note)
        await cur.execute(
            _ENQUEUE,
            (rid, f"status:{event_id}", channel, dest, "status", status, body, _state(dest), desk_office),
        )


# ---------------------------------------------------------------------------------------- sending
@dataclass
class RunResult:
    sent: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    deferred: list[int] = field(default_factory=list)  # destination paused


_DUE = """
SELECT o.outbox_id, o.report_id::text AS report_id, o.event_key, o.channel, o.destination, o.kind,
       o.to_status, o.body, o.attempts, r.provider_id, r.in_reply_to, r.private, r.tracking_number,
       r.status, c.email, c.phone, c.handle, c.name, o.surge_id::text AS surge_id, o.agency
FROM notify.outbox o
LEFT JOIN reports r USING (report_id)  -- an agency's row about a surge has no report
LEFT JOIN reporter_contacts c USING (report_id)
WHERE o.state = 'pending' AND o.next_attempt_at <= %s
  AND (%s::uuid[] IS NULL OR o.report_id = ANY(%s::uuid[]))
ORDER BY o.next_attempt_at, o.outbox_id
LIMIT %s
FOR UPDATE OF o SKIP LOCKED
"""


class OutboxRunner:
    def __init__(
        self, settings: Settings, senders: dict[str, Any] | None = None, only_reports: list[str] | None = None
    ) -> None:
        """``only_reports``: send only these reports' rows (the conformance kit, on a store where other
        rows may wait for their own senders)."""
        self.settings = settings
        self.only_reports = only_reports
        if senders is None:  # the built-in senders and every registered reply sender, by destination
            senders = default_senders(settings)
            if "email" in senders:  # agencies told of surges, by e-mail (issue #17)
                senders["agency"] = AgencySender(settings)
            senders.update({channel: cls(settings) for channel, cls in discover_replies().items()})
        self.senders = senders
        self.cipher = ContactCipher.from_settings(settings)  # contacts are encrypted at rest
        self._started: set[str] = set()

    async def _start(self, destination: str, sender: Any) -> None:
        """A sender's start hook, once, before its first send (a failing start is a failed send)."""
        if destination not in self._started and hasattr(sender, "start"):
            await sender.start()
        self._started.add(destination)

    async def close(self) -> None:
        """The stop hooks of the senders that were started."""
        for destination in sorted(self._started):
            stop = getattr(self.senders.get(destination), "stop", None)
            if stop is not None:
                try:
                    await stop()
                except Exception:
                    log.exception("sender %s failed to stop", destination)
        self._started.clear()

    def backoff(self, attempts: int) -> timedelta:
        """Wait after the ``attempts``-th failure: +5 min, then every 30 min (capped there)."""
        s = self.settings
        seconds = s.notify_retry_first_s if attempts <= 1 else s.notify_retry_every_s
        return timedelta(seconds=min(seconds, s.notify_retry_every_s))

    async def connect(self) -> psycopg.AsyncConnection:
        conn = await psycopg.AsyncConnection.connect(
            self.settings.database_url.get_secret_value(), connect_timeout=5, row_factory=dict_row
        )
        if self.settings.notify_db_role:
            await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(self.settings.notify_db_role)))
            await conn.commit()
        return conn

    async def run_once(self, now: datetime | None = None) -> RunResult:
        now = now or utcnow()
        result = RunResult()
        async with await self.connect() as conn, conn.transaction():
            paused = {
                row["destination"]
                for row in await (
                    await conn.execute(
                        "SELECT destination FROM notify.destinations WHERE paused_until > %s", (now,)
                    )
                ).fetchall()
            }
            only = self.only_reports
            rows = await (
                await conn.execute(_DUE, (now, only, only, self.settings.notify_batch_size))
            ).fetchall()
            for row in rows:
                try:
                    if row["report_id"] is not None:
                        decrypt_contact_row(self.cipher, row)
                except DecryptError as exc:
                    n = Notification(**{**row, "email": None, "phone": None, "handle": None, "name": None})
                    await self._failed(conn, n, SendError(str(exc), permanent=True), now, result)
                    continue
                n = Notification(**row)
                if n.destination in paused:
                    result.deferred.append(n.outbox_id)
                    continue
                sender = self.senders.get(n.destination)
                try:
                    if sender is None:
                        raise SendError(f"no sender configured for {n.destination!r}", permanent=True)
                    await self._start(n.destination, sender)
                    ref = await sender.send(n)
                except SendError as exc:
                    await self._failed(conn, n, exc, now, result)
                    if exc.destination_down:
                        paused.add(n.destination)
                    continue
                except Exception as exc:  # a sender bug must not stop the other rows
                    log.exception("sender %s raised", n.destination)
                    await self._failed(conn, n, SendError(repr(exc)), now, result)
                    continue
                await conn.execute(
                    "UPDATE notify.outbox SET state = 'sent', sent_at = %s, attempts = attempts + 1, "
                    "provider_ref = %s, last_error = NULL WHERE outbox_id = %s",
                    (now, ref, n.outbox_id),
                )
                await conn.execute(
                    "INSERT INTO notify.destinations (destination, failures, updated_at) VALUES (%s, 0, %s) "
                    "ON CONFLICT (destination) DO UPDATE SET failures = 0, paused_until = NULL, "
                    "updated_at = EXCLUDED.updated_at",
                    (n.destination, now),
                )
                NOTIFICATIONS.labels(n.destination, "sent").inc()
                result.sent.append(n.outbox_id)
        return result

    async def _failed(
        self, conn: psycopg.AsyncConnection, n: Notification, exc: SendError, now: datetime, result: RunResult
    ) -> None:
        attempts = n.attempts + 1
        give_up = exc.permanent or attempts >= self.settings.notify_max_attempts
        reason = str(exc)[:2000]
        log.warning(
            "notification %s (%s) failed, attempt %d%s: %s",
            n.outbox_id,
            n.destination,
            attempts,
            " (giving up)" if give_up else "",
            reason,
            extra={"report_id": n.report_id},
        )
        await conn.execute(
            "UPDATE notify.outbox SET attempts = %s, last_error = %s, next_attempt_at = %s, state = %s "
            "WHERE outbox_id = %s",
            (attempts, reason, now + self.backoff(attempts), "failed" if give_up else "pending", n.outbox_id),
        )
        if exc.destination_down:
            row = await (
                await conn.execute(
                    "INSERT INTO notify.destinations (destination, failures, last_error, updated_at) "
                    "VALUES (%s, 1, %s, %s) ON CONFLICT (destination) DO UPDATE SET "
                    "failures = notify.destinations.failures + 1, last_error = EXCLUDED.last_error, "
                    "updated_at = EXCLUDED.updated_at RETURNING failures",
                    (n.destination, reason, now),
                )
            ).fetchone()
            failures = row["failures"] if row else 1
            await conn.execute(
                "UPDATE notify.destinations SET paused_until = %s WHERE destination = %s",
                (now + self.backoff(failures), n.destination),
            )
        NOTIFICATIONS.labels(n.destination, "failed").inc()
        result.failed.append((n.outbox_id, reason))

    async def run_forever(self) -> None:  # pragma: no cover - the CLI loop
        import asyncio

        try:
            while True:
                try:
                    result = await self.run_once()
                    if result.sent or result.failed:
                        log.info("outbox: %d sent, %d failed", len(result.sent), len(result.failed))
                except (psycopg.OperationalError, OSError) as exc:
                    log.warning("outbox run failed, retrying: %s", exc)
                await asyncio.sleep(self.settings.notify_interval_s)
        finally:
            await self.close()


async def desk_notifications(
    conn: psycopg.AsyncConnection, office: str | None, limit: int = 100
) -> list[dict]:
    """What desks must tell walk-in reporters (rows in state ``desk``), oldest first."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT outbox_id, report_id::text AS report_id, channel, kind, to_status, body, desk_office, "
        "created_at FROM notify.outbox WHERE state = 'desk' AND (%s::text IS NULL OR desk_office = %s) "
        "ORDER BY created_at, outbox_id LIMIT %s",
        (office, office, limit),
    )
    return list(await cur.fetchall())


def give_up_after(settings: Settings) -> timedelta:
    """How long the schedule keeps retrying a row: a desk row not acknowledged by then is undelivered."""
    s = settings
    return timedelta(
        seconds=s.notify_retry_first_s + s.notify_retry_every_s * max(s.notify_max_attempts - 1, 0)
    )


async def undelivered(
    conn: psycopg.AsyncConnection,
    destination: str | None = None,
    limit: int = 100,
    desk_overdue: timedelta | None = None,
    now: datetime | None = None,
) -> list[dict]:
    """Notifications that could not be delivered, newest first, without contact details: rows
    ``failed`` (retried on the schedule, then given up, or refused for good) and, with
    ``desk_overdue``, desk rows no desk acknowledged within that time."""
    cur = conn.cursor(row_factory=dict_row)
    overdue_before = (now or utcnow()) - desk_overdue if desk_overdue is not None else None
    await cur.execute(
        "SELECT o.outbox_id, o.report_id::text AS report_id, r.tracking_number, o.channel, o.destination, "
        "o.state, o.kind, o.to_status, o.attempts, "
        "CASE WHEN o.state = 'desk' THEN 'not acknowledged by the desk' ELSE o.last_error END AS last_error, "
        "o.created_at, o.desk_office, o.surge_id::text AS surge_id, o.agency "
        "FROM notify.outbox o LEFT JOIN reports r USING (report_id) "
        "WHERE (o.state = 'failed' OR (o.state = 'desk' AND o.created_at < %s::timestamptz)) "
        "AND (%s::text IS NULL OR o.destination = %s) "
        "ORDER BY o.created_at DESC, o.outbox_id DESC LIMIT %s",
        (overdue_before, destination, destination, limit),
    )
    return list(await cur.fetchall())


class DeskAckError(LookupError):
    """The row is not a desk notification of that office, or was acknowledged already."""


async def acknowledge_desk(
    conn: psycopg.AsyncConnection, outbox_id: int, office: str | None, how: str, officer: str
) -> dict:
    """A desk told the walk-in reporter (``delivered``) or handed a printout (``printed``): the row is
    ``delivered``. Acknowledging it again answers the first acknowledgement (idempotent)."""
    if how not in ("delivered", "printed"):
        raise ValueError("how must be 'delivered' or 'printed'")
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "UPDATE notify.outbox SET state = 'delivered', sent_at = now(), delivered_how = %s, "
        "delivered_by = %s "
        "WHERE outbox_id = %s AND state = 'desk' AND (%s::text IS NULL OR desk_office = %s) "
        "RETURNING outbox_id, report_id::text AS report_id, state, sent_at, delivered_how, delivered_by",
        (how, officer, outbox_id, office, office),
    )
    row = await cur.fetchone()
    if row is not None:
        return row
    await cur.execute(
        "SELECT outbox_id, report_id::text AS report_id, state, sent_at, delivered_how, delivered_by "
        "FROM notify.outbox WHERE outbox_id = %s AND destination = 'desk' "
        "AND (%s::text IS NULL OR desk_office = %s)",
        (outbox_id, office, office),
    )
    row = await cur.fetchone()
    if row is None or row["state"] != "delivered":
        raise DeskAckError(f"no desk notification {outbox_id} waiting at this office")
    return row


async def outbox_summary(conn: psycopg.AsyncConnection) -> list[dict]:
    """Rows per destination and state (pending, sent, failed = undelivered, desk, delivered, skipped)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT destination, state, count(*) AS n FROM notify.outbox GROUP BY destination, state "
        "ORDER BY destination, state"
    )
    return list(await cur.fetchall())
