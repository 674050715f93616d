"""CPU per stored report, by process, and what a target rate would cost in cores.

Rows/s alone cannot tell a slow pipeline from a full machine. The drains already record each
process's CPU seconds; divided by the rows stored they give a cost per report that does not depend
on how busy the machine was, and from it the cores a target rate needs. The load generator is
reported but left out of the pipeline's cost: a deployment does not run it.
"""

from __future__ import annotations

from statistics import median
from typing import Any

SERVERS = ("kafka", "redis", "postgres")
LOAD = "bench_driver"
#: the surge worker (issue #17): its own process beside the triage workers, part of the pipeline's cost
SURGE = "surge"


def per_report(run: dict[str, Any], own: str = "worker") -> dict[str, float] | None:
    """µs of CPU per stored report of one drain run, per role; None when nothing was stored.
    ``own``: the name prefix of the processes that do the work (the Quix peer's, in its drains)."""
    stored = run.get("stored") or 0
    cpu = run.get("cpu") or {}
    if stored <= 0 or not cpu:
        return None

    def us(names: list[str]) -> float:
        return sum(cpu[n]["cpu_s"] for n in names if n in cpu) * 1e6 / stored

    workers = [n for n in cpu if n.startswith(own)]
    out = {"workers": us(workers)}
    if own == "worker" and SURGE in cpu:  # the peer's drains leave surges out: it has no such stage
        out[SURGE] = us([SURGE])
    for name in SERVERS:
        out[name] = us([name])
    out["pipeline"] = out["workers"] + out.get(SURGE, 0.0) + sum(out[n] for n in SERVERS)
    out["load_generator"] = us([LOAD])
    return out


def cpu_budget(scale_out: dict[str, Any], target_rps: float, cpus: int) -> dict[str, Any]:
    """Per worker count: the median µs per report of each role over its drain runs, the cores the
    pipeline would need at ``target_rps``, the rate ``cpus`` cores could carry at this cost, and
    what the workers may spend per report at ``target_rps`` once the servers have had theirs."""
    out: dict[str, Any] = {"target_rps": target_rps, "cpus": cpus}
    for workers, entry in sorted(scale_out.items()):
        costs = [c for c in (per_report(r) for r in entry.get("runs", [])) if c is not None]
        if not costs:
            continue
        us = {k: round(median(c.get(k, 0.0) for c in costs), 1) for k in costs[0]}
        servers = sum(us[n] for n in SERVERS)
        out[workers] = {
            "us_per_report": us,
            # issue #17's cost target: the surge stage's CPU per report against the triage workers'
            "surge_share_of_workers": round(us[SURGE] / us["workers"], 3)
            if us.get(SURGE) is not None and us["workers"]
            else None,
            "cores_needed_at_target": round(us["pipeline"] * target_rps / 1e6, 2),
            "max_rps_on_cpus": round(cpus * 1e6 / us["pipeline"]) if us["pipeline"] else None,
            "worker_us_left_at_target": round(cpus * 1e6 / target_rps - servers, 1),
        }
    return out
