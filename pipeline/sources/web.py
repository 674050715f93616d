"""``web``: the jakarta.go.id complaint form.

The form posts JSON (from its script) or ``application/x-www-form-urlencoded`` (without script).
It has no message id of its own, so the idempotency key is, in order: the ``Idempotency-Key``
header, the form's hidden ``submission_id``, else a hash of what the citizen submitted — so a
double click or a browser resubmit yields one report.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from ..envelope import Attachment, Contact, Location, Report, Reporter, reporter_pseudonym
from .base import InboundRequest, PushResult, PushSource, Rejected
from .common import (
    field,
    is_url,
    normalise_email,
    normalise_phone,
    parse_body,
    parse_bool,
    parse_lat_lon,
    text_value,
)

MIN_TEXT, MAX_TEXT = 10, 5000

# Field names the form (and older versions of it) use, in Indonesian and English.
ALIASES: dict[str, tuple[str, ...]] = {
    "text": ("text", "laporan", "isi_laporan", "description", "deskripsi"),
    "name": ("name", "nama"),
    "email": ("email", "surel"),
    "phone": ("phone", "telepon", "no_hp", "hp"),
    "address": ("address", "alamat", "lokasi"),
    "lat": ("lat", "latitude"),
    "lon": ("lon", "lng", "longitude"),
    "category": ("category", "kategori"),
    "private": ("private", "rahasia", "anonim"),
    "attachments": ("attachments", "photo_urls", "foto", "lampiran"),
    "submission_id": ("submission_id",),
}


def _field(data: dict[str, Any], key: str) -> Any:
    return field(data, ALIASES, key)


def _text_field(data: dict[str, Any], key: str, max_len: int) -> str | None:
    return text_value(_field(data, key), key, max_len)


class WebFormSource(PushSource):
    channel: ClassVar[str] = "web"
    route: ClassVar[str] = "/v1/channels/web/reports"

    def parse(self, request: InboundRequest) -> PushResult:
        data = parse_body(request)

        text = _text_field(data, "text", MAX_TEXT)
        if text is None or len(text) < MIN_TEXT:
            raise Rejected(
                f"the report text is required: describe the problem in at least {MIN_TEXT} characters "
                "(isi laporan wajib diisi, minimal 10 karakter)",
                code="missing_text",
                field="text",
            )

        contact = Contact(name=_text_field(data, "name", 200))
        email = _text_field(data, "email", 320)
        if email is not None:
            try:
                contact.email = normalise_email(email)
            except ValueError:
                raise Rejected(
                    f"email {email!r} is not a valid address (alamat surel tidak valid)",
                    code="bad_email",
                    field="email",
                ) from None
        phone = _text_field(data, "phone", 32)
        if phone is not None:
            try:
                contact.phone = normalise_phone(phone)
            except ValueError:
                raise Rejected(
                    f"phone {phone!r} is not a valid Indonesian number, e.g. 0812xxxxxxx "
                    "(nomor telepon tidak valid)",
                    code="bad_phone",
                    field="phone",
                ) from None

        location = Location(address=_text_field(data, "address", 1000))
        point = parse_lat_lon(_field(data, "lat"), _field(data, "lon"))
        if point is not None:
            location.lat, location.lon = point

        raw_attachments = _field(data, "attachments") or []
        if isinstance(raw_attachments, str):
            raw_attachments = [raw_attachments]
        if not isinstance(raw_attachments, list) or len(raw_attachments) > 10:
            raise Rejected("attachments must be a list of at most 10 photo URLs", code="bad_attachments")
        attachments = []
        for url in raw_attachments:
            if not isinstance(url, str) or not is_url(url):
                raise Rejected(
                    f"attachment {url!r} is not an http(s) URL", code="bad_attachments", field="attachments"
                )
            attachments.append(Attachment(url=url))

        if contact.email:
            reporter_id = reporter_pseudonym(self.reporter_key, "email", contact.email)
        elif contact.phone:
            reporter_id = reporter_pseudonym(self.reporter_key, "phone", contact.phone)
        else:
            reporter_id = "anonymous"

        report = Report.create(
            channel=self.channel,
            provider_id=self._idempotency_key(request, data, text, contact, location),
            reporter=Reporter(id=reporter_id, private=parse_bool(_field(data, "private"))),
            contact=contact if (contact.name or contact.email or contact.phone) else None,
            text=text,
            category_hint=_text_field(data, "category", 200),
            location=location,
            attachments=attachments,
        )
        return PushResult([report])

    @staticmethod
    def _idempotency_key(
        request: InboundRequest, data: dict[str, Any], text: str, contact: Contact, location: Location
    ) -> str:
        explicit = request.headers.get("Idempotency-Key") or _field(data, "submission_id")
        if explicit:
            key = str(explicit).strip()
            if not 1 <= len(key) <= 200 or not key.isprintable():
                raise Rejected(
                    "submission_id / Idempotency-Key must be 1-200 printable characters", code="bad_field"
                )
            return f"sub:{key}"
        canonical = "\x1f".join(
            str(part or "")
            for part in (
                " ".join(text.split()),
                contact.email,
                contact.phone,
                location.address,
                location.lat,
                location.lon,
            )
        )
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
