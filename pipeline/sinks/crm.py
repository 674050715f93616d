"""What the CRM store records when a report is first stored, inside the sink's transaction.

For every report stored by the batch (a replayed report was stored before and adds nothing):

* its first status-history row (``Menunggu``, event ``intake:<report id>``);
* its assignment to the agency/unit triage chose, with the route reason (when triage named one);
* its case (``triage.case_id``), whose support count it adds to, with what grouping said of the case:
  the previous occurrence of a recurring problem and the open cases that may be the same problem;
* the acknowledgement in the notification outbox (event key ``ack``), carrying the tracking number.

The tracking number itself is given by the ``reports`` table (column default), so a replayed report
keeps the number it got the first time.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from psycopg import AsyncCursor

from ..crm.status import INITIAL_STATUS, intake_event_id
from ..envelope import Report
from .bulk import copy_insert

_HISTORY_COLUMNS = (
    "report_id", "event_id", "from_status", "to_status", "actor", "note",
    "agency", "agency_unit", "changed_at",
)  # fmt: skip
_ASSIGN_COLUMNS = ("report_id", "event_id", "agency", "agency_unit", "reason", "assigned_by", "assigned_at")
_CASES = """
INSERT INTO cases AS c (case_id, category, kelurahan_code, first_report_id, first_at, last_at,
                        support_count)
SELECT case_id, min(category), min(kelurahan_code),
       (array_agg(report_id ORDER BY received_at, report_id))[1], min(received_at), max(received_at), count(*)
FROM reports WHERE report_id = ANY(%s::uuid[]) AND case_id IS NOT NULL GROUP BY case_id
ON CONFLICT (case_id) DO UPDATE SET
    support_count = c.support_count + EXCLUDED.support_count,
    first_report_id = CASE
        WHEN (EXCLUDED.first_at, EXCLUDED.first_report_id) < (c.first_at, c.first_report_id)
        THEN EXCLUDED.first_report_id ELSE c.first_report_id END,
    first_at = least(c.first_at, EXCLUDED.first_at),
    last_at = greatest(c.last_at, EXCLUDED.last_at),
    updated_at = now()
"""

#: the occurrence and previous case of a recurring problem, and duplicate candidates (at most 10 kept)
_CASE_LINKS = """
UPDATE cases AS c SET
    occurrence = greatest(c.occurrence, coalesce(x.occurrence, 1)),
    previous_case_id = coalesce(c.previous_case_id, x.previous),
    candidates = ARRAY(SELECT DISTINCT v FROM unnest(c.candidates || coalesce(x.candidates, '{}')) AS v
                       WHERE v <> c.case_id ORDER BY v LIMIT 10)
FROM jsonb_to_recordset(%s::jsonb) AS x(case_id text, occurrence int, previous text, candidates text[])
WHERE c.case_id = x.case_id
"""


def _case_links(batch: Sequence[Report]) -> list[dict[str, object]]:
    links: dict[str, dict[str, object]] = {}
    for r in batch:
        t = r.triage
        if t is None or not t.case_id or not (t.case_recurs or t.case_candidates):
            continue
        link = links.setdefault(t.case_id, {"case_id": t.case_id, "candidates": []})
        if t.case_recurs:
            link["previous"], link["occurrence"] = t.case_recurs, t.case_occurrence
        link["candidates"] += t.case_candidates or []  # type: ignore[operator]
    return list(links.values())


async def record_intake(cur: AsyncCursor, batch: Sequence[Report], direct: bool = False) -> None:
    """History, assignment, case and acknowledgement rows for reports stored just now, in the same
    transaction. Only newly stored reports may be passed: a case's support count is added to, not
    recounted from every report of the case (that recount was a third of the store's time; adding
    is also right when two workers add to one case at once, where a recount could miss the other's
    reports). ``direct``: the reports' rows were inserted by this transaction, so none of these
    rows can exist yet and they are copied straight in (:func:`.bulk.copy_insert`)."""
    from ..crm.notify.outbox import enqueue_acks  # the outbox module imports nothing from the sink

    history, assign = [], []
    for r in batch:
        t = r.triage
        agency = t.agency if t else None
        unit = t.agency_unit if t else None
        note = "laporan diterima" + (f"; {t.route_reason}" if t and t.route_reason else "")
        event = intake_event_id(r.report_id)
        history.append(
            (r.report_id, event, None, INITIAL_STATUS, "pipeline", note[:2000], agency, unit, r.received_at)
        )
        if agency:
            reason = t.route_reason if t else None
            assign.append((r.report_id, event, agency, unit, reason, "pipeline", r.received_at))
    await copy_insert(
        cur, "status_history", _HISTORY_COLUMNS, history, "ON CONFLICT (event_id) DO NOTHING", direct=direct
    )
    await copy_insert(cur, "assignments", _ASSIGN_COLUMNS, assign, direct=direct)
    if any(r.triage and r.triage.case_id for r in batch):
        await cur.execute(_CASES, ([r.report_id for r in batch],))
        links = _case_links(batch)
        if links:
            await cur.execute(_CASE_LINKS, (orjson.dumps(links).decode(),))
    await enqueue_acks(cur, [r.report_id for r in batch], direct=direct)
