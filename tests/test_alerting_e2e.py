"""A real Prometheus (Debian's package) scrapes a real ingress and worker on the local stack, with the
rules of deploy/prometheus on a clock 60 times faster (1 s scrapes, `for: 5m` becomes 5 s). Reports flow,
then the worker stops: the lag alert fires; the worker comes back: the lag drains and nothing is lost."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import orjson
import pytest

from tests import prom
from tests.harness import Process, free_port, wait_http, wait_until

pytestmark = [pytest.mark.stack, pytest.mark.slow]

SPEEDUP = 60


def _port(offset: int) -> int:
    """A port of this worktree's slot when one is set (.slot.env), else any free one."""
    base = os.environ.get("SLOT_PORT_BASE")
    return int(base) + offset if base else free_port()


class Reporter:
    """Posts web-form reports at a steady pace in a thread: a real intake while the test watches."""

    def __init__(self, url: str, per_s: float = 4.0) -> None:
        self.url = url + "/v1/channels/web/reports"
        self.per_s = per_s
        self.accepted: list[str] = []
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Reporter:
        self._thread.start()
        return self

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(1 / self.per_s):
            i += 1
            body = orjson.dumps(
                {
                    "text": f"Got mampet di Jl. Kramat Raya no {i}, air meluap ke jalan, mohon dibersihkan",
                    "email": f"warga{i}.{time.monotonic_ns()}@example.com",
                    "alamat": "Jl. Kramat Raya, Kel. Kramat",
                }
            )
            req = urllib.request.Request(
                self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    self.accepted.append(orjson.loads(resp.read())["report_id"])
            except (urllib.error.URLError, OSError):
                self.refused += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def _firing(p: prom.Prometheus, name: str) -> bool:
    return any(a["labels"]["alertname"] == name for a in p.alerts("firing"))


def _value(p: prom.Prometheus, expr: str) -> float | None:
    result = p.query(expr)
    return float(result[0]["value"][1]) if result else None


def test_lag_alert_fires_when_the_worker_stops(iso, tmp_path) -> None:
    ingress_port, worker_port, prom_port = _port(10), _port(11), _port(12)
    env = {
        **iso.env,
        "CRM_INGRESS_PORT": str(ingress_port),
        "CRM_WORKER_METRICS_PORT": str(worker_port),
        "CRM_LAG_SAMPLE_S": "1",
    }
    for step in (["topics", "create"], ["store", "migrate"]):
        subprocess.run(
            [sys.executable, "-m", "pipeline", *step],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
    ingress = Process("ingress", ["ingress"], env)
    worker = Process("worker", ["worker", "--loglevel", "warning"], env)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
        "scrape_configs": [
            {"job_name": "crm-ingress", "static_configs": [{"targets": [f"127.0.0.1:{ingress_port}"]}]},
            {"job_name": "crm-worker", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
        ],
    }
    fast_rules = prom.compress_durations(prom.RULES.read_text(), SPEEDUP)
    p = prom.Prometheus(tmp_path / "prometheus", prom_port, config, fast_rules)
    url = f"http://127.0.0.1:{ingress_port}"
    reporter = None
    try:
        wait_http(url + "/readyz", ingress)
        wait_http(f"http://127.0.0.1:{worker_port}/healthz", worker)
        reporter = Reporter(url).start()

        # Flowing: both targets up, reports stored with their latency observed, no lag alert.
        wait_until(
            lambda: (
                {t["labels"]["job"] for t in p.targets() if t["health"] == "up"}
                == {"crm-ingress", "crm-worker"}
            ),
            timeout=60,
            what="both targets scraped",
        )
        wait_until(
            lambda: (_value(p, "sum(crm_report_latency_seconds_count)") or 0) >= 20,
            timeout=120,
            what="stored reports' latency in Prometheus",
        )
        assert _value(p, 'max(crm_last_report_timestamp_seconds{channel="web"})') is not None
        assert _value(p, 'sum(crm_ingress_responses_total{channel="web",code="202"})') > 0
        assert _value(p, "crm:consumer_lag:max") is not None  # sampled by the ingress
        assert not _firing(p, "CrmConsumerLagGrowing")
        assert not _firing(p, "CrmWorkersDown")
        # Every query of the Grafana board is one this Prometheus evaluates (the API refuses bad PromQL).
        board = orjson.loads(prom.BOARD.read_bytes())
        queries = dict(prom.board_queries(board))
        intake = prom.as_promql(queries["panel 'Intake per channel (reports/s)' A"])
        # a rate needs two scrapes of the web series inside its window: on a busy machine, wait for them
        wait_until(lambda: p.query(intake), timeout=60, what="web intake on the board")
        answered = {where: p.query(prom.as_promql(expr)) for where, expr in queries.items()}
        assert answered["panel 'Intake per channel (reports/s)' A"], "web intake not on the board"

        # The worker stops; the ingress still accepts, the lag it samples grows, the alert fires.
        worker.stop()
        stopped = time.monotonic()
        wait_until(
            lambda: _firing(p, "CrmConsumerLagGrowing"), timeout=120, what="CrmConsumerLagGrowing firing"
        )
        fired_after = time.monotonic() - stopped
        assert _firing(p, "CrmWorkersDown")
        lag = _value(p, "crm:consumer_lag:max")
        assert lag and lag > 0
        print(f"CrmConsumerLagGrowing fired {fired_after:.0f}s after the worker stopped (lag {lag:.0f})")

        # Back again: the lag drains to zero and every accepted report is stored once.
        reporter.stop()
        worker = Process("worker-again", ["worker", "--loglevel", "warning"], env)
        accepted = set(reporter.accepted)
        assert reporter.refused == 0 and len(accepted) >= 40

        def stored() -> bool:
            (n,) = iso.query("SELECT count(*) FROM reports WHERE report_id = ANY(%s)", (list(accepted),))[0]
            return n == len(accepted)

        wait_until(stored, timeout=180, what="every accepted report stored")
        wait_until(lambda: _value(p, "crm:consumer_lag:max") == 0, timeout=60, what="lag back to zero")
        wait_until(lambda: not _firing(p, "CrmConsumerLagGrowing"), timeout=60, what="lag alert resolved")
        [(dupes,)] = iso.query(
            "SELECT count(*) FROM (SELECT report_id FROM reports GROUP BY report_id HAVING count(*) > 1) d"
        )
        assert dupes == 0
    finally:
        if reporter is not None:
            reporter.stop()
        p.stop()
        worker.stop()
        ingress.stop()
