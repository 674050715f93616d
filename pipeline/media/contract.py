"""The media routes in the OpenAPI document (``pipeline/openapi.py`` adds them to the API's part).

Self-contained (no imports from ``pipeline.openapi``), so the document can include it without a cycle."""

from __future__ import annotations

from typing import Any

KEY = [{"apiKeyQuery": []}, {"apiKeyHeader": []}]
_WHY = {
    401: "no API key, or an unknown one",
    403: "the key lacks the permission",
    404: "not found",
    413: "larger than the photo size limit (the reason says which)",
    415: "not an accepted image (the reason says what it is)",
}


def _answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors_json(*statuses: int) -> dict[str, Any]:
    return {str(s): _answer(_WHY[s], {"$ref": "#/components/schemas/Open311Errors"}) for s in statuses}


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _query(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


def openapi_paths() -> dict[str, Any]:
    """The media routes in the OpenAPI document (pipeline/openapi.py adds them to the API's part)."""
    ref = _path("ref", "tracking number (JKT-…) or report id")
    common = {"tags": ["officers"], "x-process": ["api"]}
    item = {
        "type": "object",
        "required": ["kind", "index", "state"],
        "properties": {
            "kind": {"type": "string", "enum": ["citizen", "after"]},
            "index": {"type": "integer"},
            "state": {"type": "string", "enum": ["pending", "stored", "refused", "failed"]},
            "name": {"type": ["string", "null"]},
            "code": {"type": ["string", "null"], "description": "why it is not (yet) kept"},
            "reason": {"type": ["string", "null"]},
            "attempts": {"type": "integer"},
            "sha256": {"type": "string"},
            "media_type": {"type": "string"},
            "size": {"type": "integer"},
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "url": {"type": "string", "description": "signed, time-limited URL of the EXIF-free copy"},
            "thumbnail_url": {"type": "string"},
            "public_url": {"type": "string", "description": "the Open311 media_url of this photo"},
            "original_url": {"type": "string", "description": "only with media:original (EXIF kept)"},
            "expires_in": {"type": "integer", "description": "seconds the signed URLs stay valid"},
            "location_candidate": {
                "type": "object",
                "description": "the photo's GPS when the report has none",
            },
            "actor": {"type": ["string", "null"]},
            "event_id": {"type": ["string", "null"]},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    }
    listing = {
        "type": "object",
        "properties": {
            "report_id": {"type": "string"},
            "tracking_number": {"type": ["string", "null"]},
            "media": {"type": "array", "items": item},
        },
    }
    stored = {
        "type": "object",
        "properties": {k: {"type": "string"} for k in ("kind", "sha256", "media_type", "url", "public_url")}
        | {"index": {"type": "integer"}},
    }
    image = {"type": "string", "contentMediaType": "image/jpeg"}
    return {
        "/v1/reports/{ref}/media": {
            "get": {
                **common,
                "security": KEY,
                "summary": "A report's photos with signed URLs (media:read; originals: media:original)",
                "operationId": "officer_media",
                "parameters": [ref],
                "responses": {"200": _answer("OK", listing), **_errors_json(401, 403, 404)},
            },
            "post": {
                **common,
                "security": KEY,
                "summary": "An officer's 'after' photo (status:write), the image as the body",
                "operationId": "officer_media_upload",
                "parameters": [
                    ref,
                    _query("event_id", "the status change the photo belongs to"),
                    _query("actor", "the officer"),
                    _query("name", "file name"),
                ],
                "requestBody": {"required": True, "content": {"image/*": {"schema": image}}},
                "responses": {"201": _answer("stored", stored), **_errors_json(401, 403, 404, 413, 415)},
            },
        },
        "/open311/v2/media/{name}": {
            "get": {
                "tags": ["open311"],
                "x-process": ["api"],
                "summary": "The public, EXIF-free copy of a photo (Open311 media_url; no key)",
                "operationId": "open311_media",
                "parameters": [_path("name", "<sha256>.jpg or <sha256>.png")],
                "responses": {
                    "200": {"description": "the image", "content": {"image/jpeg": {"schema": image}}},
                    "404": {"description": "no such photo"},
                },
            }
        },
    }
