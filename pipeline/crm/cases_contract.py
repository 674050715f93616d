"""The case routes in the OpenAPI document (``pipeline/openapi.py`` adds them to the API's part).

Self-contained (no imports from ``pipeline.openapi``), so the document can include it without a cycle."""

from __future__ import annotations

from typing import Any

KEY = [{"apiKeyQuery": []}, {"apiKeyHeader": []}]
_WHY = {
    401: "no API key, or an unknown one",
    403: "the key lacks the permission (cases:write; reading: cases:write or status:write)",
    404: "no such case (or report), or not one of the key's agencies",
    409: "refused: the report is not in the case, the case has one report, a case was merged away, or the "
    "event_id is another correction's (error_code says which)",
    422: "invalid body (the reason says what)",
}
_ERRORS = {"$ref": "#/components/schemas/Open311Errors"}
_NULL_STRING = {"type": ["string", "null"]}


def _answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _answer(_WHY[s], _ERRORS) for s in statuses}


def openapi_paths() -> dict[str, Any]:
    case_id = {
        "name": "case_id",
        "in": "path",
        "required": True,
        "description": "case id (case-…), as a report's case_id",
        "schema": {"type": "string"},
    }
    common = {"tags": ["officers"], "x-process": ["api"], "security": KEY}
    explanation = {
        "type": "object",
        "description": "what drove the score, against the closest other report of the case",
        "properties": {
            "closest": _NULL_STRING,
            "text_similarity": {"type": "number"},
            "distance_m": {"type": ["integer", "null"]},
            "days_apart": {"type": "number"},
            "same_kelurahan": {"type": "boolean"},
            "shared_words": {"type": "array", "items": {"type": "string"}},
            "only_here": {"type": "array", "items": {"type": "string"}},
            "only_there": {"type": "array", "items": {"type": "string"}},
            "same_place": {"type": "array", "items": {"type": "string"}},
        },
    }
    member = {
        "type": "object",
        "required": ["report_id", "score", "explanation"],
        "properties": {
            "report_id": {"type": "string"},
            "tracking_number": _NULL_STRING,
            "received_at": {"type": "string", "format": "date-time"},
            "status": {"type": "string"},
            "agency": _NULL_STRING,
            "text": _NULL_STRING,
            "route_reason": _NULL_STRING,
            "score": {"type": ["number", "null"], "description": "against the rest of the case, 0-1"},
            "explanation": explanation,
        },
    }
    case = {
        "type": "object",
        "required": ["case_id", "members"],
        "properties": {
            "case_id": {"type": "string"},
            "category": _NULL_STRING,
            "kelurahan_code": _NULL_STRING,
            "first_at": {"type": "string", "format": "date-time"},
            "last_at": {"type": "string", "format": "date-time"},
            "support_count": {"type": "integer"},
            "occurrence": {
                "type": "integer",
                "description": "1, or n for the n-th case of a recurring problem",
            },
            "previous_case_id": {**_NULL_STRING, "description": "the previous occurrence's case"},
            "next_case_ids": {"type": "array", "items": {"type": "string"}},
            "candidates": {
                "type": "array",
                "items": {"type": "string"},
                "description": "open cases grouping flagged as perhaps the same problem",
            },
            "closed_at": {"type": ["string", "null"], "format": "date-time"},
            "closed_reason": {**_NULL_STRING, "description": "Selesai, TL Ditolak or merged"},
            "merged_into": _NULL_STRING,
            "members": {"type": "array", "items": member},
        },
    }
    correction = {
        "type": "object",
        "required": ["correction_id", "kind", "case_id", "other_case_id", "pairs"],
        "properties": {
            "correction_id": {"type": "integer"},
            "event_id": {"type": "string"},
            "kind": {"type": "string", "enum": ["split", "merge"]},
            "case_id": {"type": "string"},
            "other_case_id": {
                "type": "string",
                "description": "split: the report's new case; merge: the case merged away",
            },
            "report_id": _NULL_STRING,
            "actor": {"type": "string"},
            "note": _NULL_STRING,
            "created_at": {"type": "string", "format": "date-time"},
            "pairs": {"type": "integer", "description": "labelled pairs of reports this correction recorded"},
            "moved": {"type": "integer", "description": "merge: reports moved into the case"},
        },
    }

    def body(required: str, description: str) -> dict[str, Any]:
        return {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": [required],
                        "properties": {
                            required: {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 200,
                                "description": description,
                            },
                            "actor": {"type": "string", "maxLength": 200, "description": "the officer"},
                            "note": {"type": "string", "maxLength": 2000},
                            "event_id": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 200,
                                "description": "the same id again is a replay (200), not a second correction",
                            },
                        },
                    }
                }
            },
        }

    corrected = {
        "200": _answer("a replay of an applied correction", correction),
        "201": _answer("applied", correction),
        **_errors(401, 403, 404, 409, 422),
    }
    return {
        "/v1/cases/{case_id}": {
            "get": {
                **common,
                "summary": "A case: each report with its score against the case and what drove it",
                "operationId": "officer_case",
                "parameters": [case_id],
                "responses": {"200": _answer("OK", case), **_errors(401, 403, 404)},
            }
        },
        "/v1/cases/{case_id}/split": {
            "post": {
                **common,
                "summary": "Split a report out of a case into a case of its own (cases:write)",
                "operationId": "officer_case_split",
                "parameters": [case_id],
                "requestBody": body("report", "tracking number (JKT-…) or report id of a report of the case"),
                "responses": corrected,
            }
        },
        "/v1/cases/{case_id}/merge": {
            "post": {
                **common,
                "summary": "Merge another case into this one (cases:write)",
                "operationId": "officer_case_merge",
                "parameters": [case_id],
                "requestBody": body("other", "the case whose reports move into this one"),
                "responses": corrected,
            }
        },
    }
