"""The OpenAPI contract: generated from the code, kept in docs/, valid, served by each process, complete."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from pipeline.openapi import document, document_bytes

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "openapi.json"
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def test_docs_openapi_is_the_generated_document_and_valid():
    assert DOCS.read_bytes() == document_bytes(), "docs/openapi.json is stale: run `make openapi`"
    doc = orjson.loads(DOCS.read_bytes())
    assert doc["openapi"].startswith("3.1")
    validate(doc)
    for process in ("ingress", "api"):
        part = document(process)
        validate(part)
        assert part["paths"] and all(
            process in op["x-process"] for item in part["paths"].values() for op in item.values()
        )


def _documented_routes(app, doc) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, with ``{format:(?:json|xml)}`` expanded."""
    out = set()
    for route in app.router.routes():
        if route.method not in METHODS:
            continue
        info = route.resource.get_info()
        path = info.get("path") or info.get("formatter")
        paths = [path.replace("{format}", fmt) for fmt in ("json", "xml")] if "{format}" in path else [path]
        for p in paths:
            p = re.sub(r"\{(\w+)\}", "{}", p)
            out.add((route.method, p))
    return out


def _paths(doc) -> set[tuple[str, str]]:
    return {
        (method.upper(), re.sub(r"\{(\w+)\}", "{}", path))
        for path, item in doc["paths"].items()
        for method in item
    }


@pytest.mark.stack
def test_each_process_serves_its_part_and_every_route_is_documented(iso):
    from pipeline.crm.api import create_app
    from pipeline.ingress import build_app
    from tests.crm_helpers import prepare

    settings = iso.settings()

    async def go():
        await prepare(settings)
        out = {}
        for name, app in (("api", create_app(settings)), ("ingress", build_app(settings))):
            client = TestClient(TestServer(app))
            await client.start_server()
            try:
                resp = await client.get("/openapi.json")
                out[name] = (resp.status, await resp.json(), _documented_routes(app, None))
            finally:
                await client.close()
        return out

    out = asyncio.run(go())
    for process, (status, served, routes) in out.items():
        assert status == 200 and served == document(process), process
        missing = routes - _paths(served)
        assert not missing, f"{process} serves routes its document does not describe: {sorted(missing)}"
        extra = _paths(served) - routes
        assert not extra, f"{process}'s document describes routes it does not serve: {sorted(extra)}"
