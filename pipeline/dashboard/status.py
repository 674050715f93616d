"""The CRM's statuses and their colours on the dashboard (the lifecycle is ``pipeline.crm.status``)."""

from __future__ import annotations

#: Colours of the CRM's status badges: waiting amber, coordination/disposition purple, in progress
#: blue, waiting for validation teal, done green, refused red.
STATUS_COLOURS: dict[str, str] = {
    "Menunggu": "#f0a202",
    "Koordinasi": "#8e6bbf",
    "Disposisi": "#b05cc2",
    "Proses": "#1f77d0",
    "Menunggu Validasi": "#17a2a8",
    "Selesai": "#2e9d4f",
    "TL Ditolak": "#d64541",
}
UNKNOWN_COLOUR = "#7a8590"


def statuses() -> list[str]:
    try:
        from ..crm.status import STATUSES

        return list(STATUSES)
    except ImportError:  # pragma: no cover - before the lifecycle module existed
        return list(STATUS_COLOURS)


def final_statuses() -> list[str]:
    try:
        from ..crm.status import FINAL

        return sorted(FINAL)
    except ImportError:  # pragma: no cover
        return ["Selesai", "TL Ditolak"]


def colours() -> dict[str, str]:
    return {s: STATUS_COLOURS.get(s, UNKNOWN_COLOUR) for s in statuses()}
