"""Prints deploy/k8s/prometheus-rule.yaml: the groups of crm-rules.yml as a Prometheus Operator
PrometheusRule (`make k8s-rules`; tests/test_alerting.py checks the two never drift apart)."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def manifest() -> str:
    groups = yaml.safe_load((HERE / "crm-rules.yml").read_text())["groups"]
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "crm-pipeline",
            "labels": {"app.kubernetes.io/part-of": "crm-pipeline", "prometheus": "k8s", "role": "alert-rules"},
        },
        "spec": {"groups": groups},
    }
    head = (
        "# Generated from deploy/prometheus/crm-rules.yml by `make k8s-rules`: edit that file, not this one.\n"
        "# Needs the Prometheus Operator's CRDs; without the operator, load crm-rules.yml into Prometheus.\n"
    )
    return head + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=110, allow_unicode=True)


if __name__ == "__main__":
    sys.stdout.write(manifest())
