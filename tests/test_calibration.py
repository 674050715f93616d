"""Calibrated confidence and the threshold a target precision implies (pure functions)."""

from __future__ import annotations

import random

import pytest

from pipeline.processors.calibration import Calibration, coverage_at_precision, reliability_table


def synthetic(n: int = 4000, seed: int = 1) -> tuple[list[float], list[bool]]:
    """Raw scores whose true probability of being right is raw**2 (over-confident by design)."""
    rng = random.Random(seed)
    raw = [rng.random() for _ in range(n)]
    return raw, [rng.random() < r * r for r in raw]


def test_isotonic_map_turns_an_overconfident_score_into_the_observed_rate() -> None:
    raw, ok = synthetic(20_000)
    cal = Calibration.fit(raw, ok)
    for r in (0.3, 0.6, 0.9):
        assert cal(r) == pytest.approx(r * r, abs=0.06)
    conf = [cal(r) for r in raw]
    for row in reliability_table(conf, ok):
        assert abs(row["gap"]) < 0.05, row  # every decile's stated confidence is what it delivers


def test_threshold_for_a_target_precision_delivers_it() -> None:
    raw, ok = synthetic()
    cal = Calibration.fit(raw, ok)
    t = cal.threshold_for(0.9)
    assert t is not None
    above = [o for r, o in zip(raw, ok, strict=True) if cal(r) >= t]
    assert sum(above) / len(above) >= 0.9
    assert cal.coverage_at(t) == pytest.approx(len(above) / len(raw), abs=0.01)
    # a stricter target can only raise the bar and dispatch fewer
    t99 = cal.threshold_for(0.97)
    assert t99 is None or (t99 >= t and cal.coverage_at(t99) <= cal.coverage_at(t))
    assert cal.threshold_for(1.01) is None  # unreachable: nothing is dispatched on its say-so


def test_group_maps_tell_reliable_groups_from_unreliable_ones() -> None:
    rng = random.Random(2)
    raw = [rng.random() for _ in range(3000)]
    groups = ["sure" if i % 2 else "unsure" for i in range(3000)]
    ok = [rng.random() < (0.98 if g == "sure" else 0.5) for g in groups]
    cal = Calibration.fit(raw, ok, groups)
    assert cal(0.5, "sure") > 0.9 > 0.6 > cal(0.5, "unsure")
    assert cal(0.5, "never seen") == pytest.approx(cal(0.5))  # an unknown group gets the global map
    assert coverage_at_precision([cal(r, g) for r, g in zip(raw, groups, strict=True)], ok, 0.95) > 0.4


def test_round_trip_and_validation() -> None:
    raw, ok = synthetic(500)
    cal = Calibration.fit(raw, ok, ["a" if r > 0.5 else "b" for r in raw], source="test")
    again = Calibration.from_dict(cal.to_dict())
    assert again == cal and again.meta == {"source": "test"}
    with pytest.raises(ValueError, match="increasing"):
        Calibration.from_dict({**cal.to_dict(), "raw": list(reversed(cal.raw))})
    with pytest.raises(ValueError, match="no held-out decisions"):
        Calibration.fit([], [])
