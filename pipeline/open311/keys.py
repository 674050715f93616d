"""API keys of integrators and officers: who the caller is and what they may do.

``CRM_API_KEYS`` maps a key to ``{consumer, scopes, agencies}``. Scopes:

* ``open311:read`` — read Open311 without the public rate limit (public fields);
* ``open311:private`` — also the private fields of the key's agencies' requests (all agencies when
  ``agencies`` is omitted);
* ``open311:submit`` — create service requests (``POST requests.json|xml``);
* ``status:write`` — officer status changes and history; ``desk:read`` — desk notifications.
* ``cases:write`` — read cases and correct grouping: split a report out of a case, merge two cases
  (``status:write`` may read cases too) (#23);
* ``media:read`` — signed URLs of a report's photos (EXIF-free copies); ``media:original`` — also the
  originals, which keep the phone model and GPS position: only for roles that may read contacts (#21).

Reads need no key at all (public fields, rate-limited per client); writes always do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from ..settings import Settings

READ = "open311:read"
PRIVATE = "open311:private"
SUBMIT = "open311:submit"
STATUS_WRITE = "status:write"
DESK_READ = "desk:read"
MEDIA_READ = "media:read"
MEDIA_ORIGINAL = "media:original"
CASES_WRITE = "cases:write"
SCOPES = (READ, PRIVATE, SUBMIT, STATUS_WRITE, DESK_READ, MEDIA_READ, MEDIA_ORIGINAL, CASES_WRITE)


class KeyRefused(Exception):
    """The key is missing (401), unknown (401) or lacks a scope (403); ``reason`` says which."""

    def __init__(self, status: int, reason: str, code: str) -> None:
        super().__init__(reason)
        self.status, self.reason, self.code = status, reason, code


@dataclass(frozen=True)
class ApiKey:
    consumer: str
    scopes: frozenset[str]
    agencies: frozenset[str] | None  # None: every agency

    def sees(self, agency: str | None) -> bool:
        return self.agencies is None or agency in self.agencies

    def sees_private(self, agency: str | None) -> bool:
        """Private fields of a request: the key has the scope and the request is its agency's."""
        return PRIVATE in self.scopes and self.sees(agency)


def load_keys(settings: Settings) -> dict[str, ApiKey]:
    raw = orjson.loads(settings.api_keys.get_secret_value() or "{}")
    keys = {}
    for key, spec in raw.items():
        agencies = spec.get("agencies")
        keys[key] = ApiKey(
            consumer=spec.get("consumer") or "unnamed",
            scopes=frozenset(spec.get("scopes") or [READ]),
            agencies=frozenset(agencies) if agencies else None,
        )
    return keys


def presented(query: Mapping[str, str], headers: Mapping[str, str], form: Mapping[str, object]) -> str | None:
    """The key as sent: ``api_key`` in the form (Open311 POST), the query, or ``X-API-Key``."""
    for source in (form.get("api_key"), query.get("api_key"), headers.get("X-API-Key")):
        if isinstance(source, str) and source.strip():
            return source.strip()
    return None


def require(keys: Mapping[str, ApiKey], token: str | None, scope: str) -> ApiKey:
    if not token:
        raise KeyRefused(401, "an API key is required (api_key parameter or X-API-Key header)", "no_api_key")
    key = keys.get(token)
    if key is None:
        raise KeyRefused(401, "unknown API key", "unknown_api_key")
    if scope not in key.scopes:
        raise KeyRefused(403, f"this API key ({key.consumer}) lacks the permission {scope!r}", "forbidden")
    return key
