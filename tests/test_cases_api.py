"""Cases on the real stack (issue #23): reports grouped by the worker, a case read, split and merged through
the officer API and counted by ``crm-pipeline cases quality``; a complaint made again after its case was
Selesai opens a new case linked to the closed one."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request

import orjson
import pytest

from tests.harness import ROOT, running_api, wait_until

pytestmark = pytest.mark.stack

KEY = "officer-key-cases"
KEYS = orjson.dumps({KEY: {"consumer": "petugas-uji", "scopes": ["status:write", "cases:write"]}}).decode()
READER = "reader-key-cases"
KEYS_WITH_READER = orjson.dumps(
    {
        KEY: {"consumer": "petugas-uji", "scopes": ["status:write", "cases:write"]},
        READER: {"consumer": "pembaca", "scopes": ["open311:read"]},
    }
).decode()

#: one complaint, re-filed in the reporter's own words (same words, 8+ content words, same kelurahan)
PILE = (
    "Sampah menumpuk di pinggir kali dekat pos RW 05 gang Melati sudah seminggu tidak diangkut petugas, "
    "bau menyengat dan banyak lalat, mohon segera diangkut"
)
LAMP = (
    "Lampu PJU di gang Kenanga RT 03 RW 07 mati total sudah lima hari, jalan gelap sekali tiap malam, "
    "rawan kejahatan, mohon segera diperbaiki petugas"
)


def call(base: str, method: str, path: str, body: dict | None = None, key: str = KEY) -> tuple[int, dict]:
    req = urllib.request.Request(
        base + path,
        data=orjson.dumps(body) if body is not None else None,
        headers={"X-API-Key": key, "Content-Type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


def submit(pipeline_url: str, text: str, where: str) -> str:
    req = urllib.request.Request(
        pipeline_url + "/v1/channels/web/reports",
        data=orjson.dumps({"text": text, "alamat": where}),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=15) as resp:
        assert resp.status == 202
        return orjson.loads(resp.read())["report_id"]


def case_of(iso, report_id: str) -> str | None:
    rows = iso.query("SELECT case_id FROM reports WHERE report_id = %s", (report_id,))
    return rows[0][0] if rows and rows[0][0] else None


def stored(iso, report_id: str) -> str:
    return wait_until(lambda: case_of(iso, report_id), what=f"report {report_id} stored with its case")


def quality(iso) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "cases", "quality", "--since", "1d", "--json"],
        env={**os.environ, **iso.env},
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return orjson.loads(out.stdout)


def _redis_case(iso, case_id: str) -> dict:
    """The case as grouping keeps it in Redis (what the workers compare new reports with)."""
    import redis

    client = redis.Redis.from_url(iso.env["CRM_REDIS_URL"])
    try:
        raw = client.get(f"{iso.env['CRM_TOPIC_NAMESPACE']}:case:{case_id}")
    finally:
        client.close()
    assert raw, f"grouping has no case {case_id}"
    return orjson.loads(raw)


def test_split_and_merge_through_the_api_are_counted_by_cases_quality(iso, pipeline_url):
    where = "Gang Melati, Kel. Kali Baru, Cilincing"
    first = submit(pipeline_url, PILE, where)
    case = stored(iso, first)
    again = [submit(pipeline_url, PILE + extra, where) for extra in (" sekali", " lagi", ", tolong")]
    assert [stored(iso, r) for r in again] == [case, case, case]  # one complaint, one case
    lamp = submit(pipeline_url, LAMP, "Gang Kenanga, Kel. Kali Baru, Cilincing")
    lamp_case = stored(iso, lamp)
    assert lamp_case != case
    before = quality(iso)

    with running_api(iso, CRM_API_KEYS=KEYS_WITH_READER) as api:
        status, body = call(api, "GET", f"/v1/cases/{case}")
        assert status == 200 and body["support_count"] == 4 and len(body["members"]) == 4
        member = body["members"][1]
        assert 0.9 <= member["score"] <= 1.0
        why = member["explanation"]
        assert "sampah" in why["shared_words"] and why["same_kelurahan"] and why["days_apart"] < 1
        assert call(api, "GET", f"/v1/cases/{case}", key=READER)[0] == 403
        assert call(api, "GET", "/v1/cases/case-nothing")[0] == 404

        # an officer takes the last report out of the case: it was another pile after all
        split = {"report": again[-1], "actor": "ani", "note": "tumpukan lain", "event_id": "split-1"}
        status, done = call(api, "POST", f"/v1/cases/{case}/split", split)
        assert status == 201 and done["kind"] == "split" and done["pairs"] == 3
        new_case = done["other_case_id"]
        assert case_of(iso, again[-1]) == new_case
        # grouping learnt it: the old case no longer holds the report's words, the new case is filed
        grouping = _redis_case(iso, case), _redis_case(iso, new_case)
        assert again[-1] not in [m[0] for m in grouping[0]["members"]]
        assert [m[0] for m in grouping[1]["members"]] == [again[-1]]
        assert call(api, "POST", f"/v1/cases/{case}/split", split) == (200, done)  # a retry is a replay
        assert call(api, "POST", f"/v1/cases/{case}/split", {**split, "event_id": "split-2"})[0] == 409
        assert call(api, "POST", f"/v1/cases/{new_case}/split", {"report": again[-1]})[0] == 409
        assert call(api, "POST", f"/v1/cases/{case}/split", {"actor": "ani"})[0] == 422
        assert call(api, "POST", f"/v1/cases/{case}/split", {"report": again[0]}, key=READER)[0] == 403
        status, body = call(api, "GET", f"/v1/cases/{case}")
        assert body["support_count"] == 3

        # ... and decides the lamp report belongs with it after all (a merge says the opposite of a split)
        status, merged = call(api, "POST", f"/v1/cases/{case}/merge", {"other": lamp_case, "actor": "ani"})
        assert status == 201 and merged["kind"] == "merge" and merged["moved"] == 1 and merged["pairs"] == 3
        assert case_of(iso, lamp) == case
        [(reason, into)] = iso.query(
            "SELECT closed_reason, merged_into FROM cases WHERE case_id = %s", (lamp_case,)
        )
        assert (reason, into) == ("merged", case)
        assert call(api, "POST", f"/v1/cases/{case}/merge", {"other": lamp_case})[0] == 409
        # grouping learnt the merge too: the lamp reported again joins the case the officer kept
        lamp_again = submit(pipeline_url, LAMP + ", tolong", "Gang Kenanga, Kel. Kali Baru, Cilincing")
        assert stored(iso, lamp_again) == case
        assert call(api, "POST", f"/v1/cases/{case}/merge", {"other": case})[0] == 422

    after = quality(iso)
    assert after["splits"] - before["splits"] == 1 and after["merges"] - before["merges"] == 1
    assert after["pairs_different"] - before["pairs_different"] == 3
    assert after["pairs_same"] - before["pairs_same"] == 3
    assert after["joined"] >= 3 and after["split_grouped"] - before["split_grouped"] == 1
    assert after["merge_precision"] < 1.0
    pairs = iso.query(
        "SELECT p.label, p.grouped_together FROM case_pair_labels p "
        "JOIN case_corrections k USING (correction_id) WHERE k.event_id = 'split-1'"
    )
    assert pairs and all(p == (0, True) for p in pairs)
    text = subprocess.run(
        [sys.executable, "-m", "pipeline", "cases", "quality", "--since", "1d"],
        env={**os.environ, **iso.env}, capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    assert "officer corrections" in text and "merge precision" in text


def test_a_complaint_made_again_after_selesai_opens_a_new_case_linked_to_the_closed_one(iso, pipeline_url):
    where = "Gang Kenanga, Kel. Kalibaru, Cilincing"
    text = LAMP.replace("Kenanga", "Dahlia")
    first = submit(pipeline_url, text, where)
    case = stored(iso, first)
    with running_api(iso, CRM_API_KEYS=KEYS) as api:
        for status in ("Proses", "Menunggu Validasi", "Selesai"):
            code, _ = call(
                api, "POST", f"/v1/reports/{first}/status", {"status": status, "note": "lampu diganti"}
            )
            assert code == 201
        [(closed_reason,)] = iso.query("SELECT closed_reason FROM cases WHERE case_id = %s", (case,))
        assert closed_reason == "Selesai"
        again = submit(pipeline_url, text + ", mati lagi", where)  # the light went out again
        new_case = stored(iso, again)
        assert new_case != case
        [(previous, occurrence)] = wait_until(
            lambda: iso.query(
                "SELECT previous_case_id, occurrence FROM cases "
                "WHERE case_id = %s AND previous_case_id IS NOT NULL",
                (new_case,),
            ),
            what="the new case linked to the closed one",
        )
        assert (previous, occurrence) == (case, 2)
        status, body = call(api, "GET", f"/v1/cases/{case}")
        assert status == 200 and body["next_case_ids"] == [new_case] and body["closed_reason"] == "Selesai"
        status, body = call(api, "GET", f"/v1/cases/{new_case}")
        assert body["occurrence"] == 2 and body["previous_case_id"] == case
