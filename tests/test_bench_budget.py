"""The CPU budget the bench derives from its drains: per stored report, and cores at a target rate."""

from __future__ import annotations

import pytest

from pipeline.bench.budget import cpu_budget, per_report


def _run(stored: int, **cpu_s: float) -> dict:
    return {"stored": stored, "cpu": {k: {"cpu_s": v, "cpu_pct": 0.0} for k, v in cpu_s.items()}}


def test_cost_per_report_sums_the_workers_and_leaves_the_load_generator_out_of_the_pipeline() -> None:
    cost = per_report(
        _run(10_000, worker1=3.0, worker2=2.0, kafka=0.5, redis=1.0, postgres=2.0, bench_driver=0.7)
    )
    assert cost == pytest.approx(
        {
            "workers": 500.0,
            "kafka": 50.0,
            "redis": 100.0,
            "postgres": 200.0,
            "pipeline": 850.0,
            "load_generator": 70.0,
        }
    )


def test_a_run_that_stored_nothing_has_no_cost_rather_than_a_division_by_zero() -> None:
    assert per_report(_run(0, worker1=1.0)) is None
    assert per_report({"stored": 5}) is None


def test_budget_takes_the_median_run_and_says_what_the_target_would_cost() -> None:
    runs = [
        _run(10_000, worker1=w, kafka=0.5, redis=1.0, postgres=2.0, bench_driver=0.7) for w in (4.0, 5.0, 9.0)
    ]
    budget = cpu_budget({"1": {"runs": runs}, "2": {"runs": []}}, target_rps=5000, cpus=2)
    one = budget["1"]
    assert one["us_per_report"]["workers"] == 500.0  # the median run, not the slow outlier
    assert one["us_per_report"]["pipeline"] == 850.0
    assert one["cores_needed_at_target"] == 4.25  # 850 µs x 5,000/s
    assert one["max_rps_on_cpus"] == 2353  # 2 cores / 850 µs
    assert one["worker_us_left_at_target"] == 50.0  # 400 µs a report on 2 cores, 350 to the servers
    assert "2" not in budget  # no runs, no figures


def test_the_peer_drains_count_the_peer_process_not_the_idle_worker_beside_it() -> None:
    run = _run(10_000, quix_peer=4.0, worker1=0.3, kafka=0.5, redis=1.0, postgres=2.0)
    cost = per_report(run, own="quix_peer")
    assert cost is not None and cost["workers"] == pytest.approx(400.0)
    assert cost["pipeline"] == pytest.approx(750.0)


def test_ratios_put_our_stored_rows_over_each_floor_and_the_peer() -> None:
    from pipeline.bench.rivals import ratios

    r = ratios(
        {
            "throughput_rps": 1500,
            "floors": {"aiokafka_rps": 150_000, "faust_rps": 3000},
            "peer": {"quix_rps": 1000},
        }
    )
    assert r == {"ours_to_aiokafka_floor": 0.01, "ours_to_faust_floor": 0.5, "ours_to_quix_peer": 1.5}
    # a phase that did not run gives no ratio rather than a division by zero
    assert ratios({"throughput_rps": 1500, "peer": {"skipped": "no pip"}})["ours_to_quix_peer"] is None


def test_the_surge_worker_is_part_of_the_pipeline_and_its_share_of_the_workers_is_reported() -> None:
    runs = [_run(10_000, worker1=5.0, surge=0.3, kafka=0.5, redis=1.0, postgres=2.0)]
    one = cpu_budget({"1": {"runs": runs}}, target_rps=5000, cpus=2)["1"]
    assert one["us_per_report"]["surge"] == 30.0
    assert one["us_per_report"]["pipeline"] == 880.0  # 500 + 30 + 350
    assert one["surge_share_of_workers"] == 0.06  # issue #17: at most 0.10
    without = cpu_budget({"1": {"runs": [_run(10_000, worker1=5.0, postgres=2.0)]}}, 5000, 2)["1"]
    assert "surge" not in without["us_per_report"] and without["surge_share_of_workers"] is None
