"""Applying officer actions: the status service, its topic consumer and the escalation check.

:meth:`StatusService.apply` is the one write path for status changes (topic and API alike). In one
transaction it locks the report, checks the transition table (:mod:`pipeline.status`), stores the
history row (``event_id`` unique: a replayed event changes nothing), updates the report, replaces the
assignment on Disposisi and queues the citizen's notification in the outbox. After the commit it
publishes the :class:`~pipeline.status.StatusChange` on ``<ns>.status-changes.v1`` and, on Disposisi,
the report's public projection on the new agency's routed topic (and its kota's). A replayed event
publishes again (at-least-once; consumers deduplicate on ``event_id``).

``crm-pipeline status`` runs :class:`StatusConsumer` (``<ns>.status.v1``; refused events go to the
dead-letter topic with the reason) and the periodic :func:`check_escalations`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime
from typing import Any

import orjson
import psycopg
from aiokafka import AIOKafkaConsumer
from psycopg.rows import dict_row
from pydantic import ValidationError

from ..deadletter import DeadLetter, SourcePosition
from ..envelope import Attachment, Location, RawRef, Region, Report, Reporter, Triage, utcnow
from ..learning.registry import label_kind, record_label
from ..processors.normalise import mask_pii
from ..processors.route import load_router
from ..publish import Publisher, PublishError, make_producer
from ..security import kafka_client_kwargs
from ..settings import Settings
from ..topics import Topics
from .cases import FINAL_STATUSES, close_if_done, tell_grouping
from .notify.outbox import enqueue_status
from .status import DISPOSISI, OPEN311_STATUS, Escalation, StatusChange, StatusEvent, TransitionError
from .status import check_transition as _check

log = logging.getLogger("pipeline.status")


def report_from_row(row: dict[str, Any]) -> Report:
    """The envelope of a stored report (no contact), e.g. to route it again after a Disposisi."""
    region = Region(**row["region"]) if row.get("region") else None
    return Report(
        schema_version=row["schema_version"],
        report_id=str(row["report_id"]),
        channel=row["channel"],
        provider_id=row["provider_id"],
        received_at=row["received_at"],
        source_at=row["source_at"],
        reporter=Reporter(id=row["reporter_id"], private=row["private"]),
        text=row["text_original"],
        category_hint=row["category_hint"],
        location=Location(
            lat=row["lat"], lon=row["lon"], address=row["address"], desk_office=row["desk_office"]
        ),
        attachments=[Attachment(**a) for a in row["attachments"] or []],
        raw_ref=RawRef(**row["raw_ref"]) if row.get("raw_ref") else None,
        in_reply_to=row["in_reply_to"],
        triage=Triage(
            normalised_text=row["text_normalised"],
            category=row["category"],
            confidence=row["confidence"],
            classifier=row["classifier"],
            region=region,
            agency=row["agency"],
            agency_unit=row["agency_unit"],
            route_reason=row["route_reason"],
            routed_to=row["routed_to"],
            case_id=row["case_id"],
            expected_by=row["expected_by"],
        ),
    )


def public_record(report: Report) -> bytes:
    """The routed topics' projection (same as the worker's): no contact, masked text, private hidden."""
    public = report.public()
    public["text"] = mask_pii(report.text)
    return orjson.dumps(public)


class UnknownReport(TransitionError):
    def __init__(self, ref: str) -> None:
        super().__init__("unknown_report", f"no report {ref!r}")


class StatusService:
    def __init__(self, settings: Settings, publisher: Publisher | None = None) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_namespace)
        self.router = load_router()
        self.publisher = publisher
        self._own_producer = False

    async def start(self) -> None:
        if self.publisher is None:
            producer = make_producer(self.settings, client_id=f"{self.settings.worker_app_id}-status")
            await producer.start()
            self.publisher = Publisher(self.settings, producer)
            self._own_producer = True

    async def stop(self) -> None:
        if self.publisher is not None and self._own_producer:
            await self.publisher.producer.stop()
            self.publisher = None

    async def _connect(self) -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(
            self.settings.database_url.get_secret_value(), connect_timeout=5, row_factory=dict_row
        )

    # ------------------------------------------------------------------------------------ apply
    async def apply(self, event: StatusEvent) -> tuple[StatusChange, bool]:
        """Apply and publish one event. Returns (change, replayed). Raises TransitionError if refused."""
        change, replayed, routed = await self.store(event)
        await self.publish(change, routed)
        return change, replayed

    async def store(self, event: StatusEvent) -> tuple[StatusChange, bool, bytes | None]:
        closed: list[tuple[str, str]] = []
        result = await self._store(event, closed)
        await tell_grouping(self.settings, closed)  # after the commit: no report joins a closed case
        return result

    async def _store(
        self, event: StatusEvent, closed: list[tuple[str, str]]
    ) -> tuple[StatusChange, bool, bytes | None]:
        async with await self._connect() as conn, conn.transaction():
            row = await self._lock_report(conn, event)
            done = await (
                await conn.execute(
                    "SELECT h.*, r.tracking_number FROM status_history h JOIN reports r USING (report_id) "
                    "WHERE h.event_id = %s",
                    (event.event_id,),
                )
            ).fetchone()
            if done is not None:
                if str(done["report_id"]) != str(row["report_id"]):
                    raise TransitionError("event_id_reused", f"event {event.event_id!r} is another report's")
                change = self._change(done, previous_agency=None)
                routed = public_record(report_from_row(row)) if change.to_status == DISPOSISI else None
                return change, True, routed
            current = row["status"]
            _check(current, event.status)
            agency, unit = row["agency"], row["agency_unit"]
            previous_agency = agency
            if event.status == DISPOSISI:
                agency, unit = self._disposisi_target(event, row)
                await conn.execute(
                    "UPDATE assignments SET active = false WHERE report_id = %s AND active",
                    (row["report_id"],),
                )
                await conn.execute(
                    "INSERT INTO assignments (report_id, event_id, agency, agency_unit, reason, assigned_by, "
                    "assigned_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (
                        row["report_id"],
                        event.event_id,
                        agency,
                        unit,
                        f"disposisi: {event.note or 'diteruskan oleh petugas'}",
                        event.actor,
                        event.at,
                    ),
                )
                # An officer's routing is a label the classifier learns from (issue #16).
                async with conn.cursor() as cur:
                    await record_label(
                        cur,
                        report_id=str(row["report_id"]),
                        event_id=f"disposisi:{event.event_id}",
                        kind=label_kind(row["agency"], agency),
                        old_agency=row["agency"],
                        new_agency=agency,
                        classifier=row.get("classifier"),
                        actor=event.actor,
                        at=event.at,
                    )
            hist = await (
                await conn.execute(
                    "INSERT INTO status_history (report_id, event_id, from_status, to_status, actor, note, "
                    "agency, agency_unit, changed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "RETURNING *",
                    (
                        row["report_id"],
                        event.event_id,
                        current,
                        event.status,
                        event.actor,
                        event.note,
                        agency,
                        unit,
                        event.at,
                    ),
                )
            ).fetchone()
            await conn.execute(
                "UPDATE reports SET status = %s, status_changed_at = %s, updated_at = now(), agency = %s, "
                "agency_unit = %s, routed_to = CASE WHEN %s::text IS NULL THEN routed_to ELSE 'agency' END "
                "WHERE report_id = %s",
                (event.status, event.at, agency, unit, agency, row["report_id"]),
            )
            async with conn.cursor() as cur:
                await enqueue_status(
                    cur, str(row["report_id"]), event.event_id, event.status, agency, event.note
                )
            if event.status in FINAL_STATUSES:  # the case closes with its last open report (#23)
                closed += await close_if_done(conn, str(row["report_id"]))
            routed = None
            if event.status == DISPOSISI:
                row = {**row, "agency": agency, "agency_unit": unit, "routed_to": "agency"}
                routed = public_record(report_from_row(row))
            assert hist is not None
            return (
                self._change({**hist, "tracking_number": row["tracking_number"]}, previous_agency),
                False,
                routed,
            )

    async def confirm_route(
        self, ref: str, actor: str, event_id: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """An officer confirms the agency a report was routed to: a label, no status change.
        Returns (the label, replayed)."""
        event = StatusEvent(
            report_id=ref if _is_uuid(ref) else None,
            tracking_number=None if _is_uuid(ref) else ref,
            status=DISPOSISI,
            actor=actor,
        )
        async with await self._connect() as conn, conn.transaction():
            row = await self._lock_report(conn, event)
            if not row["agency"]:
                raise TransitionError(
                    "not_routed", "the report waits in triage with no agency: dispatch it with a Disposisi"
                )
            key = event_id or f"confirm:{row['report_id']}:{row['agency']}"
            async with conn.cursor() as cur:
                await record_label(
                    cur,
                    report_id=str(row["report_id"]),
                    event_id=key,
                    kind="confirm",
                    old_agency=row["agency"],
                    new_agency=row["agency"],
                    classifier=row.get("classifier"),
                    actor=actor,
                )
                replayed = cur.rowcount == 0
            label = await (
                await conn.execute(
                    "SELECT event_id, kind, old_agency, new_agency, classifier, actor, labelled_at, "
                    "report_id FROM route_labels WHERE event_id = %s",
                    (key,),
                )
            ).fetchone()
            assert label is not None
            if str(label["report_id"]) != str(row["report_id"]):
                raise TransitionError("event_id_reused", f"event {key!r} is another report's")
            label["report_id"] = str(label["report_id"])
            label["tracking_number"] = row["tracking_number"]
            return label, replayed

    async def _lock_report(self, conn: psycopg.AsyncConnection, event: StatusEvent) -> dict[str, Any]:
        if event.report_id:
            try:
                uuid.UUID(event.report_id)
            except ValueError:
                raise UnknownReport(event.report_id) from None
            where, ref = "report_id = %s", event.report_id
        elif event.tracking_number:
            where, ref = "tracking_number = %s", event.tracking_number
        else:
            raise TransitionError("unknown_report", "the event names no report_id or tracking_number")
        row = await (
            await conn.execute(f"SELECT * FROM reports WHERE {where} FOR UPDATE", (ref,))  # noqa: S608
        ).fetchone()
        if row is None:
            raise UnknownReport(ref)
        return row

    def _disposisi_target(self, event: StatusEvent, row: dict[str, Any]) -> tuple[str, str | None]:
        if not event.agency:
            raise TransitionError("agency_required", "Disposisi needs the agency to forward the report to")
        target = self.router.agency_for_label(event.agency)
        if target is None:
            raise TransitionError("unknown_agency", f"unknown agency {event.agency!r}")
        unit = event.agency_unit
        if not unit:
            region = Region(**row["region"]) if row.get("region") else None
            unit, _ = target.unit_for(region)
        if target.name == row["agency"] and unit == row["agency_unit"]:
            raise TransitionError(
                "same_assignment", f"the report is already with {target.name} ({unit or 'the agency itself'})"
            )
        return target.name, unit

    @staticmethod
    def _change(h: dict[str, Any], previous_agency: str | None) -> StatusChange:
        return StatusChange(
            event_id=h["event_id"],
            report_id=str(h["report_id"]),
            tracking_number=h["tracking_number"],
            from_status=h["from_status"],
            to_status=h["to_status"],
            open311_status=OPEN311_STATUS[h["to_status"]],  # type: ignore[arg-type]
            actor=h["actor"],
            note=h["note"],
            agency=h["agency"],
            agency_unit=h["agency_unit"],
            previous_agency=previous_agency,
            changed_at=h["changed_at"],
        )

    # ---------------------------------------------------------------------------------- publish
    def records(self, change: StatusChange, routed: bytes | None) -> list[tuple[str, bytes, bytes]]:
        key = change.report_id.encode()
        out = [(self.topics.status_changes, key, change.dumps())]
        if routed is not None and change.agency in set(self.router.agencies()):
            out.append((self.topics.routed_agency(change.agency), key, routed))
            kota = orjson.loads(routed).get("triage", {}).get("region", {}).get("kota_code")
            if kota in set(self.router.kota_codes()):
                out.append((self.topics.routed_region(kota), key, routed))
        return out

    async def publish(self, change: StatusChange, routed: bytes | None) -> None:
        await self.start()
        assert self.publisher is not None
        delay = 0.2
        for attempt in range(1, 8):
            try:
                await self.publisher.send_many(self.records(change, routed))
                return
            except PublishError as exc:
                if attempt == 7:
                    raise
                log.warning("status change not confirmed by the broker, retrying: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -------------------------------------------------------------------------------- escalation
    async def check_escalations(self, now: datetime | None = None) -> list[Escalation]:
        """Raise one escalation per open report past its expected-by date; publish the unpublished ones."""
        now = now or utcnow()
        async with await self._connect() as conn:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO escalations (report_id, expected_by, status, agency, raised_at) "
                    "SELECT report_id, expected_by, status, agency, %s FROM reports "
                    "WHERE expected_by < %s AND status NOT IN ('Selesai', 'TL Ditolak') "
                    "ON CONFLICT DO NOTHING",
                    (now, now),
                )
            rows = await (
                await conn.execute(
                    "SELECT e.report_id, e.expected_by, e.status, e.agency, e.raised_at, r.tracking_number, "
                    "r.agency_unit FROM escalations e JOIN reports r USING (report_id) "
                    "WHERE e.published_at IS NULL ORDER BY e.raised_at LIMIT 1000"
                )
            ).fetchall()
            out = [
                Escalation(
                    report_id=str(r["report_id"]),
                    tracking_number=r["tracking_number"],
                    status=r["status"],
                    agency=r["agency"],
                    agency_unit=r["agency_unit"],
                    expected_by=r["expected_by"],
                    overdue_hours=round((now - r["expected_by"]).total_seconds() / 3600, 1),
                    raised_at=r["raised_at"],
                )
                for r in rows
            ]
            if out:
                await self.start()
                assert self.publisher is not None
                await self.publisher.send_many(
                    [(self.topics.escalation, e.report_id.encode(), e.dumps()) for e in out]
                )
                async with conn.transaction():
                    await conn.execute(
                        "UPDATE escalations SET published_at = %s WHERE published_at IS NULL "
                        "AND (report_id, expected_by) IN "
                        "(SELECT * FROM unnest(%s::uuid[], %s::timestamptz[]))",
                        (now, [e.report_id for e in out], [e.expected_by for e in out]),
                    )
        return out


class StatusConsumer:
    """Officer actions from ``<ns>.status.v1``: applied in order per report, refused ones dead-lettered."""

    def __init__(self, settings: Settings, service: StatusService | None = None) -> None:
        self.settings = settings
        self.service = service or StatusService(settings)
        self.topics = Topics(settings.topic_namespace)
        self.consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        await self.service.start()
        self.consumer = AIOKafkaConsumer(
            self.topics.status,
            **kafka_client_kwargs(self.settings),
            group_id=f"{self.settings.status_group_id}-{self.settings.topic_namespace}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await self.consumer.start()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        await self.service.stop()

    async def handle(self, value: bytes | None, position: SourcePosition | None) -> StatusChange | None:
        """One record: applied (change returned), or dead-lettered with the reason (None)."""
        try:
            event = StatusEvent.model_validate(orjson.loads(value or b""))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            await self._dead(
                value or b"", "bad_event", f"not a valid status event: {exc}"[:2000], position, None
            )
            return None
        delay = 0.5
        while True:
            try:
                change, _ = await self.service.apply(event)
                return change
            except TransitionError as exc:
                await self._dead(value or b"", exc.code, exc.reason, position, event.report_id)
                return None
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError, PublishError) as exc:
                log.warning("status event %s not applied yet (%s), retrying", event.event_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _dead(
        self, raw: bytes, code: str, reason: str, position: SourcePosition | None, report_id: str | None
    ) -> None:
        log.warning("status event refused (%s): %s", code, reason)
        letter = DeadLetter.build(
            raw=raw,
            cap=self.settings.dead_letter_raw_cap_bytes,
            stage="status",
            code=code,
            reason=reason,
            source=position,
            report_id=report_id,
            content_type="application/json",
        )
        assert self.service.publisher is not None
        await self.service.publisher.dead_letter(letter)

    async def run_batch(self, timeout_ms: int = 1000) -> list[StatusChange | None]:
        assert self.consumer is not None
        batch = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=200)
        out: list[StatusChange | None] = []
        for tp, records in batch.items():
            for rec in records:
                pos = SourcePosition(topic=tp.topic, partition=tp.partition, offset=rec.offset)
                out.append(await self.handle(rec.value, pos))
        if batch:
            await self.consumer.commit()
        return out

    async def run_forever(self) -> None:  # pragma: no cover - the CLI loop
        last_check = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await self.run_batch()
            if loop.time() - last_check >= self.settings.escalation_interval_s:
                last_check = loop.time()
                try:
                    raised = await self.service.check_escalations()
                    if raised:
                        log.info("raised %d escalations", len(raised))
                except (psycopg.Error, OSError, PublishError) as exc:
                    log.warning("escalation check failed: %s", exc)


def _is_uuid(ref: str) -> bool:
    try:
        uuid.UUID(ref)
    except ValueError:
        return False
    return True
