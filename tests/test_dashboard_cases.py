"""An officer corrects grouping from the dashboard's report page (issue #23), in a real headless Chromium:
the page shows the report's case and its duplicate candidates, and its buttons split the report out and
merge a candidate through the real officer API, which records the corrections."""

from __future__ import annotations

import os

import orjson
import pytest

from tests.harness import ARTIFACTS, Process, free_port, running_api, wait_http, wait_until
from tests.test_dashboard_browser import CHROMIUM, FLAGS, post

pytestmark = pytest.mark.stack

KEY = "officer-key-dashboard"
KEYS = orjson.dumps({KEY: {"consumer": "petugas-dasbor", "scopes": ["status:write", "cases:write"]}}).decode()
PILE = (
    "Sampah menumpuk di pinggir kali dekat pos RW 05 gang Mawar sudah seminggu tidak diangkut petugas, "
    "bau menyengat dan banyak lalat"
)
WHERE = "Gang Mawar, Kel. Kali Baru, Cilincing"


def case_of(iso, report_id: str) -> str | None:
    rows = iso.query("SELECT case_id FROM reports WHERE report_id = %s", (report_id,))
    return rows[0][0] if rows and rows[0][0] else None


@pytest.fixture(scope="module")
def officer_dashboard(iso, pipeline_url):
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing: deploy/bootstrap.sh installs chromium")
        pytest.skip(f"{CHROMIUM} not installed (make install adds it)")
    from playwright.sync_api import sync_playwright

    with running_api(iso, CRM_API_KEYS=KEYS) as api:
        port = free_port()
        env = {**iso.env, "CRM_DASHBOARD_REFRESH_S": "0.5", "CRM_DASHBOARD_OFFICER_API": api}
        proc = Process("dashboard", ["dashboard", "--port", str(port)], env)
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", proc)
            with sync_playwright() as pw:
                chromium = _Chromium(pw)
                try:
                    yield f"http://127.0.0.1:{port}", chromium
                finally:
                    chromium.close()
        finally:
            proc.stop()


class _Chromium:
    """The browser, launched again if its process went away (CI saw Chromium die once at start-up)."""

    def __init__(self, pw) -> None:
        self.pw, self.browser = pw, None

    def page(self):
        if self.browser is None or not self.browser.is_connected():
            self.browser = self.pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        return self.browser.new_page(viewport={"width": 1400, "height": 1800})

    def close(self) -> None:
        if self.browser is not None and self.browser.is_connected():
            self.browser.close()
        self.browser = None


def open_page(chromium: _Chromium, url: str, selector: str) -> tuple[object, list[str]]:
    """The page with ``selector`` shown, and the list its script errors go to. Once more in a fresh
    browser when the browser or the page died under it: a page whose own code kills it dies again and
    fails; a slow or wrong page fails at once."""
    from playwright.sync_api import Error

    for attempt in (1, 2):
        page = chromium.page()
        errors: list[str] = []
        page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
        try:
            page.goto(url)
            page.wait_for_selector(selector, timeout=20000)
            return page, errors
        except Error:
            if attempt == 2 or not (page.is_closed() or not chromium.browser.is_connected()):
                raise
            chromium.close()
    raise AssertionError("unreachable")


def test_an_officer_splits_a_report_out_and_merges_a_candidate_from_the_report_page(
    iso, pipeline_url, officer_dashboard
):
    base, chromium = officer_dashboard
    first = post(pipeline_url, {"text": PILE, "alamat": WHERE})
    case = wait_until(lambda: case_of(iso, first), what="the first report's case")
    again = post(pipeline_url, {"text": PILE + " lagi", "alamat": WHERE})
    assert wait_until(lambda: case_of(iso, again), what="the repeat's case") == case
    # the same words about another RW: held back by grouping, flagged as a candidate of the case
    other = post(pipeline_url, {"text": PILE.replace("RW 05", "RW 09"), "alamat": WHERE})
    other_case = wait_until(lambda: case_of(iso, other), what="the other report's case")
    assert other_case != case
    wait_until(
        lambda: iso.query(
            "SELECT 1 FROM cases WHERE case_id = %s AND %s = ANY(candidates)", (other_case, case)
        ),
        what="the other case flagged as a candidate of the first",
    )

    page, errors = open_page(chromium, f"{base}/report/{again}", "#case-split")
    assert case in page.locator("#case-info").inner_text()
    page.click("#case-split")  # no key typed yet: the dashboard refuses and says why
    page.wait_for_function(
        "document.querySelector('#case-result').textContent.includes('401')", timeout=15000
    )
    page.fill("#case-key", KEY)
    page.click("#case-split")
    page.wait_for_function(
        "document.querySelector('#case-result').textContent.includes('split done')", timeout=15000
    )
    assert case_of(iso, again) not in (None, case)

    page.goto(f"{base}/report/{first}")
    merge = page.locator(f'.case-merge[data-other="{other_case}"]')
    merge.wait_for(timeout=20000)
    merge.click()  # the key stays in the tab's session storage
    page.wait_for_function(
        "document.querySelector('#case-result').textContent.includes('merge done')", timeout=15000
    )
    assert case_of(iso, other) == case
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-case.png"), full_page=True)
    kinds = iso.query("SELECT kind, actor FROM case_corrections ORDER BY correction_id DESC LIMIT 2")
    assert {k for k, _ in kinds} == {"split", "merge"} and all(
        a == "petugas-dasbor:dashboard" for _, a in kinds
    )
    assert not errors, errors
    page.close()
