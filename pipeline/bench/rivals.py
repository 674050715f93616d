"""What the worker is measured against in the same run, on the same broker (issue #19).

* ``floors``: the raw aiokafka pass-through (:mod:`.baseline`) and a bare Faust agent pass-through
  with the worker's own app, consumer and producer settings (:mod:`.faust_floor`): what the
  framework costs before any processor runs.
* ``peer``: the same processors, store and outputs on Quix Streams (:mod:`.quix_peer`), in a
  namespace of its own (topics, consumer group, Redis keys, database) on the same servers, drained
  exactly as the worker is (same backlog, same live-sized case store first, same rows/s between the
  10th and 90th percentile of commit times).

``ratios`` puts the worker's stored rows/s over each of them.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from tqdm import tqdm

from . import peer_env
from .budget import per_report
from .procs import Proc, Window
from .stack import ROOT, Space

PEER = "quix_peer"


async def faust_floor(bench: Any, src: str, dst: str) -> dict[str, Any]:
    """``--repeat`` runs of the Faust pass-through over the baseline's preloaded topic."""
    cfg = bench.cfg
    runs = []
    for i in range(cfg.repeat):
        env = {
            **os.environ,
            **bench.env(),
            "CRM_WORKER_APP_ID": f"{bench.space.tag}-faust-floor-{i}",
            "CRM_WORKER_WEB_PORT": "0",
            "PYTHONUNBUFFERED": "1",
        }
        p = subprocess.Popen(  # noqa: ASYNC220 - waited for in a thread
            [
                sys.executable,
                "-m",
                "pipeline.bench.faust_floor",
                src,
                dst,
                str(min(cfg.floor_n, cfg.baseline_n)),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        bench.monitor.watch("faust_floor", p.pid)  # for its peak RSS; it reports its own CPU
        try:
            out, err = await asyncio.to_thread(p.communicate, timeout=600)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = await asyncio.to_thread(p.communicate)
        lines = [line for line in out.splitlines() if line.startswith(b"{")]
        if not lines:
            raise RuntimeError(f"faust floor failed ({p.returncode}): {err.decode()[-2000:]}")
        r = orjson.loads(lines[-1])
        r["us_per_record"] = round(1e6 * r["cpu_s"] / r["records"], 1) if r["records"] else None
        runs.append(r)
        tqdm.write(f"[bench] Faust floor run {i + 1}/{cfg.repeat}: {r['rps']:,.0f} records/s")
    return {
        "faust_rps": round(statistics.median(r["rps"] for r in runs), 1),
        "faust_us_per_record": statistics.median(r["us_per_record"] for r in runs),
        "faust_runs": runs,
    }


async def quix_peer(bench: Any) -> dict[str, Any]:
    """``--repeat`` drains of the Quix Streams peer, each from the live-sized case store."""
    target = await asyncio.to_thread(peer_env.ensure)
    if target is None:
        return {"skipped": "the bench extra (quixstreams) could not be installed; see the log above"}
    space = Space(bench.space.base_env, tag=f"{bench.space.tag}q")
    space.create()
    saved = bench.space, bench.workers, len(bench.windows), bench.seen_ids, bench.surge
    # A redelivery of a report our worker stored is new to the peer's database: count it as new there.
    # The peer has no surge stage, so no drain of it waits for the surge worker (which reads our
    # namespace's hits: waiting on the peer's was 4 idle minutes a run, 12 of a whole `make bench`).
    bench.space, bench.seen_ids, bench.surge = space, set(), None
    proc = None
    try:
        bench.pipeline_cmd("topics", "create")
        bench.pipeline_cmd("store", "migrate")
        path = os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH", "")) if p)
        env = {**bench.env(), "PYTHONPATH": path}
        proc = Proc(PEER, [], env, bench.logdir, module="pipeline.bench.quix_peer")
        bench.workers = [proc]
        bench.monitor.watch(PEER, proc.pid)
        await bench.wait_group(1)
        w = Window("quix warm-up", datetime.now(UTC))
        await bench.send_backlog(w, 200)
        w.t1 = datetime.now(UTC)
        await bench.wait_stored(w, "warm-up quix")
        runs = [await bench.drain(f"quix peer #{i + 1}") for i in range(bench.cfg.repeat)]
    finally:
        if proc is not None:
            proc.stop()
        bench.space, bench.workers, bench.seen_ids, bench.surge = saved[0], saved[1], saved[3], saved[4]
        del bench.windows[saved[2] :]  # the peer's rows are in its own database: not on the plot
        space.drop()
        if bench.stack.mode != "own":
            space.drop_topics()
    costs = [c for c in (per_report(r, own=PEER) for r in runs) if c is not None]
    us = {k: round(statistics.median(c[k] for c in costs), 1) for k in costs[0]} if costs else {}
    return {
        "quix_rps": round(statistics.median(r["rows_per_s"] for r in runs), 1),
        "quix_us_per_report": us.get("workers"),
        "us_per_report": us,
        "runs": runs,
    }


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    ours = results.get("throughput_rps") or 0
    floors, peer = results.get("floors") or {}, results.get("peer") or {}

    def over(x: float | None) -> float | None:
        return round(ours / x, 4) if x else None

    return {
        "ours_to_aiokafka_floor": over(floors.get("aiokafka_rps")),
        "ours_to_faust_floor": over(floors.get("faust_rps")),
        "ours_to_quix_peer": over(peer.get("quix_rps")),
    }
