"""A flood surge through the real stack: JAKI posts → ingress → Kafka → worker (triage, a hit per
report) → surge worker (its Faust table) → ``<ns>.alerts.v1`` → the CRM store and the outbox: opened
once, redeliveries not counted, then closed by the clock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid

import orjson
import pytest

from pipeline.topics import Topics
from tests import harness
from tests.harness import read_topic, wait_until

pytestmark = pytest.mark.stack

# Kampung Melayu and Bali Mester (Jatinegara, Jakarta Timur): points inside their polygons (Kampung
# Melayu's centroid lies outside its own thin polygon, in Bukit Duri across the river)
FLOOD_POINTS = [(-6.218146, 106.863075), (-6.219088, 106.866494)]
WINDOWS = "15s,45s,180s"  # the 15 min / 1 h / 6 h windows, shrunk so the test sees a surge close


@pytest.fixture(scope="module")
def surge_space(stack):
    space = harness.Isolated()
    space.env.update({"CRM_SURGE_WINDOWS": WINDOWS, "CRM_SURGE_TICK_S": "1"})
    space.create_database()
    with harness.running_pipeline(space) as url:
        surge = harness.Process("surge", ["surge", "run", "--loglevel", "warning"], space.env)
        try:
            yield space, url
        finally:
            surge.stop()
    space.drop_database()


def post_jaki(url: str, body: dict) -> dict:
    req = urllib.request.Request(
        url + "/v1/channels/jaki/reports",
        data=orjson.dumps(body),
        headers={"Content-Type": "application/json", "Authorization": "Bearer dev-only-jaki-token"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=15) as resp:
        assert resp.status == 202
        return orjson.loads(resp.read())


def alerts(space: harness.Isolated, n: int, timeout: float = 60) -> list[dict]:
    return read_topic(space, Topics(space.tag).alerts, min_records=n, timeout=timeout)


def test_flood_surge_opens_once_counts_each_report_once_and_closes(surge_space):
    space, url = surge_space
    tag = uuid.uuid4().hex[:8]
    bodies = []
    for i in range(8):
        lat, lon = FLOOD_POINTS[i % 2]
        bodies.append(
            {
                "report_id": f"JAKI-flood-{tag}-{i}",
                "text": f"banjir setinggi {40 + i} cm di jl jatinegara barat, air masuk rumah. mohon pompa",
                "category": "Banjir",
                "lat": lat + i * 1e-5,
                "lon": lon,
                "account_id": f"u-{tag}-{i}",
            }
        )
    ids = [post_jaki(url, b)["report_id"] for b in bodies]
    for b in bodies[:3]:  # the JAKI backend retries three of them: same report ids
        post_jaki(url, b)

    opened = wait_until(
        lambda: [a for a in alerts(space, 1, timeout=2) if a["state"] == "opened"], timeout=90, what="opened"
    )
    assert len(opened) == 1, opened
    a = opened[0]
    assert a["category"] == "flood_drainage" and a["kota_code"] == "31.75"
    assert a["kecamatan"] == "Jatinegara" and a["level"] in ("kecamatan", "kelurahan")
    assert set(a["report_ids"]) <= set(ids) and a["first_report_id"] in ids
    assert "Badan Penanggulangan Bencana Daerah" in a["notify"] and "Dinas Sumber Daya Air" in a["notify"]

    deadline = time.monotonic() + 150
    closed: list[dict] = []
    while time.monotonic() < deadline and not closed:
        records = alerts(space, 2, timeout=2)
        closed = [r for r in records if r["state"] == "closed"]
        time.sleep(1)
    assert closed, records
    records = alerts(space, 2)
    mine = [r for r in records if r["surge_id"] == a["surge_id"]]
    assert [r["seq"] for r in mine] == sorted({r["seq"] for r in mine}), mine  # one record per change
    last = max(mine, key=lambda r: r["seq"])
    assert last["state"] == "closed"
    # every report counted once: the three redeliveries did not inflate the surge
    assert last["report_count"] == len(set(last["report_ids"])) <= len(ids)
    assert len({r["surge_id"] for r in records if r["category"] == "flood_drainage"}) == 1

    # the worker's surge-alerts agent kept it in the CRM store and told DSDA and BPBD through the outbox
    row = wait_until(
        lambda: [r for r in space.query("SELECT state, seq, report_count FROM surges") if r[0] == "closed"],
        timeout=30,
        what="the closed surge in the store",
    )
    assert row == [("closed", last["seq"], last["report_count"])]
    told = space.query(
        "SELECT agency, to_status, event_key, destination, state FROM notify.outbox WHERE surge_id = %s "
        "ORDER BY outbox_id",
        (a["surge_id"],),
    )
    assert {(t[0], t[1]) for t in told if t[1] == "opened"} == {
        ("Dinas Sumber Daya Air", "opened"),
        ("Badan Penanggulangan Bencana Daerah", "opened"),
    }
    assert len(told) == len({(t[0], t[2]) for t in told})  # nobody told twice of one change
    assert all(t[3] == "agency" for t in told) and any(t[1] == "closed" for t in told)

    env = {**os.environ, **space.env}
    shown = subprocess.run(
        [sys.executable, "-m", "pipeline", "surge", "show", a["surge_id"]],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "closed" in shown and "Jatinegara" in shown and "opened" in shown
    listed = subprocess.run(
        [sys.executable, "-m", "pipeline", "surge", "list", "--all", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert [orjson.loads(x)["surge_id"] for x in listed.splitlines()] == [a["surge_id"]]
