"""``jaki``: the JAKI city app.

The JAKI backend POSTs one JSON report per request with ``Authorization: Bearer <token>``
(``CRM_JAKI_TOKEN``; a missing token is 401, a wrong one 403, compared in constant time).
JAKI is the only channel with GPS; reports are private by default (officers do not see who reported),
so a missing ``private`` flag means private. The app's own report id is the provider id, so a retry by
the backend maps to the same report.

Body (field aliases in brackets)::

    {"report_id": "JAKI-2024-000123",          [id]
     "text": "Pohon tumbang ...",               [description, laporan]
     "category": "Pohon",                       [category_hint, kategori]
     "lat": -6.2, "lon": 106.8,                 [latitude/longitude, or "location": {"lat","lng"}]
     "photo_urls": ["https://..."],             [photos, attachments]
     "account_id": "u-9f2c",                    [reporter_id, user_id]
     "private": true,
     "created_at": "2024-05-01T08:00:00+07:00"} [submitted_at]
"""

from __future__ import annotations

import hmac
from typing import ClassVar

from ..envelope import Attachment, Contact, Location, Report, Reporter, reporter_pseudonym
from .base import InboundRequest, PushResult, PushSource, Rejected
from .common import field, header, is_url, parse_body, parse_bool, parse_lat_lon, parse_timestamp, text_value
from .config import core_view

MAX_TEXT = 5000
MAX_PHOTOS = 10

ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("report_id", "id"),
    "text": ("text", "description", "laporan"),
    "category": ("category", "category_hint", "kategori"),
    "lat": ("lat", "latitude"),
    "lon": ("lon", "lng", "longitude"),
    "photos": ("photo_urls", "photos", "attachments"),
    "account": ("account_id", "reporter_id", "user_id"),
    "private": ("private", "is_private"),
    "created_at": ("created_at", "submitted_at"),
}


def check_bearer(request: InboundRequest, expected: str) -> None:
    """401 when no bearer token is sent, 403 when it is not ``expected`` (constant-time compare)."""
    auth = header(request, "Authorization") or ""
    scheme, _, token = auth.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Rejected(
            "missing bearer token: send 'Authorization: Bearer <token>'", status=401, code="unauthenticated"
        )
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise Rejected("the bearer token is not valid for this channel", status=403, code="forbidden")


JakiSettings = core_view("JakiSettings", "CRM_JAKI_", ["jaki_token"])


class JakiSource(PushSource):
    channel: ClassVar[str] = "jaki"
    route: ClassVar[str] = "/v1/channels/jaki/reports"
    settings_model = JakiSettings

    def authenticate(self, request: InboundRequest) -> None:
        check_bearer(request, self.config.token.get_secret_value())

    def parse(self, request: InboundRequest) -> PushResult:
        if (
            request.body
            and request.content_type != "application/json"
            and not request.content_type.endswith("+json")
        ):
            raise Rejected(
                "JAKI reports must be sent as application/json", status=415, code="unsupported_media_type"
            )
        data = parse_body(request)

        provider_id = text_value(field(data, ALIASES, "id"), "report_id", 200)
        if provider_id is None:
            raise Rejected(
                "report_id (JAKI's own report id) is required", code="missing_id", field="report_id"
            )
        text = text_value(field(data, ALIASES, "text"), "text", MAX_TEXT)
        if text is None:
            raise Rejected("text is required (isi laporan wajib diisi)", code="missing_text", field="text")

        location = Location()
        nested = data.get("location")
        lat, lon = field(data, ALIASES, "lat"), field(data, ALIASES, "lon")
        if isinstance(nested, dict) and lat is None and lon is None:
            lat = nested.get("lat", nested.get("latitude"))
            lon = nested.get("lon", nested.get("lng", nested.get("longitude")))
            location.address = text_value(nested.get("address"), "location.address", 1000)
        point = parse_lat_lon(lat, lon)
        if point is not None:
            location.lat, location.lon = point
        if location.address is None:
            location.address = text_value(data.get("address"), "address", 1000)

        photos = field(data, ALIASES, "photos") or []
        if isinstance(photos, str):
            photos = [photos]
        if not isinstance(photos, list) or len(photos) > MAX_PHOTOS:
            raise Rejected(f"photo_urls must be a list of at most {MAX_PHOTOS} URLs", code="bad_attachments")
        attachments = []
        for url in photos:
            if not isinstance(url, str) or not is_url(url):
                raise Rejected(
                    f"photo URL {url!r} is not an http(s) URL", code="bad_attachments", field="photo_urls"
                )
            attachments.append(Attachment(url=url, media_type="image/*"))

        account = text_value(field(data, ALIASES, "account"), "account_id", 200)
        # JAKI is private by default: only an explicit false makes the reporter visible to officers.
        raw_private = field(data, ALIASES, "private")
        private = True if raw_private is None else parse_bool(raw_private)
        reporter_id = reporter_pseudonym(self.reporter_key, "jaki", account) if account else "anonymous"

        report = Report.create(
            channel=self.channel,
            provider_id=provider_id,
            source_at=parse_timestamp(field(data, ALIASES, "created_at"), "created_at"),
            reporter=Reporter(id=reporter_id, private=private),
            contact=Contact(handle=account) if account else None,
            text=text,
            category_hint=text_value(field(data, ALIASES, "category"), "category", 200),
            location=location,
            attachments=attachments,
        )
        return PushResult([report])
