"""The Grafana board (deploy/grafana) reads only metrics the code exports, and docker-compose provisions
it with Prometheus as its data source and the rules of deploy/prometheus loaded."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest
import yaml

from tests import prom

COMPOSE = prom.ROOT / "docker-compose.yml"
GRAFANA = prom.ROOT / "deploy" / "grafana"


@pytest.fixture(scope="module")
def exported() -> set[str]:
    # In a fresh interpreter, so what this test session happened to import does not count.
    code = (
        "import orjson; from pipeline.ops.slo import exported_metrics as m; print(orjson.dumps(m()).decode())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=prom.ROOT
    )
    return set(orjson.loads(out.stdout))


def board() -> dict:
    return orjson.loads(prom.BOARD.read_bytes())


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_every_board_query_names_a_metric_the_code_exports(exported: set[str]) -> None:
    recorded = {r["record"] for r in prom.rules() if "record" in r}
    queries = prom.board_queries(board())
    assert len(queries) >= 20
    for where, expr in queries:
        names = prom.metric_names(prom.as_promql(expr))
        assert names, f"{where}: no metric in {expr!r}"
        unknown = names - exported - recorded - prom.EXTERNAL_METRICS
        assert not unknown, f"{where} reads {sorted(unknown)}, which no code exports"


def test_the_check_catches_a_metric_nobody_exports(exported: set[str]) -> None:
    expr = 'sum(rate(crm_no_such_thing_total{channel=~"$channel"}[$__rate_interval])) / sum(up)'
    assert prom.metric_names(prom.as_promql(expr)) - exported - prom.EXTERNAL_METRICS == {
        "crm_no_such_thing_total"
    }


def test_board_covers_what_the_issue_names() -> None:
    text = " ".join(expr for _, expr in prom.board_queries(board()))
    for metric in (
        "crm_ingress_reports_total",  # intake per channel
        "crm:consumer_lag:max",  # lag
        "crm:report_latency_seconds:p99",  # latency percentiles
        "crm_dead_letters_total",  # dead letters
        "crm_routed_total",  # routing by agency, triage share
        "crm_classified_total",
    ):
        assert metric in text, metric
    titles = [p["title"] for p in board()["panels"]]
    assert any("Surge" in t for t in titles) and any("Triage share" in t for t in titles)


def test_panels_use_the_provisioned_data_source() -> None:
    (ds,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    for p in board()["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == ds["uid"], p["title"]
            assert all(t["datasource"]["uid"] == ds["uid"] for t in p["targets"]), p["title"]
    ids = [p["id"] for p in board()["panels"]]
    assert len(ids) == len(set(ids))
    prometheus = compose()["services"]["prometheus"]
    assert ds["url"] == "http://prometheus:9090" and "9090:9090" in prometheus["ports"]


def test_compose_provisions_grafana_and_prometheus_with_the_rules(tmp_path) -> None:
    services = compose()["services"]
    grafana = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"] if v.startswith("./")}
    assert grafana["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "crm-pipeline.yml").read_text())[
        "providers"
    ]
    assert grafana[provider["options"]["path"]] == "./deploy/grafana/dashboards"

    mounts = {
        v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"] if v.startswith("./")
    }
    config = yaml.safe_load((prom.PROM_DIR / "prometheus.yml").read_text())
    assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
    (rules_path,) = config["rule_files"]
    assert mounts[rules_path] == "./deploy/prometheus/crm-rules.yml"

    # the jobs the rules expect, and the worker's metrics port where the config scrapes it
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert {"crm-ingress", "crm-worker", "crm-dashboard", "crm-kafka-node", "crm-postgres-node"} <= set(jobs)
    worker_port = int(services["worker"]["environment"]["CRM_WORKER_METRICS_PORT"])
    assert jobs["crm-worker"]["dns_sd_configs"][0]["port"] == worker_port

    # promtool accepts the configuration (with the rule file where this checkout has it)
    local = {**config, "rule_files": [str(prom.RULES)]}
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(local))
    res = subprocess.run([prom.promtool(), "check", "config", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
