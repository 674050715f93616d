"""deploy/k8s validates against the Kubernetes OpenAPI schemas (bundled in kubernetes-validate, offline)
and keeps the pipeline's own rules: a Deployment for every long-running process of ``crm-pipeline``
(tests/deploy_processes.py derives them from the CLI), workers bounded by partitions, probes on what each
process really serves, ports and settings that agree with the code, every production secret named."""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests import deploy_processes as dp

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
VERSION = "1.30.0"


@cache
def _documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def documents() -> list[tuple[str, dict]]:
    return copy.deepcopy(_documents())


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


NO_PROBES = "crm-pipeline/no-probes"


def container(deployment: dict) -> dict:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def deployed(docs: list[tuple[str, dict]]) -> dict[dp.Cmd, list[str]]:
    """Each ``crm-pipeline`` command the Deployments run → their names."""
    out: dict[dp.Cmd, list[str]] = {}
    for _, d in docs:
        if d["kind"] == "Deployment":
            cmd, _ = dp.parse(container(d)["args"])
            out.setdefault(cmd, []).append(d["metadata"]["name"])
    return out


def missing_processes(docs: list[tuple[str, dict]]) -> list[dp.Cmd]:
    return [c for c in dp.long_running() if c not in deployed(docs)]


def pod_settings(deployment: dict):
    """Settings as the pod sees them: the ConfigMap, the Secret (its example) and the container's env."""
    env = dict(by_kind("ConfigMap")["crm-pipeline-config"]["data"])
    env.update(next(d for n, d in documents() if n == "secret.example.yaml")["stringData"])
    env.update({e["name"]: e["value"] for e in container(deployment).get("env", []) if "value" in e})
    return dp.settings_from(env)


def test_every_long_running_process_has_a_deployment() -> None:
    assert missing_processes(documents()) == []
    for cmd, names in deployed(documents()).items():
        assert not dp.one_shot(cmd), f"{names} run crm-pipeline {' '.join(cmd)}, which exits when done"


def test_the_check_catches_a_process_without_a_deployment() -> None:
    docs = [(n, d) for n, d in documents() if n != "api.yaml"]
    assert missing_processes(docs) == [("api",)]


def test_long_running_pods_read_settings_from_config_and_secret() -> None:
    for name, deployment in by_kind("Deployment").items():
        refs = {next(iter(e.values()))["name"] for e in container(deployment)["envFrom"]}
        assert refs == {"crm-pipeline-config", "crm-pipeline-secrets"}, name
        pod_settings(deployment)  # the ConfigMap's values are ones Settings accepts


@pytest.mark.parametrize("name", sorted(by_kind("Deployment")))
def test_probes_ask_what_the_process_serves_on_the_port_it_listens_on(name: str) -> None:
    deployment = by_kind("Deployment")[name]
    c = container(deployment)
    cmd, ns = dp.parse(c["args"])
    probes = {k: c[k] for k in ("startupProbe", "livenessProbe", "readinessProbe") if k in c}
    if cmd not in dp.LISTENERS:  # nothing to probe: the manifest says so, and why
        assert not probes and not c.get("ports"), name
        assert len(deployment["metadata"].get("annotations", {}).get(NO_PROBES, "")) > 20, name
        return
    assert {"livenessProbe", "readinessProbe"} <= set(probes), name
    settings = pod_settings(deployment)
    host, port = dp.listens(cmd, ns, settings)
    assert port, f"{name}: its port is off (0), nothing to probe"
    assert host in ("0.0.0.0", "::"), f"{name} listens on {host}: kubelet and Services cannot reach it"  # noqa: S104
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for kind, probe in probes.items():
        (how,) = {"httpGet", "tcpSocket", "exec", "grpc"} & set(probe)
        assert how in ("httpGet", "tcpSocket"), (name, kind)
        target = probe[how]["port"]
        assert ports.get(target, target) == port, f"{name} {kind} probes port {target}, it listens on {port}"
        if how == "httpGet":
            assert dp.serves(cmd, probe[how]["path"], settings), (
                f"{name} {kind}: {probe[how]['path']} not served"
            )
    ready = probes["readinessProbe"]
    if "httpGet" in ready and dp.serves(cmd, "/readyz", settings):
        assert ready["httpGet"]["path"] == "/readyz", f"{name}: readiness should ask /readyz, which it serves"
    scrape = deployment["spec"]["template"]["metadata"].get("annotations", {})
    if scrape.get("prometheus.io/scrape") == "true":
        assert int(scrape["prometheus.io/port"]) == port and dp.serves(cmd, "/metrics", settings), name


