"""Fault-injection toolkit: a private stack, a numbered load, fault timing and reconciliation.

Everything here runs against the suite's OWN Kafka/Redis/PostgreSQL (``deploy/stack.sh`` with other
ports and ``STACK_DIR=.stack/chaos``) or its own three-node cluster (``deploy/cluster.sh``), never the
shared local stack, because the scenarios stop, kill and restart those services.

A scenario pushes a known, numbered set of reports: bulk envelopes straight onto the ingest topics
(idempotent aiokafka producer, ``acks=all``) across several channels, ~5 % of them sent a second time
(same provider id = same report id), plus real HTTP posts through the ingress. Then it reconciles:
every input is in the store exactly once (rows counted per channel + provider id, so a second row
under another report id would show) or on the dead-letter topic with a reason; routed and normalised
topics may repeat a report only under the same report id.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.envelope import Location, Report, Reporter, report_id_for, reporter_pseudonym
from pipeline.publish import Publisher, PublishError, make_producer
from pipeline.settings import Settings
from pipeline.topics import Topics
from tests.harness import Process, free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deploy" / "stack.sh"
CLUSTER = ROOT / "deploy" / "cluster.sh"
ARTIFACTS = ROOT / "test-artifacts"
#: The suite's plug-in distribution (the poison triage hook): on the path of the processes it starts only.
PLUGINS = Path(__file__).resolve().parent / "plugins"

#: The private stack: other ports and data dir than the shared one (19092/16379/15432, .stack/).
PRIVATE = {
    "STACK_DIR": str(ROOT / ".stack" / "chaos"),
    "KAFKA_PORT": os.environ.get("CHAOS_KAFKA_PORT", "29092"),
    "KAFKA_CONTROLLER_PORT": os.environ.get("CHAOS_KAFKA_CONTROLLER_PORT", "29093"),
    "REDIS_PORT": os.environ.get("CHAOS_REDIS_PORT", "26379"),
    "PG_PORT": os.environ.get("CHAOS_PG_PORT", "25432"),
}
PRIVATE["S3_PORT"] = os.environ.get("CHAOS_S3_PORT", str(int(PRIVATE["KAFKA_PORT"]) + 600))
CLUSTER_ENV = {"CLUSTER_DIR": str(ROOT / ".stack" / "cluster")}
#: Faust's default session timeout is 60 s: a kill -9'd member keeps its partitions that long.
SESSION_TIMEOUT_S = os.environ.get("CHAOS_SESSION_TIMEOUT_S", "15")

CHANNELS = ("web", "sms", "jaki", "email", "twitter", "facebook", "lapor1708", "desk_kelurahan")
STREETS = (
    "Jl. Pramuka",
    "Jl. Daan Mogot",
    "Jl. Cempaka Putih Raya",
    "Jl. Kemang Raya",
    "Jl. Gunung Sahari",
    "Jl. Fatmawati",
    "Jl. Pluit Raya",
    "Jl. Matraman Raya",
)
TEMPLATES = (
    "Lampu PJU mati di {s} dekat gang {n}, sudah 3 malam gelap",
    "Jalan berlubang besar di {s} depan toko nomor {n}, bahaya motor",
    "Sampah menumpuk di pinggir {s} RT {n} belum diangkut seminggu",
    "Parkir liar di trotoar {s} setiap sore, laporan warga {n}",
    "Pohon tumbang menutup {s} setelah hujan, titik {n}",
    "Saluran air tersumbat di {s}, genangan sampai lutut, rumah {n}",
    "PKL berjualan di atas trotoar {s} blok {n}",
    "Banjir di {s} setinggi 40 cm, warga butuh pompa, lokasi {n}",
)


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], env: dict[str, str]) -> str:
    res = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res.stdout


def _pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def _wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


# ------------------------------------------------------------------------------------ private stack
class PrivateStack:
    """deploy/stack.sh on the suite's own ports and data dir; the scenarios may break it freely."""

    def __init__(self) -> None:
        self.dir = Path(PRIVATE["STACK_DIR"])

    def sh(self, *args: str) -> str:
        return _run([str(STACK), *args], PRIVATE)

    def start(self) -> None:
        self.sh("start")

    def stop(self) -> None:
        self.sh("stop")

    def env(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.sh("env").splitlines() if "=" in line)

    # Kafka
    def stop_kafka(self) -> None:
        pid = _pid(self.dir / "kafka" / "kafka.pid")
        assert pid, "private kafka is not running"
        os.kill(pid, signal.SIGTERM)
        _wait_gone(pid, 60)

    # Redis: killed hard and its append-only file wiped, so the dedup state is lost
    def kill_redis(self, wipe: bool = True) -> None:
        pid = _pid(self.dir / "redis" / "redis.pid")
        assert pid, "private redis is not running"
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid)
        if wipe:
            for p in (self.dir / "redis").glob("appendonly*"):
                shutil.rmtree(p) if p.is_dir() else p.unlink()

    # PostgreSQL
    def stop_postgres(self) -> None:
        pg_bin = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))[-1]
        cmd = [
            str(pg_bin / "pg_ctl"),
            "-D",
            str((self.dir / "postgres" / "data").resolve()),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]
        if os.getuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        _run(cmd, {})


