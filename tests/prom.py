"""Helpers for the alerting tests: the rule files, the metric names a PromQL expression reads, durations
scaled down for a test that must see a 10-minute alert in seconds, and a real Prometheus process."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROM_DIR = ROOT / "deploy" / "prometheus"
RULES = PROM_DIR / "crm-rules.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"

#: metrics that come from Prometheus itself or from node_exporter, not from the pipeline's code
EXTERNAL_METRICS = {"up", "ALERTS", "node_filesystem_avail_bytes", "node_filesystem_size_bytes"}
BOARD = ROOT / "deploy" / "grafana" / "dashboards" / "crm-pipeline.json"

_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset",
    "bool", "inf", "nan", "atan2",
}  # fmt: skip


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (functions, keywords, labels and durations left out)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", "", s)  # label matchers
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", s)
    s = re.sub(r"\[[^\]]*\]", "", s)  # ranges and subqueries
    s = re.sub(r"\boffset\s+\S+", "", s)
    names = set()
    for m in re.finditer(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)(?![a-zA-Z])")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def _scaled(token: str, factor: float) -> str:
    total = sum(int(n) * _UNIT_S[u] for n, u in _DURATION.findall(token))
    ms = max(round(total * 1000 / factor), 1)
    return f"{ms}ms"


def compress_durations(rule_text: str, factor: float) -> str:
    """The rule file with every duration (ranges, subquery steps, offsets, ``for``, group intervals)
    divided by ``factor``: the same expressions, on a clock running ``factor`` times faster."""
    doc = yaml.safe_load(rule_text)

    def in_expr(expr: str) -> str:
        expr = re.sub(
            r"\[([^\]]+)\]",
            lambda m: "[" + ":".join(_scaled(p, factor) if p else p for p in m.group(1).split(":")) + "]",
            expr,
        )
        return re.sub(
            r"\boffset\s+((?:\d+(?:ms|s|m|h|d|w|y))+)",
            lambda m: "offset " + _scaled(m.group(1), factor),
            expr,
        )

    for group in doc["groups"]:
        if "interval" in group:
            group["interval"] = _scaled(group["interval"], factor)
        for rule in group["rules"]:
            rule["expr"] = in_expr(rule["expr"])
            if "for" in rule:
                rule["for"] = _scaled(rule["for"], factor)
    return yaml.safe_dump(doc, sort_keys=False)


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: `make install` installs Debian's prometheus package"
    return path


class Prometheus:
    """A real Prometheus (Debian's package) on 127.0.0.1:``port`` with its own data dir."""

    def __init__(self, workdir: Path, port: int, config: dict[str, Any], rules_text: str) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus not found: `make install` installs Debian's prometheus package"
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "rules.yml").write_text(rules_text)
        config = {**config, "rule_files": [str(workdir / "rules.yml")]}
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"prometheus not ready:\n{self.log_path.read_text()[-3000:]}")

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = orjson.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def alerts(self, state: str | None = None) -> list[dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"] if state is None or a["state"] == state]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def targets(self) -> list[dict[str, Any]]:
        return self.api("targets")["activeTargets"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def board_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every query of a Grafana board: panel targets (rows' nested panels too),
    template variables (``label_values(metric, label)`` gives its metric) and annotations."""
    out: list[tuple[str, str]] = []

    def panels(items: list[dict[str, Any]]) -> None:
        for p in items:
            for t in p.get("targets", []):
                out.append((f"panel '{p.get('title')}' {t.get('refId')}", t["expr"]))
            panels(p.get("panels", []))

    panels(board.get("panels", []))
    for var in board.get("templating", {}).get("list", []):
        q = var.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if var.get("type") == "query" and q:
            m = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*\w+\s*\)\s*", q)
            out.append((f"variable {var['name']}", m.group(1) if m else q))
    for ann in board.get("annotations", {}).get("list", []):
        if ann.get("expr"):
            out.append((f"annotation {ann['name']}", ann["expr"]))
    return out


def as_promql(expr: str) -> str:
    """A board query with Grafana's variables filled in, as Prometheus itself takes it."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h")
        .replace('"$channel"', '".*"')
    )
