"""Open311 GeoReport v2 read API (and its keys) against the real PostgreSQL of the local stack."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipeline.crm.api import create_app
from pipeline.envelope import Contact, utcnow
from tests.crm_helpers import make_report, prepare, store

pytestmark = pytest.mark.stack

PUBLIC = "dev-only-open311-public"
BINA_MARGA = "dev-only-open311-bina-marga"
OFFICER = "dev-only-officer"

SPEC_FIELDS = {
    "service_request_id",
    "status",
    "status_notes",
    "service_name",
    "service_code",
    "description",
    "agency_responsible",
    "service_notice",
    "requested_datetime",
    "updated_datetime",
    "expected_datetime",
    "address",
    "address_id",
    "zipcode",
    "lat",
    "long",
    "media_url",
}


def test_open311_endpoints_answer_per_the_spec_with_keys_and_limits(iso):
    settings = iso.settings()
    road = make_report(
        "web",
        contact=Contact(name="Dewi Lestari", email="dewi@example.com", phone="+6281299990000"),
        text="Jalan rusak di Jl. Cempaka Putih Raya, hubungi saya di 081299990000",
        private=True,
    )
    road2 = make_report("web", text="Aspal mengelupas di Jl. Letjen Suprapto")
    water = make_report(
        "web", agency="Dinas Sumber Daya Air", category="flood_drainage", text="Got mampet di Jl. Pramuka"
    )

    async def go():
        await prepare(settings)
        await store(settings, road, road2, water)
        client = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        out = {}
        try:

            async def get(name, path, **params):
                resp = await client.get(path, params=params)
                out[name] = (resp.status, await resp.read(), dict(resp.headers))

            await get("services", "/open311/v2/services.json", api_key=PUBLIC)
            await get("no_key", "/open311/v2/requests.json")
            await get("bad_key", "/open311/v2/requests.json", api_key="nope")
            await get("all", "/open311/v2/requests.json", api_key=PUBLIC)
            await get("agency", "/open311/v2/requests.json", api_key=BINA_MARGA)
            await get(
                "agency_other",
                "/open311/v2/requests.json",
                api_key=BINA_MARGA,
                agency_responsible="Dinas Sumber Daya Air",
            )
            await get(
                "filtered",
                "/open311/v2/requests.json",
                api_key=PUBLIC,
                service_code="road_damage",
                status="open",
                kelurahan="31.71.05.1001",
                start_date=(utcnow() - timedelta(hours=1)).isoformat(),
                end_date=(utcnow() + timedelta(hours=1)).isoformat(),
            )
            await get(
                "future", "/open311/v2/requests.json", api_key=PUBLIC, start_date="2999-01-01T00:00:00Z"
            )
            await get("page1", "/open311/v2/requests.json", api_key=PUBLIC, page_size="1")
            await get("page2", "/open311/v2/requests.json", api_key=PUBLIC, page_size="1", page="2")
            await get("bad_status", "/open311/v2/requests.json", api_key=PUBLIC, status="pending")
            await get("one", f"/open311/v2/requests/{road.report_id}.json", api_key=PUBLIC)
            await get("one_other", f"/open311/v2/requests/{water.report_id}.json", api_key=BINA_MARGA)
            await get("missing", "/open311/v2/requests/JKT-99999999.json", api_key=PUBLIC)
            resp = await client.post(
                f"/v1/reports/{road.report_id}/status", json={"status": "Proses"}, params={"api_key": PUBLIC}
            )
            out["write_public"] = (resp.status, await resp.read(), {})
            resp = await client.post(
                f"/v1/reports/{water.report_id}/status",
                json={"status": "Proses"},
                headers={"X-API-Key": BINA_MARGA},
            )
            out["write_other_agency"] = (resp.status, await resp.read(), {})
            await get("desk", "/v1/desk/notifications", api_key=OFFICER)
        finally:
            await client.close()
        return out

    out = asyncio.run(go())
    js = {k: orjson.loads(v[1]) for k, v in out.items()}

    status, _, headers = out["services"]
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    codes = {s["service_code"] for s in js["services"]}
    assert "road_damage" in codes
    assert {"service_code", "service_name", "description", "metadata", "type", "keywords", "group"} <= set(
        js["services"][0]
    )

    # Reads need no key (public fields only); a key that is not known is refused, not ignored.
    assert out["no_key"][0] == 200 and road.report_id in {r["report_id"] for r in js["no_key"]}
    assert not any("description_original" in r for r in js["no_key"])
    assert out["bad_key"][0] == 401 and js["bad_key"][0]["code"] == 401

    assert out["all"][0] == 200
    mine = {r["report_id"]: r for r in js["all"] if r["report_id"] in {road.report_id, water.report_id}}
    assert len(mine) == 2
    r = mine[road.report_id]
    assert SPEC_FIELDS <= set(r)
    assert r["status"] == "open" and r["crm_status"] == "Menunggu"
    assert r["service_request_id"].startswith("JKT-") and r["agency_responsible"] == "Dinas Bina Marga"
    assert r["requested_datetime"].endswith("Z") and r["expected_datetime"]
    raw_all = out["all"][1].decode()
    for secret in ("Dewi", "dewi@example.com", "081299990000", "6281299990000", "reporter", "rp-"):
        assert secret not in raw_all, secret

    # An agency's key: its queue by default, with its private fields; other agencies' public fields only.
    assert {r["agency_responsible"] for r in js["agency"]} == {"Dinas Bina Marga"}
    own = next(r for r in js["agency"] if r["report_id"] == road.report_id)
    assert own["description_original"] == road.text and own["channel"] == "web"
    assert own["route_reason"] and own["reporter_private"] is True
    assert out["agency_other"][0] == 200 and js["agency_other"]
    assert not any("description_original" in r for r in js["agency_other"])
    assert not any("description_original" in r for r in js["all"])  # open311:read alone: public

    ids = [r["report_id"] for r in js["filtered"]]
    assert road.report_id in ids and road2.report_id in ids and water.report_id not in ids
    assert js["future"] == []

    assert len(js["page1"]) == 1 and 'rel="next"' in out["page1"][2]["Link"]
    assert "api_key" not in out["page1"][2]["Link"]
    assert js["page1"][0]["report_id"] != js["page2"][0]["report_id"]
    assert out["bad_status"][0] == 400

    assert out["one"][0] == 200 and js["one"][0]["report_id"] == road.report_id
    assert out["one_other"][0] == 200 and "description_original" not in js["one_other"][0]
    assert out["missing"][0] == 404

    assert out["write_public"][0] == 403 and "status:write" in js["write_public"][0]["description"]
    assert out["write_other_agency"][0] == 403
    assert iso.query("SELECT status FROM reports WHERE report_id = %s", (water.report_id,)) == [("Menunggu",)]
    assert out["desk"][0] == 200


def test_the_api_role_cannot_read_contacts_or_reporter_ids(iso):
    import psycopg

    settings = iso.settings()
    asyncio.run(prepare(settings))
    with psycopg.connect(iso.env["CRM_DATABASE_URL"]) as conn:
        conn.execute("SET ROLE crm_api")
        for query in ("SELECT email FROM reporter_contacts", "SELECT reporter_id FROM reports"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(query)
            conn.rollback()
            conn.execute("SET ROLE crm_api")