class Cluster:
    """deploy/cluster.sh: three KRaft nodes (broker + controller each) on loopback."""

    def sh(self, *args: str) -> str:
        return _run([str(CLUSTER), *args], CLUSTER_ENV)

    def start(self, *nodes: int) -> None:
        self.sh("start", *map(str, nodes))

    def stop(self) -> None:
        self.sh("stop")

    def kill(self, node: int) -> None:
        self.sh("kill", str(node))

    def env(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.sh("env").splitlines() if "=" in line)


async def wait_brokers(bootstrap: str, count: int, within: float = 120) -> None:
    """Until the cluster metadata lists ``count`` brokers and a controller (ports open is not enough)."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="chaos-probe", request_timeout_ms=5000
        )
        try:
            await admin.start()
            info = await admin.describe_cluster()
            if len(info["brokers"]) >= count and info.get("controller_id", -1) >= 0:
                return
            last = info
        except Exception as exc:
            last = exc
        finally:
            try:
                await admin.close()
            except Exception:  # noqa: S110 - best effort while the broker is coming up
                pass
        await asyncio.sleep(1)
    raise TimeoutError(f"{count} broker(s) not up at {bootstrap} in {within}s: {last!r}")


async def active_controller(bootstrap: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="chaos-probe")
    await admin.start()
    try:
        return int((await admin.describe_cluster())["controller_id"])
    finally:
        await admin.close()


# ------------------------------------------------------------------------------------ scenario space
class Space:
    """One scenario's namespace (topics, consumer group, Redis keys) and database on a stack."""

    def __init__(self, name: str, base_env: dict[str, str], **extra: str) -> None:
        self.name = name
        self.tag = f"chaos{name.replace('-', '')}{uuid.uuid4().hex[:6]}"
        self.admin_dsn = base_env["CRM_DATABASE_URL"]
        self.dbname = f"crm_{self.tag}"
        self.env = {
            **base_env,
            "CRM_ENV": "test",
            "CRM_TOPIC_NAMESPACE": self.tag,
            "CRM_TOPIC_PARTITIONS": "3",
            "CRM_WORKER_APP_ID": f"crm-{self.tag}",
            "CRM_WORKER_WEB_PORT": "0",
            "CRM_WORKER_BATCH_WITHIN_S": "0.1",
            "CRM_DATABASE_URL": self.admin_dsn.rsplit("/", 1)[0] + "/" + self.dbname,
            "BROKER_SESSION_TIMEOUT": SESSION_TIMEOUT_S,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")])),
            **extra,
        }
        self.topics = Topics(self.tag)
        self.procs: list[Process] = []
        self.workers: dict[str, Process] = {}
        self.url = ""
        self.killed: set[str] = set()  # workers killed on purpose (the watchdog leaves them dead)
        self.http: HttpStats | None = None

    def settings(self) -> Settings:
        values = {k.removeprefix("CRM_").lower(): v for k, v in self.env.items() if k.startswith("CRM_")}
        return Settings(**values)

    def prepare(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        for step in (["topics", "create"], ["store", "migrate"]):
            _run([sys.executable, "-m", "pipeline", *step], self.env)

    def start_ingress(self) -> str:
        port = free_port()
        proc = Process(f"chaos-ingress-{self.name}", ["ingress"], {**self.env, "CRM_INGRESS_PORT": str(port)})
        self.procs.append(proc)
        self.url = f"http://127.0.0.1:{port}"
        wait_http(self.url + "/readyz", proc)
        return self.url

    def start_worker(self, name: str) -> Process:
        proc = Process(f"chaos-{self.name}-{name}", ["worker", "--loglevel", "warning"], self.env)
        self.procs.append(proc)
        self.workers[name] = proc
        return proc

    def kill_worker(self, name: str) -> None:
        proc = self.workers[name]
        proc.proc.send_signal(signal.SIGKILL)
        proc.proc.wait()

    def close(self, drop: bool = True) -> None:
        for p in self.procs:
            p.stop()
        if drop:
            try:
                with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
            except psycopg.Error as exc:
                log(f"could not drop {self.dbname}: {exc}")

    def store_count(self) -> int:
        with psycopg.connect(self.env["CRM_DATABASE_URL"], connect_timeout=3) as conn:
            return conn.execute("SELECT count(*) FROM reports").fetchone()[0]  # type: ignore[index]


# ------------------------------------------------------------------------------------ the load
@dataclass(frozen=True)
class Input:
    channel: str
    provider_id: str
    report_id: str
    poison: bool = False


@dataclass
class Load:
    inputs: dict[str, Input] = field(default_factory=dict)  # report id -> input
    records: list[tuple[str, bytes, bytes]] = field(default_factory=list)  # in send order
    redeliveries: int = 0

    @property
    def poison_ids(self) -> set[str]:
        return {rid for rid, i in self.inputs.items() if i.poison}


def build_load(
    tag: str, n: int, redeliver: float = 0.05, poison_marker: str | None = None, poison: int = 0
) -> Load:
    """``n`` numbered reports across CHANNELS; ``redeliver`` of them sent again later (same bytes)."""
    rng = random.Random(tag)
    topics = Topics(tag)
    key = b"dev-only-reporter-key-change-me"
    load = Load()
    poison_at = set(rng.sample(range(n), poison)) if poison else set()
    originals: list[tuple[str, bytes, bytes]] = []
    for i in range(n):
        channel = CHANNELS[i % len(CHANNELS)]
        provider_id = f"{tag}-{i:06d}"
        text = TEMPLATES[i % len(TEMPLATES)].format(s=STREETS[(i // 8) % len(STREETS)], n=i)
        if i in poison_at:
            text = f"{text} {poison_marker}"
        reporter = (
            Reporter(id="anonymous")
            if i % 3 == 0
            else Reporter(id=reporter_pseudonym(key, "phone", f"+62812{i:08d}"))
        )
        report = Report.create(
            channel=channel,
            provider_id=provider_id,
            reporter=reporter,
            text=text,
            location=Location(address=f"{STREETS[i % len(STREETS)]} no. {i % 200}"),
        )
        load.inputs[report.report_id] = Input(channel, provider_id, report.report_id, i in poison_at)
        originals.append((topics.ingest(channel), report.report_id.encode(), report.dumps()))
    # Redeliveries: the same record again, a little later in the stream (as a provider retry would).
    out = list(originals)
    for i in sorted(rng.sample(range(n), int(n * redeliver)), reverse=True):
        pos = min(len(out), i + rng.randint(20, 3000))
        out.insert(pos, originals[i])
        load.redeliveries += 1
    load.records = out
    return load


@dataclass
class ProduceStats:
    sent: int = 0
    refusals: int = 0
    errors: list[str] = field(default_factory=list)
    done_at: float = 0.0


async def produce(settings: Settings, load: Load, rate: float, stats: ProduceStats, chunk: int = 100) -> None:
    """Bulk: paced at ``rate``/s; a batch the broker does not confirm is retried until it is."""
    producer = make_producer(settings, client_id="chaos-load")
    await producer.start()
    publisher = Publisher(settings, producer)
    t0 = time.monotonic()
    try:
        for i in range(0, len(load.records), chunk):
            batch = load.records[i : i + chunk]
            ahead = t0 + i / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            delay = 0.25
            while True:
                try:
                    await publisher.send_many(batch)
                    break
                except PublishError as exc:
                    stats.refusals += 1
                    if len(stats.errors) < 5:
                        stats.errors.append(str(exc)[:300])
                    log(f"bulk producer: batch refused ({exc!s:.160}); retrying in {delay:.1f}s")
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 4.0)
            stats.sent += len(batch)
    finally:
        await producer.stop()
        stats.done_at = time.monotonic()


@dataclass
class HttpStats:
    accepted: dict[str, str] = field(default_factory=dict)  # submission id -> report id (202)
    answers: list[tuple[float, float, int]] = field(default_factory=list)  # (start, end, status or 0)
    unavailable: int = 0
    reposts: int = 0


async def post_http(
    url: str, tag: str, n: int, duration: float, stats: HttpStats, settle: float = 240
) -> None:
    """``n`` real web-form posts over ``duration`` s (5 % posted twice); what gets no 202 is retried
    (as a provider would on 503) until it does, at most ``settle`` s after the paced phase."""
    route = url + "/v1/channels/web/reports"
    pending: list[int] = []
    timeout = aiohttp.ClientTimeout(total=30)

    async def one(session: aiohttp.ClientSession, i: int) -> int:
        sub = f"{tag}-h{i:05d}"
        body = {
            "text": f"Jalan rusak di {STREETS[i % len(STREETS)]} dekat halte {i}, lubang dalam (web {i})",
            "submission_id": sub,
            "alamat": f"{STREETS[i % len(STREETS)]}, Jakarta",
            "email": f"warga{i}@example.com",
        }
        start = time.monotonic()
        try:
            async with session.post(route, json=body) as resp:
                status = resp.status
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError):
            status, data = 0, {}
        stats.answers.append((start, time.monotonic(), status))
        if status == 202:
            stats.accepted[sub] = data["report_id"]
        elif status == 503:
            stats.unavailable += 1
        return status

    async with aiohttp.ClientSession(timeout=timeout) as session:
        t0 = time.monotonic()
        inflight: set[asyncio.Task] = set()
        for i in range(n):
            ahead = t0 + i * duration / n - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)

            async def task(i: int = i) -> None:
                if await one(session, i) != 202:
                    pending.append(i)
                elif i % 20 == 0:  # a redelivery of an accepted post
                    stats.reposts += 1
                    await one(session, i)

            t = asyncio.create_task(task())
            inflight.add(t)
            t.add_done_callback(inflight.discard)
        if inflight:
            await asyncio.gather(*inflight)
        deadline = time.monotonic() + settle
        while pending and time.monotonic() < deadline:
            await asyncio.sleep(2)
            retry, pending[:] = list(pending), []
            for i in retry:
                if await one(session, i) != 202:
                    pending.append(i)
        assert not pending, f"{len(pending)} web posts never got a 202"


# ------------------------------------------------------------------------------------ timeline
class Timeline:
    """Samples the store's row count twice a second (None while the store is down)."""

    def __init__(self, space: Space) -> None:
        self.space = space
        self.samples: list[tuple[float, int | None]] = []
        self.marks: dict[str, float] = {}
        self._task: asyncio.Task | None = None

    def mark(self, what: str) -> None:
        self.marks[what] = time.monotonic()
        log(f"{self.space.name}: {what}")

    async def _loop(self) -> None:
        while True:
            try:
                n: int | None = await asyncio.to_thread(self.space.store_count)
            except psycopg.Error:
                n = None
            self.samples.append((time.monotonic(), n))
            await asyncio.sleep(0.5)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def latest(self) -> int:
        return next((n for _, n in reversed(self.samples) if n is not None), 0)

    async def wait_count(self, n: int, within: float = 120) -> None:
        deadline = time.monotonic() + within
        while self.latest() < n and time.monotonic() < deadline:  # noqa: ASYNC110 - polls a sampled value
            await asyncio.sleep(0.25)

    def resumed_after(self, t: float) -> float | None:
        """Seconds from ``t`` until the store count grew past its value at ``t``."""
        base = next((n for ts, n in reversed(self.samples) if ts <= t and n is not None), 0)
        for ts, n in self.samples:
            if ts > t and n is not None and n > base:
                return max(ts - t, 0.0)
        return None


async def total_lag(settings: Settings) -> int:
    from pipeline.ops.lag import consumer_lag

    rows = await consumer_lag(settings, settings.worker_app_id)
    return sum(r.lag for r in rows) if rows else 1


async def wait_drained(space: Space, timeline: Timeline, expected_rows: int, within: float) -> float:
    """Until the store holds ``expected_rows`` and the worker group has no lag; returns when."""
    settings = space.settings()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if timeline.latest() >= expected_rows:
            try:
                if await total_lag(settings) == 0:
                    return time.monotonic()
            except Exception as exc:
                log(f"lag check failed: {exc!r}")
        await asyncio.sleep(1)
    log(f"{space.name}: not drained after {within:.0f}s (store {timeline.latest()}/{expected_rows})")
    return time.monotonic()


# ------------------------------------------------------------------------------------ reading topics
async def read_topics(bootstrap: str, names: list[str], within: float = 120) -> list[tuple[str, bytes]]:
    """Every record of the given topics up to their current ends, with one consumer."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="chaos-reader")
    await admin.start()
    try:
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    tps = [
        TopicPartition(d["topic"], p["partition"])
        for d in described
        if not d.get("error_code")
        for p in d["partitions"]
    ]
    if not tps:
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    out: list[tuple[str, bytes]] = []
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + within
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=500, max_records=5000)
            for tp, records in batch.items():
                out.extend((tp.topic, r.value) for r in records if r.offset < ends[tp])
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        if pending:
            raise TimeoutError(f"could not read {len(pending)} partition(s) to the end")
    finally:
        await consumer.stop()
    return out


async def list_topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="chaos-reader")
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


# ------------------------------------------------------------------------------------ reconciliation
@dataclass
class Outcome:
    scenario: str
    sent_ids: int
    sent_msgs: int
    http_202: int
    http_503: int
    stored: int
    dead: int
    lost: int
    duplicated: int
    stored_and_dead: int
    routed_records: int
    routed_repeats: int
    routed_bad_ids: int
    resumed_s: float | None
    caught_up_s: float | None
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str]]:
        def s(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        return [
            ("sent (distinct ids)", f"{self.sent_ids}"),
            ("sent (messages, incl. redeliveries)", f"{self.sent_msgs}"),
            ("HTTP posts 202 / 503", f"{self.http_202} / {self.http_503}"),
            ("stored (once)", f"{self.stored}"),
            ("dead-lettered (with reason)", f"{self.dead}"),
            ("lost", f"{self.lost}"),
            ("duplicated in the store", f"{self.duplicated}"),
            ("both stored and dead-lettered", f"{self.stored_and_dead}"),
            (
                "routed/normalised records (repeats, same id)",
                f"{self.routed_records} ({self.routed_repeats})",
            ),
            ("routed records under a wrong report id", f"{self.routed_bad_ids}"),
            ("recovery: flow resumed after fault (s)", s(self.resumed_s)),
            ("recovery: caught up after fault (s)", s(self.caught_up_s)),
        ]

    def table(self) -> str:
        rows = self.rows()
        w = max(len(k) for k, _ in rows)
        line = "-" * (w + 14)
        out = [line, f"scenario: {self.scenario}", line]
        out += [f"{k:<{w}}  {v:>10}" for k, v in rows]
        out += [f"note: {n}" for n in self.notes]
        out.append(line)
        return "\n".join(out)


async def reconcile(
    space: Space,
    load: Load,
    http: HttpStats | None,
    resumed_s: float | None,
    caught_up_s: float | None,
    notes: list[str] | None = None,
) -> Outcome:
    settings = space.settings()
    bootstrap = settings.kafka_bootstrap
    expected: dict[tuple[str, str], str] = {(i.channel, i.provider_id): rid for rid, i in load.inputs.items()}
    if http:
        for sub, rid in http.accepted.items():
            expected[("web", f"sub:{sub}")] = rid
    rid_to_key = {rid: key for key, rid in expected.items()}

    rows = await asyncio.to_thread(
        lambda: (
            psycopg.connect(space.env["CRM_DATABASE_URL"])
            .execute("SELECT channel, provider_id, report_id::text FROM reports")
            .fetchall()
        )
    )
    per_key: Counter[tuple[str, str]] = Counter((c, p) for c, p, _ in rows)
    stored_keys = {k for k in per_key if k in expected}
    duplicated = sum(n - 1 for k, n in per_key.items() if n > 1)

    dead_keys: set[tuple[str, str]] = set()
    reasons: Counter[str] = Counter()
    for _, value in await read_topics(bootstrap, [space.topics.deadletter]):
        letter = orjson.loads(value)
        key = rid_to_key.get(letter.get("report_id") or "")
        if key is not None and letter.get("reason"):
            dead_keys.add(key)
            reasons[f"{letter['stage']}/{letter['code']}"] += 1
    lost = set(expected) - stored_keys - dead_keys

    names = [t for t in await list_topics(bootstrap) if t.startswith(f"{space.tag}.routed.")]
    names += [space.topics.triage, space.topics.normalised]
    ids_per_key: dict[tuple[str, str], set[str]] = defaultdict(set)
    routed = 0
    bad = 0
    seen: Counter[tuple[str, str]] = Counter()
    for topic, value in await read_topics(bootstrap, names):
        doc = orjson.loads(value)
        key = (doc["channel"], doc["provider_id"])
        routed += 1
        seen[(topic, *key)] += 1  # type: ignore[arg-type]
        ids_per_key[key].add(doc["report_id"])
        if doc["report_id"] != report_id_for(*key):
            bad += 1
    bad += sum(len(ids) - 1 for ids in ids_per_key.values() if len(ids) > 1)
    repeats = sum(n - 1 for n in seen.values() if n > 1)

    out_notes = list(notes or [])
    if reasons:
        out_notes.append("dead letters: " + ", ".join(f"{k} x{v}" for k, v in sorted(reasons.items())))
    if lost:
        out_notes.append(f"first lost: {sorted(lost)[:5]}")
    outcome = Outcome(
        scenario=space.name,
        sent_ids=len(expected),
        sent_msgs=len(load.records) + (len(http.accepted) + http.reposts if http else 0),
        http_202=len(http.accepted) if http else 0,
        http_503=http.unavailable if http else 0,
        stored=len(stored_keys),
        dead=len(dead_keys - stored_keys),
        lost=len(lost),
        duplicated=duplicated,
        stored_and_dead=len(dead_keys & stored_keys),
        routed_records=routed,
        routed_repeats=repeats,
        routed_bad_ids=bad,
        resumed_s=resumed_s,
        caught_up_s=caught_up_s,
        notes=out_notes,
    )
    return outcome


REPORTS: list[Outcome] = []


def record(outcome: Outcome) -> None:
    REPORTS.append(outcome)
    ARTIFACTS.mkdir(exist_ok=True)
    with (ARTIFACTS / "chaos-report.txt").open("a") as f:
        f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + "\n" + outcome.table() + "\n")
    print("\n" + outcome.table(), flush=True)


async def run_in_background(fn: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(fn)
