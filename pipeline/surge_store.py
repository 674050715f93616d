"""Surges in the CRM store: the alerts topic's records kept per surge, agencies told via the outbox.

The worker's ``surge-alerts`` agent reads ``<ns>.alerts.v1`` and calls :meth:`SurgeStore.apply` for
each batch. In one transaction per batch, every record not stored before (``surge_changes`` is keyed
by ``surge_id`` and ``seq``, so a record published or consumed twice is stored once):

* replaces the surge's row in ``surges`` when its ``seq`` is higher than the stored one;
* queues one outbox row per agency the record names (``notify``: the category's agency from the
  routing table, and BPBD for floods, per ``surge_thresholds.v1.csv``) when a surge opens, grows or
  closes; the key ``(surge_id, agency, event_key)`` is unique, so nobody is told twice.

``crm-pipeline surge list|show`` and the dashboard read ``surges``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import timedelta, timezone
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row

from .processors.surge import SurgeRecord
from .settings import Settings, get_settings

log = logging.getLogger("pipeline.surge")

WIB = timezone(timedelta(hours=7))
#: states an agency is told about (subsiding is on the dashboard and the topic only)
NOTIFY_STATES = ("opened", "growing", "closed")
CATEGORY_NAMES = {
    "flood_drainage": "banjir/genangan",
    "fallen_tree_parks": "pohon tumbang",
    "street_lights": "lampu PJU mati",
    "road_damage": "jalan rusak",
    "garbage": "sampah",
    "clean_water": "air bersih",
    "fire_rescue": "kebakaran",
}
STATE_WORDS = {"opened": "LONJAKAN BARU", "growing": "LONJAKAN MEMBESAR", "closed": "LONJAKAN SELESAI"}


def place_name(r: SurgeRecord) -> str:
    if r.level == "kelurahan":
        return f"Kelurahan {r.kelurahan}, Kecamatan {r.kecamatan}, {r.kota}"
    if r.level == "kecamatan":
        return f"Kecamatan {r.kecamatan}, {r.kota}"
    return r.kota or r.kota_code


def message(r: SurgeRecord) -> str:
    """What the agency reads (no reporter data: ids and counts only)."""
    what = CATEGORY_NAMES.get(r.category, r.category.replace("_", " "))
    head = f"[{STATE_WORDS.get(r.state, r.state.upper())}] Laporan {what} di {place_name(r)}"
    if r.state == "closed":
        body = (
            f"sudah kembali normal ({r.count} laporan dalam {r.window} terakhir, biasanya {r.expected:.1f})."
        )
    else:
        body = (
            f"{r.count} laporan dalam {r.window} terakhir; biasanya {r.expected:.2f} "
            f"(skor {r.score:.1f}). Total {r.report_count} laporan sejak "
            f"{r.opened_at.astimezone(WIB).strftime('%d/%m %H:%M')} WIB."
        )
    places = ", ".join(f"{p.kelurahan or p.kelurahan_code} {p.count}" for p in r.places[:6])
    tail = f" Kelurahan: {places}." if places and r.level != "kelurahan" else ""
    return (
        f"{head}: {body}{tail} Laporan pertama {r.first_report_id}, terakhir {r.latest_report_id}. "
        f"ID lonjakan {r.surge_id}."
    )


_UPSERT = """
INSERT INTO surges (surge_id, seq, state, category, level, kota_code, kecamatan_code, kelurahan_code, place,
                    opened_at, updated_at, closed_at, count, expected, score, report_count, record)
VALUES (%(surge_id)s, %(seq)s, %(state)s, %(category)s, %(level)s, %(kota_code)s, %(kecamatan_code)s,
        %(kelurahan_code)s, %(place)s, %(opened_at)s, %(at)s, %(closed_at)s, %(count)s, %(expected)s,
        %(score)s, %(report_count)s, %(record)s)
ON CONFLICT (surge_id) DO UPDATE SET
    seq = EXCLUDED.seq, state = EXCLUDED.state, level = EXCLUDED.level, kota_code = EXCLUDED.kota_code,
    kecamatan_code = EXCLUDED.kecamatan_code, kelurahan_code = EXCLUDED.kelurahan_code,
    place = EXCLUDED.place, updated_at = EXCLUDED.updated_at, closed_at = EXCLUDED.closed_at,
    count = EXCLUDED.count, expected = EXCLUDED.expected, score = EXCLUDED.score,
    report_count = EXCLUDED.report_count, record = EXCLUDED.record
