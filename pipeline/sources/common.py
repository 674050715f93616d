"""Parsing helpers shared by adapters: bodies, phone numbers, e-mail addresses, coordinates."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson

from ..envelope import Attachment, max_length
from .base import InboundRequest, Rejected

_EMAIL = re.compile(r"^[^@\s<>\"',;]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")
_NON_DIGIT = re.compile(r"[^\d+]")
_URL = re.compile(r"^https?://[^\s<>\"]{3,2000}$")

# Jakarta with Kepulauan Seribu, with a margin: coordinates outside are a client bug, not a report here.
JAKARTA_BBOX = (-6.45, 106.25, -5.10, 107.10)  # south, west, north, east


def decode_utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(
            f"body is not valid UTF-8 (byte {exc.start}); send the form as UTF-8",
            status=400,
            code="bad_encoding",
        ) from None


def parse_body(request: InboundRequest) -> dict[str, Any]:
    """A JSON object or a form-encoded body as a dict; anything else is refused with the reason."""
    ctype = request.content_type
    if not request.body:
        raise Rejected("empty body: send the report as JSON or as a form", code="empty_body")
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            data = orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            raise Rejected(f"malformed JSON: {exc}", code="malformed_json") from None
        if not isinstance(data, dict):
            raise Rejected("JSON body must be an object with the report fields", code="malformed_json")
        return data
    if ctype == "application/x-www-form-urlencoded":
        text = decode_utf8(request.body)
        try:
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=200)
        except ValueError as exc:
            raise Rejected(f"malformed form body: {exc}", code="malformed_form") from None
        data: dict[str, Any] = {}
        for key, value in pairs:
            # Repeated keys (several photo fields) become lists.
            if key in data:
                data[key] = [*data[key], value] if isinstance(data[key], list) else [data[key], value]
            else:
                data[key] = value
        return data
    raise Rejected(
        f"unsupported Content-Type {ctype or '(none)'!r}: "
        "use application/json or application/x-www-form-urlencoded",
        status=415,
        code="unsupported_media_type",
    )


def normalise_phone(raw: str) -> str:
    """Indonesian numbers to E.164: 0812…, 62812…, +62 812-… all become +62812…."""
    digits = _NON_DIGIT.sub("", raw.strip())
    if digits.startswith("+"):
        digits = digits[1:]
        if digits.startswith("0"):
            raise ValueError("a number after '+' cannot start with 0")
    elif digits.startswith("00"):
        digits = digits[2:]
    elif digits.startswith("0"):
        digits = "62" + digits[1:]
    elif digits.startswith("8"):
        digits = "62" + digits
    if "+" in digits or not digits.isdigit() or not 8 <= len(digits) <= 15:
        raise ValueError(f"not a phone number: {raw!r}")
    return "+" + digits


def normalise_email(raw: str) -> str:
    value = raw.strip()
    if not _EMAIL.match(value):
        raise ValueError(f"not an e-mail address: {raw!r}")
    local, _, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}"


MAX_URL = max_length(Attachment, "url")


def is_url(value: str) -> bool:
    # the pattern counts only what follows the scheme: without the length check a 2001-2008 character URL
    # passed and the envelope's ValidationError escaped the parser instead of a refusal
    return len(value) <= MAX_URL and bool(_URL.match(value))


def parse_coordinate(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise Rejected(
            f"{name} must be a number, got {value!r}", code="bad_coordinates", field=name
        ) from None
    if number != number or number in (float("inf"), float("-inf")):
        raise Rejected(f"{name} must be a finite number", code="bad_coordinates", field=name)
    return number


def in_jakarta(lat: float, lon: float) -> bool:
    south, west, north, east = JAKARTA_BBOX
    return south <= lat <= north and west <= lon <= east


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    return str(value).strip().lower() in {"1", "true", "yes", "ya", "on", "y"}


def field(data: dict[str, Any], aliases: dict[str, tuple[str, ...]], key: str) -> Any:
    """The first non-empty value among the names a field goes by (``aliases[key]``)."""
    for alias in aliases[key]:
        if alias in data and data[alias] not in (None, ""):
            return data[alias]
    return None


def text_value(value: Any, name: str, max_len: int) -> str | None:
    """A text field: scalars only, stripped, at most ``max_len`` characters; empty becomes None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise Rejected(f"{name} must be text", code="bad_field", field=name)
    out = str(value).strip()
    if len(out) > max_len:
        raise Rejected(
            f"{name} is too long ({len(out)} characters, at most {max_len})", code="too_long", field=name
        )
    return out or None


def parse_lat_lon(lat: Any, lon: Any) -> tuple[float, float] | None:
    """Both coordinates or neither, numeric and inside DKI Jakarta; None when none were sent."""
    if (lat is None) != (lon is None):
        raise Rejected("send both latitude and longitude, or neither", code="bad_coordinates", field="lat")
    if lat is None:
        return None
    point = parse_coordinate(lat, "lat"), parse_coordinate(lon, "lon")
    if not in_jakarta(*point):
        raise Rejected(
            f"coordinates ({point[0]}, {point[1]}) are outside DKI Jakarta",
            code="bad_coordinates",
            field="lat",
        )
    return point


def header(request: InboundRequest, name: str) -> str | None:
    """A header by name, case-insensitively (aiohttp's headers are; a plain dict in a unit test is not)."""
    value = request.headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, val in request.headers.items():
        if key.lower() == lowered:
            return val
    return None


def parse_timestamp(value: Any, name: str) -> datetime | None:
    """ISO 8601 with a zone (a ``Z`` suffix too); a naive timestamp is ambiguous and refused."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Rejected(f"{name} must be an ISO 8601 timestamp", code="bad_timestamp", field=name)
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Rejected(
            f"{name} {value!r} is not an ISO 8601 timestamp", code="bad_timestamp", field=name
        ) from None
    if parsed.tzinfo is None:
        raise Rejected(f"{name} {value!r} has no timezone (e.g. +07:00)", code="bad_timestamp", field=name)
    if not in_utc_range(parsed):
        raise Rejected(
            f"{name} {value!r} is out of range (before year 1 or after 9999 in UTC)",
            code="bad_timestamp",
            field=name,
        )
    return parsed


def in_utc_range(moment: datetime) -> bool:
    """Whether an aware time can be expressed in UTC: ``0001-01-01T00:00+01:00`` cannot (it is in year 0),
    and the envelope's UTC conversion would raise OverflowError instead of refusing it."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True
