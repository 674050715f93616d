"""The alert rules as code (issue #22): promtool checks and unit-tests them, every alert has a runbook
section and a firing unit test, every metric they read is one the code exports, and the k8s
PrometheusRule carries exactly the same groups."""

from __future__ import annotations

import re
import subprocess
import sys

import jsonschema
import pytest
import yaml

from tests import prom

K8S_RULE = prom.ROOT / "deploy" / "k8s" / "prometheus-rule.yaml"
UNIT_TESTS = sorted((prom.PROM_DIR / "tests").glob("*.test.yml"))


@pytest.fixture(scope="module")
def exported() -> dict[str, str]:
    # In a fresh interpreter: importing every module must not depend on what this test session loaded.
    code = (
        "import orjson; from pipeline.ops.slo import exported_metrics as m; print(orjson.dumps(m()).decode())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=prom.ROOT
    )
    return yaml.safe_load(out.stdout)


def test_promtool_check_rules() -> None:
    res = subprocess.run([prom.promtool(), "check", "rules", str(prom.RULES)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(prom.rules())} rules found" in res.stdout


def test_promtool_unit_tests() -> None:
    assert UNIT_TESTS
    res = subprocess.run(
        [prom.promtool(), "test", "rules", *map(str, UNIT_TESTS)],
        capture_output=True,
        text=True,
        cwd=prom.PROM_DIR / "tests",
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_alert_has_a_runbook_section_of_its_own() -> None:
    headings = {
        re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in prom.RUNBOOK.read_text().splitlines()
        if line.startswith("#")
    }
    alerts = [r for r in prom.rules() if "alert" in r]
    anchors = [r["annotations"]["runbook_url"] for r in alerts]
    assert len(set(anchors)) == len(alerts), "two alerts share a runbook section"
    for rule, url in zip(alerts, anchors, strict=True):
        page, anchor = url.split("#")
        assert page == "docs/runbook.md", url
        assert anchor == f"alert-{rule['alert'].lower()}", url
        assert anchor in headings, f"docs/runbook.md has no section '### Alert: {rule['alert']}'"
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_every_alert_fires_in_a_unit_test() -> None:
    fired = set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    fired.add(check["alertname"])
    alerts = {r["alert"] for r in prom.rules() if "alert" in r}
    assert alerts - fired == set(), "alerts no promtool test sees firing"


def test_metric_names_of_an_expression() -> None:
    expr = (
        "max(crm_consumer_lag_total) > max_over_time(crm:consumer_lag:max[10m] offset 10m) and on (job) "
        'sum by (le) (rate(crm_report_latency_seconds_bucket{le="60.0", channel=~"a|b"}[5m])) > 14.4 * 0.01'
    )
    assert prom.metric_names(expr) == {
        "crm_consumer_lag_total",
        "crm:consumer_lag:max",
        "crm_report_latency_seconds_bucket",
    }


def test_rules_read_only_metrics_the_code_exports(exported: dict[str, str]) -> None:
    recorded = {r["record"] for r in prom.rules() if "record" in r}
    for rule in prom.rules():
        unknown = prom.metric_names(rule["expr"]) - set(exported) - recorded - prom.EXTERNAL_METRICS
        assert not unknown, (
            f"{rule.get('alert') or rule.get('record')} reads {unknown}, which no code exports"
        )


def test_the_latency_slo_bucket_is_a_bucket_of_the_histogram() -> None:
    from pipeline.ops.slo import REPORT_LATENCY, SLO_LATENCY_S

    assert SLO_LATENCY_S in REPORT_LATENCY._upper_bounds
    text = prom.RULES.read_text()
    assert f'le="{SLO_LATENCY_S}"' in text


def test_compressed_rules_keep_the_expressions_on_a_faster_clock() -> None:
    fast = yaml.safe_load(prom.compress_durations(prom.RULES.read_text(), 60))
    rules = {r.get("alert") or r.get("record"): r for g in fast["groups"] for r in g["rules"]}
    lag = rules["CrmConsumerLagGrowing"]
    assert lag["for"] == "5000ms"
    assert "[10000ms] offset 10000ms" in lag["expr"]
    assert "[30000ms:1000ms]" in rules["CrmOutboxBacklogGrowing"]["expr"]
    assert 'le="60.0"' in rules["crm:report_latency:error_ratio_rate5m"]["expr"]
    assert fast["groups"][0]["interval"] == "500ms"


# The PrometheusRule's spec, as the Prometheus Operator's CRD (monitoring.coreos.com/v1) defines it.
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
PROMETHEUS_RULE_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "groups": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "interval": _DURATION,
                    "query_offset": _DURATION,
                    "limit": {"type": "integer"},
                    "partial_response_strategy": {"type": "string"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "rules": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["expr"],
                            "properties": {
                                "record": {"type": "string"},
                                "alert": {"type": "string"},
                                "expr": {"type": ["string", "integer"]},
                                "for": _DURATION,
                                "keep_firing_for": _DURATION,
                                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                            },
                            "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
                        },
                    },
                },
            },
        }
    },
}


def test_k8s_prometheus_rule_is_valid_and_the_same_as_the_rule_file(tmp_path) -> None:
    doc = yaml.safe_load(K8S_RULE.read_text())
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert doc["kind"] == "PrometheusRule"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    jsonschema.validate(doc["spec"], PROMETHEUS_RULE_SPEC)
    assert doc["spec"] == yaml.safe_load(prom.RULES.read_text()), "run `make k8s-rules`"
    spec = tmp_path / "spec.yml"
    spec.write_text(yaml.safe_dump(doc["spec"]))
    res = subprocess.run([prom.promtool(), "check", "rules", str(spec)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    sys.path.insert(0, str(prom.PROM_DIR))
    try:
        import k8s_rule
    finally:
        sys.path.pop(0)
    assert K8S_RULE.read_text() == k8s_rule.manifest(), "run `make k8s-rules`"
