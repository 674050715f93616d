"""``make soak DURATION=2h``: the whole pipeline under realistic traffic for hours, watched for slow leaks.

Traffic: the real channel mix (``traffic.CHANNEL_MIX``: JAKI ~92 %) with its 5 % provider redeliveries
and 10 % repeat reports; JAKI through the real HTTP ingress (bearer token, as the JAKI backend posts),
the other channels as envelopes on their ingest topics (as the pollers and gateways publish them). The
rate follows a daily cycle compressed into ``--day`` (default: near 24 min, so an hour is about a
minute, fitted so the run holds whole days, at least two: 24 min in a 2-h run, 10 min in the 20-min
one; the hourly profile ``HOURLY`` is an assumed shape, quiet at night, peaks in the morning and
evening: the CRM publishes no hourly figures) and every compressed hour starts with a burst of
``--burst-x`` times the cycle's rate for ``--burst-share`` of the hour. The default mean rate, 30
reports/s (about 39 with the bursts), is some 6,000 times the real CRM's (470 a day): enough reports
for a leak to show within the run, and what a 2-core machine shared with others still carries.

Recorded over time (``--sample-s``): RSS and open file descriptors of every process (ingress, worker,
dashboard, Kafka, Redis, PostgreSQL with its backends as proportional set size), the worker group's lag
(every second), Redis ``used_memory`` and the CRM store's table and index sizes.

Asserted at the end (the results' ``verdict``):

* **memory**: after warm-up (the first compressed day, in which memory may rise to what the day's peak
  needs: a JVM heap expanding, arenas, connection pools) no process keeps growing: the
  least-squares slope of its RSS, times the measured window, stays under ``max(16 MB, 10 % of its
  RSS)``. Noise or a one-off step (an arena, a batch) moves that fit by a few MB; a leak grows without
  end: ``leak_floor_bytes_per_report`` in the results says the smallest leak per report the run's
  bound catches (about 700 bytes in the 20-min run, 110 in the 2-h one). Kafka and PostgreSQL fill
  caches up to their configured size (heap up to ``-Xmx``, shared buffers) over longer than a day:
  ``max(32 MB, 20 %)``; PostgreSQL on its anonymous memory (a backend's PSS also counts the shared
  buffers it touched, a cache of configured size). Redis's data grows by design (30 days of dedup
  keys): its RSS may grow only as much as its data (``used_memory``).
* **file descriptors** follow the load (connections; a server's open relation files), so a process
  fails only when both its peak passes the warm-up day's peak by ``max(16, 10 %)`` and the floor (the
  fewest open in each compressed hour) grows by as much: a burst of slow clients lifts the peak alone,
  a server opening its tables' files lifts the floor alone, a leak lifts both.
* **lag**: after each burst the lag is back to its steady level, at most ``max(100, 10 s of intake)``
  (offsets are committed every second, and a busy shared machine slows the worker), before the next
  burst, and exactly 0 once the traffic stops.
* **reconciliation**: every accepted report is stored exactly once (0 lost, 0 duplicated); a report
  that repeats its sender's words within the dedup window is dropped by design and counted apart.

Results: ``bench/results/soak-latest.json`` and the plot ``bench/results/soak-latest.png``, beside the
bench's; the processes' logs in ``bench/results/logs/soak/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil
import psycopg

from .runner import Proc, _free_port, git_commit
from .stack import ROOT, BenchStack, Space
from .traffic import CHANNEL_MIX, Traffic, stamp

RESULTS = ROOT / "bench" / "results"
#: relative intake per hour of the day, 00:00..23:00 WIB (mean 1); an assumed shape, see the docstring
HOURLY = (0.25, 0.15, 0.1, 0.1, 0.15, 0.35, 0.7, 1.1, 1.5, 1.8, 1.8, 1.6,
          1.5, 1.4, 1.4, 1.3, 1.2, 1.1, 1.2, 1.5, 1.4, 1.1, 0.8, 0.5)  # fmt: skip
HTTP_CHANNELS = ("jaki",)
PIPELINE_PROCS = ("ingress", "worker", "dashboard")


def log(msg: str) -> None:
    print(f"[soak {datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_duration(text: str) -> float:
    """``2h``, ``20m``, ``90s``, ``1h30m`` or plain seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise ValueError(f"not a duration: {text!r} (e.g. 2h, 20m, 90s)")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


