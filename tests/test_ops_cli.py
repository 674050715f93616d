"""``crm-pipeline`` operations commands against the real stack: lag, dead letters (list, inspect,
replay), backfill, run, health and the worker's telemetry endpoints."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.request
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from pipeline.deadletter import DeadLetter
from pipeline.envelope import Report, Reporter, report_id_for
from pipeline.ops.telemetry import CASES_FORMED, CLASSIFIED, confidence_band, observe_triaged
from pipeline.sources.base import InboundRequest
from pipeline.sources.web import WebFormSource
from pipeline.topics import Topics
from tests.harness import Process, free_port, wait_http, wait_until

pytestmark = pytest.mark.stack


def cli(iso, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env={**os.environ, **iso.env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stored(iso, report_id: str) -> int:
    return iso.query("SELECT count(*) FROM reports WHERE report_id = %s", (report_id,))[0][0]


def post_json(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(
        url + "/v1/channels/web/reports", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


def produce_letters(iso, letters: list[DeadLetter]) -> None:
    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=iso.env["CRM_KAFKA_BOOTSTRAP"], acks="all")
        await producer.start()
        try:
            for d in letters:
                await producer.send_and_wait(
                    Topics(iso.tag).deadletter, d.dumps(), key=(d.report_id or d.raw_sha256).encode()
                )
        finally:
            await producer.stop()

    asyncio.run(go())


def test_help_names_every_operation_and_bad_usage_exits_2(iso):
    out = cli(iso, "--help").stdout
    for cmd in ("run", "lag", "deadletters", "backfill", "dashboard", "topics", "health"):
        assert f"\n    {cmd}" in out
    assert cli(iso, "deadletters").returncode == 2
    bad = cli(iso, "deadletters", "list", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "is not a time" in bad.stderr


def test_lag_per_topic_and_partition(iso, pipeline_url):
    result = cli(iso, "lag", "--json")
    assert result.returncode == 0, result.stderr
    data = orjson.loads(result.stdout)
    topics = {p["topic"] for p in data["partitions"]}
    assert Topics(iso.tag).ingest("web") in topics
    assert Topics(iso.tag).normalised not in topics  # the worker writes it; no group reads it back
    assert {p["partition"] for p in data["partitions"]} == {0, 1, 2}
    assert "total lag" in cli(iso, "lag").stdout


def test_run_refuses_more_workers_than_partitions(iso, pipeline_url):
    result = cli(iso, "run", "--workers", "4")
    assert result.returncode == 2
    assert "4 workers but the ingest topics have 3 partitions" in result.stderr


def test_dead_letters_list_inspect_and_replay_idempotently(iso, pipeline_url):
    # A broken form (stays broken) and two letters that a fix makes good: an adapter crash on a valid
    # form, and a report the triage stage could not process.
    broken = b'{"text": "Saluran air mampet di Jl. Pemuda'
    status, _ = post_json(pipeline_url, broken)
    assert status == 400
    form = orjson.dumps({"text": "Trotoar rusak parah depan SDN 01 Rawamangun " + uuid.uuid4().hex[:6]})
    crashed = DeadLetter.build(
        raw=form,
        cap=65536,
        channel="web",
        stage="ingress",
        code="adapter_error",
        reason="adapter raised KeyError('x')",
        content_type="application/json",
    )
    report = Report.create(
        channel="web",
        provider_id="sub:replay-" + uuid.uuid4().hex,
        reporter=Reporter(id="anonymous"),
        text="Lampu jalan mati di Jl. Balai Pustaka Timur sejak kemarin malam",
    )
    poisoned = DeadLetter.build(
        raw=report.dumps(),
        cap=65536,
        channel="web",
        stage="triage",
        code="processor_error",
        reason="processor raised ValueError('bug')",
        report_id=report.report_id,
    )
    produce_letters(iso, [crashed, poisoned])

    listed = cli(iso, "deadletters", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    codes = {d["code"] for d in orjson.loads(listed.stdout)}
    assert {"malformed_json", "adapter_error", "processor_error"} <= codes
    only = orjson.loads(cli(iso, "deadletters", "list", "--json", "--code", "processor_error").stdout)
    assert [d["dead_letter_id"] for d in only] == [poisoned.dead_letter_id]
    assert cli(iso, "deadletters", "list", "--since", "1d", "--channel", "web").returncode == 0
    assert orjson.loads(cli(iso, "deadletters", "list", "--json", "--until", "2000-01-01").stdout) == []

    shown = cli(iso, "deadletters", "inspect", crashed.dead_letter_id[:8])
    assert shown.returncode == 0 and "Trotoar rusak parah" in shown.stdout and "adapter_error" in shown.stdout
    raw = cli(iso, "deadletters", "inspect", crashed.dead_letter_id, "--raw")
    assert raw.stdout.encode() == form
    assert cli(iso, "deadletters", "inspect", "no-such-letter").returncode == 2

    first = cli(iso, "deadletters", "replay", "--code", "adapter_error", "--code", "processor_error")
    assert first.returncode == 0, first.stderr
    assert "2 replayed" in first.stdout and "2 report(s) published" in first.stdout
    parsed = WebFormSource(iso.settings()).parse(
        InboundRequest("POST", WebFormSource.route, {"Content-Type": "application/json"}, {}, form)
    )
    fixed_id = parsed.reports[0].report_id
    wait_until(
        lambda: stored(iso, report.report_id) and stored(iso, fixed_id), what="replayed reports stored"
    )

    again = cli(iso, "deadletters", "replay", "--code", "adapter_error", "--code", "processor_error")
    assert again.returncode == 0 and "0 replayed" in again.stdout and "2 already stored" in again.stdout
    assert stored(iso, report.report_id) == 1 and stored(iso, fixed_id) == 1

    still = cli(iso, "deadletters", "replay", "--code", "malformed_json", "--quiet")
    assert still.returncode == 1 and "still rejected" in still.stdout and "malformed_json" in still.stdout


def test_backfill_a_crm_export_twice_stores_each_row_once(iso, pipeline_url, tmp_path):
    tag = uuid.uuid4().hex[:8]
    export = tmp_path / "export.csv"
    export.write_text(
        "report_id,number,date,month,year,description,location,category\n"
        f'JK{tag}01,1,18,6,23,"Sampah menumpuk di pinggir jalan, bau sekali",KELURAHAN KLENDER,Sampah\n'
        f"JK{tag}02,2,26,8,23,Jalan berlubang depan halte busway,KELURAHAN KARET SEMANGGI,Jalan\n"
        f"JK{tag}03,3,1,9,23,Pohon tumbang menutup jalan,KELURAHAN GAMBIR,Pohon\n",
        encoding="utf-8",
    )
    first = cli(iso, "backfill", str(export))
    assert first.returncode == 0, first.stderr
    assert "3 published" in first.stdout
    ids = [report_id_for("backfill", f"JK{tag}0{i}") for i in (1, 2, 3)]
    wait_until(lambda: all(stored(iso, i) for i in ids), what="backfilled rows in the store")
    row = iso.query("SELECT channel, source_at::date::text FROM reports WHERE report_id = %s", (ids[0],))
    assert row == [("backfill", "2023-06-18")]

    second = cli(iso, "backfill", str(export))
    assert second.returncode == 0 and "0 published" in second.stdout and "3 already stored" in second.stdout
    assert sum(stored(iso, i) for i in ids) == 3


def test_backfill_refuses_bad_input_with_file_and_line(iso, tmp_path):
    missing = tmp_path / "missing.csv"
    missing.write_text("id,text\n1,abc\n")
    result = cli(iso, "backfill", str(missing))
    assert result.returncode == 2 and f"{missing}:1: missing column 'report_id'" in result.stderr

    bad = tmp_path / "bad.csv"
    bad.write_text("report_id,description,date,month,year\nA1,ok text,1,1,24\nA2,,1,1,24\nA3,text,31,2,24\n")
    result = cli(iso, "backfill", str(bad))
    assert result.returncode == 2
    assert f"{bad}:3: empty description" in result.stderr and f"{bad}:4: " in result.stderr
    assert "nothing was published" in result.stderr
    assert cli(iso, "backfill", str(bad), "--dry-run", "--skip-invalid").returncode == 0
    assert cli(iso, "backfill", str(tmp_path / "nope.csv")).returncode == 2


def test_health_and_ingress_readiness_report_every_dependency(iso, pipeline_url):
    result = cli(iso, "health")
    assert result.returncode == 0, result.stdout
    checks = orjson.loads(result.stdout)["checks"]
    assert all(checks[k]["ok"] for k in ("kafka", "redis", "database"))
    with urllib.request.urlopen(pipeline_url + "/readyz", timeout=10) as resp:
        body = orjson.loads(resp.read())
    assert body["status"] == "ready" and body["dependencies"]["database"]["ok"] is True


def test_worker_serves_metrics_health_and_readiness(iso, pipeline_url):
    port = free_port()
    worker = Process(
        "worker-telemetry",
        ["worker", "--loglevel", "warning"],
        {**iso.env, "CRM_WORKER_METRICS_PORT": str(port)},
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", worker, timeout=90)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as resp:
            ready = orjson.loads(resp.read())
        assert ready["ready"] and set(ready["checks"]) == {"kafka", "redis", "database"}

        def scraped() -> str | None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                text = resp.read().decode()
            return (
                text
                if "crm_consumer_lag_total" in text and 'crm_dependency_up{dependency="redis"} 1.0' in text
                else None
            )

        text = wait_until(scraped, timeout=60, what="lag and dependency gauges")
        for name in (
            "crm_classified_total",
            "crm_cases_formed_total",
            "crm_outbox_backlog",
            "crm_dead_letters_total",
        ):
            assert name in text
    finally:
        worker.stop()


def test_classification_and_case_metrics_count_a_triaged_batch():
    from pipeline.envelope import Triage
    from pipeline.processors.group import CaseIndex

    r1 = Report.create(channel="web", provider_id="m1", reporter=Reporter(id="anonymous"), text="lampu mati")
    r2 = Report.create(channel="web", provider_id="m2", reporter=Reporter(id="anonymous"), text="lampu mati")
    r1.triage = Triage(
        category="Penerangan Jalan", confidence=0.91, case_id=CaseIndex.new_case_id(r1.report_id)
    )
    r2.triage = Triage(category="Penerangan Jalan", confidence=0.42, case_id=r1.triage.case_id)
    before_high = CLASSIFIED.labels("Penerangan Jalan", "high")._value.get()
    before_cases = CASES_FORMED._value.get()
    observe_triaged([r1, r2])
    assert CLASSIFIED.labels("Penerangan Jalan", "high")._value.get() == before_high + 1
    assert CLASSIFIED.labels("Penerangan Jalan", "low")._value.get() >= 1
    assert CASES_FORMED._value.get() == before_cases + 1
    assert [confidence_band(c) for c in (None, 0.2, 0.6, 0.95)] == ["none", "low", "medium", "high"]


def test_run_starts_ingress_and_workers_that_carry_a_report(iso, pipeline_url):
    port, metrics = free_port(), free_port()
    env = {**iso.env, "CRM_INGRESS_PORT": str(port), "CRM_WORKER_METRICS_PORT": str(metrics)}
    runner = Process("run", ["run", "--workers", "2", "--concurrency", "1"], env)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", runner, timeout=90)
        wait_http(f"http://127.0.0.1:{metrics + 1}/healthz", runner, timeout=90)  # the second worker's port
        text = "Drainase tersumbat di Jl. Salemba Raya " + uuid.uuid4().hex[:6]
        status, body = post_json(f"http://127.0.0.1:{port}", orjson.dumps({"text": text}))
        assert status == 202
        wait_until(lambda: stored(iso, body["report_id"]), what="report stored through `run`")
    finally:
        runner.stop()
    assert runner.proc.returncode == 0, runner.output()[-2000:]