@pytest.mark.parametrize("cmd", sorted(dp.FAUST), ids=" ".join)
def test_faust_processes_run_in_a_writable_directory(cmd: dp.Cmd) -> None:
    for name in deployed(documents())[cmd]:
        spec = by_kind("Deployment")[name]["spec"]["template"]["spec"]
        c = container(by_kind("Deployment")[name])
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        volume = mounts.get(c.get("workingDir", ""))
        assert volume, f"{name} runs in {c.get('workingDir', 'the image’s /app')}, which it cannot write"
        assert any(v["name"] == volume and "emptyDir" in v for v in spec["volumes"]), name


def test_services_reach_their_pods() -> None:
    deployments = by_kind("Deployment")
    for name, service in by_kind("Service").items():
        selector = service["spec"]["selector"].items()
        (target,) = [
            d for d in deployments.values() if selector <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        ports = {p["name"] for p in container(target).get("ports", [])}
        for p in service["spec"]["ports"]:
            assert p["targetPort"] in ports, (
                f"Service {name} targets {p['targetPort']}, not a port of its pods"
            )


def test_dashboard_reaches_the_officer_api() -> None:
    url = by_kind("ConfigMap")["crm-pipeline-config"]["data"]["CRM_DASHBOARD_OFFICER_API"]
    m = re.fullmatch(r"http://([\w-]+)(?::(\d+))?/?", url)
    assert m, url
    assert m.group(1) in by_kind("Service"), f"CRM_DASHBOARD_OFFICER_API names no Service: {url}"
    service = by_kind("Service")[m.group(1)]
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == int(m.group(2) or 80)]
    pods = service["spec"]["selector"].items()
    (api,) = [d for d in by_kind("Deployment").values() if dp.parse(container(d)["args"])[0] == ("api",)]
    assert pods <= api["spec"]["template"]["metadata"]["labels"].items()
    assert port["targetPort"] in {p["name"] for p in container(api)["ports"]}


def test_prepare_job_runs_every_prepare_step() -> None:
    spec = by_kind("Job")["crm-pipeline-prepare"]["spec"]["template"]["spec"]
    steps = [dp.parse(c["args"])[0] for c in spec.get("initContainers", []) + spec["containers"]]
    assert steps == dp.PREPARE


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


def test_secret_example_names_every_secret_the_built_in_channels_declare() -> None:
    """Channels declare settings of their own (adapters and reply senders, pipeline/sources/config.py);
    production refuses a development value of any secret among them that is not optional."""
    from pipeline.crm.notify.replies import discover_replies
    from pipeline.sources.registry import discover

    (secret,) = [d for n, d in documents() if n == "secret.example.yaml"]
    models = [getattr(c, "settings_model", None) for c in discover().values()]
    models += [r.settings_model for r in discover_replies().values()]
    needed = {
        m.env_name(f)
        for m in models
        if m is not None and m.__module__.startswith("pipeline.")  # plug-in packages bring their own
        for f in m.model_fields
        if m.is_secret(f) and f not in m.optional_secrets
    }
    assert "CRM_JAKI_REPLY_SECRET" in needed
    assert needed <= set(secret["stringData"]), needed - set(secret["stringData"])


def test_runbook_names_every_process_with_its_service_and_deployment() -> None:
    """docs/runbook.md, "Processes and where they run": one row per process, naming the compose service
    and the Deployment that run it."""
    text = (K8S.parents[1] / "docs" / "runbook.md").read_text()
    section = text.split("## Processes and where they run", 1)[1].split("\n## ", 1)[0]
    services = yaml.safe_load((K8S.parents[1] / "docker-compose.yml").read_text())["services"]
    in_compose: dict[dp.Cmd, list[str]] = {}
    for name, service in services.items():
        if service.get("build"):
            in_compose.setdefault(dp.parse(service["command"])[0], []).append(name)
    for cmd in dp.long_running():
        (row,) = [r for r in section.splitlines() if r.startswith(f"| `crm-pipeline {' '.join(cmd)}` |")]
        for name in in_compose[cmd] + deployed(documents())[cmd]:
            assert f"`{name}`" in row, (cmd, name)


def test_listener_table_agrees_with_the_cli_and_settings() -> None:
    """tests/deploy_processes.py's LISTENERS names the settings the code reads: the CLI's --host/--port
    say which variable they default to; a telemetry port is a Settings field about /healthz /readyz."""
    from pipeline.settings import Settings

    commands = dp._subparsers(dp._parser()).choices
    for cmd, spec in dp.LISTENERS.items():
        if spec.kind == "telemetry":
            assert "/healthz /readyz" in Settings.model_fields[spec.port].description, cmd
            continue
        options = {a.dest: a.help or "" for a in commands[cmd[0]]._actions}
        for flag, field in (("port", spec.port), ("host", spec.host)):
            assert field in Settings.model_fields, (cmd, field)
            assert f"CRM_{field.upper()}" in options[flag], (cmd, options[flag])
