"""Schemathesis against the live ingress and API (real Kafka, Redis, PostgreSQL, worker behind them).

Requests are generated from the document each process serves (``docs/openapi.json``): valid ones and,
in negative mode, ones that break the schema. Every answer must match the document (status, content
type, headers, body; XML read as the spec's elements), never be a 5xx, and a refusal must say why.
Afterwards nothing that was refused was stored: every report on the ingest topics was answered 202.
Examples per operation are bounded (``CONTRACT_EXAMPLES``) so the suite stays fast.
"""

from __future__ import annotations

import os
import urllib.request
from typing import Any

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from lxml import etree
from schemathesis.specs.openapi import checks as oas

from pipeline.open311.formats import ITEM_OF
from pipeline.open311.tokens import report_id_of
from pipeline.openapi import document
from pipeline.sources.conformance import read_to_end
from tests.harness import running_api

pytestmark = pytest.mark.stack

EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "15"))
#: one key with every scope, so generated writes get past authentication and exercise the parsers
KEY = "contract-all-scopes"
KEYS = orjson.dumps(
    {KEY: {"consumer": "contract", "scopes": ["open311:read", "open311:private", "open311:submit",
                                              "status:write", "desk:read", "cases:write"]}}
).decode()  # fmt: skip
ACCEPTED: set[str] = set()  # report ids answered 202 (the only ones that may be stored)
SEEN: dict[str, int] = {}  # status codes seen, for the report


def _element(el: Any) -> Any:
    children = list(el)
    if not children:
        return el.text
    if el.tag in ITEM_OF:
        return [_element(c) for c in children]
    return {c.tag: _element(c) for c in children}


@schemathesis.deserializer("text/xml")
def _xml(ctx: Any, response: Any) -> Any:
    """The spec's XML as its JSON reading: list elements (``service_requests``…) become arrays."""
    root = etree.fromstring(response.content, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    value = _element(root)
    return value if value is not None else ([] if root.tag in ITEM_OF else {})


@schemathesis.check
def refusal_says_why(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 4xx answer carries a reason a person can act on (Open311 error list or the ingress's error)."""
    SEEN[str(response.status_code)] = SEEN.get(str(response.status_code), 0) + 1
    if not 400 <= response.status_code < 500:
        return None
    text = response.content.decode(errors="replace")
    ctype = {k.lower(): v for k, v in response.headers.items()}.get("content-type", [""])[0]
    if ctype.startswith("text/xml"):
        reason = etree.fromstring(response.content).findtext("error/description")
    elif ctype.startswith("text/plain"):  # a provider's webhook verification answers in plain text
        reason = text.strip()
    else:
        data = orjson.loads(text)
        reason = data[0].get("description") if isinstance(data, list) else data.get("error")
    if not reason:
        raise AssertionError(f"{response.status_code} without a reason: {text[:300]}")
    return True


@schemathesis.check
def record_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code != 202:
        return None
    data = orjson.loads(response.content) if response.content.startswith((b"{", b"[")) else None
    if isinstance(data, dict):
        ACCEPTED.update(data.get("report_ids") or [])
    else:  # Open311: the token stands for the report id (XML answers too)
        token = (
            data[0]["token"]
            if isinstance(data, list)
            else etree.fromstring(response.content).findtext("request/token")
        )
        ACCEPTED.add(report_id_of(_settings, token) or token)
    return True


CHECKS = [
    schemathesis.checks.not_a_server_error,
    oas.status_code_conformance,
    oas.content_type_conformance,
    oas.response_headers_conformance,
    oas.response_schema_conformance,
    oas.negative_data_rejection,
    refusal_says_why,
    record_accepted,
]
_settings: Any = None


CHANNELS = ("open311", "web", "jaki", "sms", "facebook", "governor_social", "desk_kelurahan")


def _ingested(iso) -> set[str]:
    keys: set[str] = set()
    for channel in CHANNELS:
        topic = f"{iso.tag}.ingest.{channel}.v1"
        keys |= {k.decode() for k, _ in read_to_end(iso.env["CRM_KAFKA_BOOTSTRAP"], topic, timeout=5) if k}
    return keys


@pytest.fixture(scope="module")
def live(iso, pipeline_url):
    """The ingress and worker (``pipeline_url``) and an API process, sharing one namespace."""
    global _settings
    _settings = iso.settings()
    before = _ingested(iso)
    with running_api(iso, CRM_API_KEYS=KEYS) as api:
        yield {"ingress": pipeline_url, "api": api, "before": before}


def _schema(process: str):
    doc = document(process)
    # /metrics and /openapi.json are not part of the contract under test (no input to get wrong).
    doc["paths"] = {p: v for p, v in doc["paths"].items() if p not in ("/metrics", "/openapi.json")}
    return schemathesis.openapi.from_dict(doc)


api_schema = _schema("api")
ingress_schema = _schema("ingress")
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)


@api_schema.parametrize()
@SETTINGS
def test_api_contract(case, live):
    case.call_and_validate(base_url=live["api"], headers={"X-API-Key": KEY}, checks=CHECKS, timeout=30)


@ingress_schema.parametrize()
@SETTINGS
def test_ingress_contract(case, live):
    headers = {"X-API-Key": KEY} if case.path.startswith("/open311/") else {}
    case.call_and_validate(base_url=live["ingress"], headers=headers, checks=CHECKS, timeout=30)


def test_nothing_refused_was_stored(iso, live):
    """Run after the contract tests: every report published meanwhile was answered 202, and vice versa."""
    assert SEEN, "the contract tests ran no request"
    print(f"contract run: status codes {dict(sorted(SEEN.items()))}, {len(ACCEPTED)} report(s) accepted")
    new = _ingested(iso) - live["before"]
    assert new <= ACCEPTED, f"published without a 202: {sorted(new - ACCEPTED)[:5]}"
    assert ACCEPTED <= new | live["before"], f"answered 202 but not published: {sorted(ACCEPTED - new)[:5]}"
    with urllib.request.urlopen(live["api"] + "/healthz", timeout=5) as resp:
        assert resp.status == 200
