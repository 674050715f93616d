"""``crm-pipeline bench``: the phases of issue #5, the JSON results, the plot and the table.

Phases (in this order, on one broker):

1. ``baseline``   raw aiokafka pass-through over a preloaded topic of envelopes (``--repeat`` runs)
   ``stages``     CPU µs per report of each worker stage, in-process (no Kafka): where the time goes
2. ``throughput`` backlog of ``--drain-n`` envelopes produced at once onto the ingest topics, drained by
                  one worker with every processor on; rate = rows committed in the CRM store per second
                  between the 10th and the 90th percentile of commit times (``--repeat`` runs, median)
3. ``fixed``      paced load of ``--fixed-rps`` (1,000) for ``--fixed-s``, ``--repeat`` times; end-to-end
                  latency of every row, each percentile the median of the runs
4. ``burst``      flood day: base rate, then 10x for ``--burst-s`` in a few kelurahan, then base again;
                  latency during the burst and catch-up time after it
5. ``ingress``    ``--ingress-requests`` JAKI POSTs through the HTTP ingress (aiohttp client, bounded
                  concurrency): accept latency, then end-to-end
6. ``scale-out``  the throughput phase again with 2 workers (partitions >= workers)
7. ``triage``     ``--triage-rows`` historical reports (CSV generated in a temp dir) through
                  ``crm-pipeline triage``

End-to-end latency of a row = its commit time in PostgreSQL (``pg_xact_commit_timestamp(xmin)``; the
private stack turns ``track_commit_timestamp`` on; otherwise the ``stored_at`` column, which is the
transaction's start) minus ``received_at`` (stamped when the envelope was produced onto its ingest
topic, or by the ingress adapter for HTTP reports).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import psutil
import psycopg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from tqdm import tqdm

from . import profile as pyspy
from . import rivals
from .budget import cpu_budget
from .monitor import Monitor
from .procs import Proc, Window
from .stack import ROOT, BenchStack, Space, log
from .traffic import CHANNEL_MIX, HISTORY_PER_DAY, Traffic, stamp

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..settings import Settings

TARGETS = {
    "throughput_rps": 5000,
    "ratio": 0.15,
    "p99_ms": 1000,
    "catch_up_s": 30,
    "triage_rps": 5000,
    "worker_rss_mb": 400,
}
#: issue #19: the cost per report on these two cores, against the framework's floor and a peer
TARGETS_19 = {
    "pipeline_us_per_report": 450,
    "throughput_rps": 3000,
    "faust_floor_ratio": 0.7,
    "quix_peer_ratio": 1.0,
    "p99_ms": 300,
    "triage_rps": 12000,
    "worker_rss_mb": 300,
    "duration_s": 900,  # a whole `make bench` within 15 minutes
}

#: issue #17: the surge worker's CPU per report against the triage workers'
TARGETS_17 = {"surge_share_of_workers": 0.10}


@dataclass
class Config:
    quick: bool = False
    repeat: int = 3
    drain_n: int = 30_000
    fixed_rps: int = 1000
    fixed_s: float = 20  # per run; the phase runs `repeat` times
    burst_base_rps: int = 300
    burst_s: float = 10
    burst_pre_s: float = 10
    burst_post_s: float = 20
    ingress_requests: int = 5000
    ingress_concurrency: int = 32
    baseline_n: int = 200_000
    #: records of each Faust floor run, the first of the baseline's topic (the floor is ~20x slower)
    floor_n: int = 50_000
    triage_rows: int = 300_000  # ~21 months at the real volume; from 300k to 1M rows the rate is flat
    partitions: int = 6
    max_workers: int = 2
    profile_s: int = 15
    profile_of: str = "worker"  # or "surge"
    stack: str = "own"
    phases: str = "all"
    out_dir: str = str(ROOT / "bench" / "results")
    settle_timeout_s: float = 180
    #: run the surge worker beside the triage workers (issue #17's cost; --no-surge leaves it out)
    surge: bool = True
    #: reports whose cases are open when a latency phase starts (None: 60 days at the real volume)
    open_reports: int | None = None

    @property
    def results_name(self) -> str:
        """``latest.json`` is a whole run only; a subset of phases writes ``partial.json``."""
        return "latest.json" if self.phases == "all" else "partial.json"

    def wants(self, phase: str) -> bool:
        return self.phases == "all" or phase in {p.strip() for p in self.phases.split(",")}

    @classmethod
    def quick_preset(cls) -> dict[str, Any]:
        return {
            "quick": True,
            "repeat": 1,
            "drain_n": 5000,
            "fixed_s": 10,
            "burst_base_rps": 100,
            "burst_s": 5,
            "burst_pre_s": 5,
            "burst_post_s": 5,
            "ingress_requests": 1000,
            "baseline_n": 50_000,
            "floor_n": 10_000,
            "triage_rows": 50_000,
            "profile_s": 5,
            "open_reports": 3000,
        }


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return round(s[k], 1)


def summary_ms(values: list[float]) -> dict[str, Any]:
    return {
        "p50": pct(values, 50),
        "p95": pct(values, 95),
        "p99": pct(values, 99),
        "max": round(max(values), 1) if values else None,
        "n": len(values),
    }


def git_commit() -> dict[str, Any]:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", "pipeline"))}


class Bench:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        # The processes' logs of the latest run, beside its results (not committed).
        self.logdir = self.out / "logs"
        shutil.rmtree(self.logdir, ignore_errors=True)
        self.logdir.mkdir()
        self.stack = BenchStack(mode=cfg.stack)
        self.monitor = Monitor()
        self.procs: list[Proc] = []
        self.workers: list[Proc] = []
        self.surge: Proc | None = None
        self.ingress: Proc | None = None
        self.windows: list[Window] = []
        self.results: dict[str, Any] = {}
        self.traffic = Traffic(seed=5, run_tag=uuid.uuid4().hex[:6])
        self.started = time.time()
        self.commit_expr = "stored_at"
        self.seen_ids: set[str] = set()  # a redelivery of an earlier window's report is stored there

    def expect(self, w: Window, report_id: str) -> None:
        w.sent += 1
        if report_id not in self.seen_ids:
            self.seen_ids.add(report_id)
            w.unique.add(report_id)

    # ------------------------------------------------------------------ plumbing
    def env(self, **extra: str) -> dict[str, str]:
        return {**self.space.env, "CRM_TOPIC_PARTITIONS": str(self.cfg.partitions), **extra}

    def pipeline_cmd(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "pipeline", *args],
            env={**os.environ, **self.env()},
            check=True,
            capture_output=True,
            cwd=ROOT,
        )

    async def producer(self) -> AIOKafkaProducer:
        p = AIOKafkaProducer(
            bootstrap_servers=self.space.env["CRM_KAFKA_BOOTSTRAP"],
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_batch_size=256 * 1024,
        )
        await p.start()
        return p

    async def db(self) -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(self.space.dsn, autocommit=True)

    async def count_in(self, conn: psycopg.AsyncConnection, w: Window) -> int:
        t1 = w.t1 or datetime.now(UTC)
        cur = await conn.execute(
            "SELECT count(*) FROM reports WHERE received_at >= %s AND received_at <= %s", (w.t0, t1)
        )
        return (await cur.fetchone())[0]  # type: ignore[index]

    async def rows_in(self, conn: psycopg.AsyncConnection, w: Window) -> list[tuple[float, float]]:
        """(received epoch, committed epoch) of every row of a window."""
        cur = await conn.execute(
            f"SELECT extract(epoch from received_at)::float8, extract(epoch from {self.commit_expr})::float8 "  # noqa: S608
            "FROM reports WHERE received_at >= %s AND received_at <= %s",
            (w.t0, w.t1),
        )
        return list(await cur.fetchall())

    async def wait_stored(self, w: Window, label: str) -> int:
        """Until every unique report of the window is stored (or nothing moved for 15 s)."""
        expected = len(w.unique)
        conn = await self.db()
        last, last_change = -1, time.monotonic()
        deadline = time.monotonic() + self.cfg.settle_timeout_s
        bar = tqdm(total=expected, desc=f"{label:<12}", unit="rep", leave=False, dynamic_ncols=True)
        try:
            while True:
                n = await self.count_in(conn, w)
                bar.update(n - bar.n)
                if n != last:
                    last, last_change = n, time.monotonic()
                if n >= expected:
                    return n
                stalled = time.monotonic() - last_change
                # A worker commits only what it has stored, so no lag means nothing more is coming:
                # the rest were repeats dedup dropped. (Waiting 3 s for that was a minute a bench.)
                if stalled > 1 and await self.lag() == 0:
                    n = await self.count_in(conn, w)  # what was stored while the lag was read
                    bar.update(n - bar.n)
                    tqdm.write(f"[bench] {label}: {n}/{expected} stored and no lag: rest dropped as dups")
                    return n
                if stalled > 30 or time.monotonic() > deadline:
                    tqdm.write(f"[bench] {label}: {n}/{expected} stored; giving up waiting")
                    return n
                for p in self.workers:
                    p.check()
                await asyncio.sleep(0.5)
        finally:
            bar.close()
            await conn.close()

    def settings(self) -> Settings:
        """The settings the run's pipeline processes get from :meth:`env`."""
        from ..settings import Settings

        values = {k.removeprefix("CRM_").lower(): v for k, v in self.env().items() if k.startswith("CRM_")}
        return Settings(**values)  # unknown keys are ignored

    async def lag(self) -> int:
        from ..ops.lag import consumer_lag

        try:
            return sum(r.lag for r in await consumer_lag(self.settings()))
        except Exception:
            return -1

    async def send_backlog(self, w: Window, n: int, flood: bool = False) -> None:
        prod = await self.producer()
        try:
            futs = []
            for _ in range(n):
                env = self.traffic.envelope(flood)
                topic = f"{self.space.tag}.ingest.{env['channel']}.v1"
                futs.append(await prod.send(topic, stamp(env), key=env["report_id"].encode()))
                self.expect(w, env["report_id"])
            await asyncio.gather(*futs)
        finally:
            await prod.stop()

    async def send_paced(
        self, w: Window, schedule: list[tuple[float, int, bool]]
    ) -> list[tuple[str, float, float]]:
        """Send at ``rps`` for ``seconds`` per step of the schedule; returns the wall-clock spans."""
        prod = await self.producer()
        spans = []
        try:
            pending: list[asyncio.Future] = []
            for seconds, rps, flood in schedule:
                t0 = time.monotonic()
                start_wall = time.time()
                sent = 0
                while (el := time.monotonic() - t0) < seconds:
                    due = int(rps * el) - sent
                    for _ in range(due):
                        env = self.traffic.envelope(flood)
                        topic = f"{self.space.tag}.ingest.{env['channel']}.v1"
                        pending.append(await prod.send(topic, stamp(env), key=env["report_id"].encode()))
                        self.expect(w, env["report_id"])
                    sent += max(due, 0)
                    if len(pending) > 2000:
                        await asyncio.gather(*pending)
                        pending.clear()
                    await asyncio.sleep(0.005)
                spans.append((f"{rps}/s{' flood' if flood else ''}", start_wall, time.time()))
            await asyncio.gather(*pending)
        finally:
            await prod.stop()
        return spans

    # ------------------------------------------------------------------ phases
    async def phase_baseline(self) -> None:
        cfg = self.cfg
        src, dst = f"{self.space.tag}.bench.baseline-in", f"{self.space.tag}.bench.baseline-out"
        admin = AIOKafkaAdminClient(bootstrap_servers=self.space.env["CRM_KAFKA_BOOTSTRAP"])
        await admin.start()
        try:
            await admin.create_topics([NewTopic(t, cfg.partitions, 1) for t in (src, dst)])
        finally:
            await admin.close()
        prod = await self.producer()
        gen = Traffic(seed=11, run_tag="base")
        try:
            futs = []
            for _ in tqdm(range(cfg.baseline_n), desc="baseline load", unit="rec", leave=False):
                env = gen.envelope()
                futs.append(await prod.send(src, stamp(env), key=env["report_id"].encode()))
                if len(futs) >= 5000:
                    await asyncio.gather(*futs)
                    futs.clear()
            await asyncio.gather(*futs)
        finally:
            await prod.stop()
        runs = []
        for i in range(cfg.repeat if cfg.wants("baseline") else 0):
            p = subprocess.Popen(  # noqa: ASYNC220 - waited for in a thread
                [
                    sys.executable,
                    "-m",
                    "pipeline.bench.baseline",
                    self.space.env["CRM_KAFKA_BOOTSTRAP"],
                    src,
                    dst,
                    f"{self.space.tag}-baseline-{i}",
                    str(cfg.baseline_n),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=ROOT,
            )
            self.monitor.watch("baseline", p.pid)  # for its peak RSS; it reports its own CPU
            out, err = await asyncio.to_thread(p.communicate)
            if p.returncode != 0:
                raise RuntimeError(f"baseline failed: {err.decode()[-2000:]}")
            r = orjson.loads(out.splitlines()[-1])
            runs.append(r)
            tqdm.write(f"[bench] baseline run {i + 1}/{cfg.repeat}: {r['rps']:,.0f} records/s")
        if runs:
            self.results["baseline_runs"] = runs
            self.results["baseline_rps"] = round(statistics.median(r["rps"] for r in runs), 1)
        floors = self.results.setdefault("floors", {"aiokafka_rps": self.results.get("baseline_rps")})
        if cfg.wants("floor"):  # issue #19: the same records through a bare Faust agent
            floors.update(await rivals.faust_floor(self, src, dst))

    async def start_workers(self, count: int) -> None:
        while len(self.workers) < count:
            i = len(self.workers) + 1
            p = Proc(f"worker{i}", ["worker", "--loglevel", "warning"], self.env(), self.logdir)
            self.workers.append(p)
            self.procs.append(p)
            self.monitor.watch(f"worker{i}", p.pid)
        await self.wait_group(count)
        # Warm-up: a few reports through every stage before anything is measured.
        w = Window(f"warmup{count}", datetime.now(UTC))
        await self.send_backlog(w, 200)
        w.t1 = datetime.now(UTC)
        await self.wait_stored(w, f"warm-up {count}w")

    async def start_surge(self) -> None:
        """Issue #17: the surge worker runs beside the triage workers as in a deployment, so the
        drains measure its CPU per report with theirs (its share of the workers' is the target)."""
        p = Proc("surge", ["surge", "run", "--loglevel", "warning"], self.env(), self.logdir)
        self.procs.append(p)
        self.surge = p
        self.monitor.watch("surge", p.pid)
        await self.surge_caught_up("warm-up", limit_s=120)

    async def surge_lag(self) -> int:
        from ..ops.lag import consumer_lag
        from ..topics import Topics

        s = self.settings()
        try:
            rows = await consumer_lag(s, f"{s.worker_app_id}-surge", [Topics(s.topic_namespace).surge_hits])
        except Exception:
            return -1
        # A partition the group has not committed yet counts in full: the worker has not caught up.
        return sum(r.lag for r in rows) if rows else -1

    async def surge_caught_up(self, label: str, limit_s: float = 60) -> None:
        """Wait until the surge worker has consumed every hit the drain produced, so its CPU for
        them falls inside the drain's window (it trails the store by its commit interval)."""
        if self.surge is None:
            return
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            self.surge.check()
            if await self.surge_lag() == 0:
                return
            await asyncio.sleep(1)
        log(f"{label}: surge worker still behind after {limit_s:.0f}s; its CPU figure is a floor")

    async def wait_group(self, members: int, limit_s: float = 120) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.space.env["CRM_KAFKA_BOOTSTRAP"])
        await admin.start()
        group = self.space.env["CRM_WORKER_APP_ID"]
        try:
            deadline = time.monotonic() + limit_s
            while time.monotonic() < deadline:
                for p in self.workers:
                    p.check()
                with contextlib.suppress(Exception):
                    desc = await admin.describe_consumer_groups([group])
                    g = desc[0]
                    groups = getattr(g, "groups", None) or []
                    for grp in groups:
                        state, n = grp[2], len(grp[5])
                        if state == "Stable" and n >= members:
                            return
                await asyncio.sleep(1)
            log(f"consumer group {group} did not reach {members} stable members in {limit_s:.0f}s; going on")
        finally:
            await admin.close()

    async def drain(self, label: str, profile_pid: int | None = None) -> dict[str, Any]:
        """Rows/s while a backlog drains. Each run starts from the case store a live deployment
        holds, as the latency runs do: a backlog leaves its cases open, and the next run's grouping
        then had twice as many to search (run #1 was the fastest of three every time)."""
        cfg = self.cfg
        open_reports = await self.open_cases_as_live(label)
        await self.surge_caught_up(f"{label} open cases", limit_s=180)  # their hits are not this drain's
        w = Window(label, datetime.now(UTC))
        self.windows.append(w)
        self.monitor.begin(label)
        await self.send_backlog(w, cfg.drain_n)
        w.t1 = datetime.now(UTC)
        spy = None
        if profile_pid is not None:
            raw = self.out / f"{self.cfg.profile_of}-profile.txt"
            spy = pyspy.start(profile_pid, cfg.profile_s, raw)
            if spy is None:
                log("py-spy not found: no profile")
        stored = await self.wait_stored(w, label)
        await self.surge_caught_up(label)
        cpu = self.monitor.end(label)
        if spy is not None:
            await asyncio.to_thread(spy.wait)
            if spy.returncode == 0:
                self.results["profile"] = pyspy.summarise(raw)
                self.results["profile"]["process"] = self.cfg.profile_of
            else:
                log(f"py-spy failed: {spy.stderr.read().decode()[-500:] if spy.stderr else ''}")
        conn = await self.db()
        try:
            rows = await self.rows_in(conn, w)
        finally:
            await conn.close()
        commits = sorted(c for _, c in rows)
        rate = 0.0
        if len(commits) >= 20:
            lo, hi = int(0.1 * len(commits)), int(0.9 * len(commits)) - 1
            span = commits[hi] - commits[lo]
            rate = (hi - lo) / span if span > 0 else 0.0
        if rate == 0.0 and commits:  # a backlog small enough for one or two transactions: whole window
            span = commits[-1] - w.t0.timestamp()
            rate = len(commits) / span if span > 0 else 0.0
        out = {
            "sent": w.sent,
            "unique": len(w.unique),
            "stored": stored,
            "rows_per_s": round(rate, 1),
            "ingest_per_s": round(rate * w.sent / max(stored, 1), 1),
            "drain_s": round(commits[-1] - commits[0], 2) if commits else None,
            "open_reports_before": open_reports,
            "cpu": cpu,
        }
        tqdm.write(
            f"[bench] {label}: {out['rows_per_s']:,.0f} rows/s committed "
            f"({out['ingest_per_s']:,.0f} ingest records/s), {stored}/{len(w.unique)} stored"
        )
        return out

    async def phase_throughput(self, workers: int) -> None:
        runs = []
        for i in range(self.cfg.repeat):  # the median: a single 2-worker drain moved by a third between runs
            last = i == self.cfg.repeat - 1  # profile the last run: a worker that has been busy a while
            proc = self.surge if self.cfg.profile_of == "surge" else self.workers[0]
            pid = (
                proc.pid if (proc is not None and workers == 1 and last and self.cfg.profile_s > 0) else None
            )
            runs.append(await self.drain(f"drain {workers}w #{i + 1}", profile_pid=pid))
        med = round(statistics.median(r["rows_per_s"] for r in runs), 1)
        self.results.setdefault("scale_out", {})[str(workers)] = {"throughput_rps": med, "runs": runs}
        if workers == 1:
            self.results["throughput_rps"] = med
            self.results["ingest_rps"] = round(statistics.median(r["ingest_per_s"] for r in runs), 1)
            self.results["throughput_runs"] = runs

    async def latency_of(
        self, w: Window, t_from: float | None = None, t_to: float | None = None
    ) -> list[float]:
        conn = await self.db()
        try:
            rows = await self.rows_in(conn, w)
        finally:
            await conn.close()
        return [
            (c - r) * 1000 for r, c in rows if (t_from is None or r >= t_from) and (t_to is None or r <= t_to)
        ]

    async def redis_aof_rewrites(self) -> int | None:
        """Append-only-file rewrites Redis has started so far (None when it cannot say). A latency
        run with a rewrite in it has about twice the p99 of one without on a shared host (each run
        records how many it saw; docs/runbook.md, "Scaling out")."""
        import redis.asyncio as aioredis

        r = aioredis.from_url(self.space.env["CRM_REDIS_URL"])
        try:
            info = await r.info("persistence")
            return int(info["aof_rewrites"]) + int(info.get("aof_rewrite_in_progress", 0))
        except (aioredis.RedisError, OSError, KeyError, ValueError):
            return None
        finally:
            await r.aclose()

    async def open_cases_as_live(self, label: str) -> int:
        """The case store as a live deployment holds it: the open cases of the grouping window at the
        real CRM's volume (60 days × ~470 reports), not the hundred thousand reports the earlier
        phases left open at one moment. Grouping costs grow with the open cases (more case reads and
        decodes per report), so without this the latency phase measured a city three times as busy.
        Returns the reports the store was filled with."""
        import redis.asyncio as aioredis

        r = aioredis.from_url(self.space.env["CRM_REDIS_URL"])
        try:
            keys: list[bytes] = []
            async for key in r.scan_iter(match=f"{self.space.tag}:case:*", count=5000):
                keys.append(key)
                if len(keys) >= 5000:
                    await r.unlink(*keys)
                    keys.clear()
            if keys:
                await r.unlink(*keys)
        finally:
            await r.aclose()
        n = self.cfg.open_reports if self.cfg.open_reports is not None else round(60 * HISTORY_PER_DAY)
        if n > 0:
            w = Window(f"{label} open cases", datetime.now(UTC))
            await self.send_backlog(w, n)
            w.t1 = datetime.now(UTC)
            await self.wait_stored(w, w.name)
        return n

    async def phase_fixed(self, workers: int = 1) -> None:
        """The offered load for ``fixed_s`` seconds, ``repeat`` times: each percentile is the median of
        the runs (one run's p99 moved by a third from run to run on the 2-core machine)."""
        cfg = self.cfg
        label = "fixed" if workers == 1 else f"fixed {workers}w"
        open_reports = await self.open_cases_as_live(label)
        self.monitor.begin(label)
        runs = []
        for i in range(cfg.repeat):
            name = label if cfg.repeat == 1 else f"{label} #{i + 1}"
            w = Window(name, datetime.now(UTC))
            self.windows.append(w)
            rewrites = await self.redis_aof_rewrites()
            spans = await self.send_paced(w, [(cfg.fixed_s, cfg.fixed_rps, False)])
            w.t1 = datetime.now(UTC)
            await self.wait_stored(w, name)
            run = summary_ms(await self.latency_of(w))
            run["achieved_offered_rps"] = round(w.sent / (spans[0][2] - spans[0][1]), 1)
            after = await self.redis_aof_rewrites()
            run["redis_aof_rewrites"] = after - rewrites if None not in (after, rewrites) else None
            runs.append(run)
            self.spans = getattr(self, "spans", []) + [(name, s[1], s[2]) for s in spans]
            tqdm.write(
                f"[bench] {name} {cfg.fixed_rps}/s: p50 {run['p50']} ms, p99 {run['p99']} ms "
                f"(Redis AOF rewrites during the run: {run['redis_aof_rewrites']})"
            )
        cpu = self.monitor.end(label)
        result: dict[str, Any] = {
            k: statistics.median(r[k] for r in runs if r[k] is not None)
            if any(r[k] is not None for r in runs)
            else None
            for k in ("p50", "p95", "p99", "max")
        }
        result.update(
            {
                "n": sum(r["n"] for r in runs),
                "runs": runs,
                "offered_rps": cfg.fixed_rps,
                "achieved_offered_rps": statistics.median(r["achieved_offered_rps"] for r in runs),
                "seconds": cfg.fixed_s,
                "workers": workers,
                "open_reports_before": open_reports,
            }
        )
        if workers == 1:
            self.results["latency_ms"] = result
        else:  # the same load on the scale-out deployment (one worker per core)
            self.results.setdefault("scale_out", {}).setdefault(str(workers), {})["latency_ms"] = result
        self.results.setdefault("cpu", {})[label] = cpu
        tqdm.write(
            f"[bench] {label} {cfg.fixed_rps}/s, median of {len(runs)} runs: "
            f"p50 {result['p50']} ms, p99 {result['p99']} ms"
        )

    async def phase_burst(self) -> None:
        cfg = self.cfg
        base = cfg.burst_base_rps
        w = Window("burst", datetime.now(UTC))
        self.windows.append(w)
        self.monitor.begin("burst")
        spans = await self.send_paced(
            w,
            [(cfg.burst_pre_s, base, False), (cfg.burst_s, base * 10, True), (cfg.burst_post_s, base, False)],
        )
        w.t1 = datetime.now(UTC)
        await self.wait_stored(w, "flood burst")
        cpu = self.monitor.end("burst")
        b0, b1 = spans[1][1], spans[1][2]
        conn = await self.db()
        try:
            rows = await self.rows_in(conn, w)
        finally:
            await conn.close()
        during = [(c - r) * 1000 for r, c in rows if b0 <= r <= b1]
        before_end = [c for r, c in rows if r <= b1]
        catch_up = max(before_end) - b1 if before_end else None
        # Backlog over time: rows received so far minus rows committed so far, per 0.5 s.
        recv = sorted(r for r, _ in rows)
        comm = sorted(c for _, c in rows)
        max_lag, t = 0, b0
        import bisect

        while t <= (comm[-1] if comm else b1):
            max_lag = max(max_lag, bisect.bisect_right(recv, t) - bisect.bisect_right(comm, t))
            t += 0.5
        self.results["burst"] = {
            "base_rps": base,
            "burst_rps": base * 10,
            "burst_s": cfg.burst_s,
            "flood_kelurahan": "few (see pipeline/bench/traffic.py FLOOD_KELURAHAN)",
            "latency_ms_during_burst": summary_ms(during),
            "latency_ms_whole_phase": summary_ms([(c - r) * 1000 for r, c in rows]),
            "catch_up_s": round(catch_up, 2) if catch_up is not None else None,
            "max_backlog": max_lag,
            "cpu": cpu,
        }
        self.spans = getattr(self, "spans", []) + [(f"burst {s[0]}", s[1], s[2]) for s in spans]
        tqdm.write(
            f"[bench] burst {base}->{base * 10}/s: "
            f"p99 during {self.results['burst']['latency_ms_during_burst']['p99']}"
            f" ms, caught up {self.results['burst']['catch_up_s']} s after the burst"
        )

    async def phase_ingress(self) -> None:
        import aiohttp

        cfg = self.cfg
        assert self.ingress is not None
        url = f"{self.ingress_url}/v1/channels/jaki/reports"
        headers = {"Authorization": "Bearer dev-only-jaki-token", "Content-Type": "application/json"}
        bodies = [orjson.dumps(self.traffic.jaki_request()) for _ in range(cfg.ingress_requests)]
        lat: list[float] = []
        statuses: dict[str, int] = {}
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for b in bodies:
            queue.put_nowait(b)
        w = Window("ingress", datetime.now(UTC))
        self.windows.append(w)
        self.monitor.begin("ingress")
        bar = tqdm(total=len(bodies), desc="ingress POST", unit="req", leave=False)

        async def client(session: aiohttp.ClientSession) -> None:
            while not queue.empty():
                body = queue.get_nowait()
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    data = await resp.read()
                lat.append((time.perf_counter() - t0) * 1000)
                statuses[str(resp.status)] = statuses.get(str(resp.status), 0) + 1
                if resp.status == 202:
                    self.expect(w, orjson.loads(data)["report_id"])
                bar.update(1)

        t0 = time.perf_counter()
        conn = aiohttp.TCPConnector(limit=cfg.ingress_concurrency)
        async with aiohttp.ClientSession(connector=conn) as session:
            await asyncio.gather(*(client(session) for _ in range(cfg.ingress_concurrency)))
        took = time.perf_counter() - t0
        bar.close()
        w.t1 = datetime.now(UTC)
        await self.wait_stored(w, "ingress e2e")
        cpu = self.monitor.end("ingress")
        e2e = await self.latency_of(w)
        self.results["ingress"] = {
            "channel": "jaki",
            "requests": len(bodies),
            "concurrency": cfg.ingress_concurrency,
            "requests_per_s": round(len(bodies) / took, 1),
            "accept_latency_ms": summary_ms(lat),
            "status_counts": statuses,
            "e2e_latency_ms": summary_ms(e2e),
            "cpu": cpu,
        }
        tqdm.write(f"[bench] ingress: {len(bodies) / took:,.0f} req/s, accept p99 {pct(lat, 99)} ms")

    def phase_stages(self) -> None:
        from .stages import measure

        r = asyncio.run(measure(self.settings(), batches=4 if self.cfg.quick else 20))
        self.results["stages"] = r
        parts = ", ".join(f"{k} {v}" for k, v in r["us_per_report"].items())
        tqdm.write(f"[bench] CPU per report (µs): {parts}; total {r['total_us_per_report']}")

    def phase_triage(self) -> None:
        cfg = self.cfg
        with tempfile.TemporaryDirectory(prefix="crm-bench-triage-") as tmp:
            path = Path(tmp) / "history.csv"
            gen = Traffic(seed=7, run_tag="hist")
            with path.open("w", newline="", encoding="utf-8") as fh:
                wr = csv.writer(fh)
                wr.writerow(["report_id", "description", "location", "created_at"])
                for i in tqdm(
                    range(cfg.triage_rows), desc="history CSV", unit="row", leave=False, mininterval=1
                ):
                    wr.writerow(gen.csv_row(i))
            self.monitor.begin("triage")
            p = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pipeline",
                    "triage",
                    str(path),
                    "--id-column",
                    "report_id",
                    "--text-column",
                    "description",
                    "--location-column",
                    "location",
                    "--time-column",
                    "created_at",
                    "--out",
                    str(Path(tmp) / "o.jsonl"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            self.monitor.watch("triage_offline", p.pid)
            bar = tqdm(total=cfg.triage_rows, desc="offline triage", unit="rep", leave=False)
            out_path = Path(tmp) / "o.jsonl"
            while p.poll() is None:
                time.sleep(1)
                with contextlib.suppress(OSError):
                    # ~bytes per output line, good enough for a progress bar
                    bar.update(min(cfg.triage_rows, out_path.stat().st_size // 330) - bar.n)
            bar.close()
            err = p.stderr.read() if p.stderr else ""
            cpu = self.monitor.end("triage")
            m = re.search(r"triaged (\d+) reports in ([\d.]+)s \(([\d,]+)/s; ([\d,]+)/s of CPU", err)
            if p.returncode != 0 or not m:
                raise RuntimeError(f"offline triage failed ({p.returncode}): {err[-2000:]}")
            self.results["offline_triage"] = {
                "rows": int(m.group(1)),
                "seconds": float(m.group(2)),
                "rps": float(m.group(3).replace(",", "")),
                "cpu_rps": float(m.group(4).replace(",", "")),
                "cpu": cpu.get("triage_offline"),
            }
            tqdm.write(f"[bench] offline triage: {self.results['offline_triage']['rps']:,.0f} reports/s")

    # ------------------------------------------------------------------ orchestration
    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Wall seconds of a phase in ``phase_s``: where a run's minutes go (issue #19 wants 15)."""
        t = time.monotonic()
        try:
            yield
        finally:
            spent = self.results.setdefault("phase_s", {})
            spent[phase] = round(spent.get(phase, 0.0) + time.monotonic() - t, 1)

    async def pipeline_phases(self) -> None:
        cfg = self.cfg
        if not any(cfg.wants(p) for p in ("throughput", "peer", "fixed", "burst", "ingress", "scale-out")):
            return
        from .stack import log as _log

        port = _free_port()
        self.ingress_url = f"http://127.0.0.1:{port}"
        self.ingress = Proc("ingress", ["ingress", "--port", str(port)], self.env(), self.logdir)
        self.procs.append(self.ingress)
        self.monitor.watch("ingress", self.ingress.pid)
        with self.timed("pipeline start"):
            await self.start_workers(1)
            if cfg.surge:
                await self.start_surge()
        _log(f"pipeline up: ingress + 1 worker{' + surge worker' if cfg.surge else ''}")
        if cfg.wants("throughput"):
            with self.timed("throughput"):
                await self.phase_throughput(1)
        if cfg.wants("peer"):  # issue #19: the same drains on Quix Streams, right after ours
            with self.timed("peer"):
                self.results["peer"] = await rivals.quix_peer(self)
        if cfg.wants("fixed"):
            with self.timed("fixed"):
                await self.phase_fixed()
        if cfg.wants("burst"):
            with self.timed("burst"):
                await self.phase_burst()
        if cfg.wants("ingress"):
            with self.timed("ingress"):
                await self.phase_ingress()
        if cfg.max_workers >= 2 and cfg.wants("scale-out"):
            with self.timed("scale-out"):
                await self.start_workers(2)
                await self.phase_throughput(2)
                await self.phase_fixed(workers=2)

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        self.results.update({"started_at": datetime.now(UTC).isoformat(timespec="seconds"), **git_commit()})
        self.results["machine"] = {
            "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "platform": platform.platform(),
        }
        self.results["config"] = asdict(cfg)
        self.results["traffic"] = {
            "channel_mix_per_year": CHANNEL_MIX,
            "redelivery_rate": 0.05,
            "repeat_rate": 0.10,
        }
        self.monitor.watch("bench_driver", os.getpid())
        self.monitor.start()
        try:
            with self.timed("stack"):
                base_env = self.stack.up()
                self.space = Space(base_env)
                self._watch_stack()
                self.space.create()
                self.pipeline_cmd("topics", "create")
                self.pipeline_cmd("store", "migrate")
                self._commit_expr()
            log(f"namespace {self.space.tag}: topics ({cfg.partitions} partitions) and database ready")
            if cfg.wants("baseline") or cfg.wants("floor"):
                with self.timed("baseline and floor"):
                    asyncio.run(self.phase_baseline())
            if cfg.wants("stages"):
                with self.timed("stages"):
                    self.phase_stages()
            asyncio.run(self.pipeline_phases())
            self.all_rows = asyncio.run(self._all_rows())
            for p in self.procs:
                p.stop()
            self.procs.clear()
            if cfg.triage_rows > 0 and cfg.wants("triage"):
                with self.timed("triage"):
                    self.phase_triage()
        finally:
            for p in self.procs:
                p.stop()
            self.results["peak_rss_mb"] = self.monitor.peaks()
            self.monitor.stop()
            if hasattr(self, "space"):
                self.space.drop()
                self.space.drop_topics()
            self.stack.down()
        self.finish()
        return self.results

    def _watch_stack(self) -> None:
        if self.stack.mode != "own":
            return
        d = self.stack.stack_dir
        for name, pidfile, kids in (
            ("kafka", d / "kafka/kafka.pid", False),
            ("redis", d / "redis/redis.pid", False),
            ("postgres", d / "postgres/postgres.pid", True),
        ):
            with contextlib.suppress(OSError, ValueError):
                self.monitor.watch(name, int(pidfile.read_text().split()[0]), with_children=kids)

    def _commit_expr(self) -> None:
        with psycopg.connect(self.space.dsn) as conn:
            on = conn.execute("SHOW track_commit_timestamp").fetchone()[0] == "on"  # type: ignore[index]
        self.commit_expr = "coalesce(pg_xact_commit_timestamp(xmin), stored_at)" if on else "stored_at"
        self.results["commit_time_source"] = (
            "pg_xact_commit_timestamp" if on else "stored_at (transaction start)"
        )

    async def _all_rows(self) -> list[tuple[float, float]]:
        conn = await self.db()
        try:
            cur = await conn.execute(
                f"SELECT extract(epoch from received_at)::float8, extract(epoch from {self.commit_expr})"  # noqa: S608
                "::float8 FROM reports"
            )
            return list(await cur.fetchall())
        finally:
            await conn.close()

    # ------------------------------------------------------------------ output
    def finish(self) -> None:
        r = self.results
        r["duration_s"] = round(time.time() - self.started, 1)
        r["ratio"] = round(r["throughput_rps"] / r["baseline_rps"], 4) if r.get("baseline_rps") else None
        worker_rss = max(
            (v for k, v in r.get("peak_rss_mb", {}).items() if k.startswith("worker")), default=None
        )
        tri = r.get("offline_triage", {}).get("rps")
        if r.get("scale_out"):
            cpus = r.get("machine", {}).get("cpus") or os.cpu_count() or 1
            r["cpu_budget"] = cpu_budget(r["scale_out"], TARGETS["throughput_rps"], cpus)
        r["ratios"] = rivals.ratios(r)
        peaks = r.get("peak_rss_mb", {})
        if r.get("floors"):
            r["floors"]["aiokafka_peak_rss_mb"] = peaks.get("baseline")
            r["floors"]["faust_peak_rss_mb"] = peaks.get("faust_floor")
        if r.get("peer", {}).get("quix_rps") is not None:
            r["peer"]["peak_rss_mb"] = peaks.get(rivals.PEER)
        us = (r.get("cpu_budget", {}).get("1") or {}).get("us_per_report", {}).get("pipeline")
        ratios, t19 = r["ratios"], TARGETS_19
        r["targets"] = {
            "throughput_rps>=5000": r.get("throughput_rps", 0) >= TARGETS["throughput_rps"],
            "ratio>=0.15": (r.get("ratio") or 0) >= TARGETS["ratio"],
            "p99_ms<=1000@1000rps": (r.get("latency_ms", {}).get("p99") or 1e12) <= TARGETS["p99_ms"],
            "burst_catch_up_s<=30": (r.get("burst", {}).get("catch_up_s") or 1e12) <= TARGETS["catch_up_s"],
            "offline_triage_rps>=5000": (tri or 0) >= TARGETS["triage_rps"],
            "worker_peak_rss_mb<=400": (worker_rss or 1e12) <= TARGETS["worker_rss_mb"],
            # issue #19
            "pipeline_us_per_report<=450": (us or 1e12) <= t19["pipeline_us_per_report"],
            "throughput_rps>=3000": r.get("throughput_rps", 0) >= t19["throughput_rps"],
            "ours/faust_floor>=0.7": (ratios["ours_to_faust_floor"] or 0) >= t19["faust_floor_ratio"],
            "ours/quix_peer>=1": (ratios["ours_to_quix_peer"] or 0) >= t19["quix_peer_ratio"],
            "p99_ms<=300@1000rps": (r.get("latency_ms", {}).get("p99") or 1e12) <= t19["p99_ms"],
            "offline_triage_rps>=12000": (tri or 0) >= t19["triage_rps"],
            "worker_peak_rss_mb<=300": (worker_rss or 1e12) <= t19["worker_rss_mb"],
            "duration_s<=900": r["duration_s"] <= t19["duration_s"],
            # issue #17: the surge stage costs at most 10 % of the workers' CPU per report
            "surge_share_of_workers<=0.10": (
                (r.get("cpu_budget", {}).get("1") or {}).get("surge_share_of_workers") or 1e12
            )
            <= TARGETS_17["surge_share_of_workers"],
        }
        plot = self.plot()
        r["plot"] = str(plot) if plot else None
        r["logs"] = str(self.logdir)
        (self.out / self.cfg.results_name).write_text(
            orjson.dumps(r, option=orjson.OPT_INDENT_2).decode() + "\n"
        )
        self.table()

    def plot(self) -> Path | None:
        rows = getattr(self, "all_rows", None)
        if not rows:
            return None
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            log("matplotlib not installed: no plot")
            return None
        t0 = min(r for r, _ in rows)
        end = max(c for _, c in rows)
        nb = int(end - t0) + 1
        recv, comm = [0] * nb, [0] * nb
        lat: list[list[float]] = [[] for _ in range(nb)]
        for rcv, c in rows:
            recv[int(rcv - t0)] += 1
            comm[int(c - t0)] += 1
            lat[int(c - t0)].append((c - rcv) * 1000)
        xs = list(range(nb))
        fig, (a1, a2) = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
        a1.plot(xs, recv, label="entering ingest topics (reports/s)", lw=0.8, color="tab:gray")
        a1.plot(xs, comm, label="committed in the CRM store (rows/s)", lw=1.2, color="tab:blue")
        a1.set_ylabel("reports / s")
        a1.legend(loc="upper right")
        for q, color in ((50, "tab:green"), (99, "tab:red")):
            a2.plot(xs, [pct(v, q) if v else None for v in lat], label=f"p{q} end-to-end", lw=1, color=color)
        a2.set_yscale("log")
        a2.set_ylabel("latency (ms, by commit second)")
        a2.set_xlabel("seconds since the first report")
        a2.axhline(1000, color="tab:red", ls=":", lw=0.8)
        a2.legend(loc="upper right")
        for w in self.windows:
            if w.t1 is None:
                continue
            x0, x1 = w.t0.timestamp() - t0, w.t1.timestamp() - t0
            for ax in (a1, a2):
                ax.axvspan(x0, x1, alpha=0.08, color="tab:orange")
            a1.text(x0, a1.get_ylim()[1] * 0.95, w.name, fontsize=7, va="top")
        for name, s0, s1 in getattr(self, "spans", []):
            if "flood" in name:
                a1.axvspan(s0 - t0, s1 - t0, alpha=0.15, color="tab:red")
        commit = (self.results.get("commit") or "")[:8]
        fig.suptitle(f"crm-pipeline bench {self.results['started_at']} ({commit}): throughput and latency")
        fig.tight_layout()
        path = self.out / f"bench-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        latest = self.out / "latest.png"
        latest.write_bytes(path.read_bytes())
        return latest

    def table(self) -> None:
        r = self.results
        lat = r.get("latency_ms", {})
        b = r.get("burst", {})
        ing = r.get("ingress", {})
        so = r.get("scale_out", {})
        tri = r.get("offline_triage", {})
        fl, peer, ratios = r.get("floors") or {}, r.get("peer") or {}, r.get("ratios") or {}
        rows = [
            (
                "end-to-end throughput, 1 worker (rows/s, median)",
                f"{r.get('throughput_rps', 0):,.0f}",
                "≥ 5,000",
            ),
            ("raw Kafka pass-through baseline (records/s, median)", f"{r.get('baseline_rps', 0):,.0f}", ""),
            ("ratio pipeline / baseline", f"{r.get('ratio') or 0:.3f}", "≥ 0.15"),
            (
                "bare Faust agent pass-through, worker's settings (records/s, median; CPU µs/record)",
                f"{fl.get('faust_rps') or 0:,.0f}; {fl.get('faust_us_per_record')}",
                "",
            ),
            (
                "Quix Streams peer, same processors (rows/s, median; its CPU µs/report)",
                f"{peer.get('quix_rps') or 0:,.0f}; {peer.get('quix_us_per_report')}",
                "",
            ),
            (
                "ratio ours / Faust floor, ours / Quix peer",
                f"{ratios.get('ours_to_faust_floor')} / {ratios.get('ours_to_quix_peer')}",
                "≥ 0.7 / ≥ 1",
            ),
            (
                f"latency @ {lat.get('offered_rps')}/s offered p50/p95/p99 (ms)",
                f"{lat.get('p50')} / {lat.get('p95')} / {lat.get('p99')}",
                "p99 ≤ 1,000",
            ),
            (
                f"flood burst {b.get('base_rps')}→{b.get('burst_rps')}/s: p99 during (ms), catch-up (s)",
                f"{b.get('latency_ms_during_burst', {}).get('p99')} / {b.get('catch_up_s')}",
                "catch-up ≤ 30",
            ),
            (
                f"ingress JAKI POST x{ing.get('requests')} (c={ing.get('concurrency')}): "
                "req/s, accept p50/p99 (ms)",
                f"{ing.get('requests_per_s')}, {ing.get('accept_latency_ms', {}).get('p50')} / "
                f"{ing.get('accept_latency_ms', {}).get('p99')}",
                "",
            ),
            (
                "scale-out rows/s: 1 worker / 2 workers",
                f"{so.get('1', {}).get('throughput_rps')} / {so.get('2', {}).get('throughput_rps')}",
                "",
            ),
            (
                f"2 workers, latency @ {lat.get('offered_rps')}/s p50/p95/p99 (ms)",
                " / ".join(str(so.get("2", {}).get("latency_ms", {}).get(k)) for k in ("p50", "p95", "p99")),
                "",
            ),
            (
                f"offline triage of {tri.get('rows', 0):,} reports (reports/s)",
                f"{tri.get('rps', 0):,.0f}",
                "≥ 5,000",
            ),
        ]
        width = max(len(a) for a, _, _ in rows)
        print("\n" + "=" * (width + 40), file=sys.stderr)
        for a, v, t in rows:
            print(f"{a:<{width}}  {v:>22}  {t}", file=sys.stderr)
        st = r.get("stages")
        if st:
            parts = ", ".join(f"{k} {v}" for k, v in st["us_per_report"].items())
            print(
                f"worker CPU per report (µs, no Kafka): {parts}; total {st['total_us_per_report']}",
                file=sys.stderr,
            )
        budget = r.get("cpu_budget", {})
        for workers in ("1", "2"):
            b = budget.get(workers)
            if b:
                us = b["us_per_report"]
                surge = (
                    f"surge {us['surge']:.0f} ({100 * b['surge_share_of_workers']:.1f}% of the workers'), "
                    if b.get("surge_share_of_workers") is not None
                    else ""
                )
                print(
                    f"CPU per stored report, {workers} worker(s) (µs): workers {us['workers']:.0f}, {surge}"
                    f"postgres {us['postgres']:.0f}, redis {us['redis']:.0f}, kafka {us['kafka']:.0f}; "
                    f"pipeline {us['pipeline']:.0f} → {b['cores_needed_at_target']} cores at "
                    f"{budget['target_rps']:,}/s, at most {b['max_rps_on_cpus']:,}/s on {budget['cpus']}",
                    file=sys.stderr,
                )
        rss = ", ".join(f"{k} {v:.0f}" for k, v in r.get("peak_rss_mb", {}).items())
        print(f"peak RSS MB (target: worker ≤ 400): {rss}", file=sys.stderr)
        spent = ", ".join(f"{k} {v:.0f}" for k, v in r.get("phase_s", {}).items())
        print(f"wall seconds by phase: {spent}; {r.get('duration_s', 0):.0f} in all", file=sys.stderr)
        print("=" * (width + 40), file=sys.stderr)
        prof = r.get("profile")
        if prof:
            print(
                f"{prof.get('process', 'worker')} profile ({prof['samples']} samples) — top self frames:",
                file=sys.stderr,
            )
            for f, p in prof["top_self"][:8]:
                print(f"  {p:5.1f}%  {f}", file=sys.stderr)
        print(f"results: {self.out / self.cfg.results_name}", file=sys.stderr)
        print(f"plot:    {r.get('plot')}", file=sys.stderr)
        print(f"logs:    {self.logdir}", file=sys.stderr)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