WHERE surges.seq < EXCLUDED.seq
"""
_CHANGE = """
INSERT INTO surge_changes (surge_id, seq, state, at, record) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (surge_id, seq) DO NOTHING
RETURNING surge_id
"""
_OUTBOX = """
INSERT INTO notify.outbox (surge_id, agency, event_key, channel, destination, kind, to_status, body, state)
VALUES (%s, %s, %s, 'alerts', 'agency', 'surge', %s, %s, 'pending')
ON CONFLICT (surge_id, agency, event_key) WHERE surge_id IS NOT NULL DO NOTHING
"""


class SurgeStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: psycopg.AsyncConnection | None = None

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self.settings.database_url.get_secret_value(), connect_timeout=5
            )
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def apply(self, records: Sequence[SurgeRecord]) -> int:
        """Store the records (idempotent); returns how many were new."""
        if not records:
            return 0
        conn = await self._connection()
        new = 0
        try:
            async with conn.transaction():
                for r in records:
                    row = self._row(r)
                    await conn.execute(_UPSERT, row)
                    done = await (
                        await conn.execute(_CHANGE, (r.surge_id, r.seq, r.state, r.at, row["record"]))
                    ).fetchone()
                    if done is None:
                        continue  # stored before: nothing to tell anyone again
                    new += 1
                    if r.state in NOTIFY_STATES:
                        text = message(r)
                        for agency in r.notify:
                            await conn.execute(_OUTBOX, (r.surge_id, agency, f"surge:{r.seq}", r.state, text))
        except (psycopg.OperationalError, psycopg.InterfaceError):
            self._conn = None  # reconnect next time
            raise
        return new

    @staticmethod
    def _row(r: SurgeRecord) -> dict[str, Any]:
        return {
            "surge_id": r.surge_id,
            "seq": r.seq,
            "state": r.state,
            "category": r.category,
            "level": r.level,
            "kota_code": r.kota_code,
            "kecamatan_code": r.kecamatan_code,
            "kelurahan_code": r.kelurahan_code,
            "place": place_name(r),
            "opened_at": r.opened_at,
            "at": r.at,
            "closed_at": r.at if r.state == "closed" else None,
            "count": r.count,
            "expected": r.expected,
            "score": r.score,
            "report_count": r.report_count,
            "record": orjson.dumps(r.model_dump(mode="json")).decode(),
        }


# ------------------------------------------------------------------------------------------- CLI
def _connect(settings: Settings) -> psycopg.Connection:
    return psycopg.connect(settings.database_url.get_secret_value(), connect_timeout=5, row_factory=dict_row)


def open_surges(conn: Any, include_closed: bool = False, limit: int = 50) -> list[dict[str, Any]]:
    return list(
        conn.execute(
            "SELECT surge_id::text, seq, state, category, level, kota_code, kecamatan_code, kelurahan_code, "
            "place, opened_at, updated_at, closed_at, count, expected, score, report_count FROM surges "
            "WHERE %s OR state <> 'closed' ORDER BY updated_at DESC LIMIT %s",
            (include_closed, limit),
        ).fetchall()
    )


def list_main(args: argparse.Namespace) -> int:
    try:
        with _connect(get_settings()) as conn:
            rows = open_surges(conn, args.all, args.limit)
    except psycopg.Error as exc:
        print(f"crm-pipeline: the CRM store: {exc}", file=sys.stderr)
        return 1
    if args.json:
        for row in rows:
            sys.stdout.write(orjson.dumps(row, default=str).decode() + "\n")
        return 0
    if not rows:
        print("no open surges" if not args.all else "no surges")
        return 0
    for r in rows:
        print(
            f"{r['surge_id']}  {r['state']:9} {r['category']:18} {r['place']}  {r['count']} reports "
            f"(expected {r['expected']:.2f}, score {r['score']:.1f}), {r['report_count']} in all, "
            f"since {r['opened_at']:%Y-%m-%d %H:%M %Z}"
        )
    return 0


def show_main(args: argparse.Namespace) -> int:
    import uuid

    try:
        uuid.UUID(args.surge_id)
    except ValueError:
        print(f"crm-pipeline: {args.surge_id!r} is not a surge id (a UUID)", file=sys.stderr)
        return 2
    try:
        with _connect(get_settings()) as conn:
            row = conn.execute("SELECT record FROM surges WHERE surge_id = %s", (args.surge_id,)).fetchone()
            changes = conn.execute(
                "SELECT seq, state, at, record FROM surge_changes WHERE surge_id = %s ORDER BY seq",
                (args.surge_id,),
            ).fetchall()
    except psycopg.Error as exc:
        print(f"crm-pipeline: the CRM store: {exc}", file=sys.stderr)
        return 1
    if row is None:
        print(f"crm-pipeline: no surge {args.surge_id}", file=sys.stderr)
        return 1
    latest = row["record"]
    if args.json:
        sys.stdout.write(orjson.dumps({**latest, "changes": [c["record"] for c in changes]}).decode() + "\n")
        return 0
    r = SurgeRecord.model_validate(latest)
    print(f"surge {r.surge_id}: {r.state} (change {r.seq})")
    print(
        f"  {r.category} at {place_name(r)} [{r.level} {r.kelurahan_code or r.kecamatan_code or r.kota_code}]"
    )
    counts = ", ".join(f"{w}: {n} (expected {r.expected_counts.get(w, 0):.2f})" for w, n in r.counts.items())
    print(f"  counts {counts}; decided on {r.window}, score {r.score:.1f}")
    print(f"  {r.report_count} reports, first {r.first_report_id}, latest {r.latest_report_id}")
    if r.places:
        print("  kelurahan: " + ", ".join(f"{p.kelurahan or p.kelurahan_code} {p.count}" for p in r.places))
    if r.case_ids:
        print(f"  cases: {', '.join(r.case_ids[:10])}{' …' if len(r.case_ids) > 10 else ''}")
    print(f"  agency {r.agency} ({r.agency_unit or '-'}); told: {', '.join(r.notify) or '-'}")
    for c in changes:
        rec = c["record"]
        print(
            f"  #{c['seq']} {c['state']:9} {c['at']:%Y-%m-%d %H:%M:%S %Z}  {rec['count']} in {rec['window']}"
        )
    return 0
