"""Open311 as integrators use it, against the real processes (ingress, worker, API) and stack.

Real client libraries nobody here wrote: ``civicbot`` creates a request and follows its token,
``georeport`` reads it back with no key (JSON and XML); a FixMyStreet-style form-encoded POST to
``requests.xml`` is read with lxml. Then an officer's status change shows in GET requests and reaches
the reporter by e-mail (the notification outbox, a real SMTP server).
"""

from __future__ import annotations

import asyncio
import csv
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import orjson
import pytest
from civicbot.http import HttpTransport, RateLimiter
from civicbot.open311 import Open311Client
from civicbot.registry import Endpoint
from georeport import GeoReport
from lxml import etree

from pipeline.crm.notify.outbox import OutboxRunner
from pipeline.processors.locate import GAZETTEER_CSV
from tests.crm_helpers import Mailbox, SmtpServer
from tests.harness import running_api, wait_until

pytestmark = pytest.mark.stack

SUBMIT_KEY = "dev-only-open311-submit"
OFFICER_KEY = "dev-only-officer"
KELURAHAN = "31.71.05.1001"  # Cempaka Putih Timur


@pytest.fixture(scope="module")
def api_url(iso, pipeline_url):
    """``crm-pipeline api`` as a process, beside the ingress and worker of ``pipeline_url``."""
    with running_api(
        iso,
        CRM_RATE_LIMIT_IP_EXEMPT="",  # loopback is exempt by default; here it is the client
        CRM_OPEN311_PUBLIC_PER_MIN="600",
        CRM_OPEN311_PUBLIC_BURST="120",
    ) as url:
        yield url


def _get(url: str, **headers: str) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def _post_form(url: str, fields: list[tuple[str, str]]) -> tuple[int, bytes]:
    body = urlencode(fields).encode()
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _centroid(code: str) -> tuple[float, float]:
    with GAZETTEER_CSV.open(encoding="utf-8") as fh:
        row = next(r for r in csv.DictReader(fh) if r["kode_kemendagri"] == code)
    return float(row["centroid_lat"]), float(row["centroid_lng"])


def _xml(raw: bytes) -> etree._Element:
    return etree.fromstring(raw, parser=etree.XMLParser(resolve_entities=False, no_network=True))


def test_an_integrator_creates_follows_and_reads_back_a_request(iso, api_url):
    base = f"{api_url}/open311/v2"
    nonce = uuid.uuid4().hex[:8]
    lat, lng = _centroid(KELURAHAN)
    endpoint = Endpoint(id="jakarta", name="DKI Jakarta", base_url=base, write=True)
    client = Open311Client(
        endpoint,
        transport=HttpTransport(rate_limiter=RateLimiter(min_interval=0)),
        jurisdiction_id="jakarta.go.id",
    )
    # civicbot checks the payload against the live service list and definition before it sends.
    request = {
        "lat": lat,
        "lng": lng,
        "description": f"Jalan berlubang besar dan dalam di depan sekolah, bahaya untuk motor ({nonce})",
        "email": f"warga.{nonce}@example.com",
        "first_name": "Dewi",
        "last_name": "Lestari",
        "phone": "081299990000",
        "attributes": {"kelurahan": KELURAHAN},
    }
    sent = client.create_request(
        "road_damage", dry_run=False, confirm="SEND", api_key=SUBMIT_KEY, validate_remote=True, **request
    )
    (answer,) = sent.response
    token = answer["token"]
    assert "service_request_id" not in answer and answer["service_notice"]
    # The same request again (a client retrying after a timeout) is the same token, not a second report.
    again = client.create_request("road_damage", dry_run=False, confirm="SEND", api_key=SUBMIT_KEY, **request)
    assert again.response[0]["token"] == token

    def resolved() -> str | None:
        return client.get_token(token)[0]["service_request_id"]

    tracking = wait_until(resolved, timeout=90, interval=0.5, what="the token's service_request_id")
    assert tracking.startswith("JKT-")

    # georeport (no key: it sends none on GET) reads it back, in JSON and in XML.
    reader = GeoReport(base, jurisdiction="jakarta.go.id")
    one = reader.get_service_request(tracking)
    assert one["service_request_id"] == tracking and one["status"] == "open"
    assert one["service_code"] and one["requested_datetime"].endswith("Z")
    assert one["kelurahan_code"] == KELURAHAN and one["address_id"] == KELURAHAN and one["zipcode"]
    raw_public = orjson.dumps(reader.get_service_requests(service_request_id=tracking))
    for secret in (b"Dewi", b"Lestari", f"warga.{nonce}".encode(), b"81299990000", b"description_original"):
        assert secret not in raw_public, secret
    as_xml = GeoReport(base, jurisdiction="jakarta.go.id", output_format="xml")
    xml_one = as_xml.get_service_request(tracking)
    assert xml_one["service_request_id"] == tracking and xml_one["status"] == "open"
    definition = as_xml.get_service_definition("road_damage")
    codes = [a["code"] for a in definition["attributes"]["attribute"]]
    assert codes == ["kelurahan", "private", "title"]
    assert any(s["service_code"] == "road_damage" for s in as_xml.get_service_list())

    # Stored, triaged and routed like any other report.
    (row,) = iso.query(
        "SELECT channel, category, agency, kelurahan_code, routed_to FROM reports WHERE tracking_number = %s",
        (tracking,),
    )
    assert row[0] == "open311" and row[1] and row[3] == KELURAHAN and row[4] in ("agency", "triage")

    # A key with open311:private (an officer's) also sees the private fields.
    status, body, _ = _get(f"{base}/requests/{tracking}.json", **{"X-API-Key": OFFICER_KEY})
    private = orjson.loads(body)[0]
    assert status == 200 and private["channel"] == "open311" and private["category_hint"] == "road_damage"
    assert private["description_original"].startswith("Jalan berlubang")

    # An officer moves it on: GET requests shows it, and the reporter gets an e-mail.
    before = one["updated_datetime"]
    time.sleep(1.1)
    change = urllib.request.Request(
        f"{api_url}/v1/reports/{tracking}/status",
        data=orjson.dumps({"status": "Proses", "note": "Petugas menuju lokasi", "actor": "budi"}),
        method="POST",
        headers={"Content-Type": "application/json", "X-API-Key": OFFICER_KEY},
    )
    with urllib.request.urlopen(change, timeout=15) as resp:
        assert resp.status == 201
    now = reader.get_service_request(tracking)
    assert now["status"] == "open" and now["crm_status"] == "Proses"
    assert now["status_notes"] == "Petugas menuju lokasi" and now["updated_datetime"] > before

    with SmtpServer() as smtp:
        asyncio.run(OutboxRunner(iso.settings(email_relay_port=smtp.port)).run_once())
        mails = [m for m in smtp.mailbox.wait_for(1) if m["To"] == f"warga.{nonce}@example.com"]
    subjects = " | ".join(m["Subject"] for m in mails)
    assert any(tracking in m["X-CRM-Tracking-Number"] for m in mails), subjects
    assert any("ditindaklanjuti" in Mailbox.body(m) for m in mails), subjects


