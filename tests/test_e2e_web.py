"""A web-form report through the real stack: HTTP ingress → Kafka → Faust worker → PostgreSQL."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from urllib.parse import urlencode

import orjson
import pytest

from pipeline.topics import Topics
from tests.harness import read_topic, wait_until

pytestmark = pytest.mark.stack

ROUTE = "/v1/channels/web/reports"


def post(url: str, body: bytes, ctype: str = "application/json") -> tuple[int, dict]:
    req = urllib.request.Request(url + ROUTE, data=body, headers={"Content-Type": ctype}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


def rows(iso, report_id: str) -> list[tuple]:
    return iso.query(
        "SELECT channel, text_original, address, routed_to, status FROM reports WHERE report_id = %s",
        (report_id,),
    )


def test_json_post_becomes_a_row_in_the_crm_store(iso, pipeline_url):
    status, body = post(
        pipeline_url,
        orjson.dumps(
            {
                "text": "Lampu PJU di Jl. Cempaka Putih Raya mati sudah 3 hari, mhn segera diperbaiki",
                "email": "warga.cempaka@example.com",
                "alamat": "Jl. Cempaka Putih Raya, Kel. Cempaka Putih Timur",
            }
        ),
    )
    assert status == 202 and body["status"] == "accepted"
    found = wait_until(lambda: rows(iso, body["report_id"]), what="report row in PostgreSQL")
    channel, text, address, routed_to, state = found[0]
    assert channel == "web" and text.startswith("Lampu PJU") and "Cempaka Putih Timur" in address
    assert state == "Menunggu" and routed_to in {"agency", "triage"}
    [(stored,)] = iso.query("SELECT email FROM reporter_contacts WHERE report_id = %s", (body["report_id"],))
    from pipeline.security import ContactCipher  # contacts are encrypted at rest (issue #6)

    assert stored.startswith("enc:v1:") and "cempaka" not in stored
    cipher = ContactCipher.from_settings(iso.settings())
    assert cipher.decrypt(stored, body["report_id"], "email") == "warga.cempaka@example.com"


def test_the_same_post_twice_leaves_one_row(iso, pipeline_url):
    form = urlencode(
        {
            "laporan": "Parkir liar di trotoar depan Stasiun Tebet setiap sore",
            "nama": "Sari",
            "no_hp": "0813 1111 2222",
        }
    ).encode()
    s1, b1 = post(pipeline_url, form, "application/x-www-form-urlencoded")
    s2, b2 = post(pipeline_url, form, "application/x-www-form-urlencoded")
    assert s1 == s2 == 202 and b1["report_id"] == b2["report_id"]
    wait_until(lambda: rows(iso, b1["report_id"]), what="report row")
    # A later, different report passing through proves the duplicate had its chance to be stored.
    _, b3 = post(pipeline_url, orjson.dumps({"text": "Genangan air di underpass Kemayoran setelah hujan"}))
    wait_until(lambda: rows(iso, b3["report_id"]), what="the later report")
    assert iso.query("SELECT count(*) FROM reports WHERE report_id = %s", (b1["report_id"],)) == [(1,)]
    normalised = read_topic(iso, Topics(iso.tag).normalised, min_records=3)
    assert sum(1 for r in normalised if r["report_id"] == b1["report_id"]) == 1


def test_malformed_post_gets_4xx_and_a_dead_letter_with_the_reason(iso, pipeline_url):
    raw = b'{"text": "Jalan rusak di Jl. Daan Mogot", "lat": -6.16'  # cut off mid-object
    status, body = post(pipeline_url, raw)
    assert status == 400 and body["code"] == "malformed_json" and "malformed JSON" in body["error"]
    letters = read_topic(iso, Topics(iso.tag).deadletter, min_records=1)
    mine = [d for d in letters if base64.b64decode(d["raw_b64"]) == raw]
    assert mine, letters
    assert (
        mine[0]["channel"] == "web" and mine[0]["stage"] == "ingress" and mine[0]["code"] == "malformed_json"
    )
    assert "malformed JSON" in mine[0]["reason"]


def test_oversized_body_is_refused_and_dead_lettered_capped(iso, pipeline_url):
    big = orjson.dumps({"text": "Banjir " * 60000})
    status, body = post(pipeline_url, big)
    assert status == 413 and body["code"] == "too_large"
    letters = read_topic(iso, Topics(iso.tag).deadletter, min_records=2)
    mine = [d for d in letters if d["code"] == "too_large"]
    assert mine and mine[0]["raw_truncated"] is True and mine[0]["raw_size"] == len(big)
    assert len(base64.b64decode(mine[0]["raw_b64"])) <= 64 * 1024
