"""What the citizen reads. Never a name, handle or contact detail: a message may be public."""

from __future__ import annotations

from ..status import CITIZEN_TEXT, INITIAL_STATUS


def ack_text(tracking_number: str) -> str:
    return (
        f"Terima kasih. {CITIZEN_TEXT[INITIAL_STATUS]} Nomor laporan Anda: {tracking_number}. "
        "Sebutkan nomor ini untuk menanyakan perkembangannya."
    )


def status_text(tracking_number: str, status: str, agency: str | None, note: str | None) -> str:
    text = CITIZEN_TEXT.get(status, f"Status laporan Anda: {status}.").format(
        agency=agency or "instansi terkait"
    )
    out = f"[{tracking_number}] Status: {status}. {text}"
    if note:
        out += f" Catatan petugas: {note.strip()[:500]}"
    return out


def subject(tracking_number: str, status: str) -> str:
    return f"[{tracking_number}] Laporan Anda: {status}"
