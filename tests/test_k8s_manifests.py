"""deploy/k8s validates against the Kubernetes OpenAPI schemas (bundled in kubernetes-validate, offline)
and keeps the pipeline's own rules: workers bounded by partitions, probes on every long-running pod."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
VERSION = "1.30.0"


def documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for _, d in documents() if d["kind"] == kind}


def core_documents() -> list[tuple[str, dict]]:
    """Kinds the Kubernetes schemas know (the PrometheusRule is checked in tests/test_alerting.py)."""
    return [(n, d) for n, d in documents() if not d["apiVersion"].startswith("monitoring.coreos.com/")]


@pytest.mark.parametrize(
    ("name", "doc"), core_documents(), ids=lambda v: v if isinstance(v, str) else v["kind"]
)
def test_manifest_is_valid_kubernetes(name: str, doc: dict) -> None:
    kubernetes_validate.validate(doc, VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(kust["resources"]) == files


def test_workers_are_bounded_by_partitions() -> None:
    config = by_kind("ConfigMap")["crm-pipeline-config"]["data"]
    partitions = int(config["CRM_TOPIC_PARTITIONS"])
    worker = by_kind("Deployment")["crm-worker"]
    hpa = by_kind("HorizontalPodAutoscaler")["crm-worker"]
    assert worker["spec"]["replicas"] <= partitions
    assert hpa["spec"]["scaleTargetRef"]["name"] == "crm-worker"
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] <= partitions


def test_long_running_pods_have_probes_and_read_settings_from_config_and_secret() -> None:
    config = by_kind("ConfigMap")["crm-pipeline-config"]["data"]
    for name, deployment in by_kind("Deployment").items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert {"livenessProbe", "readinessProbe"} <= set(container), name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        refs = {next(iter(e.values()))["name"] for e in container["envFrom"]}
        assert refs == {"crm-pipeline-config", "crm-pipeline-secrets"}, name
    assert config["CRM_WORKER_METRICS_PORT"] != "0"  # the worker's probes need its telemetry port


def test_ingress_is_behind_a_service() -> None:
    service = by_kind("Service")["crm-ingress"]
    pods = by_kind("Deployment")["crm-ingress"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pods.items()


def test_secret_example_names_every_production_secret() -> None:
    from pipeline.settings import Settings

    (secret,) = [d for n, d in documents() if n == "secret.example.yaml"]
    kubernetes_validate.validate(secret, VERSION, strict=True)
    secret_fields = {
        f"CRM_{name.upper()}"
        for name, field in Settings.model_fields.items()
        if "SecretStr" in str(field.annotation)
        and field.default is not None
        and name != "email_relay_password"
        and name != "twitter_bearer_token"
    }
    assert secret_fields <= set(secret["stringData"]), secret_fields - set(secret["stringData"])
