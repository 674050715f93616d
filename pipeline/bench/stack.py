"""The benchmark's own stack instance and its isolated namespace.

By default the benchmark starts a private Kafka/Redis/PostgreSQL with ``deploy/stack.sh`` under
``.stack/bench`` on other ports (28092/28093, 27379, 27432, or the next free set; ``BENCH_KAFKA_PORT``,
``BENCH_KAFKA_CONTROLLER_PORT``, ``BENCH_REDIS_PORT``, ``BENCH_PG_PORT`` override them), so it never
disturbs a developer's running stack or someone's test run, and stops what it started. With
``--stack external`` it uses the stack the ``CRM_*`` variables point at (the smoke test does that).

Either way each run gets its own topic namespace, consumer group and database (dropped at the end).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]
STACK_SH = ROOT / "deploy" / "stack.sh"

# Defaults: 28092/28093, 27379, 27432; if one is taken (another helper stack), the next offsets are tried
# (+10, +20, …). The chosen ports are kept in .stack/bench/ports.env so a running bench stack is found again.
# They lie below the kernel's ephemeral range (32768-60999): a client that connects to a port in that range
# while no server listens there can be given that same port as its own and connect to itself (a TCP
# self-connect), which then holds the port, and the broker cannot bind it. The old defaults (39092, …) met
# exactly that: stack.sh polling the port, or a stopping worker reconnecting, took it.
PORT_VARS = ("KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "REDIS_PORT", "PG_PORT")
DEFAULT_PORTS = (28092, 28093, 27379, 27432)
START_ATTEMPTS = 3


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_ports(stack_dir: Path, avoid: frozenset[str] = frozenset()) -> dict[str, str]:
    """``avoid``: Kafka ports a start has just failed on (explicit ports, or a slot's, may lie in the
    ephemeral range, where a client's connection can hold one between the check and the bind)."""
    saved = stack_dir / "ports.env"
    if saved.is_file():
        return dict(line.split("=", 1) for line in saved.read_text().split() if "=" in line)
    explicit = {v: os.environ[f"BENCH_{v}"] for v in PORT_VARS if os.environ.get(f"BENCH_{v}")}
    if len(explicit) == len(PORT_VARS):
        return explicit
    for offset in range(0, 500, 10):
        ports = [p + offset for p in DEFAULT_PORTS]
        if str(ports[0]) not in avoid and all(_port_free(p) for p in ports):
            return {v: str(p) for v, p in zip(PORT_VARS, ports, strict=True)}
    raise RuntimeError("no free ports for the bench stack (set BENCH_KAFKA_PORT, … )")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


@dataclass
class BenchStack:
    mode: str = "own"  # own | external
    stack_dir: Path = ROOT / ".stack" / "bench"
    started: bool = False
    env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, str] = field(default_factory=dict)

    def _sh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # No media store: the bench measures the report path, which never waits for media.
        env = {**os.environ, "STACK_DIR": str(self.stack_dir), "STACK_S3": "off", **self.ports}
        return subprocess.run([str(STACK_SH), *args], env=env, capture_output=True, text=True, check=check)

    def up(self) -> dict[str, str]:
        if self.mode == "external":
            keys = ("CRM_KAFKA_BOOTSTRAP", "CRM_REDIS_URL", "CRM_DATABASE_URL")
            from ..settings import Settings

            s = Settings()
            self.env = {
                "CRM_KAFKA_BOOTSTRAP": os.environ.get(keys[0], s.kafka_bootstrap),
                "CRM_REDIS_URL": os.environ.get(keys[1], s.redis_url),
                "CRM_DATABASE_URL": os.environ.get(keys[2], s.database_url.get_secret_value()),
            }
            return self.env
        self.ports = choose_ports(self.stack_dir)
        if self._sh("status", check=False).returncode != 0:
            # Every run starts from empty servers: what earlier runs left (gigabytes of cases and
            # dedup keys in Redis, reports in PostgreSQL) would slow this one and make runs differ.
            t0 = time.monotonic()
            failed: set[str] = set()
            for attempt in range(1, START_ATTEMPTS + 1):
                self._fresh_dirs()
                self.ports = choose_ports(self.stack_dir, frozenset(failed))
                self.stack_dir.mkdir(parents=True, exist_ok=True)
                (self.stack_dir / "ports.env").write_text(
                    "\n".join(f"{k}={v}" for k, v in self.ports.items()) + "\n"
                )
                log(
                    f"starting a private stack in {self.stack_dir.relative_to(ROOT)} on ports "
                    + ", ".join(f"{k.lower()}={v}" for k, v in self.ports.items())
                )
                res = self._sh("start", check=False)
                if res.returncode == 0:
                    break
                # What did start (PostgreSQL, Redis) must not outlive the failure.
                self._sh("stop", check=False)
                reason = self._start_failure()
                if attempt == START_ATTEMPTS:
                    raise RuntimeError(f"could not start the bench stack:\n{res.stderr[-3000:]}\n{reason}")
                failed.add(self.ports["KAFKA_PORT"])
                log(f"stack did not start ({reason or 'see stack.sh'}); attempt {attempt + 1}, other ports")
                time.sleep(2)
            self.started = True
            log(f"private stack up in {time.monotonic() - t0:.0f}s")
        else:
            log(f"private stack already running in {self.stack_dir} (left running afterwards)")
        out = self._sh("env").stdout
        self.env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        self._commit_timestamps()
        return self.env

    def _fresh_dirs(self) -> None:
        for part in ("kafka", "redis", "postgres"):
            path = self.stack_dir / part
            shutil.rmtree(path.resolve(), ignore_errors=True)  # postgres may link to /var/tmp
            if path.is_symlink():
                path.unlink()
        (self.stack_dir / "ports.env").unlink(missing_ok=True)

    def _start_failure(self) -> str:
        """The servers' own words for a failed start (stack.sh only says what it started)."""
        lines = []
        for log_file in sorted(self.stack_dir.glob("*/logs/server.log")) + sorted(
            self.stack_dir.glob("*/*.log")
        ):
            with contextlib.suppress(OSError):
                lines += [
                    f"{log_file.relative_to(self.stack_dir)}: {ln.strip()[:300]}"
                    for ln in log_file.read_text(errors="replace").splitlines()
                    if "ERROR" in ln or "FATAL" in ln or "in use" in ln
                ][:3]
        return "; ".join(lines[:6])

    def _commit_timestamps(self) -> None:
        """Exact commit times per row (pg_xact_commit_timestamp) need track_commit_timestamp and a restart."""
        dsn = self.env["CRM_DATABASE_URL"]
        with psycopg.connect(dsn, autocommit=True) as conn:
            on = conn.execute("SHOW track_commit_timestamp").fetchone()[0] == "on"  # type: ignore[index]
            if on:
                return
            conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
        pg_bin = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if not pg_bin:
            return
        # Stop PostgreSQL only; `stack.sh start` then starts it again its own way (Kafka, Redis: running).
        data = (self.stack_dir / "postgres" / "data").resolve()  # the postgres user may not enter stack_dir
        cmd = [str(pg_bin[-1] / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop"]
        if os.getuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        log("restarting the private PostgreSQL with track_commit_timestamp = on (once)")
        subprocess.run(
            cmd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        res = self._sh("start", check=False)
        if res.returncode != 0:
            raise RuntimeError(f"could not restart the bench PostgreSQL:\n{res.stderr[-3000:]}")

    def down(self) -> None:
        if self.mode == "own" and self.started:
            log("stopping the private stack")
            res = self._sh("stop", check=False)
            if res.returncode != 0:
                log(f"stack stop: {res.stderr[-1000:]}")


@dataclass
class Space:
    """One run's namespace: topics, consumer group, Redis keys, database."""

    base_env: dict[str, str]
    tag: str = field(default_factory=lambda: "bench" + uuid.uuid4().hex[:8])

    @property
    def admin_dsn(self) -> str:
        return self.base_env["CRM_DATABASE_URL"]

    @property
    def dsn(self) -> str:
        return self.admin_dsn.rsplit("/", 1)[0] + "/" + self.tag

    @property
    def env(self) -> dict[str, str]:
        return {
            **self.base_env,
            "CRM_ENV": "test",
            "CRM_TOPIC_NAMESPACE": self.tag,
            "CRM_WORKER_APP_ID": f"crm-{self.tag}",
            "CRM_WORKER_WEB_PORT": "0",  # never clash with a dev worker's 6066
            "CRM_WORKER_METRICS_PORT": "0",
            "CRM_DATABASE_URL": self.dsn,
        }

    def create(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.tag}"')

    def drop(self) -> None:
        try:
            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.tag}" WITH (FORCE)')
        except psycopg.Error as exc:
            log(f"could not drop database {self.tag}: {exc}")

    def drop_topics(self) -> None:
        """Delete this run's topics (only on an external stack; the private one is ours anyway)."""
        import asyncio

        from aiokafka.admin import AIOKafkaAdminClient

        async def _drop() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.base_env["CRM_KAFKA_BOOTSTRAP"])
            await admin.start()
            try:
                mine = [t for t in await admin.list_topics() if t.startswith(self.tag + ".")]
                if mine:
                    await admin.delete_topics(mine)
            finally:
                await admin.close()

        try:
            asyncio.run(_drop())
        except Exception as exc:  # best effort
            log(f"could not delete topics of {self.tag}: {exc!r}")
