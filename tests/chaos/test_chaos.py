"""Fault injection (issue #6): faults under load, then every input reconciled. ``make chaos``.

Each scenario sends N numbered reports (default 20,000, ``CHAOS_REPORTS``) across eight channels
straight onto the ingest topics, ~5 % of them twice, plus real HTTP posts through the ingress, while a
fault happens; then it waits until the worker group has no lag and reconciles (tests/chaos/chaoslib.py).
Lost and duplicated must be 0. No timing is asserted; recovery times are printed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

import pytest

from tests.chaos import chaoslib as c

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(420)]

N = int(os.environ.get("CHAOS_REPORTS", "20000"))
HTTP_N = int(os.environ.get("CHAOS_HTTP_POSTS", "300"))
POISON_MARKER = "<<chaos-poison-7f3a>>"

Fault = Callable[[c.Space, c.Timeline], Awaitable[float | None]]


async def scenario(
    space: c.Space,
    fault: Fault,
    *,
    workers: int = 1,
    rate: float = 2000.0,
    http_s: float = 20.0,
    poison: int = 0,
    drain_timeout: float = 240.0,
    watchdog: bool = False,
) -> c.Outcome:
    """Start ingress + workers, send the load while ``fault`` runs, wait until drained, reconcile."""
    space.prepare()
    space.start_ingress()
    for i in range(workers):
        space.start_worker(f"w{i}")
    load = c.build_load(space.tag, N, poison_marker=POISON_MARKER, poison=poison)
    stats, http = c.ProduceStats(), c.HttpStats()
    timeline = c.Timeline(space)
    timeline.start()
    restarts: list[str] = []

    async def supervise() -> None:
        # What `crm-pipeline run` or Kubernetes does: a worker that exits on its own is started again.
        while True:
            await asyncio.sleep(1)
            for name, proc in list(space.workers.items()):
                if proc.proc.poll() is not None and name not in killed:
                    restarts.append(f"{name} exited with {proc.proc.returncode}")
                    c.log(f"{space.name}: worker {name} exited ({proc.proc.returncode}); restarting it")
                    space.start_worker(name)

    killed = space.killed
    space.http = http
    guard = asyncio.create_task(supervise()) if watchdog else None
    try:
        t0 = time.monotonic()
        results = await asyncio.gather(
            c.produce(space.settings(), load, rate, stats),
            c.post_http(space.url, space.tag, HTTP_N, http_s, http),
            fault(space, timeline),
        )
        fault_end = results[2]
        c.log(f"{space.name}: load sent in {stats.done_at - t0:.1f}s ({stats.refusals} refusals); draining")
        expected_rows = len(load.inputs) - poison + len(http.accepted)
        drained = await c.wait_drained(space, timeline, expected_rows, drain_timeout)
    finally:
        if guard:
            guard.cancel()
        await timeline.stop()
    notes = [f"{N} bulk reports + {load.redeliveries} redeliveries at {rate:.0f}/s; {HTTP_N} HTTP posts"]
    if stats.refusals:
        notes.append(
            f"bulk producer: {stats.refusals} batch(es) refused then retried, e.g. {stats.errors[0]}"
        )
    notes += [f"restarted by the supervisor: {r}" for r in restarts]
    anchor = fault_end if fault_end is not None else timeline.marks.get("fault", t0)
    outcome = await c.reconcile(
        space,
        load,
        http,
        resumed_s=timeline.resumed_after(fault_end) if fault_end is not None else None,
        caught_up_s=drained - anchor,
        notes=notes,
    )
    c.record(outcome)
    assert outcome.lost == 0, outcome.table()
    assert outcome.duplicated == 0, outcome.table()
    assert outcome.routed_bad_ids == 0, outcome.table()
    assert outcome.stored_and_dead == 0, outcome.table()
    return outcome


def run(space: c.Space, coro: Awaitable[c.Outcome]) -> c.Outcome:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    finally:
        space.close()


# ------------------------------------------------------------------------------------ 1. worker kill -9
def kill_worker(name: str, after_rows: int, down_s: float = 4.0) -> Fault:
    async def fault(space: c.Space, timeline: c.Timeline) -> float:
        await timeline.wait_count(after_rows)
        timeline.mark(f"kill -9 worker {name} at {timeline.latest()} rows")
        space.killed.add(name)
        space.kill_worker(name)
        await asyncio.sleep(down_s)
        space.start_worker(name)
        space.killed.discard(name)
        timeline.mark(f"worker {name} restarted")
        return time.monotonic()

    return fault


def test_worker_killed_mid_stream_and_restarted(private_stack):
    space = c.Space("1a-worker-kill", private_stack.env())
    run(space, scenario(space, kill_worker("w0", after_rows=3000)))


def test_one_of_two_workers_killed_rebalance(private_stack):
    space = c.Space("1b-two-workers-one-killed", private_stack.env())
    run(space, scenario(space, kill_worker("w1", after_rows=3000), workers=2))


# ------------------------------------------------------------------------------------ 2. broker stop
def test_broker_stopped_and_restarted_under_load(private_stack):
    space = c.Space("2-broker-restart", private_stack.env())
    window: dict[str, float] = {}

    async def fault(space: c.Space, timeline: c.Timeline) -> float:
        await timeline.wait_count(2000)
        timeline.mark("stopping the broker")
        await asyncio.to_thread(private_stack.stop_kafka)
        window["down"] = time.monotonic()
        timeline.mark("broker down")
        await asyncio.sleep(12)
        window["up"] = time.monotonic()
        timeline.mark("restarting the broker")
        await asyncio.to_thread(private_stack.start)
        await c.wait_brokers(space.env["CRM_KAFKA_BOOTSTRAP"], 1)
        timeline.mark("broker back")
        return time.monotonic()

    run(space, scenario(space, fault, rate=700.0, http_s=40.0, watchdog=True))
    answers = space.http.answers
    during = [s for start, end, s in answers if start >= window["down"] and end <= window["up"]]
    print(f"HTTP answers while the broker was down: {sorted(set(during))} x{len(during)}")
    assert during, "no HTTP post was answered while the broker was down"
    assert 202 not in during, "the ingress accepted a report while no broker could store it"
    assert 503 in during


# ------------------------------------------------------------------------------------ 3. three brokers
def test_one_of_three_brokers_killed_and_restored(private_stack, cluster):
    env = {**private_stack.env(), **cluster.env()}
    asyncio.run(c.wait_brokers(env["CRM_KAFKA_BOOTSTRAP"], 3))
    space = c.Space("3-cluster-broker-kill", env)

    async def fault(space: c.Space, timeline: c.Timeline) -> float:
        await timeline.wait_count(3000)
        victim = await c.active_controller(space.env["CRM_KAFKA_BOOTSTRAP"])
        timeline.mark(f"kill -9 broker {victim} (the active controller)")
        await asyncio.to_thread(cluster.kill, victim)
        await asyncio.sleep(10)
        timeline.mark(f"restarting broker {victim}")
        await asyncio.to_thread(cluster.start, victim)
        await c.wait_brokers(space.env["CRM_KAFKA_BOOTSTRAP"], 3)
        timeline.mark(f"broker {victim} back in the cluster")
        return time.monotonic()

    run(space, scenario(space, fault, rate=1500.0, http_s=30.0, watchdog=True, drain_timeout=300))


# ------------------------------------------------------------------------------------ 4. Redis + PostgreSQL
def test_redis_state_lost_and_postgres_down_30s(private_stack):
    space = c.Space("4-redis-lost-pg-down", private_stack.env())

    async def fault(space: c.Space, timeline: c.Timeline) -> float:
        await timeline.wait_count(3000)
        timeline.mark("kill -9 redis and wipe its append-only file (dedup state lost)")
        await asyncio.to_thread(private_stack.kill_redis)
        await asyncio.sleep(2)
        await asyncio.to_thread(private_stack.start)
        timeline.mark("redis back, empty")
        await timeline.wait_count(7000)
        timeline.mark("stopping postgres (immediate) for 30 s")
        await asyncio.to_thread(private_stack.stop_postgres)
        await asyncio.sleep(30)
        await asyncio.to_thread(private_stack.start)
        timeline.mark("postgres back")
        return time.monotonic()

    run(space, scenario(space, fault, rate=1500.0, http_s=40.0, watchdog=True))


# ------------------------------------------------------------------------------------ 5. poison message
def test_poison_messages_dead_lettered_rest_flow(private_stack):
    space = c.Space("5-poison", private_stack.env(), CRM_CHAOS_POISON_MARKER=POISON_MARKER)

    async def fault(space: c.Space, timeline: c.Timeline) -> None:
        timeline.mark("fault")  # the poison is in the load itself
        return None

    outcome = run(space, scenario(space, fault, poison=25))
    assert outcome.dead == 25, outcome.table()
