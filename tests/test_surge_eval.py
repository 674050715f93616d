"""Issue #17's evaluation as a test, on one generated week (``make eval`` runs three): every injected
event (a flood in three kelurahan, a storm across a kota, a street-light outage along a road) is found
within 15 minutes at the right place, and a normal week raises at most one surge."""

from __future__ import annotations

import pytest

from pipeline.bench import surge_eval as se


@pytest.fixture(scope="module")
def baseline():
    return se.history_baseline(1)  # what `crm-pipeline surge fit` learns from four earlier weeks


def test_injected_events_are_found_within_15_minutes_at_their_place(baseline):
    outcome = se.evaluate(se.with_events(1), baseline)
    assert len(outcome.events) == 3
    for event in outcome.events:
        assert event.delay_s is not None, f"{event.name} not detected"
        assert event.delay_s <= 15 * 60, f"{event.name} found after {event.delay_s / 60:.1f} min"
        assert event.place_right(), f"{event.name}: surge at {event.surge_place}, expected {event.place}"
    assert len(outcome.false_alarms) <= 1, se.summary("week", outcome)


def test_a_normal_week_raises_at_most_one_surge(baseline):
    outcome = se.evaluate(se.normal_traffic(101), baseline)
    assert outcome.hits > 3000  # ~500 reports a day
    assert len(outcome.opened) <= 1, se.summary("quiet week", outcome)