@dataclass
class SoakConfig:
    duration_s: float = 7200.0
    rate: float = 30.0  # mean reports/s over a compressed day (bursts on top: +30 %)
    day_s: float = 1440.0
    burst_x: float = 4.0
    burst_share: float = 0.10  # of each compressed hour
    warmup: float = 0.25  # share of the run left out of the memory and fd fits
    sample_s: float = 5.0
    lag_sample_s: float = 1.0
    drain_timeout_s: float = 600.0
    seed: int = 22
    abs_mb: float = 16.0
    rel: float = 0.10
    # Kafka and PostgreSQL fill caches up to their configured size (JVM heap up to -Xmx, shared
    # buffers) over longer than a compressed day: a wider bound, still far under a leak's growth.
    server_abs_mb: float = 32.0
    server_rel: float = 0.20
    fd_abs: int = 16
    drained_s: float = 10.0  # a burst is drained once the lag is under this many seconds of intake

    @property
    def hour_s(self) -> float:
        return self.day_s / 24

    @property
    def burst_s(self) -> float:
        return self.hour_s * self.burst_share

    @property
    def warmup_s(self) -> float:
        return self.warmup * self.duration_s

    def _day_t(self, t: float) -> float:
        """Time of day: the judged window (after warm-up) starts at midnight, so it holds whole days
        and load that follows the daily cycle does not pass for a trend."""
        return (t - self.warmup_s) % self.day_s

    def base_rate(self, t: float) -> float:
        return self.rate * HOURLY[int(self._day_t(t) // self.hour_s) % 24]

    def in_burst(self, t: float) -> bool:
        return (self._day_t(t) % self.hour_s) < self.burst_s

    def rate_at(self, t: float) -> float:
        return self.base_rate(t) * (self.burst_x if self.in_burst(t) else 1.0)

    def bursts(self) -> list[tuple[float, float]]:
        first = self.warmup_s % self.hour_s
        n = int(self.duration_s // self.hour_s) + 1
        starts = [first + k * self.hour_s for k in range(n)]
        return [(a, a + self.burst_s) for a in starts if a < self.duration_s]


def whole_days(duration_s: float, near_s: float = 1440.0) -> float:
    """The compressed day closest to ``near_s`` that divides the run into whole days, at least two: the
    first is the warm-up (memory may rise to what the day's peak needs), the others are judged."""
    return duration_s / max(2, round(duration_s / near_s))


def config_for(duration_s: float, **kw: Any) -> SoakConfig:
    """The run's config with whole compressed days and the first of them as the warm-up."""
    day = kw.pop("day_s", None) or whole_days(duration_s)
    return SoakConfig(duration_s=duration_s, day_s=day, warmup=day / duration_s, **kw)


# ---------------------------------------------------------------------- analysis (pure, unit-tested)
def fit_slope(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over ts (units of y per unit of t)."""
    n = len(ts)
    if n < 3:
        return 0.0
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    return 0.0 if var == 0 else sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var


def judge_growth(
    ts: list[float], ys: list[float], warmup_until: float, abs_bound: float, rel: float
) -> dict[str, Any]:
    """Fitted growth of a series after warm-up against ``max(abs_bound, rel x its median)``."""
    pts = [(t, y) for t, y in zip(ts, ys, strict=True) if t >= warmup_until and y is not None]
    if len(pts) < 5:
        return {"ok": False, "reason": "too few samples after warm-up", "samples": len(pts)}
    tt, yy = [p[0] for p in pts], [p[1] for p in pts]
    slope = fit_slope(tt, yy)
    window = tt[-1] - tt[0]
    median = sorted(yy)[len(yy) // 2]
    bound = max(abs_bound, rel * median)
    growth = slope * window
    return {
        "ok": growth <= bound,
        "slope_per_h": round(slope * 3600, 3),
        "growth_over_window": round(growth, 3),
        "bound": round(bound, 3),
        "median": round(median, 3),
        "window_s": round(window),
    }


def judge_peaks(
    ts: list[float], ys: list[float | None], warmup_until: float, abs_bound: float, rel: float
) -> dict[str, Any]:
    """The judged days' peak may not pass the warm-up day's peak, at the same load, by more than
    ``max(abs_bound, rel x that peak)``."""
    warm = [y for t, y in zip(ts, ys, strict=True) if t < warmup_until and y is not None]
    after = [y for t, y in zip(ts, ys, strict=True) if t >= warmup_until and y is not None]
    if not warm or len(after) < 5:
        return {"ok": False, "reason": "too few samples", "samples": len(after)}
    bound = max(abs_bound, rel * max(warm))
    return {
        "ok": max(after) - max(warm) <= bound,
        "warmup_peak": max(warm),
        "peak": max(after),
        "end": after[-1],
        "bound": round(bound, 1),
    }


def judge_floors(
    ts: list[float],
    ys: list[float | None],
    warmup_until: float,
    stretch_s: float,
    abs_bound: float,
    rel: float,
) -> dict[str, Any]:
    """The fewest files open in each stretch of the load's cycle: their fitted growth after warm-up
    against ``max(abs_bound, rel x their median)``."""
    stretches: dict[int, list[float]] = {}
    for t, y in zip(ts, ys, strict=True):
        if t >= warmup_until and y is not None:
            stretches.setdefault(int((t - warmup_until) // stretch_s), []).append(y)
    if len(stretches) < 3:
        return {"ok": False, "reason": "too few stretches after warm-up", "stretches": len(stretches)}
    keys = sorted(stretches)
    starts = [warmup_until + k * stretch_s for k in keys]
    floors = [min(stretches[k]) for k in keys]
    growth = fit_slope(starts, floors) * (starts[-1] - starts[0])
    bound = max(abs_bound, rel * sorted(floors)[len(floors) // 2])
    return {
        "ok": growth <= bound,
        "floor_first": floors[0],
        "floor_last": floors[-1],
        "growth": round(growth, 1),
        "bound": round(bound, 1),
    }


def judge_open_files(
    ts: list[float],
    ys: list[float | None],
    warmup_until: float,
    stretch_s: float,
    abs_bound: float,
    rel: float,
) -> dict[str, Any]:
    """Open files follow the load, so neither their peak nor their floor alone tells a leak. A burst
    of slow clients holds many connections for a moment (the peak rises, the floor does not); a server
    opens the files of the tables it touches and keeps them (the floor rises towards a plateau under
    the warm-up's peak). A leaked file stays open for good and the load keeps coming on top of it, so
    a leak lifts *both*: that is what fails."""
    peaks = judge_peaks(ts, ys, warmup_until, abs_bound, rel)
    floors = judge_floors(ts, ys, warmup_until, stretch_s, abs_bound, rel)
    return {"ok": peaks["ok"] or floors["ok"], "peaks": peaks, "floors": floors}


def judge_drains(
    lag: list[tuple[float, int]], bursts: list[tuple[float, float]], hour_s: float, end: float, threshold
) -> list[dict[str, Any]]:
    """For each burst whose following quiet stretch lies within the run: did the lag come back down?"""
    out = []
    for start, stop in bursts:
        until = min(start + hour_s, end)
        if until - stop < 1:
            continue
        during = [v for t, v in lag if start <= t < until]
        after = [v for t, v in lag if stop <= t < until]
        if not after:
            continue
        limit = threshold(start)
        out.append(
            {
                "burst_at_s": round(start, 1),
                "peak_lag": max(during) if during else None,
                "min_lag_after": min(after),
                "limit": round(limit),
                "drained": min(after) <= limit,
            }
        )
    return out


# ---------------------------------------------------------------------- sampling
@dataclass
class Series:
    t: list[float] = field(default_factory=list)
    values: dict[str, list[float | None]] = field(default_factory=dict)

    def add(self, t: float, row: dict[str, float | None]) -> None:
        self.t.append(t)
        for k in set(self.values) | set(row):
            self.values.setdefault(k, [None] * (len(self.t) - 1)).append(row.get(k))


def _anon_mb(pid: int) -> float:
    """A process's anonymous resident memory (``RssAnon``): its heap, not the shared memory it maps."""
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return 0.0


def clients_held(proc: psutil.Process) -> int:
    """Connections clients hold open to the process's listening ports. A keep-alive client keeps its
    pool as large as its busiest moment needed (aiohttp reuses the pool in turn, so none idles out):
    that is the client's choice, not a file the server leaked. A socket the server forgot to close is
    no longer ESTABLISHED once its client has gone (CLOSE_WAIT), so a leak still counts."""
    conns = proc.net_connections(kind="tcp")
    listening = {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN}
    return sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr.port in listening)


def own_fds(proc: psutil.Process) -> int:
    """A process's open files net of the connections its clients hold open (see :func:`clients_held`)."""
    return proc.num_fds() - clients_held(proc)


def _proc_sample(proc: psutil.Process, with_children: bool) -> tuple[float, int, float | None]:
    """(memory MB, open fds, anonymous MB): RSS and own fds (:func:`own_fds`) for one process; PSS
    summed over a server and its children, and their anonymous memory apart (a PostgreSQL backend's
    PSS also holds the shared buffers it has touched, which fill up to ``shared_buffers`` by design; a
    leak is anonymous)."""
    if not with_children:
        return proc.memory_info().rss / 2**20, own_fds(proc), None
    mem, fds, anon = 0.0, 0, 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error, OSError):
            mem += p.memory_full_info().pss / 2**20
            fds += p.num_fds()
            anon += _anon_mb(p.pid)
    return mem, fds, anon


class Sampler:
    """A thread sampling the processes, Redis and the store every ``interval`` seconds."""

    def __init__(self, interval: float, t0: float, redis_url: str, dsn: str) -> None:
        self.interval, self.t0 = interval, t0
        self.procs: dict[str, tuple[psutil.Process, bool]] = {}
        self.rss, self.fds, self.store = Series(), Series(), Series()
        self.anon = Series()  # servers with children (PostgreSQL): anonymous memory, what a leak grows
        self.redis_url, self.dsn = redis_url, dsn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self._last_store = -1e9

    def watch(self, name: str, pid: int, with_children: bool = False) -> None:
        with contextlib.suppress(psutil.Error):
            self.procs[name] = (psutil.Process(pid), with_children)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        import redis

        r = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        while not self._stop.is_set():
            self.sample(r)
            self._stop.wait(self.interval)
        r.close()

    def sample(self, r: Any) -> None:
        t = time.monotonic() - self.t0
        mem: dict[str, float | None] = {}
        fds: dict[str, float | None] = {}
        anon: dict[str, float | None] = {}
        for name, (proc, kids) in self.procs.items():
            try:
                mem[name], n, a = _proc_sample(proc, kids)
                fds[name] = float(n)
                if kids:
                    anon[name] = a
            except psutil.Error:
                mem[name] = fds[name] = None
        self.rss.add(t, mem)
        self.fds.add(t, fds)
        if anon:
            self.anon.add(t, anon)
        row: dict[str, float | None] = {}
        with contextlib.suppress(Exception):
            info = r.info("memory")
            row["redis_used_mb"] = info["used_memory"] / 2**20
            row["redis_rss_mb"] = info["used_memory_rss"] / 2**20
        if t - self._last_store >= max(30.0, self.interval):
            self._last_store = t
            with contextlib.suppress(Exception), psycopg.connect(self.dsn, connect_timeout=5) as conn:
                sizes = conn.execute(
                    "SELECT c.relname, pg_table_size(c.oid), pg_indexes_size(c.oid) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                ).fetchall()
                for rel, table, index in sizes:
                    if table + index >= 1 << 20:  # tables of at least 1 MB: the ones that grow
                        row[f"pg_{rel}_table_mb"] = table / 2**20
                        row[f"pg_{rel}_index_mb"] = index / 2**20
                (rows,) = conn.execute("SELECT count(*) FROM reports").fetchone()  # type: ignore[misc]
                row["stored_reports"] = float(rows)
        self.store.add(t, row)


# ---------------------------------------------------------------------- the run
class Soak:
    def __init__(self, cfg: SoakConfig, stack: BenchStack | None = None) -> None:
        self.cfg = cfg
        self.stack = stack or BenchStack(stack_dir=ROOT / ".stack" / "soak")
        self.logdir = RESULTS / "logs" / "soak"
        self.procs: list[Proc] = []
        self.traffic = Traffic(seed=cfg.seed, run_tag="soak" + os.urandom(3).hex())
        self.accepted: set[str] = set()
        self.sent = 0
        self.statuses: dict[str, int] = {}
        self.by_channel: dict[str, int] = {}
        self.intake: list[tuple[float, int]] = []  # (t, reports sent in that second)
        # The same sender sending the same words again within the dedup window is dropped by design
        # (a double "send"): such reports are expected not to be stored. key -> (first id, time).
        self.first_by_key: dict[tuple[str, str], tuple[str, float]] = {}
        self.same_text_of: dict[str, str] = {}  # report id -> the earlier report id it repeats
        self.lag: list[tuple[float, int]] = []
        self.results: dict[str, Any] = {}

    def env(self) -> dict[str, str]:
        return {
            **self.space.env,
            "CRM_TOPIC_PARTITIONS": "3",
            "CRM_LAG_SAMPLE_S": "5",
            "CRM_JAKI_TOKEN": "soak-jaki-token",
            "CRM_RATE_LIMIT_ENABLED": "false",  # one client sends every citizen's reports
            "CRM_DASHBOARD_REFRESH_S": "2",
        }

    def _cmd(self, *args: str) -> None:
        import subprocess

        subprocess.run(
            [sys.executable, "-m", "pipeline", *args],
            env={**os.environ, **self.env()},
            check=True,
            capture_output=True,
            cwd=ROOT,
        )

    def start(self) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        # Kafka's heap fixed and touched up front, as production runs it (Xms = Xmx): its RSS then
        # shows what grows outside the heap, not G1 committing more heap in steps up to -Xmx.
        os.environ.setdefault("KAFKA_HEAP_OPTS", "-Xms768m -Xmx768m -XX:+AlwaysPreTouch")
        base = self.stack.up()
        self.space = Space(base)
        self.space.create()
        self._cmd("topics", "create")
        self._cmd("store", "migrate")
        slot = os.environ.get("SLOT_PORT_BASE")
        self.ingress_port, dash_port = (
            (int(slot) + 24, int(slot) + 25) if slot else (_free_port(), _free_port())
        )
        env = self.env()
        self.procs = [
            Proc("ingress", ["ingress", "--port", str(self.ingress_port)], env, self.logdir),
            Proc("worker", ["worker", "--loglevel", "warning"], env, self.logdir),
            Proc("dashboard", ["dashboard", "--port", str(dash_port)], env, self.logdir),
        ]
        self.t0 = time.monotonic()
        self.sampler = Sampler(self.cfg.sample_s, self.t0, base["CRM_REDIS_URL"], self.space.dsn)
        for p in self.procs:
            self.sampler.watch(p.name, p.pid)
        if self.stack.mode == "own":
            d = self.stack.stack_dir
            for name, pidfile, kids in (
                ("kafka", d / "kafka/kafka.pid", False),
                ("redis", d / "redis/redis.pid", False),
                ("postgres", d / "postgres/postgres.pid", True),
            ):
                with contextlib.suppress(OSError, ValueError):
                    self.sampler.watch(name, int(pidfile.read_text().split()[0]), with_children=kids)
        self._wait_http(f"http://127.0.0.1:{self.ingress_port}/readyz")
        self._wait_http(f"http://127.0.0.1:{dash_port}/healthz")

    def _wait_http(self, url: str, timeout: float = 120) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                p.check()
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - our http URL
                if resp.status == 200:
                    return
            time.sleep(0.5)
        raise TimeoutError(f"{url} not ready")

    def stop(self) -> None:
        for p in self.procs:
            p.stop()
        with contextlib.suppress(Exception):
            self.space.drop()
        self.stack.down()

    # ------------------------------------------------------------------ traffic
    async def _lag_loop(self, stop: asyncio.Event) -> None:
        from ..ops.lag import consumer_lag
        from ..settings import Settings

        env = self.env()
        values = {k.removeprefix("CRM_").lower(): v for k, v in env.items() if k.startswith("CRM_")}
        settings = Settings(**{k: v for k, v in values.items() if k in Settings.model_fields})
        while not stop.is_set():
            with contextlib.suppress(Exception):
                rows = await asyncio.wait_for(consumer_lag(settings), 10)
                self.lag.append((time.monotonic() - self.t0, sum(r.lag for r in rows)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.cfg.lag_sample_s)

    async def drive(self) -> None:
        import aiohttp
        from aiokafka import AIOKafkaProducer

        from ..topics import Topics

        cfg = self.cfg
        topics = Topics(self.space.tag)
        producer = AIOKafkaProducer(
            bootstrap_servers=self.space.env["CRM_KAFKA_BOOTSTRAP"],
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
        )
        await producer.start()
        url = f"http://127.0.0.1:{self.ingress_port}/v1/channels/jaki/reports"
        headers = {"Authorization": "Bearer soak-jaki-token", "Content-Type": "application/json"}
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        inflight: set[asyncio.Task] = set()
        sem = asyncio.Semaphore(256)
        stop_lag = asyncio.Event()
        lag_task = asyncio.create_task(self._lag_loop(stop_lag))

        async def post(env: dict[str, Any]) -> None:
            body = orjson.dumps(
                {
                    "report_id": env["provider_id"],
                    "text": env["text"],
                    "category": env.get("category_hint"),
                    "lat": env["location"].get("lat"),
                    "lon": env["location"].get("lon"),
                    "account_id": env["contact"]["handle"],
                    "created_at": datetime.now(UTC).isoformat(),
                }
            )
            async with sem:
                for attempt in range(5):
                    try:
                        async with session.post(url, data=body, headers=headers) as resp:
                            data = await resp.read()
                            self.statuses[str(resp.status)] = self.statuses.get(str(resp.status), 0) + 1
                            if resp.status in (200, 201, 202):
                                self.accepted.add(orjson.loads(data)["report_id"])
                                return
                            if resp.status != 503:
                                return
                    except aiohttp.ClientError:
                        self.statuses["client_error"] = self.statuses.get("client_error", 0) + 1
                    await asyncio.sleep(0.5 * 2**attempt)  # as a provider retries after 503

        async def produce(env: dict[str, Any]) -> None:
            async with sem:
                value = stamp(dict(env))
                fut = await producer.send(topics.ingest(env["channel"]), value, key=env["report_id"].encode())
                await fut
                self.accepted.add(env["report_id"])

        def spawn(coro: Any) -> None:
            task = asyncio.create_task(coro)
            inflight.add(task)
            task.add_done_callback(inflight.discard)

        log(
            f"traffic for {cfg.duration_s / 60:.0f} min: mean {cfg.rate:.0f} reports/s over a "
            f"{cfg.day_s / 60:.0f}-min day, bursts of {cfg.burst_x:g}x for {cfg.burst_s:g} s "
            f"every {cfg.hour_s:.0f} s"
        )
        start = time.monotonic()
        self.traffic_start = start - self.t0
        due = 0.0
        last_t, sec_count, last_log = 0.0, 0, 0.0
        tick = 0.05
        try:
            while (t := time.monotonic() - start) < cfg.duration_s:
                due += cfg.rate_at(t) * (t - last_t)
                last_t = t
                while due >= 1:
                    due -= 1
                    env = self.traffic.envelope(flood=cfg.in_burst(t))
                    self._note_text(env, t)
                    self.sent += 1
                    sec_count += 1
                    self.by_channel[env["channel"]] = self.by_channel.get(env["channel"], 0) + 1
                    spawn(post(env) if env["channel"] in HTTP_CHANNELS else produce(env))
                if int(t) != int(t - tick) or t - last_log > 60:
                    self.intake.append((time.monotonic() - self.t0, sec_count))
                    sec_count = 0
                if t - last_log >= 60:
                    last_log = t
                    lag_now = self.lag[-1][1] if self.lag else None
                    log(
                        f"{t / 60:5.1f} min: {self.sent:,} sent, {len(self.accepted):,} accepted, "
                        f"lag {lag_now}"
                    )
                    for p in self.procs:
                        p.check()
                await asyncio.sleep(tick)
            self.traffic_end = time.monotonic() - self.t0
            await asyncio.gather(*inflight, return_exceptions=True)
            log(f"traffic done: {self.sent:,} sent, {len(self.accepted):,} accepted; waiting for the store")
            await self._drain()
        finally:
            stop_lag.set()
            await lag_task
            await session.close()
            await producer.stop()

    def _note_text(self, env: dict[str, Any], t: float) -> None:
        from ..processors.dedup import _WORDS

        rid = env["report_id"]
        who = f"jaki:{env['contact']['handle']}" if env["channel"] == "jaki" else env["reporter"]["id"]
        if who == "anonymous":
            return
        words = " ".join(_WORDS.findall(env["text"].casefold()))
        key = (who, words)
        first = self.first_by_key.get(key)
        if first is not None and first[0] != rid and t - first[1] <= self.window_s + 60:
            self.same_text_of[rid] = first[0]
            return
        if first is None or t - first[1] > self.window_s + 60:
            self.first_by_key[key] = (rid, t)
        if len(self.first_by_key) > 200_000:  # keys older than the window can no longer matter
            self.first_by_key = {k: v for k, v in self.first_by_key.items() if t - v[1] <= self.window_s + 60}

    @property
    def window_s(self) -> float:
        from ..settings import Settings

        return float(Settings.model_fields["dedup_text_window_s"].default)

    async def _drain(self) -> None:
        """Until the lag is 0 and every accepted report is stored (or the count stops moving)."""
        deadline = time.monotonic() + self.cfg.drain_timeout_s
        last, since = -1, time.monotonic()
        async with await psycopg.AsyncConnection.connect(self.space.dsn) as conn:
            while time.monotonic() < deadline:
                row = await (await conn.execute("SELECT count(*) FROM reports")).fetchone()
                n = row[0] if row else 0
                if n != last:
                    last, since = n, time.monotonic()
                lag_now = self.lag[-1][1] if self.lag else None
                if lag_now == 0 and (n >= len(self.accepted) or time.monotonic() - since > 15):
                    break
                await asyncio.sleep(2)
        self.drained_at = time.monotonic() - self.t0
        await asyncio.sleep(max(self.cfg.lag_sample_s * 3, 3))  # a few lag samples at rest

    # ------------------------------------------------------------------ verdict
    def reconcile(self) -> dict[str, Any]:
        with psycopg.connect(self.space.dsn) as conn:
            stored = {r[0] for r in conn.execute("SELECT report_id::text FROM reports")}
            (dupes,) = conn.execute(
                "SELECT count(*) FROM (SELECT channel, provider_id FROM reports "
                "GROUP BY channel, provider_id HAVING count(*) > 1) d"
            ).fetchone()  # type: ignore[misc]
        missing = self.accepted - stored
        # not stored because the same sender sent the same words moments before, and that one is stored
        same_text = {rid for rid in missing if self.same_text_of.get(rid) in stored}
        lost = missing - same_text
        return {
            "sent": self.sent,
            "accepted_unique": len(self.accepted),
            "stored": len(stored),
            "dropped_same_sender_same_text": len(same_text),
            "lost": len(lost),
            "lost_sample": sorted(lost)[:10],
            "unexpected": len(stored - self.accepted),
            "duplicated": int(dupes),
            "http_statuses": self.statuses,
            "sent_by_channel": self.by_channel,
        }

    def analyse(self) -> dict[str, Any]:
        cfg = self.cfg
        warm = self.traffic_start + cfg.warmup * (self.traffic_end - self.traffic_start)
        s = self.sampler
        memory = {}
        for name, ys in s.rss.values.items():
            server = name in ("kafka", "postgres")
            abs_mb, rel = (cfg.server_abs_mb, cfg.server_rel) if server else (cfg.abs_mb, cfg.rel)
            memory[name] = judge_growth(s.rss.t, ys, warm, abs_mb, rel)
            memory[name]["peak_mb"] = round(max((y for y in ys if y is not None), default=0), 1)
        fds = {
            name: judge_open_files(s.fds.t, ys, warm, cfg.hour_s, cfg.fd_abs, cfg.rel)
            for name, ys in s.fds.values.items()
        }
        redis = {}
        used = s.store.values.get("redis_used_mb", [])
        rss = s.store.values.get("redis_rss_mb", [])
        if used:
            du = judge_growth(s.store.t, used, warm, cfg.abs_mb, cfg.rel)
            dr = judge_growth(s.store.t, rss, warm, cfg.abs_mb, cfg.rel)
            redis = {
                "used_memory": du,
                "rss": dr,
                # RSS may grow as much as the data does (dedup keys live 30 days), not more
                "ok": dr.get("growth_over_window", 0) <= du.get("growth_over_window", 0) + cfg.abs_mb,
                "bytes_per_report": self._per_report("redis_used_mb"),
            }
            if "redis" in memory:
                memory["redis"]["ok"] = redis["ok"]
                memory["redis"]["judged_against"] = "used_memory growth (its data)"
        pg = {
            k.removeprefix("pg_"): {
                "end_mb": round(next(x for x in reversed(v) if x is not None), 1),
                "bytes_per_report": self._per_report(k),
            }
            for k, v in s.store.values.items()
            if k.startswith("pg_") and any(x is not None for x in v)
        }
        if "postgres" in memory and s.anon.values.get("postgres"):
            # Its backends' PSS rises as they touch shared buffers, which fill as the tables grow, up to
            # shared_buffers (a cache of configured size, not a leak): the verdict is on their
            # anonymous memory, and the PSS fit is kept beside it.
            pss = memory["postgres"]
            anon = judge_growth(s.anon.t, s.anon.values["postgres"], warm, cfg.server_abs_mb, cfg.server_rel)
            anon["peak_mb"] = pss["peak_mb"]
            anon["pss"] = {k: v for k, v in pss.items() if k != "peak_mb"}
            anon["judged_against"] = (
                "its fitted growth of anonymous memory (RssAnon of postmaster + backends); "
                "PSS with the shared buffers beside it"
            )
            memory["postgres"] = anon

        def threshold(t: float) -> float:  # the steady lag: what ~10 s of intake leaves uncommitted
            return max(100.0, cfg.drained_s * cfg.base_rate(t - self.traffic_start))

        lag_rel = [(t - self.traffic_start, v) for t, v in self.lag]
        bursts = judge_drains(
            [(t + self.traffic_start, v) for t, v in lag_rel],
            [(a + self.traffic_start, b + self.traffic_start) for a, b in cfg.bursts()],
            cfg.hour_s,
            self.traffic_end,
            threshold,
        )
        final_lag = [v for t, v in self.lag if t >= self.drained_at]
        per_min = len(self.accepted) / max(self.traffic_end - self.traffic_start, 1) * 60
        window_min = (1 - cfg.warmup) * (self.traffic_end - self.traffic_start) / 60
        return {
            "memory_mb": memory,
            "open_fds": fds,
            "redis": redis,
            "postgres_sizes": pg,
            "bursts": bursts,
            "final_lag": final_lag[-1] if final_lag else None,
            "leak_floor_bytes_per_report": round(cfg.abs_mb * 2**20 / max(per_min * window_min, 1)),
        }

    def _per_report(self, key: str) -> float | None:
        s = self.sampler.store
        pts = [
            (n, v)
            for n, v in zip(s.values.get("stored_reports", []), s.values.get(key, []), strict=False)
            if n is not None and v is not None
        ]
        if len(pts) < 3 or pts[-1][0] == pts[0][0]:
            return None
        return round(fit_slope([p[0] for p in pts], [p[1] for p in pts]) * 2**20)

    def verdict(self, a: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
        failures = []
        for name, m in a["memory_mb"].items():
            if not m.get("ok"):
                failures.append(f"memory of {name} keeps growing: {m}")
        for name, f in a["open_fds"].items():
            if not f.get("ok"):
                failures.append(f"open fds of {name} keep growing: {f}")
        for b in a["bursts"]:
            if not b["drained"]:
                failures.append(f"lag not back down after the burst at {b['burst_at_s']} s: {b}")
        if not a["bursts"]:
            failures.append("no burst was followed to its end")
        if a["final_lag"] != 0:
            failures.append(f"lag after the traffic stopped: {a['final_lag']}")
        if rec["lost"] or rec["duplicated"] or rec["unexpected"]:
            failures.append(f"reconciliation: {rec['lost']} lost, {rec['duplicated']} duplicated")
        return {"ok": not failures, "failures": failures}

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        self.results = {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **git_commit(),
            "config": {**asdict(cfg), "hourly_profile": HOURLY, "http_channels": HTTP_CHANNELS},
            "channel_mix_per_year": CHANNEL_MIX,
            "machine": {
                "cpus": os.cpu_count(),
                "load_avg_at_start": [round(x, 1) for x in os.getloadavg()],
            },
        }
        try:
            self.start()
            self.sampler.start()
            asyncio.run(self.drive())
            self.sampler.stop()
            rec = self.reconcile()
            analysis = self.analyse()
            self.results.update(
                {
                    "reconciliation": rec,
                    **analysis,
                    "verdict": self.verdict(analysis, rec),
                    "load_avg_at_end": [round(x, 1) for x in os.getloadavg()],
                    "series": {
                        "rss_mb": {"t": self.sampler.rss.t, **self.sampler.rss.values},
                        "open_fds": {"t": self.sampler.fds.t, **self.sampler.fds.values},
                        "store": {"t": self.sampler.store.t, **self.sampler.store.values},
                        "lag": self.lag,
                        "intake_per_s": self.intake,
                    },
                }
            )
        finally:
            with contextlib.suppress(Exception):
                self.sampler.stop()
            self.stop()
        self.write()
        return self.results

    def write(self) -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / "soak-latest.json"
        path.write_bytes(orjson.dumps(self.results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        self.results["json"] = str(path)
        plot = plot_soak(self.results, RESULTS / "soak-latest.png")
        self.results["plot"] = str(plot) if plot else None


def plot_soak(r: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no plot")
        return None
    series = r.get("series") or {}
    cfg = r["config"]
    fig, axes = plt.subplots(4, 1, figsize=(12, 12), sharex=True)
    warm_s = None
    rss = series.get("rss_mb", {})
    ts = [t / 60 for t in rss.get("t", [])]
    ax = axes[0]
    for name, ys in rss.items():
        if name == "t":
            continue
        verdict = r.get("memory_mb", {}).get(name, {})
        label = f"{name} ({verdict.get('slope_per_h', '?')} MB/h{'' if verdict.get('ok') else ', GROWING'})"
        ax.plot(ts, ys, label=label, lw=1)
    if ts:
        warm_s = cfg["warmup"] * ts[-1]
        for a in axes:
            a.axvspan(0, warm_s, color="0.9", zorder=0)
    ax.set_ylabel("memory (MB)")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    ax.set_title("RSS per process (PostgreSQL: PSS of all backends); grey: warm-up, not judged", fontsize=9)

    fds = series.get("open_fds", {})
    for name, ys in fds.items():
        if name != "t":
            axes[1].plot([t / 60 for t in fds["t"]], ys, label=name, lw=1)
    axes[1].set_ylabel("open fds")
    axes[1].legend(fontsize=7, ncol=3, loc="upper left")

    lag = series.get("lag", [])
    ax = axes[2]
    ax.plot([t / 60 for t, _ in lag], [v for _, v in lag], color="tab:red", lw=0.8, label="worker group lag")
    intake = series.get("intake_per_s", [])
    ax2 = ax.twinx()
    ax2.plot(
        [t / 60 for t, _ in intake], [v for _, v in intake], color="tab:gray", lw=0.5, label="sent per s"
    )
    ax2.set_ylabel("reports sent per s", color="tab:gray")
    ax.set_ylabel("lag (reports)")
    ax.legend(fontsize=7, loc="upper left")

    store = series.get("store", {})
    st = [t / 60 for t in store.get("t", [])]
    ax = axes[3]
    for name, ys in store.items():
        if name.startswith("pg_") or name == "redis_used_mb":
            pts = [(t, y) for t, y in zip(st, ys, strict=False) if y is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name.removeprefix("pg_"), lw=1)
    ax.set_ylabel("size (MB)")
    ax.set_xlabel("minutes")
    ax.legend(fontsize=7, ncol=3, loc="upper left")
    rec = r.get("reconciliation", {})
    ok = r.get("verdict", {}).get("ok")
    fig.suptitle(
        f"crm-pipeline soak {r['started_at']} ({(r.get('commit') or '')[:8]}), "
        f"{cfg['duration_s'] / 60:.0f} min: {rec.get('stored', 0):,} stored, {rec.get('lost', '?')} lost, "
        f"{rec.get('duplicated', '?')} duplicated "
        f"- {'PASS' if ok else 'FAIL'}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def slot_ports(environ: Any) -> None:
    """On a developer's slot (.slot.env), the soak's private stack takes ports of that slot."""
    base = environ.get("SLOT_PORT_BASE")
    if base and not environ.get("BENCH_KAFKA_PORT"):
        for i, var in enumerate(("KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "REDIS_PORT", "PG_PORT")):
            environ[f"BENCH_{var}"] = str(int(base) + 20 + i)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.bench.soak", description=__doc__.split("\n")[0])
    ap.add_argument("--duration", default="2h", help="how long the traffic runs (2h, 20m, 300s)")
    ap.add_argument("--rate", type=float, default=SoakConfig.rate, help="mean reports/s over a day")
    ap.add_argument(
        "--day", default=None, help="a compressed day (default: near 24 min, whole days, at least 2)"
    )
    ap.add_argument("--burst-x", type=float, default=SoakConfig.burst_x)
    ap.add_argument("--burst-share", type=float, default=SoakConfig.burst_share, help="of each hour")
    ap.add_argument("--stack", choices=("own", "external"), default="own")
    args = ap.parse_args(argv)
    slot_ports(os.environ)
    cfg = config_for(
        parse_duration(args.duration),
        rate=args.rate,
        day_s=parse_duration(args.day) if args.day else None,
        burst_x=args.burst_x,
        burst_share=args.burst_share,
    )
    r = Soak(cfg, BenchStack(mode=args.stack, stack_dir=ROOT / ".stack" / "soak")).run()
    print(summary(r), file=sys.stderr)
    return 0 if r["verdict"]["ok"] else 1


def summary(r: dict[str, Any]) -> str:
    rec = r["reconciliation"]
    lines = [
        f"soak: {rec['sent']:,} sent, {rec['accepted_unique']:,} accepted, {rec['stored']:,} stored "
        f"({rec['dropped_same_sender_same_text']} dropped as the same sender's same text), "
        f"{rec['lost']} lost, {rec['duplicated']} duplicated; final lag {r['final_lag']}",
        "memory after warm-up (fitted growth over the window / bound, MB):",
    ]
    for name, m in r["memory_mb"].items():
        lines.append(
            f"  {name:10} peak {m.get('peak_mb', 0):8.1f}  slope {m.get('slope_per_h', '?'):>8} MB/h  "
            f"growth {m.get('growth_over_window', '?'):>8} / {m.get('bound', '?'):>7}  "
            f"{'ok' if m.get('ok') else 'GROWING'}"
        )
    drained = sum(b["drained"] for b in r["bursts"])
    lines.append(f"bursts: {drained}/{len(r['bursts'])} drained before the next one")
    lines.append(f"a leak this run catches: >= {r['leak_floor_bytes_per_report']} bytes per report")
    lines += [f"FAIL: {f}" for f in r["verdict"]["failures"]] or ["PASS"]
    lines.append(f"results: {r.get('json')}  plot: {r.get('plot')}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
