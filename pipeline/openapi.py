"""The HTTP contract: one OpenAPI 3.1 document for the ingress, the Open311 API and the officer API.

Generated from the code it describes (the installed push adapters and their routes, the status models,
the Open311 fields), written to ``docs/openapi.json`` by ``make openapi`` and served at
``/openapi.json`` by each process (its own operations: ``x-process`` says which process serves one).
A test keeps ``docs/openapi.json`` equal to what is generated; CI validates the document
(openapi-spec-validator) and runs Schemathesis against the live processes with it.

Open311 answers exist as JSON and XML. The XML schemas are the JSON ones with every value as text (XML
has no numbers or booleans): ``<lat>-6.17</lat>``, ``<metadata>true</metadata>``, an empty element
for null. An XML document reads as the JSON would with the spec's element names: ``service_requests``
holding ``request`` items, ``attributes`` holding ``attribute``, and so on.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

import orjson
from aiohttp import web

from .crm.status import STATUSES, StatusChange
from .envelope import SCHEMA_VERSION
from .open311.formats import CONTENT_TYPES

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/"
NULLABLE_STRING = {"type": ["string", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


# ----------------------------------------------------------------------------------------- schemas
def _open311_schemas() -> dict[str, Any]:
    from .open311.services import ATTRIBUTE_CODES

    string = {"type": "string"}
    request_fields: dict[str, Any] = {
        "service_request_id": {"type": "string", "description": "the tracking number citizens know (JKT-…)"},
        "status": {"type": "string", "enum": ["open", "closed"]},
        "status_notes": _nullable("string", description="the latest officer note"),
        "service_name": string,
        "service_code": _nullable("string"),
        "description": {
            "type": "string",
            "description": "the citizen's text, contact details and names masked",
        },
        "agency_responsible": _nullable("string"),
        "service_notice": _nullable("string", description="the office handling it"),
        "requested_datetime": {"type": "string", "format": "date-time"},
        "updated_datetime": _nullable("string", format="date-time"),
        "expected_datetime": _nullable("string", format="date-time"),
        "address": _nullable("string"),
        "address_id": _nullable("string", description="the kelurahan code (Kemendagri)"),
        "zipcode": _nullable("string"),
        "lat": _nullable("number"),
        "long": _nullable("number"),
        "media_url": _nullable("string"),
        "report_id": {"type": "string", "format": "uuid"},
        "crm_status": {"type": "string", "enum": list(STATUSES)},
        "kota": _nullable("string"),
        "kota_code": _nullable("string"),
        "kecamatan_code": _nullable("string"),
        "kelurahan": _nullable("string"),
        "kelurahan_code": _nullable("string"),
        "case_id": _nullable("string"),
    }
    private_fields: dict[str, Any] = {
        "description_original": {
            "type": "string",
            "description": "private: the text as the citizen wrote it",
        },
        "channel": {"type": "string", "description": "private: the channel it came by"},
        "category_hint": _nullable("string", description="private: the category the citizen picked"),
        "classifier_confidence": _nullable("number"),
        "routed_to": _nullable("string"),
        "route_reason": _nullable("string"),
        "reporter_private": {"type": "boolean"},
        "media_urls": {"type": "array", "items": string},
    }
    value = {
        "type": "object",
        "required": ["key", "name"],
        "properties": {"key": string, "name": string},
    }
    attribute = {
        "type": "object",
        "required": ["variable", "code", "datatype", "required", "order", "description"],
        "properties": {
            "variable": {"type": "boolean"},
            "code": string,
            "datatype": {
                "type": "string",
                "enum": ["string", "number", "datetime", "text", "singlevaluelist", "multivaluelist"],
            },
            "required": {"type": "boolean"},
            "datatype_description": _nullable("string"),
            "order": {"type": "integer", "minimum": 1},
            "description": string,
            "values": {"type": "array", "items": _ref("Open311AttributeValue")},
        },
    }
    submit_properties: dict[str, Any] = {
        "api_key": {"type": "string", "description": "a key with open311:submit (or the X-API-Key header)"},
        "jurisdiction_id": {"type": "string", "enum": ["jakarta.go.id"]},
        "service_code": {"type": "string", "description": "from GET services"},
        "lat": {"type": "string", "description": "WGS84 latitude inside DKI Jakarta (with long)"},
        "long": {"type": "string", "description": "WGS84 longitude inside DKI Jakarta (with lat)"},
        "address_string": {"type": "string", "maxLength": 1000},
        "address_id": {"type": "string", "description": "a kelurahan code, e.g. 31.71.05.1001"},
        "description": {"type": "string", "minLength": 3, "maxLength": 4000},
        "media_url": {"type": "string", "description": "http(s) URL of a photo; repeatable"},
        "email": {"type": "string"},
        "phone": {"type": "string", "description": "an Indonesian number, e.g. 0812…"},
        "first_name": {"type": "string", "maxLength": 100},
        "last_name": {"type": "string", "maxLength": 100},
        "device_id": {"type": "string", "maxLength": 200},
        "account_id": {"type": "string", "maxLength": 200},
        "idempotency_key": {
            "type": "string",
            "maxLength": 200,
            "description": "or the Idempotency-Key header",
        },
    }
    for code in sorted(ATTRIBUTE_CODES):
        submit_properties[f"attribute[{code}]"] = {
            "type": "string",
            "description": f"the service attribute {code} (GET services/{{service_code}} describes it)",
        }
    return {
        "Open311Error": {
            "type": "object",
            "required": ["code", "description"],
            "properties": {
                "code": {"type": "integer", "description": "the HTTP status"},
                "description": {"type": "string", "minLength": 1, "description": "why, for a person"},
                "error_code": {"type": "string", "description": "why, for a program"},
            },
        },
        "Open311Errors": {"type": "array", "minItems": 1, "items": _ref("Open311Error")},
        "Open311Service": {
            "type": "object",
            "required": ["service_code", "service_name", "metadata", "type", "group"],
            "properties": {
                "service_code": string,
                "service_name": string,
                "description": _nullable("string"),
                "metadata": {"type": "boolean"},
                "type": {"type": "string", "enum": ["realtime", "batch", "blackbox"]},
                "keywords": _nullable("string"),
                "group": string,
            },
        },
        "Open311Services": {"type": "array", "items": _ref("Open311Service")},
        "Open311AttributeValue": value,
        "Open311Attribute": attribute,
        "Open311ServiceDefinition": {
            "type": "object",
            "required": ["service_code", "attributes"],
            "properties": {
                "service_code": string,
                "attributes": {"type": "array", "items": _ref("Open311Attribute")},
            },
        },
        "Open311ServiceRequest": {
            "type": "object",
            "required": ["service_request_id", "status", "service_name", "description", "requested_datetime"],
            "properties": {**request_fields, **private_fields},
        },
        "Open311ServiceRequests": {"type": "array", "items": _ref("Open311ServiceRequest")},
        "Open311Submitted": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "items": {
                "type": "object",
                "required": ["token"],
                "properties": {"token": string, "service_notice": string, "account_id": string},
            },
        },
        "Open311Token": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "items": {
                "type": "object",
                "required": ["token", "service_request_id"],
                "properties": {
                    "token": string,
                    "service_request_id": _nullable("string", description="null while pending"),
                    "service_notice": string,
                },
            },
        },
        "Open311Discovery": {
            "type": "object",
            "required": ["changeset", "contact", "endpoints"],
            "properties": {
                "changeset": string,
                "contact": string,
                "key_service": string,
                "endpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["specification", "url", "formats"],
                        "properties": {
                            "specification": string,
                            "url": string,
                            "changeset": string,
                            "type": string,
                            "formats": {"type": "array", "items": string},
                        },
                    },
                },
            },
        },
        "Open311Submit": {
            "type": "object",
            "required": ["service_code", "description"],
            "properties": submit_properties,
        },
    }


def _ingress_schemas() -> dict[str, Any]:
    return {
        "IngressAccepted": {
            "type": "object",
            "required": ["status", "report_ids"],
            "properties": {
                "status": {"type": "string", "enum": ["accepted"]},
                "report_id": _nullable("string"),
                "report_ids": {"type": "array", "items": {"type": "string"}},
            },
            "description": "202: the broker has the report(s); some channels answer their provider's shape",
        },
        "IngressError": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string", "minLength": 1, "description": "why, for a person"},
                "code": _nullable("string"),
                "field": _nullable("string"),
            },
        },
        "WebReport": {
            "type": "object",
            "required": ["text"],
            "properties": {
                "text": {"type": "string", "minLength": 10, "maxLength": 5000},
                "name": {"type": "string", "maxLength": 200},
                "email": {"type": "string"},
                "phone": {"type": "string"},
                "address": {"type": "string", "maxLength": 1000},
                "lat": {"type": "number"},
                "lon": {"type": "number"},
                "category": {"type": "string", "maxLength": 200},
                "private": {"type": "boolean"},
                "attachments": {"type": "array", "maxItems": 10, "items": {"type": "string"}},
                "submission_id": {"type": "string", "maxLength": 200},
            },
        },
        "ProviderPayload": {
            "type": "object",
            "description": "the provider's own payload, signed as its channel requires (docs/channels.md)",
        },
        "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
    }


def _hoisted(model: Any, name: str, into: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(mode="serialization", ref_template=REF + "{model}")
    for inner, definition in schema.pop("$defs", {}).items():
        into[inner] = definition
    into[name] = schema
    return _ref(name)


def _officer_schemas(into: dict[str, Any]) -> None:
    _hoisted(StatusChange, "StatusChange", into)
    into["StatusChangeRequest"] = {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string", "enum": list(STATUSES)},
            "note": {"type": "string", "maxLength": 4000},
            "actor": {"type": "string", "maxLength": 200},
            "agency": {"type": "string", "description": "the new agency (Disposisi)"},
            "agency_unit": {"type": "string"},
            "event_id": {
                "type": "string",
                "description": "the same id again is a replay (200), not a change",
            },
        },
    }
    into["RouteConfirmRequest"] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "actor": {"type": "string", "maxLength": 100},
            "event_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "description": "the same id again is a replay (200)",
            },
        },
    }
    into["RouteLabel"] = {
        "type": "object",
        "required": [
            "event_id",
            "kind",
            "new_agency",
            "actor",
            "labelled_at",
            "report_id",
            "tracking_number",
        ],
        "properties": {
            "event_id": {"type": "string"},
            "kind": {"type": "string", "enum": ["reroute", "dispatch", "confirm"]},
            "old_agency": NULLABLE_STRING,
            "new_agency": {"type": "string"},
            "classifier": NULLABLE_STRING,
            "actor": {"type": "string"},
            "labelled_at": {"type": "string", "format": "date-time"},
            "report_id": {"type": "string", "format": "uuid"},
            "tracking_number": {"type": "string"},
        },
    }
    into["StatusHistory"] = {
        "type": "object",
        "required": ["tracking_number", "status", "history"],
        "properties": {
            "tracking_number": {"type": "string"},
            "status": {"type": "string", "enum": list(STATUSES)},
            "history": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "from_status": NULLABLE_STRING,
                        "to_status": {"type": "string"},
                        "note": NULLABLE_STRING,
                        "agency": NULLABLE_STRING,
                        "agency_unit": NULLABLE_STRING,
                        "changed_at": {"type": "string", "format": "date-time"},
                    },
                },
            },
        },
    }
    into["DeskNotifications"] = {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "outbox_id": {"type": "integer", "description": "acknowledge it with POST …/{outbox_id}/ack"},
                "created_at": {"type": "string", "format": "date-time"},
                "body": {"type": "string"},
            },
        },
    }
    into["DeskAck"] = {  # issue #20
        "type": "object",
        "required": ["officer"],
        "properties": {
            "how": {"type": "string", "enum": ["delivered", "printed"], "default": "delivered"},
            "officer": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "\\S"},
            "office": {"type": "string", "description": "the desk's office code (only its own rows)"},
        },
    }
    into["DeskAcknowledged"] = {
        "type": "object",
        "required": ["outbox_id", "state", "delivered_how", "delivered_by"],
        "properties": {
            "outbox_id": {"type": "integer"},
            "report_id": {"type": "string"},
            "state": {"type": "string", "enum": ["delivered"]},
            "sent_at": {"type": "string", "format": "date-time"},
            "delivered_how": {"type": "string", "enum": ["delivered", "printed"]},
            "delivered_by": {"type": "string"},
        },
    }


def xml_schema(schema: Any, schemas: dict[str, Any]) -> Any:
    """The XML reading of a JSON schema: the same structure, every value text (or empty: null)."""
    if "$ref" in schema:
        return xml_schema(schemas[schema["$ref"].removeprefix(REF)], schemas)
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "object" in kinds:
        out: dict[str, Any] = {"type": "object"}
        if "required" in schema:
            out["required"] = schema["required"]
        out["properties"] = {k: xml_schema(v, schemas) for k, v in schema.get("properties", {}).items()}
        return out
    if "array" in kinds:
        out = {"type": ["array", "null"], "items": xml_schema(schema.get("items", {}), schemas)}
        for bound in ("minItems", "maxItems"):
            if bound in schema:
                out[bound] = schema[bound]
        return out
    out = {"type": ["string", "null"] if "null" in kinds else "string"}
    if "enum" in schema:
        out["enum"] = [str(v).lower() if isinstance(v, bool) else str(v) for v in schema["enum"]]
        if "null" in kinds:
            out["enum"].append(None)
    return out


# --------------------------------------------------------------------------------------- operations
def _content(schema: dict[str, Any], ctype: str = "application/json") -> dict[str, Any]:
    return {ctype: {"schema": schema}}


def _answer(
    description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": _content(schema)}
    if headers:
        out["headers"] = headers
    return out


RETRY_AFTER = {"Retry-After": {"schema": {"type": "string"}, "description": "seconds to wait"}}
LINK = {"Link": {"schema": {"type": "string"}, "description": '<next page>; rel="next" when there is more'}}
_WHY = {
    400: "bad input, with the reason",
    401: "no API key, or an unknown one",
    403: "the key lacks the permission, or a forged signature",
    404: "not found",
    409: "refused by the status lifecycle",
    413: "body too large",
    415: "unsupported Content-Type",
    422: "invalid body",
    429: "rate limited; retry after Retry-After seconds",
    503: "the broker did not confirm; retry",
}


def _open311_answers(
    fmt: str, ok: int, schema_name: str, errors: tuple[int, ...], schemas: dict[str, Any], headers=None
) -> dict[str, Any]:
    ctype = CONTENT_TYPES[fmt]

    def body(name: str) -> dict[str, Any]:
        schema = _ref(name)
        return _content(xml_schema(schema, schemas) if fmt == "xml" else schema, ctype)

    out: dict[str, Any] = {str(ok): {"description": "OK", "content": body(schema_name)}}
    if headers:
        out[str(ok)]["headers"] = headers
    for status in errors:
        out[str(status)] = {"description": _WHY[status], "content": body("Open311Errors")}
        if status in (429, 503):
            out[str(status)]["headers"] = RETRY_AFTER
    return out


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


OPTIONAL_KEY = [{}, {"apiKeyQuery": []}, {"apiKeyHeader": []}]
KEY = [{"apiKeyQuery": []}, {"apiKeyHeader": []}]


def _open311_paths(schemas: dict[str, Any]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    jurisdiction = _query("jurisdiction_id", "optional; this endpoint serves jakarta.go.id only")
    read_errors = (400, 401, 404, 429)
    for fmt in ("json", "xml"):
        base = "/open311/v2"

        def op(summary: str, **fields: Any) -> dict[str, Any]:
            return {"tags": ["open311"], "summary": summary, "x-process": ["api"], **fields}

        paths[f"{base}/discovery.{fmt}"] = {
            "get": op(
                f"Service discovery ({fmt})",
                operationId=f"open311_discovery_{fmt}",
                security=OPTIONAL_KEY,
                responses=_open311_answers(fmt, 200, "Open311Discovery", (401, 429), schemas),
            )
        }
        paths[f"{base}/services.{fmt}"] = {
            "get": op(
                f"Services: one per report category ({fmt})",
                operationId=f"open311_services_{fmt}",
                security=OPTIONAL_KEY,
                parameters=[jurisdiction],
                responses=_open311_answers(fmt, 200, "Open311Services", (401, 404, 429), schemas),
            )
        }
        paths[f"{base}/services/{{service_code}}.{fmt}"] = {
            "get": op(
                f"A service definition with its attributes ({fmt})",
                operationId=f"open311_service_definition_{fmt}",
                security=OPTIONAL_KEY,
                parameters=[_path("service_code", "from GET services"), jurisdiction],
                responses=_open311_answers(fmt, 200, "Open311ServiceDefinition", (401, 404, 429), schemas),
            )
        }
        submit = {
            "tags": ["open311"],
            "summary": f"Create a service request ({fmt}): a report on the open311 channel",
            "operationId": f"open311_submit_{fmt}",
            "x-process": ["api", "ingress"],
            "security": KEY,
            "description": "The key may also come as the api_key form field, as Open311 clients send it.",
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                    "description": "the same key again is the same request (and token)",
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {"schema": _ref("Open311Submit")},
                    "application/json": {"schema": _ref("Open311Submit")},
                },
            },
            "responses": _open311_answers(
                fmt, 202, "Open311Submitted", (400, 401, 403, 404, 413, 415, 429, 503), schemas
            ),
        }
        paths[f"{base}/requests.{fmt}"] = {
            "get": op(
                f"Service requests, newest first ({fmt})",
                operationId=f"open311_requests_{fmt}",
                security=OPTIONAL_KEY,
                parameters=[
                    jurisdiction,
                    _query(
                        "service_request_id", "comma list of tracking numbers; overrides the other filters"
                    ),
                    _query("service_code", "comma list"),
                    _query("status", "open, closed or both (comma list)"),
                    _query("crm_status", "comma list of CRM statuses, e.g. Proses"),
                    _query("agency_responsible", "comma list of agencies"),
                    _query("kelurahan", "code or name, comma list"),
                    _query("region", "kota code or name, comma list"),
                    _query("start_date", "ISO 8601 on requested_datetime (neither date: the last 90 days)"),
                    _query("end_date", "ISO 8601"),
                    _query("page", "from 1", {"type": "integer", "minimum": 1, "maximum": 100000}),
                    _query("page_size", "at most 1000", {"type": "integer", "minimum": 1, "maximum": 1000}),
                ],
                responses=_open311_answers(fmt, 200, "Open311ServiceRequests", read_errors, schemas, LINK),
            ),
            "post": submit,
        }
        paths[f"{base}/requests/{{service_request_id}}.{fmt}"] = {
            "get": op(
                f"One service request by tracking number or report id, as a list ({fmt})",
                operationId=f"open311_request_{fmt}",
                security=OPTIONAL_KEY,
                parameters=[_path("service_request_id", "JKT-… or the report id"), jurisdiction],
                responses=_open311_answers(fmt, 200, "Open311ServiceRequests", read_errors, schemas),
            )
        }
        paths[f"{base}/tokens/{{token}}.{fmt}"] = {
            "get": op(
                f"The service_request_id of a token (null while pending) ({fmt})",
                operationId=f"open311_token_{fmt}",
                security=OPTIONAL_KEY,
                parameters=[_path("token", "from POST requests"), jurisdiction],
                responses=_open311_answers(fmt, 200, "Open311Token", read_errors, schemas),
            )
        }
    return paths


def _errors_json(*statuses: int) -> dict[str, Any]:
    return {str(s): _answer(_WHY[s], _ref("Open311Errors")) for s in statuses}


def _officer_paths() -> dict[str, Any]:
    ref = _path("ref", "tracking number (JKT-…) or report id")
    common = {"tags": ["officers"], "x-process": ["api"], "security": KEY}
    return {
        "/v1/reports/{ref}/status": {
            "post": {
                **common,
                "summary": "An officer's status change",
                "operationId": "officer_change_status",
                "parameters": [ref],
                "requestBody": {"required": True, "content": _content(_ref("StatusChangeRequest"))},
                "responses": {
                    "200": _answer("a replay of an applied event", _ref("StatusChange")),
                    "201": _answer("applied", _ref("StatusChange")),
                    **_errors_json(401, 403, 404, 409, 422),
                },
            }
        },
        "/v1/reports/{ref}/route/confirm": {
            "post": {
                **common,
                "summary": "An officer confirms the routed agency (a label for the triage classifier)",
                "operationId": "officer_confirm_route",
                "parameters": [ref],
                "requestBody": {"required": False, "content": _content(_ref("RouteConfirmRequest"))},
                "responses": {
                    "200": _answer("a replay of a recorded confirmation", _ref("RouteLabel")),
                    "201": _answer("recorded", _ref("RouteLabel")),
                    **_errors_json(401, 403, 404, 409, 422),
                },
            }
        },
        "/v1/reports/{ref}/history": {
            "get": {
                **common,
                "summary": "The status history",
                "operationId": "officer_history",
                "parameters": [ref],
                "responses": {"200": _answer("OK", _ref("StatusHistory")), **_errors_json(401, 403, 404)},
            }
        },
        "/v1/desk/notifications": {
            "get": {
                **common,
                "summary": "What a walk-in desk must tell reporters (desk:read)",
                "operationId": "desk_notifications",
                "parameters": [_query("office", "the desk's office code")],
                "responses": {"200": _answer("OK", _ref("DeskNotifications")), **_errors_json(401, 403)},
            }
        },
        "/v1/desk/notifications/{outbox_id}/ack": {
            "post": {
                **common,
                "summary": "The desk told the reporter or handed a printout (desk:read)",
                "operationId": "desk_acknowledge",
                "parameters": [
                    {
                        "name": "outbox_id",
                        "in": "path",
                        "required": True,
                        "description": "the notification's id (from GET /v1/desk/notifications)",
                        "schema": {"type": "integer"},
                    }
                ],
                "requestBody": {"required": True, "content": _content(_ref("DeskAck"))},
                "responses": {
                    "200": _answer("delivered (again: the first acknowledgement)", _ref("DeskAcknowledged")),
                    **_errors_json(401, 403, 404, 422),
                },
            }
        },
    }


def _ingress_paths() -> dict[str, Any]:
    from .sources.base import PushSource
    from .sources.registry import discover

    paths: dict[str, Any] = {}
    errors = {str(s): _answer(_WHY[s], _ref("IngressError")) for s in (400, 401, 403, 413, 415)}
    errors["429"] = _answer(_WHY[429], _ref("IngressError"), RETRY_AFTER)
    errors["503"] = _answer(_WHY[503], _ref("IngressError"), RETRY_AFTER)
    for channel, cls in sorted(discover().items()):
        if not issubclass(cls, PushSource) or channel == "open311":  # open311: with the Open311 paths
            continue
        body = _ref("WebReport") if channel == "web" else _ref("ProviderPayload")
        content = {"application/json": {"schema": body}}
        if channel in ("web", "sms"):
            content["application/x-www-form-urlencoded"] = {"schema": body}
        item: dict[str, Any] = {
            "post": {
                "tags": ["ingress"],
                "summary": f"A report on the {channel} channel",
                "operationId": f"ingress_{channel}",
                "x-process": ["ingress"],
                "requestBody": {"required": True, "content": content},
                "responses": {"202": _answer("accepted", _ref("IngressAccepted")), **errors},
            }
        }
        if cls.handshake is not PushSource.handshake:
            text = {"text/plain": {"schema": {"type": "string"}}}
            item["get"] = {
                "tags": ["ingress"],
                "summary": f"The {channel} provider's webhook verification",
                "operationId": f"ingress_{channel}_verify",
                "x-process": ["ingress"],
                "parameters": [
                    _query("hub.mode", "subscribe"),
                    _query("hub.verify_token", "the configured verify token"),
                    _query("hub.challenge", "echoed back"),
                ],
                "responses": {
                    "200": {"description": "the challenge", "content": text},
                    "400": {"description": _WHY[400], "content": text},
                    "403": {"description": "wrong verify token", "content": text},
                },
            }
        paths[cls.route] = item
    return paths


def _ops_paths() -> dict[str, Any]:
    health = {"200": _answer("alive", _ref("Health"))}
    doc = {"200": _answer("this document (the process's own operations)", {"type": "object"})}

    def get(op_id: str, summary: str, responses: dict[str, Any], processes: list[str]) -> dict[str, Any]:
        return {
            "get": {
                "tags": ["operations"],
                "summary": summary,
                "operationId": op_id,
                "x-process": processes,
                "responses": responses,
            }
        }

    ready = {
        "200": _answer("ready", _ref("Health")),
        "503": _answer("no broker", _ref("Health")),
    }
    metrics = {
        "200": {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    }
    return {
        "/healthz": get("healthz", "Liveness", health, ["ingress", "api"]),
        "/readyz": get(
            "readyz", "Readiness (the broker) and the state of Redis and the store", ready, ["ingress"]
        ),
        "/metrics": get("metrics", "Prometheus metrics", metrics, ["ingress"]),
        "/openapi.json": get("openapi", "The OpenAPI document", doc, ["ingress", "api"]),
    }


@lru_cache(maxsize=1)
def _document() -> bytes:
    schemas: dict[str, Any] = {**_open311_schemas(), **_ingress_schemas()}
    _officer_schemas(schemas)
    from .crm.cases_contract import openapi_paths as case_paths  # issue #23
    from .media.contract import openapi_paths as media_paths  # issue #21

    paths = {
        **_ingress_paths(),
        **_open311_paths(schemas),
        **_officer_paths(),
        **media_paths(),
        **case_paths(),
        **_ops_paths(),
    }
    doc = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Jakarta CRM pipeline: ingress, Open311 GeoReport v2 and officer API",
            "version": SCHEMA_VERSION,
            "description": (
                "The ingress (`crm-pipeline ingress`) takes reports from every push channel; the consumer "
                "API (`crm-pipeline api`) serves Open311 GeoReport v2 (reads without a key, POST with an "
                "`open311:submit` key) and the officer status API. `x-process` names the process that "
                "serves an operation; each serves its own at `/openapi.json`. Keys, scopes and limits: "
                "docs/consumers.md."
            ),
        },
        "tags": [
            {"name": "ingress", "description": "push channels (docs/channels.md)"},
            {"name": "open311", "description": "GeoReport v2, every endpoint as .json and .xml"},
            {"name": "officers", "description": "status changes, history, desk notifications, cases"},
            {"name": "operations", "description": "health, readiness, metrics, this document"},
        ],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "apiKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
            },
        },
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


def document(process: str | None = None) -> dict[str, Any]:
    """The whole contract, or the operations one process (``ingress`` or ``api``) serves."""
    doc = orjson.loads(_document())
    if process is None:
        return doc
    paths = {}
    for path, item in doc["paths"].items():
        ops = {m: op for m, op in item.items() if process in op.get("x-process", [])}
        if ops:
            paths[path] = ops
    doc["paths"] = paths
    doc["info"]["title"] += f" — served by the {process}"
    return copy.deepcopy(doc)


def document_bytes() -> bytes:
    """``docs/openapi.json`` exactly."""
    return _document()


def serve_document(process: str):
    body = orjson.dumps(document(process))

    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return handler


def main() -> None:  # pragma: no cover - make openapi
    import sys
    from pathlib import Path

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/openapi.json")
    target.write_bytes(document_bytes())
    print(f"wrote {target}")


if __name__ == "__main__":  # pragma: no cover
    main()
