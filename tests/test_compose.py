"""docker-compose.yml describes the stack the code runs (no Docker engine here: the file is parsed with
PyYAML, anchors and merges resolved, and checked against the CLI and the settings): a service for every
long-running process of ``crm-pipeline``, references that resolve, and ports, probes and settings that
agree with what each process really listens on."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests import deploy_processes as dp

COMPOSE = dp.ROOT / "docker-compose.yml"
_VAR = re.compile(r"\$\$|\$\{(?P<name>\w+)(?P<op>:?[-?+])?(?P<default>[^}]*)\}|\$(?P<bare>\w+)")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value: Any, env: dict[str, str] | None = None) -> str:
    """Compose's variable substitution, with the operator's environment ``env`` (default: nothing set)."""
    env = env or {}

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        if m.group("op") in (":-", "-"):
            return env.get(name) or m.group("default")
        return env.get(name, "")

    return _VAR.sub(sub, str(value))


def pipeline_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services built from ./Dockerfile (entrypoint crm-pipeline)."""
    return {n: s for n, s in doc["services"].items() if s.get("build") in (".", "./")}


def processes(doc: dict[str, Any]) -> dict[dp.Cmd, list[str]]:
    """Each long-running process → the services running it."""
    out: dict[dp.Cmd, list[str]] = {}
    for name, service in pipeline_services(doc).items():
        cmd, _ = dp.parse(service["command"])
        out.setdefault(cmd, []).append(name)
    return out


def missing_processes(doc: dict[str, Any]) -> list[dp.Cmd]:
    return [c for c in dp.long_running() if c not in processes(doc)]


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``depends_on`` in either form (a list of names, or names with conditions)."""
    deps = service.get("depends_on") or {}
    return {d: {} for d in deps} if isinstance(deps, list) else deps


def service_settings(service: dict[str, Any]) -> Any:
    return dp.settings_from({k: interpolate(v) for k, v in service["environment"].items()})


def test_every_long_running_process_has_a_service() -> None:
    assert missing_processes(compose()) == []
    for cmd, names in processes(compose()).items():
        if not dp.one_shot(cmd):
            continue
        for name in names:  # a one-shot command as a service must not be restarted once it is done
            assert compose()["services"][name]["restart"] in ("no", "on-failure"), name


def test_the_check_catches_a_process_without_a_service() -> None:
    doc = compose()
    del doc["services"]["notify"]
    assert missing_processes(doc) == [("notify", "run")]


def test_prepare_steps_run_before_the_services_that_need_them() -> None:
    doc = compose()
    services = pipeline_services(doc)
    step = {dp.parse(s["command"])[0]: n for n, s in services.items()}
    for cmd in dp.PREPARE:
        assert cmd in step, f"no one-shot service runs crm-pipeline {' '.join(cmd)}"
    topics, migrate = step[("topics", "create")], step[("store", "migrate")]
    for name, service in services.items():
        cmd, _ = dp.parse(service["command"])
        if dp.one_shot(cmd):
            continue
        needs = depends_on(service)
        assert topics in needs or migrate in needs, f"{name} starts before the topics or the schema exist"


def test_references_resolve() -> None:
    doc = compose()
    services = doc["services"]
    volumes = set(doc.get("volumes") or {})
    for name, service in services.items():
        for target, cond in depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = cond.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health: it has none"
            elif condition == "service_completed_successfully":
                assert services[target].get("restart") in ("no", "on-failure"), f"{target} never completes"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in volumes, f"{name} mounts undeclared volume {source}"
            else:
                assert (dp.ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
        for key in ("environment", "command", "healthcheck"):
            for var in re.findall(r"\$\{(\w+)([^}]*)\}", yaml.safe_dump(service.get(key))):
                assert var[1].startswith((":-", "-")), f"{name}: ${{{var[0]}}} has no default"


def test_pipeline_services_share_the_settings() -> None:
    doc = compose()
    common = doc["x-pipeline-env"]
    for name, service in pipeline_services(doc).items():
        env = service["environment"]
        assert {k: env.get(k) for k in common} == common, f"{name} does not get x-pipeline-env"
        assert {"path": "crm.env", "required": False} in service["env_file"], name
        service_settings(service)  # every value is one Settings accepts


@pytest.mark.parametrize("cmd", list(dp.LISTENERS), ids=" ".join)
def test_ports_and_health_checks_match_what_the_process_listens_on(cmd: dp.Cmd) -> None:
    for name in processes(compose())[cmd]:
        service = compose()["services"][name]
        settings = service_settings(service)
        host, port = dp.listens(cmd, dp.parse(service["command"])[1], settings)
        published = [str(p).split(":")[-1] for p in service.get("ports", [])]
        assert all(int(p) == port for p in published), (name, published, port)
        if published or dp.LISTENERS[cmd].host is not None:
            assert host in ("0.0.0.0", "::"), f"{name} listens on {host}: unreachable from outside"  # noqa: S104
        assert port, f"{name}: its port is off (0), nothing to check its health on"
        test = " ".join(service["healthcheck"]["test"])
        targets = re.findall(r"127\.0\.0\.1(?::|',\s*)(\d+)(/[\w/]*)?", test)
        assert targets, f"{name}: its health check reaches no port of its own"
        for got_port, path in targets:
            assert int(got_port) == port, (name, test)
            if path:
                assert dp.serves(cmd, path, settings), f"{name}'s health check asks {path}: not served"


@pytest.mark.parametrize("cmd", sorted(dp.FAUST), ids=" ".join)
def test_faust_processes_run_in_a_writable_directory(cmd: dp.Cmd) -> None:
    for name in processes(compose())[cmd]:
        assert compose()["services"][name].get("working_dir") == "/tmp", name


def test_dashboard_reaches_the_officer_api() -> None:
    doc = compose()
    (dashboard,) = processes(doc)[("dashboard",)]
    url = service_settings(doc["services"][dashboard]).dashboard_officer_api
    m = re.fullmatch(r"http://([\w-]+):(\d+)/?", url or "")
    assert m, f"CRM_DASHBOARD_OFFICER_API is {url!r}"
    assert m.group(1) in processes(doc)[("api",)]
    api = doc["services"][m.group(1)]
    assert dp.listens(("api",), dp.parse(api["command"])[1], service_settings(api))[1] == int(m.group(2))