def test_a_fixmystreet_style_xml_request_and_its_errors(iso, api_url):
    base = f"{api_url}/open311/v2"
    nonce = uuid.uuid4().hex[:8]
    fields = [
        ("api_key", SUBMIT_KEY),
        ("jurisdiction_id", "jakarta.go.id"),
        ("service_code", "flood_drainage"),
        ("address_string", "Jl. Letjen Suprapto 5, Cempaka Putih Timur, Jakarta Pusat"),
        ("description", f"Saluran air tersumbat sampah, air meluap ke jalan saat hujan ({nonce})"),
        ("email", f"fms.{nonce}@example.com"),
        ("first_name", "Budi"),
        ("last_name", "Santoso"),
        ("media_url", "https://fms.example/photo/1.jpeg"),
        ("attribute[title]", "Got mampet"),
        ("attribute[report_url]", f"https://fms.example/report/{nonce}"),
        ("attribute[fixmystreet_id]", nonce),
    ]
    status, raw = _post_form(f"{base}/requests.xml", fields)
    root = _xml(raw)
    assert status == 202 and root.tag == "service_requests"
    token = root.findtext("request/token")
    assert token and root.find("request/service_request_id") is None

    def resolved() -> str | None:
        code, body, headers = _get(f"{base}/tokens/{token}.xml")
        assert code == 200 and headers["Content-Type"].startswith("text/xml")
        return _xml(body).findtext("request/service_request_id") or None

    tracking = wait_until(resolved, timeout=90, interval=0.5, what="the token's service_request_id (XML)")
    code, body, _ = _get(f"{base}/requests/{tracking}.xml")
    request = _xml(body).find("request")
    assert code == 200 and request.findtext("service_request_id") == tracking
    assert request.findtext("description").startswith("Got mampet")
    assert "Budi" not in body.decode() and f"fms.{nonce}" not in body.decode()
    # The public media_url is only ever the media stage's EXIF-free copy, never the sender's own URL.
    assert "fms.example" not in (request.findtext("media_url") or "")
    code, body, _ = _get(f"{base}/requests/{tracking}.json", **{"X-API-Key": OFFICER_KEY})
    assert orjson.loads(body)[0]["media_urls"] == ["https://fms.example/photo/1.jpeg"]

    # Errors: the spec's list, in the format asked for, with the right status.
    bad = [(k, "not_a_service" if k == "service_code" else v) for k, v in fields]
    status, raw = _post_form(f"{base}/requests.xml", bad)
    errors = _xml(raw)
    assert status == 404 and errors.tag == "errors" and errors.findtext("error/code") == "404"
    assert "not_a_service" in errors.findtext("error/description")
    status, raw = _post_form(f"{base}/requests.json", [(k, v) for k, v in fields if k != "api_key"])
    assert status == 401 and orjson.loads(raw)[0]["code"] == 401
    for path, expected in (
        ("tokens/not-a-token.xml", 404),
        ("services/not_a_service.json", 404),
        ("requests/JKT-99999999.xml", 404),
        ("requests.json?status=pending", 400),
        ("requests.xml?jurisdiction_id=elsewhere.gov", 404),
    ):
        code, body, _ = _get(f"{base}/{path}")
        assert code == expected, path
        first = _xml(body).find("error") if path.split("?")[0].endswith(".xml") else orjson.loads(body)[0]
        described = (
            first.findtext("description") if path.split("?")[0].endswith(".xml") else first["description"]
        )
        assert described, path


def test_public_reads_are_rate_limited_per_client_and_keys_are_not(api_url):
    url = f"{api_url}/open311/v2/services.json"
    assert _get(url)[0] == 200
    # 16 clients at once drain the burst (120) faster than it refills (10/s), however slow the host:
    # one after the other at 40 ms a request, 200 requests never ran out.
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: _get(url), range(300)))
    throttled = [a for a in answers if a[0] == 429]
    assert throttled, [a[0] for a in answers]
    _, body, headers = throttled[0]
    assert int(headers["Retry-After"]) >= 1
    assert orjson.loads(body)[0]["code"] == 429 and "API key" in orjson.loads(body)[0]["description"]
    assert _get(url, **{"X-API-Key": "dev-only-open311-public"})[0] == 200
