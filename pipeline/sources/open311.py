"""``open311``: GeoReport v2 ``POST requests.json|xml`` from integrators (FixMyStreet, 311 apps, bots).

The spec's form fields (``application/x-www-form-urlencoded``; a JSON object is accepted too):
``api_key`` (a key with the ``open311:submit`` scope; or ``X-API-Key``), ``service_code``, a location
(``lat`` + ``long``, ``address_string`` or ``address_id`` = a kelurahan code), ``description``,
``media_url`` (repeatable), ``email``, ``phone``, ``first_name``, ``last_name``, ``device_id``,
``account_id`` and ``attribute[CODE]=value`` (``attribute[CODE][]`` for several values). Attributes
this city defines (``kelurahan``, ``private``, ``title``; see ``services/{code}``) are used; others
(FixMyStreet's ``report_url``, ``fixmystreet_id``, …) are accepted and ignored.

The pipeline is asynchronous, so the answer is the spec's ``token`` (``GET tokens/{token}`` maps it to
the ``service_request_id`` once the worker has stored the report). Idempotency: the
``Idempotency-Key`` header or an ``idempotency_key`` field, else a hash of the request's content, so
a client retrying after a timeout gets the same token and one report. The key is scrubbed from the
body before the raw payload is kept (raw topic, dead letters).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode

import orjson

from ..envelope import Attachment, Contact, Location, Report, Reporter, reporter_pseudonym
from ..open311 import JURISDICTION
from ..open311.formats import format_of, render, render_errors
from ..open311.keys import SUBMIT, KeyRefused, load_keys, presented, require
from ..open311.services import ATTRIBUTE_CODES, find_kelurahan, service_codes
from ..open311.tokens import make_token
from .base import InboundRequest, PushResult, PushSource, Rejected
from .common import (
    header,
    is_url,
    normalise_email,
    normalise_phone,
    parse_body,
    parse_bool,
    parse_lat_lon,
    text_value,
)
from .config import core_view

MIN_TEXT, MAX_TEXT = 3, 4000  # the spec limits description to 4,000 characters
SERVICE_NOTICE = (
    "Laporan diterima dan sedang diproses; nomor laporan (service_request_id) tersedia lewat token ini "
    "dalam beberapa detik. Report received; its service_request_id is available through this token shortly."
)


def _attributes(data: Mapping[str, Any]) -> dict[str, Any]:
    """``attribute[code]`` / ``attribute[code][]`` form fields, or a JSON ``attribute`` object."""
    out: dict[str, Any] = {}
    nested = data.get("attribute")
    if isinstance(nested, Mapping):
        out.update({str(k): v for k, v in nested.items()})
    elif nested is not None:
        raise Rejected("attribute must be an object of code: value", code="bad_field", field="attribute")
    for key, value in data.items():
        if not (key.startswith("attribute[") and key.endswith("]")):
            continue
        code = key[len("attribute[") : -1]
        if code.endswith("]["):  # attribute[code][]: a multivaluelist
            code, value = code[:-2], value if isinstance(value, list) else [value]
        out[code] = value
    return out


#: submissions are authenticated by the consumer API keys (``open311:submit``), shared with the API
Open311Settings = core_view("Open311Settings", "CRM_OPEN311_", [], shared=["api_keys"])


class Open311Source(PushSource):
    channel: ClassVar[str] = "open311"
    route: ClassVar[str] = "/open311/v2/requests.{format:(?:json|xml)}"
    settings_model = Open311Settings

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self.keys = load_keys(settings)

    # -------------------------------------------------------------------------------- protocol
    def authenticate(self, request: InboundRequest) -> None:
        try:
            form = parse_body(request)
        except Rejected:
            form = {}  # a broken body is parse's to refuse (dead-lettered) once the key is known
        token = presented(request.query, _Headers(request), form)
        try:
            require(self.keys, token, SUBMIT)
        except KeyRefused as exc:
            raise Rejected(exc.reason, status=exc.status, code=exc.code, field="api_key") from None

    def respond(self, request: InboundRequest, status: int, body: Mapping[str, object]) -> tuple[bytes, str]:
        fmt = format_of(request.path)
        if status >= 400:
            return render_errors(fmt, status, str(body.get("error") or "refused"), _str(body.get("code")))
        return render(fmt, "service_requests", [dict(body)])

    def scrub(self, body: bytes, content_type: str | None) -> bytes:
        ctype = (content_type or "").split(";", 1)[0].strip().lower()
        try:
            if ctype == "application/x-www-form-urlencoded":
                pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
                if any(k == "api_key" for k, _ in pairs):
                    return urlencode([(k, v) for k, v in pairs if k != "api_key"]).encode()
            elif ctype == "application/json" or ctype.endswith("+json"):
                data = orjson.loads(body)
                if isinstance(data, dict) and "api_key" in data:
                    data.pop("api_key")
                    return orjson.dumps(data)
        except (UnicodeDecodeError, ValueError):
            pass  # not parseable, so parse refuses it; nothing recognisable as a key to remove
        return body

    # ----------------------------------------------------------------------------------- parse
    def parse(self, request: InboundRequest) -> PushResult:
        data = parse_body(request)
        jurisdiction = text_value(data.get("jurisdiction_id"), "jurisdiction_id", 200)
        if jurisdiction and jurisdiction != JURISDICTION:
            raise Rejected(
                f"jurisdiction_id {jurisdiction!r} not found; this endpoint serves {JURISDICTION}",
                status=404,
                code="unknown_jurisdiction",
                field="jurisdiction_id",
            )
        code = text_value(data.get("service_code"), "service_code", 200)
        if not code:
            raise Rejected(
                "service_code is required (GET services.json lists them)", code="missing_service_code",
                field="service_code",
            )  # fmt: skip
        if code not in service_codes():
            raise Rejected(
                f"service_code {code!r} not found (GET services.json lists them)",
                status=404,
                code="unknown_service_code",
                field="service_code",
            )
        attributes = _attributes(data)
        ours = {k: v for k, v in attributes.items() if k in ATTRIBUTE_CODES}

        title = text_value(ours.get("title"), "attribute[title]", 200)
        description = text_value(data.get("description"), "description", MAX_TEXT)
        if description is None or len(description) < MIN_TEXT:
            raise Rejected(
                f"description is required: describe the problem in at least {MIN_TEXT} characters",
                code="missing_text",
                field="description",
            )
        text = (
            description
            if not title or title.casefold() in description.casefold()
            else f"{title}\n\n{description}"
        )

        location = self._location(data, ours)
        contact, device = self._contact(data)
        media = data.get("media_url")
        urls = media if isinstance(media, list) else [media] if media not in (None, "") else []
        if len(urls) > 10:
            raise Rejected("at most 10 media_url values", code="bad_attachments", field="media_url")
        attachments = []
        for url in urls:
            if not isinstance(url, str) or not is_url(url.strip()):
                raise Rejected(
                    f"media_url {url!r} is not an http(s) URL", code="bad_attachments", field="media_url"
                )
            attachments.append(Attachment(url=url.strip()))

        private = ours.get("private")
        if private is not None and str(private).strip().lower() not in {
            "true",
            "false",
            "1",
            "0",
            "yes",
            "no",
        }:
            raise Rejected(
                "attribute[private] must be true or false", code="bad_field", field="attribute[private]"
            )
        report = Report.create(
            channel=self.channel,
            provider_id=self._idempotency_key(request, data, code, text, contact, location, attachments),
            reporter=Reporter(id=self._reporter_id(contact, device), private=parse_bool(private)),
            contact=contact if (contact.name or contact.email or contact.phone or contact.handle) else None,
            text=text,
            category_hint=code,
            location=location,
            attachments=attachments,
        )
        answer: dict[str, Any] = {
            "token": make_token(self.settings, report.report_id),
            "service_notice": SERVICE_NOTICE,
        }
        if contact.handle:
            answer["account_id"] = contact.handle
        return PushResult([report], response=answer, status=202)

    def _location(self, data: Mapping[str, Any], attributes: Mapping[str, Any]) -> Location:
        location = Location(address=text_value(data.get("address_string"), "address_string", 1000))
        point = parse_lat_lon(data.get("lat"), data.get("long"))
        if point is not None:
            location.lat, location.lon = point
        place = None
        for name, value in (
            ("address_id", data.get("address_id")),
            ("attribute[kelurahan]", attributes.get("kelurahan")),
        ):
            raw = text_value(value, name, 40)
            if raw is None:
                continue
            place = find_kelurahan(raw)
            if place is None:
                raise Rejected(
                    f"{name} {raw!r} is not a kelurahan code, e.g. 31.71.05.1001 "
                    "(GET services/{service_code}.json lists them)",
                    code="unknown_address_id" if name == "address_id" else "bad_attribute",
                    field=name,
                )
        if place is not None and place.name.casefold() not in (location.address or "").casefold():
            location.address = f"{location.address}, {place.label}" if location.address else place.label
        if point is None and not location.address:
            raise Rejected(
                "a location is required: lat and long, address_string or address_id",
                code="missing_location",
                field="lat",
            )
        return location

    def _contact(self, data: Mapping[str, Any]) -> tuple[Contact, str | None]:
        first = text_value(data.get("first_name"), "first_name", 100)
        last = text_value(data.get("last_name"), "last_name", 100)
        contact = Contact(
            name=" ".join(p for p in (first, last) if p) or None,
            handle=text_value(data.get("account_id"), "account_id", 200),
        )
        email = text_value(data.get("email"), "email", 320)
        if email is not None:
            try:
                contact.email = normalise_email(email)
            except ValueError:
                raise Rejected(
                    f"email {email!r} is not a valid address", code="bad_email", field="email"
                ) from None
        phone = text_value(data.get("phone"), "phone", 32)
        if phone is not None:
            try:
                contact.phone = normalise_phone(phone)
            except ValueError:
                raise Rejected(
                    f"phone {phone!r} is not a valid Indonesian number, e.g. 0812xxxxxxx",
                    code="bad_phone",
                    field="phone",
                ) from None
        return contact, text_value(data.get("device_id"), "device_id", 200)

    def _reporter_id(self, contact: Contact, device: str | None) -> str:
        if contact.email:
            return reporter_pseudonym(self.reporter_key, "email", contact.email)
        if contact.phone:
            return reporter_pseudonym(self.reporter_key, "phone", contact.phone)
        if contact.handle:
            return reporter_pseudonym(self.reporter_key, "open311-account", contact.handle)
        if device:
            return reporter_pseudonym(self.reporter_key, "open311-device", device)
        return "anonymous"

    @staticmethod
    def _idempotency_key(
        request: InboundRequest,
        data: Mapping[str, Any],
        code: str,
        text: str,
        contact: Contact,
        location: Location,
        attachments: list[Attachment],
    ) -> str:
        explicit = header(request, "Idempotency-Key") or data.get("idempotency_key")
        if explicit:
            key = str(explicit).strip()
            if not 1 <= len(key) <= 200 or not key.isprintable():
                raise Rejected(
                    "Idempotency-Key / idempotency_key must be 1-200 printable characters",
                    code="bad_field",
                    field="idempotency_key",
                )
            return f"key:{key}"
        canonical = "\x1f".join(
            str(part or "")
            for part in (
                code,
                " ".join(text.split()),
                contact.email,
                contact.phone,
                contact.handle,
                location.address,
                location.lat,
                location.lon,
                *(a.url for a in attachments),
            )
        )
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


class _Headers(Mapping[str, str]):
    """Case-insensitive view of an inbound request's headers (a plain dict in unit tests is not)."""

    def __init__(self, request: InboundRequest) -> None:
        self.request = request

    def __getitem__(self, key: str) -> str:
        value = header(self.request, key)
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.request.headers)

    def __len__(self) -> int:
        return len(self.request.headers)


def _str(value: object) -> str | None:
    return str(value) if value else None
