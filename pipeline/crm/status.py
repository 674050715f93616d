"""The status lifecycle citizens see, as an explicit transition table, and the status event models.

::

    Menunggu ──▶ Koordinasi ──▶ Proses ──▶ Menunggu Validasi ──▶ Selesai
        │  ╲          │  ▲         ▲  │            │
        │   ╲         ▼  │         │  └──── (validation refused: back to Proses)
        │    ╲──▶ Disposisi ───────┘
        └──────────────────────────▶ TL Ditolak   (from any open status)

* **Menunggu**: accepted, waiting for the Kelurahan (or the routed agency) to verify it.
* **Koordinasi**: being coordinated between offices before someone takes it.
* **Disposisi**: forwarded to another agency or its city office (Suku Dinas): the event names the
  target agency; the report is re-routed and its assignment replaced.
* **Proses**: being handled. **Menunggu Validasi**: handled, waiting for validation of the result.
* **Selesai** and **TL Ditolak** (follow-up refused) are final.

Officer actions arrive as :class:`StatusEvent` on ``<ns>.status.v1`` or through the API; every accepted
change is published as a :class:`StatusChange` on ``<ns>.status-changes.v1``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..envelope import utcnow

MENUNGGU = "Menunggu"
KOORDINASI = "Koordinasi"
DISPOSISI = "Disposisi"
PROSES = "Proses"
MENUNGGU_VALIDASI = "Menunggu Validasi"
SELESAI = "Selesai"
TL_DITOLAK = "TL Ditolak"

INITIAL_STATUS = MENUNGGU
STATUSES: tuple[str, ...] = (MENUNGGU, KOORDINASI, DISPOSISI, PROSES, MENUNGGU_VALIDASI, SELESAI, TL_DITOLAK)
FINAL: frozenset[str] = frozenset({SELESAI, TL_DITOLAK})

#: from → the statuses it may move to. Anything not listed is refused with a reason.
TRANSITIONS: dict[str, frozenset[str]] = {
    MENUNGGU: frozenset({KOORDINASI, DISPOSISI, PROSES, TL_DITOLAK}),
    KOORDINASI: frozenset({DISPOSISI, PROSES, TL_DITOLAK}),
    # Disposisi → Disposisi: forwarded again (e.g. from the Dinas to its Suku Dinas).
    DISPOSISI: frozenset({DISPOSISI, KOORDINASI, PROSES, TL_DITOLAK}),
    PROSES: frozenset({MENUNGGU_VALIDASI, DISPOSISI, TL_DITOLAK}),
    MENUNGGU_VALIDASI: frozenset({SELESAI, PROSES}),
    SELESAI: frozenset(),
    TL_DITOLAK: frozenset(),
}

#: Open311 GeoReport v2 knows only open/closed.
OPEN311_STATUS = {s: ("closed" if s in FINAL else "open") for s in STATUSES}

#: What the citizen is told at each status (Bahasa Indonesia, the channel adds the tracking number).
CITIZEN_TEXT = {
    MENUNGGU: "Laporan Anda telah kami terima dan menunggu verifikasi.",
    KOORDINASI: "Laporan Anda sedang dikoordinasikan dengan instansi terkait.",
    DISPOSISI: "Laporan Anda telah diteruskan (disposisi) ke {agency}.",
    PROSES: "Laporan Anda sedang ditindaklanjuti oleh {agency}.",
    MENUNGGU_VALIDASI: "Tindak lanjut laporan Anda sudah dikerjakan dan menunggu validasi.",
    SELESAI: "Laporan Anda telah selesai ditindaklanjuti. Terima kasih.",
    TL_DITOLAK: "Laporan Anda tidak dapat ditindaklanjuti.",
}


class TransitionError(ValueError):
    """An officer action the lifecycle refuses. ``code`` is machine-readable; str() is for a person."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def check_transition(current: str, target: str) -> None:
    if target not in TRANSITIONS:
        raise TransitionError("unknown_status", f"unknown status {target!r}; known: {', '.join(STATUSES)}")
    if current in FINAL:
        raise TransitionError(
            "final_status", f"the report is already {current!r} (final); it cannot become {target!r}"
        )
    allowed = TRANSITIONS.get(current, frozenset())
    if target not in allowed:
        choices = ", ".join(s for s in STATUSES if s in allowed) or "nothing"
        raise TransitionError(
            "invalid_transition", f"{current!r} cannot become {target!r}; from {current!r}: {choices}"
        )


def intake_event_id(report_id: str) -> str:
    return f"intake:{report_id}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class StatusEvent(_Model):
    """An officer's action, as it arrives on ``<ns>.status.v1`` (key: report id) or through the API."""

    event_id: str = Field(
        default_factory=lambda: str(uuid.uuid4()),
        min_length=1,
        max_length=200,
        description="idempotency key: the same event applied twice changes nothing the second time",
    )
    report_id: str | None = Field(None, description="the report (uuid); or give tracking_number")
    tracking_number: str | None = None
    status: str = Field(description="target status, one of: " + ", ".join(STATUSES))
    actor: str = Field(min_length=1, max_length=200, description="officer id or name, for the history")
    note: str | None = Field(None, max_length=4000, description="shown in the history and to the citizen")
    agency: str | None = Field(
        None, description="Disposisi: the agency to forward to (agency id, official name or CRM label)"
    )
    agency_unit: str | None = Field(
        None,
        description="Disposisi: its office (e.g. 'Suku Dinas Bina Marga Jakarta Timur'); derived if empty",
    )
    at: datetime = Field(default_factory=utcnow)

    @field_validator("status")
    @classmethod
    def _known(cls, value: str) -> str:
        for s in STATUSES:
            if s.lower() == value.lower():
                return s
        raise ValueError(f"unknown status {value!r}; known: {', '.join(STATUSES)}")


class StatusChange(_Model):
    """An accepted change, as published on ``<ns>.status-changes.v1`` (key: report id). No identity."""

    schema_version: str = "1.0"
    event_id: str
    report_id: str
    tracking_number: str
    from_status: str | None
    to_status: str
    open311_status: Literal["open", "closed"]
    actor: str
    note: str | None = None
    agency: str | None = None
    agency_unit: str | None = None
    previous_agency: str | None = None
    changed_at: datetime

    def dumps(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


class Escalation(_Model):
    """A report past its expected-by date, on ``<ns>.escalation.v1`` (key: report id); once per due date."""

    schema_version: str = "1.0"
    report_id: str
    tracking_number: str
    status: str
    agency: str | None = None
    agency_unit: str | None = None
    expected_by: datetime
    overdue_hours: float
    raised_at: datetime

    def dumps(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


def json_schemas() -> dict[str, dict]:
    """JSON Schemas (draft 2020-12) of the status topics, shipped in ``pipeline/schemas/``."""
    out = {}
    for name, model, mode in (
        ("status-event.v1", StatusEvent, "validation"),
        ("status-change.v1", StatusChange, "serialization"),
        ("escalation.v1", Escalation, "serialization"),
    ):
        schema = model.model_json_schema(mode=mode)  # type: ignore[arg-type]
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://jakarta.go.id/schemas/crm/{name}.schema.json"
        out[name] = schema
    return out
