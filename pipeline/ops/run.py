"""``crm-pipeline run``: the ingress and N workers (and optionally the dashboard) as child processes.

Never more workers than partitions of the ingest topics: the extra ones would sit idle in the group
and every rebalance would move partitions for nothing. A child that dies is restarted (with a
growing pause); SIGINT/SIGTERM stop every child and wait for them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from ..settings import Settings
from ..sources.registry import channel_ids
from ..topics import Topics

log = logging.getLogger("pipeline.run")


class TooManyWorkers(ValueError):
    pass


def ingest_partitions(settings: Settings) -> int:
    """Fewest partitions of any ingest topic (topic settings if they do not exist yet)."""
    from .kafka import partitions_of

    topics = [Topics(settings.topic_namespace).ingest(c) for c in channel_ids()]
    try:
        found = asyncio.run(partitions_of(settings, topics))
    except Exception as exc:
        log.warning("could not ask the broker for partition counts (%s); using CRM_TOPIC_PARTITIONS", exc)
        found = {}
    counts = [len(found[t]) for t in topics if t in found]
    return min(counts) if counts else settings.topic_partitions


def check_workers(settings: Settings, workers: int) -> int:
    partitions = ingest_partitions(settings)
    if workers > partitions:
        raise TooManyWorkers(
            f"{workers} workers but the ingest topics have {partitions} partitions: at most {partitions} "
            "workers can consume (add partitions first: see docs/runbook.md)"
        )
    return partitions


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    history: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", *self.args], env={**os.environ, **self.env}
        )
        log.info("started %s (pid %d)", self.name, self.proc.pid)


def plan_children(
    settings: Settings, workers: int, concurrency: int, dashboard: bool, loglevel: str, media: bool = False
) -> list[Child]:
    children = [Child("ingress", ["ingress"], {})]
    for i in range(workers):
        env = {"CRM_WORKER_CONCURRENCY": str(concurrency)}
        # Each worker needs ports of its own: Faust's web server and the telemetry endpoint.
        env["CRM_WORKER_WEB_PORT"] = str(settings.worker_web_port + i) if settings.worker_web_port else "0"
        if settings.worker_metrics_port:
            env["CRM_WORKER_METRICS_PORT"] = str(settings.worker_metrics_port + i)
        children.append(Child(f"worker-{i}", ["worker", "--loglevel", loglevel], env))
    if settings.surge_enabled:  # issue #17: the surge detector's own worker (its table, its group)
        port = settings.surge_metrics_port or (
            settings.worker_metrics_port + workers if settings.worker_metrics_port else 0
        )
        children.append(
            Child("surge", ["surge", "run", "--loglevel", loglevel], {"CRM_SURGE_METRICS_PORT": str(port)})
        )
    if dashboard:
        children.append(Child("dashboard", ["dashboard"], {}))
    if media:  # the media stage (issue #21), with the telemetry port after the workers'
        port = str(settings.worker_metrics_port + workers) if settings.worker_metrics_port else "0"
        children.append(Child("media", ["media", "run"], {"CRM_MEDIA_METRICS_PORT": port}))
    return children


def supervise(children: list[Child], max_restarts: int = 5) -> int:
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for c in children:
        c.start()
    code = 0
    while not stopping:
        time.sleep(0.5)
        now = time.monotonic()
        for c in children:
            if c.proc is None:
                if now >= c.next_start:
                    c.start()
                continue
            rc = c.proc.poll()
            if rc is None:
                continue
            c.history = [t for t in c.history if now - t < 300] + [now]
            if len(c.history) > max_restarts:
                log.error("%s exited (code %s) %d times in 5 minutes; giving up", c.name, rc, len(c.history))
                stopping, code = True, 1
                break
            delay = min(2 ** len(c.history), 30)
            log.warning("%s exited with code %s; restarting in %ds", c.name, rc, delay)
            c.proc, c.next_start = None, now + delay
    for c in children:
        if c.proc is not None and c.proc.poll() is None:
            c.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for c in children:
        if c.proc is None:
            continue
        try:
            c.proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in 30 s; killing", c.name)
            c.proc.kill()
            c.proc.wait()
    return code
