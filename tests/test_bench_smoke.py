"""The benchmark harness (issue #5) end to end in a tiny configuration, so `make bench` keeps working.

It runs ``crm-pipeline bench --stack external`` against the test session's stack (its own namespace and
database, dropped afterwards) and checks the JSON it writes. No assertion on speed: figures on a shared
2-core machine are not a test.
"""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from pipeline.bench.traffic import CHANNEL_MIX, Traffic, stamp
from pipeline.envelope import Report
from tests import harness

pytestmark = [pytest.mark.slow, pytest.mark.stack]


def test_traffic_is_valid_envelopes_with_the_mix_redeliveries_and_repeats() -> None:
    t = Traffic(seed=1)
    sent = [t.envelope(flood=i % 10 == 0) for i in range(3000)]
    reports = [Report.loads(stamp(e)) for e in sent]
    channels = {r.channel for r in reports}
    assert "jaki" in channels and channels <= set(CHANNEL_MIX)
    assert sum(r.channel == "jaki" for r in reports) > 0.8 * len(reports)
    assert t.counts["redelivery"] > 0 and t.counts["repeat"] > 0
    assert len({r.report_id for r in reports}) < len(reports)  # redeliveries reuse the report id
    assert all(r.location.lat is not None for r in reports if r.channel == "jaki")
    body = t.jaki_request()
    assert {"report_id", "text", "lat", "lon"} <= body.keys()


@pytest.mark.timeout(900)
def test_bench_tiny_run_writes_results(stack: None, tmp_path) -> None:
    env = {**os.environ, **harness.stack_env(), "PYTHONUNBUFFERED": "1"}
    args = [
        "--stack", "external", "--out-dir", str(tmp_path), "--repeat", "1", "--partitions", "2",
        "--drain-n", "300", "--fixed-rps", "100", "--fixed-s", "2", "--open-reports", "100",
        "--burst-base-rps", "10", "--burst-pre-s", "1", "--burst-s", "1", "--burst-post-s", "1",
        "--ingress-requests", "40", "--ingress-concurrency", "4", "--baseline-n", "2000",
        "--triage-rows", "300", "--max-workers", "2", "--profile-s", "0",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "bench", *args],
        env=env,
        cwd=harness.ROOT,
        capture_output=True,
        text=True,
        timeout=880,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = orjson.loads((tmp_path / "latest.json").read_bytes())
    for key in ("throughput_rps", "baseline_rps", "ratio", "latency_ms", "peak_rss_mb", "commit"):
        assert key in result, key
    assert {"p50", "p95", "p99"} <= result["latency_ms"].keys()
    assert result["latency_ms"]["p50"] is not None and len(result["latency_ms"]["runs"]) == 1
    assert result["latency_ms"]["runs"][0]["redis_aof_rewrites"] >= 0  # the tail is read against them
    assert result["throughput_rps"] > 0 and result["baseline_rps"] > 0
    assert all(0 < r["cpu_pct"] <= 200 for r in result["baseline_runs"])  # the process's own CPU
    assert any(k.startswith("worker") for k in result["peak_rss_mb"])
    assert {"1", "2"} <= result["scale_out"].keys()
    # every drain starts from the same live-sized case store, not from what the run before left
    drains = [r for w in ("1", "2") for r in result["scale_out"][w]["runs"]]
    assert drains and all(r["open_reports_before"] == 100 for r in drains)
    budget = result["cpu_budget"]  # the cost per stored report behind the rows/s
    assert budget["cpus"] == os.cpu_count() and budget["target_rps"] == 5000
    for w in ("1", "2"):
        assert budget[w]["us_per_report"]["workers"] > 0 and budget[w]["cores_needed_at_target"] > 0
    assert "CPU per stored report, 1 worker(s)" in proc.stderr
    # issue #17: the surge worker ran beside the workers and consumed the drains' hits. Its share is a
    # benchmark figure (make bench): in this tiny run its idle and start-up CPU over a few hundred
    # reports can reach the workers' own (CI at e170097 saw 1.0), so only its presence is asserted here
    assert budget["1"]["us_per_report"]["surge"] > 0 and budget["1"]["surge_share_of_workers"] > 0
    assert "surge_share_of_workers<=0.10" in result["targets"]
    assert result["offline_triage"]["rows"] == 300
    # issue #19: the framework's floor and the Quix Streams peer, in the same run, with the ratios
    assert result["floors"]["aiokafka_rps"] == result["baseline_rps"]
    assert result["floors"]["faust_rps"] > 0 and result["floors"]["faust_runs"][0]["records"] == 2000
    peer = result["peer"]
    assert peer["quix_rps"] > 0 and peer["quix_us_per_report"] > 0, peer
    assert peer["runs"][0]["stored"] >= peer["runs"][0]["unique"] > 0  # every report reached its store
    assert peer["peak_rss_mb"] > 0
    assert result["ratios"]["ours_to_quix_peer"] > 0 and result["ratios"]["ours_to_faust_floor"] > 0
    assert "ours / Quix peer" in proc.stderr
    # the peer has no surge stage: its drains do not wait for the surge worker (4 idle minutes a run)
    assert "quix peer #1 open cases: surge worker still behind" not in proc.stderr
    assert "quix peer #1: surge worker still behind" not in proc.stderr
    # where the run's minutes went (issue #19: a whole `make bench` within 15)
    spent = result["phase_s"]
    phases = {"stack", "baseline and floor", "throughput", "peer", "fixed", "scale-out", "triage"}
    assert phases <= spent.keys()
    assert 0 < sum(spent.values()) <= result["duration_s"]
    assert "duration_s<=900" in result["targets"]
    assert "wall seconds by phase" in proc.stderr
    assert result["ingress"]["status_counts"].get("202", 0) > 0
    assert result["burst"]["burst_rps"] == 100
    assert len(result["commit"]) == 40
    assert any((tmp_path / "logs").glob("worker*.log"))  # the processes' logs stay beside the results
    assert "plot:" in proc.stderr
