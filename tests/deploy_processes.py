"""The long-running processes of ``crm-pipeline``, what each listens on, and how a deployment's settings
resolve: what docker-compose.yml and deploy/k8s/ are checked against (tests/test_compose.py,
tests/test_k8s_manifests.py).

The commands come from the CLI's own parser: every command and sub-action is a long-running process
unless ``ONE_SHOT`` says why it needs no service. A new command therefore fails those tests until it has
a compose service and a Deployment, or a line here."""

from __future__ import annotations

import argparse
import os
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import cache
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest import mock

from pipeline.cli import build_parser
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
Cmd = tuple[str, ...]

#: Commands that run once and exit (a prefix covers its sub-actions), with where they run instead.
ONE_SHOT: dict[Cmd, str] = {
    ("topics",): "prepare step: the prepare Job (deploy/k8s/prepare-job.yaml), compose service `topics`",
    ("store",): "`store migrate` is a prepare step (the prepare Job, compose service `migrate`)",
    ("channels",): "lists the installed channels and checks their settings",
    ("notify", "undelivered"): "lists what `notify run` gave up on",
    ("status", "escalate"): "one escalation pass; `status run` makes one every CRM_ESCALATION_INTERVAL_S",
    ("desk-import",): "imports one CSV exported by an offline desk",
    ("triage",): "offline, over a CSV",
    ("train",): "offline training",
    ("model",): "the triage model registry (issue #16): one change or listing per call",
    ("run",): "one host's supervisor of ingress, workers, surge, dashboard, media: here each is a service",
    ("lag",): "a look at the worker group's lag",
    ("deadletters",): "list, inspect, replay",
    ("backfill",): "feeds one historical export",
    ("health",): "one check of the broker, Redis and the store",
    ("media", "failed"): "a listing",
    ("media", "gc"): "retention clean-up, run after reports are deleted (docs/runbook.md)",
    ("bench",): "benchmarks",
    ("cases",): "grouping quality report",
    ("surge", "fit"): "fits a baseline file",
    ("surge", "replay"): "offline, over a CSV",
    ("surge", "list"): "a listing",
    ("surge", "show"): "a listing",
}


@dataclass(frozen=True)
class Listener:
    """What a process listens on: ``http`` (an aiohttp app), ``telemetry`` (the /metrics /healthz /readyz
    server of pipeline/ops/telemetry.py) or ``tcp``. ``port``/``host`` name the Settings fields (the
    CLI's ``--port``/``--host`` win); ``host`` None: the telemetry server binds every interface."""

    kind: str
    port: str
    host: str | None


LISTENERS: dict[Cmd, Listener] = {
    ("ingress",): Listener("http", "ingress_port", "ingress_host"),
    ("api",): Listener("http", "api_port", "api_host"),
    ("dashboard",): Listener("http", "dashboard_port", "dashboard_host"),
    ("smtp",): Listener("tcp", "email_smtp_port", "email_smtp_host"),
    ("worker",): Listener("telemetry", "worker_metrics_port", None),
    ("surge", "run"): Listener("telemetry", "surge_metrics_port", None),
    ("media", "run"): Listener("telemetry", "media_metrics_port", None),
}

#: Faust apps create their data directory in the working directory when they start: it must be writable
#: (the image's /app is not, for its user).
FAUST: set[Cmd] = {("worker",), ("surge", "run")}

#: The one-shot steps every deployment runs before the services.
PREPARE: list[Cmd] = [("topics", "create"), ("store", "migrate")]


@cache
def _parser() -> argparse.ArgumentParser:
    return build_parser()


def _subparsers(p: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in p._actions if isinstance(a, argparse._SubParsersAction)), None)


def _choice_positional(p: argparse.ArgumentParser) -> argparse.Action | None:
    return next((a for a in p._actions if not a.option_strings and a.choices and a.dest != "help"), None)


@cache
def command_paths() -> list[Cmd]:
    """Every command and sub-action of ``crm-pipeline``, from its parser."""

    def walk(p: argparse.ArgumentParser, prefix: Cmd) -> list[Cmd]:
        sub = _subparsers(p)
        if sub is not None:
            return [c for name, sp in sub.choices.items() for c in walk(sp, (*prefix, name))]
        pos = _choice_positional(p)
        return [(*prefix, str(c)) for c in pos.choices] if pos is not None else [prefix]

    return walk(_parser(), ())


def one_shot(cmd: Cmd) -> bool:
    return any(cmd[: len(k)] == k for k in ONE_SHOT)


def long_running() -> list[Cmd]:
    return [c for c in command_paths() if not one_shot(c)]


def parse(argv: list[str]) -> tuple[Cmd, argparse.Namespace]:
    """The command a container's arguments run (``notify`` is ``notify run``), and its parsed options."""
    parser = _parser()
    try:
        ns = parser.parse_args([str(a) for a in argv])
    except SystemExit:
        raise AssertionError(f"crm-pipeline does not take the arguments {argv!r}") from None
    cmd: Cmd = (ns.command,)
    p = _subparsers(parser).choices[ns.command]
    while True:
        sub = _subparsers(p)
        if sub is not None:
            value = getattr(ns, sub.dest)
            cmd, p = (*cmd, value), sub.choices[value]
            continue
        pos = _choice_positional(p)
        if pos is not None:
            cmd = (*cmd, getattr(ns, pos.dest))
        return cmd, ns


def settings_from(env: dict[str, Any]) -> Settings:
    """Settings as a process with exactly these variables sees them (this shell's CRM_* left out)."""
    fields = {k[4:].lower(): str(v) for k, v in env.items() if k.startswith("CRM_")}
    with mock.patch.dict(os.environ):
        for key in [k for k in os.environ if k.startswith("CRM_")]:
            del os.environ[key]
        return Settings(**fields)


def listens(cmd: Cmd, ns: argparse.Namespace, settings: Settings) -> tuple[str, int]:
    """(bind address, port) of the process, as the command line and settings give them."""
    spec = LISTENERS[cmd]
    port = getattr(ns, "port", None) or getattr(settings, spec.port)
    host = "0.0.0.0" if spec.host is None else (getattr(ns, "host", None) or getattr(settings, spec.host))  # noqa: S104
    return host, int(port)


def serves(cmd: Cmd, path: str, settings: Settings) -> bool:
    """Whether the process answers HTTP GET ``path``, from its own code (nothing is started)."""
    spec = LISTENERS[cmd]
    if spec.kind == "http":
        return path in _routes(cmd, settings)
    if spec.kind == "telemetry":
        return _telemetry_serves(path)
    return False


_ROUTES: dict[Cmd, set[str]] = {}


def _routes(cmd: Cmd, settings: Settings) -> set[str]:
    """The aiohttp app's paths (the same for any settings: which routes exist does not depend on them)."""
    if cmd not in _ROUTES:
        if cmd == ("ingress",):
            from pipeline.ingress import build_app
        elif cmd == ("api",):
            from pipeline.crm.api import create_app as build_app
        else:
            from pipeline.dashboard.app import build_app
        _ROUTES[cmd] = {r.canonical for r in build_app(settings).router.resources()}
    return _ROUTES[cmd]


@cache
def _telemetry_serves(path: str) -> bool:
    """Asked of the real handler of pipeline/ops/telemetry.py on a free port (404 = not served)."""
    from pipeline.ops.telemetry import _handler, _State

    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(_State()))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}{path}", timeout=5)
        return True
    except urllib.error.HTTPError as exc:
        return exc.code != 404
    finally:
        server.shutdown()
        server.server_close()
