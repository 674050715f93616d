"""Tokens: what an asynchronous GeoReport server answers a POST with, until the request is stored.

The report id is known at the ingress (``uuid5(channel, provider id)``), so the token is that id with
a keyed tag: ``GET tokens/{token}`` can tell a token this city issued (pending until the worker has
stored the report, then its ``service_request_id``) from one it never issued (404), without a table.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from ..settings import Settings

_TOKEN = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})-([0-9a-f]{12})$")


def _tag(settings: Settings, report_id: str) -> str:
    key = settings.reporter_id_key.get_secret_value().encode()
    return hmac.new(key, f"open311-token:{report_id}".encode(), hashlib.sha256).hexdigest()[:12]


def make_token(settings: Settings, report_id: str) -> str:
    return f"{report_id}-{_tag(settings, report_id)}"


def report_id_of(settings: Settings, token: str) -> str | None:
    """The report id a token stands for, or None when this city did not issue it."""
    m = _TOKEN.match(token.strip().lower())
    if m is None or not hmac.compare_digest(m.group(2), _tag(settings, m.group(1))):
        return None
    return m.group(1)
