"""The operations dashboard in a real headless Chromium (Debian's, driven by Playwright): the page loads,
shows the reports this test just pushed through the real pipeline, updates live over server-sent
events, and a report's page shows its path. Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
import uuid

import orjson
import pytest

from tests.harness import ARTIFACTS, Process, free_port, wait_http, wait_until

pytestmark = pytest.mark.stack

CHROMIUM = "/usr/bin/chromium"
# As the machine notes say: without the background-networking flags Chromium keeps calling out.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def post(url: str, body: dict) -> str:
    req = urllib.request.Request(
        url + "/v1/channels/web/reports",
        data=orjson.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=15) as resp:
        assert resp.status == 202
        return orjson.loads(resp.read())["report_id"]


@pytest.fixture(scope="module")
def dashboard(iso, pipeline_url):
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing: deploy/bootstrap.sh installs chromium")
        pytest.skip(f"{CHROMIUM} not installed (make install adds it)")
    port = free_port()
    proc = Process(
        "dashboard", ["dashboard", "--port", str(port)], {**iso.env, "CRM_DASHBOARD_REFRESH_S": "0.5"}
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def browser(dashboard):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # Playwright gives the browser a new, empty profile of its own on every launch.
        b = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield b
        finally:
            b.close()


def stored_today(iso) -> dict[str, int]:
    return dict(
        iso.query(
            "SELECT channel, count(*)::int FROM reports WHERE received_at >= "
            "date_trunc('day', now() AT TIME ZONE 'Asia/Jakarta') AT TIME ZONE 'Asia/Jakarta' GROUP BY 1"
        )
    )


def test_dashboard_shows_the_reports_just_pushed_and_updates_live(iso, pipeline_url, dashboard, browser):
    tag = uuid.uuid4().hex[:6]
    pushed = [
        post(
            pipeline_url,
            {
                "text": f"Lampu PJU mati di Jl. Pramuka depan halte ({tag})",
                "alamat": "Jl. Pramuka, Kel. Utan Kayu Utara, Kec. Matraman",
            },
        ),
        post(
            pipeline_url,
            {
                "text": f"Parkir liar di trotoar depan ITC Cempaka Mas ({tag})",
                "lat": -6.1672,
                "lon": 106.8750,
            },
        ),
        post(
            pipeline_url,
            {
                "text": f"Sampah menumpuk di pinggir kali, bau sekali ({tag})",
                "alamat": "Kel. Kalibaru, Kec. Cilincing",
            },
        ),
    ]
    wait_until(
        lambda: (
            iso.query("SELECT count(*) FROM reports WHERE report_id = ANY(%s::uuid[])", (pushed,))[0][0] == 3
        ),
        what="the pushed reports in the store",
    )
    expected = stored_today(iso)

    page = browser.new_page(viewport={"width": 1500, "height": 2000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(dashboard + "/")
    page.wait_for_function(
        "n => Number(document.querySelector('#kpi-today').textContent.replace(/,/g, '')) >= n",
        arg=sum(expected.values()),
        timeout=30000,
    )
    page.wait_for_selector("#live:not(.off)", timeout=15000)  # the SSE stream is connected
    for rid in pushed:
        page.wait_for_selector(f'#recent tr[data-report="{rid}"]', timeout=15000)
    web_today = page.locator('#channels-today tr[data-channel="web"] td.num').inner_text()
    assert int(web_today.replace(",", "")) >= expected["web"]
    # the map: kelurahan drawn from the vendored boundaries, today's report with coordinates as a dot
    assert page.locator("#map path.kel").count() > 200
    page.wait_for_selector(f'#map a[href="/report/{pushed[1]}"] circle', timeout=15000)
    assert page.locator("#by-agency .bar").count() >= 1
    assert page.locator("#dead-codes").inner_text()  # a code chip or "none"

    # live: a report pushed while the page is open arrives without a reload
    late = post(pipeline_url, {"text": f"Pohon tumbang di Jl. Kemang Raya menutup jalan ({tag})"})
    page.wait_for_selector(f'#recent tr[data-report="{late}"]', timeout=30000)
    ARTIFACTS.mkdir(exist_ok=True)
    time.sleep(0.5)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # the report's own page: its path through the pipeline
    page.click(f'#recent tr[data-report="{pushed[0]}"] a')
    page.wait_for_selector("#path li.route", timeout=15000)
    text = page.locator("#path").inner_text()
    assert "Channel web" in text and "Deduplication passed" in text and "Category" in text
    assert "Status history" in text and "Menunggu" in text
    assert "Lampu PJU mati" in page.locator("#text").inner_text()
    page.screenshot(path=str(ARTIFACTS / "dashboard-report.png"), full_page=True)
    assert not errors, errors
    page.close()


def test_dashboard_endpoints(dashboard):
    with urllib.request.urlopen(dashboard + "/readyz", timeout=15) as resp:
        assert orjson.loads(resp.read())["ready"] is True
    with urllib.request.urlopen(dashboard + "/metrics", timeout=15) as resp:
        assert b"crm_consumer_lag_total" in resp.read()
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(dashboard + "/api/report/not-a-report", timeout=15)
    assert missing.value.code == 404
