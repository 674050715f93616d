"""Test harness: the real local stack, isolated per test session, and the pipeline as real processes.

Each session gets its own topic namespace, consumer group and database on the shared local stack, so
test runs (and a demo) can share one broker without seeing each other's data.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import psycopg
from aiokafka import AIOKafkaConsumer

from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
STACK = ROOT / "deploy" / "stack.sh"
ARTIFACTS = ROOT / "test-artifacts"


def stack_env() -> dict[str, str]:
    out = subprocess.run([str(STACK), "env"], check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def stack_up() -> bool:
    return subprocess.run([str(STACK), "status"], capture_output=True).returncode == 0


def start_stack() -> None:
    subprocess.run([str(STACK), "start"], check=True)


def stop_stack() -> None:
    subprocess.run([str(STACK), "stop"], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Isolated:
    """A namespace on the shared stack: topics, consumer group, Redis keys and database of its own."""

    def __init__(self) -> None:
        self.tag = "t" + uuid.uuid4().hex[:10]
        base = stack_env()
        self.admin_dsn = base["CRM_DATABASE_URL"]
        self.dbname = f"crm_{self.tag}"
        self.env = {
            **base,
            "CRM_ENV": "test",
            "CRM_TOPIC_NAMESPACE": self.tag,
            "CRM_TOPIC_PARTITIONS": "3",
            "CRM_WORKER_APP_ID": f"crm-{self.tag}",
            "CRM_WORKER_WEB_PORT": "0",
            "CRM_WORKER_BATCH_WITHIN_S": "0.1",
            "CRM_DATABASE_URL": self.admin_dsn.rsplit("/", 1)[0] + "/" + self.dbname,
        }

    def settings(self, **overrides: Any) -> Settings:
        values = {k.removeprefix("CRM_").lower(): v for k, v in self.env.items() if k.startswith("CRM_")}
        return Settings(**{**values, **overrides})

    def create_database(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')

    def drop_database(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.env["CRM_DATABASE_URL"]) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


class Process:
    """A pipeline process (``crm-pipeline …``) with its output kept for the test report."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.name = name
        self.log_path = ARTIFACTS / f"{name}-{env.get('CRM_TOPIC_NAMESPACE', 'x')}-{int(time.time())}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", *args],
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def stop(self, sig: int = 15, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_pipeline(iso: Isolated, workers: int = 1, env: dict[str, str] | None = None) -> Iterator[str]:
    """Ingress and worker(s) as real processes; yields the ingress base URL. ``env``: more variables
    (``PYTHONPATH`` with a channel package, say)."""
    port = free_port()
    env = {**iso.env, **(env or {}), "CRM_INGRESS_PORT": str(port)}
    for step in (["topics", "create"], ["store", "migrate"]):
        subprocess.run(
            [sys.executable, "-m", "pipeline", *step],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
    procs = [Process("ingress", ["ingress"], env)]
    procs += [Process(f"worker{i}", ["worker", "--loglevel", "warning"], env) for i in range(workers)]
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/readyz", procs[0])
        yield url
    finally:
        for p in procs:
            p.stop()


def wait_http(url: str, proc: Process, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited early:\n{proc.output()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready in {timeout}s:\n{proc.output()[-3000:]}")


def wait_until(predicate: Any, timeout: float = 60, interval: float = 0.25, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def read_topic(iso: Isolated, topic: str, min_records: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
    """Every record on a topic from the beginning (at least ``min_records``, or whatever came in time)."""

    async def _read() -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=iso.env["CRM_KAFKA_BOOTSTRAP"],
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        await consumer.start()
        out: list[dict[str, Any]] = []
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and len(out) < min_records:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    out.extend(orjson.loads(r.value) for r in records)
        finally:
            await consumer.stop()
        return out

    return asyncio.run(_read())


@contextmanager
def running_api(iso: Isolated, **env: str) -> Iterator[str]:
    """``crm-pipeline api`` as a process on the isolated namespace (its store migrated beforehand)."""
    port = free_port()
    proc = Process("api", ["api"], {**iso.env, "CRM_API_PORT": str(port), **env})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", proc)
        yield url
    finally:
        proc.stop()
