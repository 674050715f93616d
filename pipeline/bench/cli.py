"""``crm-pipeline bench``: registered by ``pipeline.cli.build_parser``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import fields

EXIT_OK, EXIT_FAILED = 0, 1
#: the phases of a run, in order (``--phases`` selects some; pipeline/bench/runner.py runs them)
PHASES = (
    "baseline", "floor", "stages", "throughput", "peer", "fixed", "burst", "ingress", "scale-out", "triage",
)  # fmt: skip

HELP = """Benchmark of issue #5 on a private stack (ports 28092/28093, 27379, 27432 or the next
free ones, .stack/bench; started and stopped by the run unless it was already running).
Writes bench/results/latest.json and a PNG plot.
--quick: a short configuration for CI (about 4 minutes); sizes can be set one by one."""


def _cmd_bench(args: argparse.Namespace) -> int:
    from .runner import Bench, Config

    values = Config.quick_preset() if args.quick else {}
    for f in fields(Config):
        v = getattr(args, f.name, None)
        if v is not None and f.name != "quick":
            values[f.name] = v
    try:
        Bench(Config(**values)).run()
    except KeyboardInterrupt:
        return EXIT_FAILED
    return EXIT_OK


def add_bench_command(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("bench", _cmd_bench, "benchmark: throughput, latency, baseline, scale-out, offline replay")
    p.description = HELP
    p.add_argument("--quick", action="store_true", help="short run (CI); explicit sizes below still win")
    p.add_argument(
        "--repeat", type=int, help="runs of the baseline, throughput and latency phases (median; default 3)"
    )
    p.add_argument("--drain-n", type=int, help="reports per throughput run (default 30000)")
    p.add_argument("--fixed-rps", type=int, help="offered load of the latency phase (default 1000)")
    p.add_argument(
        "--open-reports",
        type=int,
        help="reports whose cases are open when a latency phase starts (default: 60 days at the real "
        "volume, ~28,000)",
    )
    p.add_argument("--fixed-s", type=float, help="seconds of each latency run (default 20; --repeat runs)")
    p.add_argument("--burst-base-rps", type=int, help="flood day base rate; the burst is 10x (default 300)")
    p.add_argument("--burst-s", type=float, help="seconds of the 10x burst (default 10)")
    p.add_argument("--burst-pre-s", type=float, help="seconds at the base rate before the burst (default 10)")
    p.add_argument("--burst-post-s", type=float, help="seconds at the base rate after the burst (default 20)")
    p.add_argument("--ingress-requests", type=int, help="JAKI POSTs through the ingress (default 5000)")
    p.add_argument("--ingress-concurrency", type=int, help="concurrent HTTP clients (default 32)")
    p.add_argument("--baseline-n", type=int, help="records of the raw pass-through (default 200000)")
    p.add_argument(
        "--floor-n", type=int, help="records of each bare Faust pass-through run (default 50000; issue #19)"
    )
    p.add_argument(
        "--triage-rows", type=int, help="historical reports through `triage` (default 300000; 0 = skip)"
    )
    p.add_argument("--partitions", type=int, help="partitions of every topic (default 6; must be >= workers)")
    p.add_argument(
        "--max-workers", type=int, choices=[1, 2], help="scale-out up to this many workers (default 2)"
    )
    p.add_argument(
        "--no-surge",
        dest="surge",
        action="store_const",
        const=False,
        help="leave the surge worker out (default: it runs beside the workers; issue #17's cost)",
    )
    p.add_argument("--profile-s", type=int, help="py-spy seconds on the worker in the last drain (0 = off)")
    p.add_argument(
        "--profile-of",
        choices=["worker", "surge"],
        help="the process py-spy samples: the triage worker (default) or the surge worker",
    )
    p.add_argument(
        "--stack",
        choices=["own", "external"],
        help="own: private stack on other ports (default); external: the CRM_* stack",
    )
    p.add_argument(
        "--phases",
        help=f"comma-separated subset of {','.join(PHASES)} "
        "(default all; a subset writes partial.json, not latest.json)",
    )
    p.add_argument("--out-dir", help="where latest.json and the plot go (default bench/results)")
