"""Surge detection on generated traffic (issue #17): injected events found, normal weeks quiet.

Traffic is the benchmark's (:mod:`pipeline.bench.traffic`: the real CRM's channel mix, Indonesian report
texts from templates, 5 % redeliveries, 10 % repeat reports), dated over a week at about 500 reports a
day with a daily cycle of its own (:data:`TRAFFIC_DAY_CYCLE`, deliberately not the detector's default
profile) and quieter weekends. Every envelope goes through the real triage chain (classify, locate,
group into cases) before the detector sees it, as in the worker.

Injected events, on top of a normal week:

* **flood**: Kampung Melayu, Bali Mester and Bidara Cina (neighbours on the Ciliwung, Jatinegara) each
  ramp from 0 to 30 flood reports an hour over 15 minutes, stay there for an hour, then fall to 0
  over 30 minutes;
* **storm**: fallen trees across Jakarta Selatan, 60 reports an hour for an hour from random
  kelurahan of the kota;
* **outage**: street lights along a road through Utan Kayu Utara and Utan Kayu Selatan (Matraman) go
  dark at 19:00; 30 reports an hour for 90 minutes from points along the road.

An event is detected when a surge of its category opens within :data:`DETECT_WITHIN_S` of its start
with its place right: the smallest region holding all of the event's kelurahan, or one of them.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from ..envelope import Report
from ..processors.surge import (
    Baseline,
    Hit,
    SurgeConfig,
    SurgeDetector,
    SurgeRecord,
    fit_baseline,
    hit_for,
    hit_records,
)
from ..processors.surge import replay as run_replay
from .traffic import Kelurahan, Problem, Traffic

WIB = timezone(timedelta(hours=7))
#: Monday 00:00 WIB of the generated test week
WEEK_START = datetime(2026, 1, 5, tzinfo=WIB)
PER_DAY = 500
DETECT_WITHIN_S = 15 * 60
#: hour-of-day shape of the generated traffic (WIB): not the detector's default profile on purpose
TRAFFIC_DAY_CYCLE = (
    0.3, 0.2, 0.12, 0.1, 0.2, 0.45, 0.8, 1.2, 1.6, 1.8, 1.7, 1.6,
    1.45, 1.5, 1.5, 1.4, 1.3, 1.25, 1.2, 1.15, 1.0, 0.85, 0.6, 0.45,
)  # fmt: skip
WEEKEND = 0.8


@dataclass
class Event:
    name: str
    category: str
    start: float
    kelurahan: list[str]  # codes
    place: str  # the smallest region holding them all
    report_ids: set[str] = field(default_factory=set)
    detected_at: float | None = None
    surge_place: str | None = None
    surge_id: str | None = None

    @property
    def reports(self) -> int:
        return len(self.report_ids)

    @property
    def delay_s(self) -> float | None:
        return None if self.detected_at is None else self.detected_at - self.start

    def place_right(self) -> bool:
        return self.surge_place is not None and (
            self.surge_place == self.place or self.surge_place in self.kelurahan
        )

    def ok(self) -> bool:
        return self.delay_s is not None and self.delay_s <= DETECT_WITHIN_S and self.place_right()


@dataclass
class Generated:
    items: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def _rate(t: float) -> float:
    """Reports per second at ``t`` (epoch): PER_DAY with the traffic's daily cycle, quieter weekends."""
    local = datetime.fromtimestamp(t, WIB)
    weekend = WEEKEND if local.weekday() >= 5 else 1.0
    mean = sum(TRAFFIC_DAY_CYCLE) / 24
    return PER_DAY / 86400 * TRAFFIC_DAY_CYCLE[local.hour] / mean * weekend


def _arrivals(rng: random.Random, start: float, end: float, rate: Any, peak: float) -> list[float]:
    """Times of a non-homogeneous Poisson process (thinning)."""
    out, t = [], start
    while True:
        t += rng.expovariate(peak)
        if t >= end:
            return out
        if rng.random() * peak <= rate(t):
            out.append(t)


def normal_traffic(seed: int, start: datetime = WEEK_START, days: float = 7.0) -> Generated:
    rng = random.Random(seed)
    traffic = Traffic(seed=seed, run_tag=f"wk{seed}")
    t0 = start.timestamp()
    peak = PER_DAY / 86400 * max(TRAFFIC_DAY_CYCLE) / (sum(TRAFFIC_DAY_CYCLE) / 24)
    out = Generated()
    for t in _arrivals(rng, t0, t0 + days * 86400, _rate, peak):
        out.items.append((t, dict(traffic.envelope())))
    return out


@lru_cache(maxsize=1)
def _polygons() -> dict[str, Any]:
    import json

    from shapely.geometry import shape

    from ..processors.locate import BOUNDARIES_GEOJSON

    features = json.loads(BOUNDARIES_GEOJSON.read_text(encoding="utf-8"))["features"]
    return {f["properties"]["kode_kemendagri"]: shape(f["geometry"]) for f in features}


def point_in(rng: random.Random, code: str) -> tuple[float, float]:
    """A random point inside a kelurahan (centroids of thin kelurahan can lie outside them)."""
    from shapely.geometry import Point

    poly = _polygons()[code]
    minx, miny, maxx, maxy = poly.bounds
    while True:
        lon, lat = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
        if poly.contains(Point(lon, lat)):
            return round(lat, 6), round(lon, 6)


def _kel(traffic: Traffic, name: str) -> Kelurahan:
    return next(k for k in traffic.kelurahan if k.name == name)


def _event_envelope(
    traffic: Traffic, category: str, kel: Kelurahan, lat: float, lon: float, street: str
) -> dict:
    r = traffic.rng
    channel = r.choices(traffic.channels, traffic.channel_weights)[0]
    while channel.startswith("desk_"):  # desks file at their own office, not at the event
        channel = r.choices(traffic.channels, traffic.channel_weights)[0]
    p = Problem(category, kel, street, lat, lon, r.randint(1, 15), r.randint(1, 12))
    return traffic._envelope(channel, p, traffic._text(p))


def _ids(items: list[tuple[float, dict]]) -> set[str]:
    return {env["report_id"] for _, env in items}


def flood(seed: int, start: float) -> tuple[list[tuple[float, dict]], Event]:
    rng = random.Random(seed)
    traffic = Traffic(seed=seed + 1000, run_tag=f"flood{seed}")
    names = ("Kampung Melayu", "Bali Mester", "Bidara Cina")
    kels = [_kel(traffic, n) for n in names]
    ramp, hold, fall = 900.0, 3600.0, 1800.0

    def rate(t: float) -> float:
        x = t - start
        per_h = 30 * (
            x / ramp if x < ramp else 1 if x < ramp + hold else max(0, 1 - (x - ramp - hold) / fall)
        )
        return per_h / 3600

    items = []
    for kel in kels:
        for t in _arrivals(rng, start, start + ramp + hold + fall, rate, 30 / 3600):
            lat, lon = point_in(rng, kel.code)
            street = rng.choice(("Jl. Jatinegara Barat", "Jl. Inspeksi Kali Ciliwung", "Jl. Otista III"))
            items.append((t, _event_envelope(traffic, "flood_drainage", kel, lat, lon, street)))
    return items, Event("flood", "flood_drainage", start, [k.code for k in kels], "31.75.03", _ids(items))


def storm(seed: int, start: float) -> tuple[list[tuple[float, dict]], Event]:
    rng = random.Random(seed)
    traffic = Traffic(seed=seed + 2000, run_tag=f"storm{seed}")
    kels = [k for k in traffic.kelurahan if k.code.startswith("31.74.")]
    items = []
    used = set()
    for t in _arrivals(rng, start, start + 3600, lambda _t: 60 / 3600, 60 / 3600):
        kel = rng.choice(kels)
        used.add(kel.code)
        lat, lon = point_in(rng, kel.code)
        items.append(
            (
                t,
                _event_envelope(
                    traffic,
                    "fallen_tree_parks",
                    kel,
                    lat,
                    lon,
                    rng.choice(("Jl. RS Fatmawati", "Jl. Kemang Raya", "Jl. Warung Buncit Raya")),
                ),
            )
        )
    return items, Event("storm", "fallen_tree_parks", start, sorted(used), "31.74", _ids(items))


def outage(seed: int, start: float) -> tuple[list[tuple[float, dict]], Event]:
    rng = random.Random(seed)
    traffic = Traffic(seed=seed + 3000, run_tag=f"outage{seed}")
    a, b = _kel(traffic, "Utan Kayu Utara"), _kel(traffic, "Utan Kayu Selatan")
    items = []
    for t in _arrivals(rng, start, start + 5400, lambda _t: 30 / 3600, 30 / 3600):
        f = rng.random()  # a point along the road from one kelurahan's centre to the other's
        lat = a.lat + f * (b.lat - a.lat) + rng.gauss(0, 0.0003)
        lon = a.lon + f * (b.lon - a.lon) + rng.gauss(0, 0.0003)
        kel = a if f < 0.5 else b
        items.append((t, _event_envelope(traffic, "street_lights", kel, lat, lon, "Jl. Pramuka")))
    return items, Event("outage", "street_lights", start, [a.code, b.code], "31.75.01", _ids(items))


def with_events(seed: int) -> Generated:
    """A normal week with the three events on three weekdays."""
    week = normal_traffic(seed)
    day = 86400
    t0 = WEEK_START.timestamp()
    for maker, at in (
        (flood, t0 + 1 * day + 14 * 3600 + 7 * 60),  # Tuesday 14:07
        (storm, t0 + 2 * day + 16 * 3600 + 33 * 60),  # Wednesday 16:33
        (outage, t0 + 3 * day + 19 * 3600),  # Thursday 19:00
    ):
        items, event = maker(seed, at)
        week.items.extend(items)
        week.events.append(event)
    week.items.sort(key=lambda x: x[0])
    return week


# ------------------------------------------------------------------------------------ triage → hits
def to_hits(items: Iterable[tuple[float, dict[str, Any]]], chain: Any, batch: int = 500) -> list[Hit]:
    """Envelopes through the real triage chain (as the worker runs it), in time order, to hits."""
    hits: list[Hit] = []
    pending: list[Report] = []
    seen: set[str] = set()

    def flush() -> None:
        for report in chain.process(pending):
            hit = hit_for(report)
            if hit is not None:
                hits.append(hit)
        pending.clear()

    for t, env in sorted(items, key=lambda x: x[0]):
        when = datetime.fromtimestamp(t, UTC)
        report = Report.model_validate({**env, "received_at": when, "source_at": when})
        if report.report_id in seen:  # a redelivery: the detector must not count it twice either
            hits.append(Hit(report.report_id, t, "-", "-"))  # marker, replaced below
            continue
        seen.add(report.report_id)
        pending.append(report)
        if len(pending) >= batch:
            flush()
    flush()
    # Redeliveries carry the first delivery's triage: copy it so the detector sees the same id twice.
    first: dict[str, Hit] = {h.report_id: h for h in hits if h.category != "-"}
    out = []
    for h in hits:
        if h.category == "-":
            orig = first.get(h.report_id)
            if orig is not None:
                out.append(
                    Hit(
                        orig.report_id,
                        h.at,
                        orig.category,
                        orig.kota_code,
                        orig.kecamatan_code,
                        orig.kelurahan_code,
                        orig.case_id,
                    )
                )
        else:
            out.append(h)
    out.sort(key=lambda h: h.at)
    return out


def new_chain(cases: bool = True) -> Any:
    from ..processors.chain import TriageChain
    from ..processors.group import CaseIndex

    return TriageChain(cases=CaseIndex() if cases else None)


def history_baseline(seed: int, weeks: int = 4, config: SurgeConfig | None = None) -> Baseline:
    """What ``crm-pipeline surge fit`` learns from ``weeks`` of normal traffic before the test week."""
    config = config or SurgeConfig.load()
    start = WEEK_START - timedelta(weeks=weeks)
    hist = normal_traffic(seed + 7919, start, days=7.0 * weeks)
    hits = to_hits(hist.items, new_chain(cases=False))  # cases do not change the rates
    return fit_baseline(
        ((h.at, h.category, h.codes()) for h in hits), config.rules, source=f"generated {weeks} weeks"
    )


@dataclass
class Outcome:
    records: list[SurgeRecord]
    events: list[Event]
    opened: list[SurgeRecord]
    false_alarms: list[SurgeRecord]
    hits: int
    cpu_us_per_hit: float


def evaluate(generated: Generated, baseline: Baseline | None, config: SurgeConfig | None = None) -> Outcome:
    import time

    config = config or SurgeConfig.load()
    detector = SurgeDetector(config, baseline)
    hits = to_hits(generated.items, new_chain())
    started = time.process_time()
    records = list(run_replay(hits, detector))
    cpu = time.process_time() - started
    opened = [r for r in records if r.state == "opened"]
    injected = set().union(*(e.report_ids for e in generated.events)) if generated.events else set()
    final: dict[str, SurgeRecord] = {r.surge_id: r for r in records}  # the last record has the most ids
    for event in generated.events:
        for r in opened:
            at = r.at.timestamp()
            code = r.kelurahan_code or r.kecamatan_code or r.kota_code
            ours = event.report_ids.intersection(final[r.surge_id].report_ids)
            if r.category == event.category and ours and event.start <= at and event.detected_at is None:
                event.detected_at, event.surge_place, event.surge_id = at, code, r.surge_id
    # A surge most of whose reports were injected (a flood spilling over into the next kota, storm
    # reports classified as street lights) is the event's doing, not a false alarm of normal traffic.
    false_alarms = [
        r
        for r in opened
        if len(injected.intersection(final[r.surge_id].report_ids)) * 2 < len(final[r.surge_id].report_ids)
    ]
    return Outcome(records, generated.events, opened, false_alarms, len(hits), 1e6 * cpu / max(1, len(hits)))


def summary(name: str, outcome: Outcome) -> list[str]:
    lines = [
        f"{name}: {outcome.hits} reports, {len(outcome.opened)} surges opened, "
        f"{len(outcome.false_alarms)} not from an injected event; "
        f"detector {outcome.cpu_us_per_hit:.1f} µs CPU/report"
    ]
    for e in outcome.events:
        delay = "not detected" if e.delay_s is None else f"after {e.delay_s / 60:.1f} min"
        lines.append(
            f"  {e.name:7} {e.category:18} {e.reports:4} reports: {delay}, place {e.surge_place} "
            f"(expected {e.place}{' or one of its kelurahan' if len(e.kelurahan) > 1 else ''}) "
            f"{'OK' if e.ok() else 'MISSED'}"
        )
    for r in outcome.false_alarms:
        lines.append(
            f"  false alarm: {r.category} at {r.kelurahan or r.kecamatan or r.kota} "
            f"{r.at.astimezone(WIB):%a %H:%M}, {r.count} in {r.window} (expected {r.expected:.2f})"
        )
    return lines


# ------------------------------------------------------------------------------------ stage CPU
class _Table:
    """The two members of a Faust table the surge stage uses; changelog records are only counted."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.changelog_bytes = 0
        self.changelog_records = 0

    def send_changelog(self, partition: int, key: bytes, value: bytes) -> None:
        self.changelog_records += 1
        self.changelog_bytes += len(key) + len(value)


class _Message:
    __slots__ = ("offset", "partition", "topic")

    def __init__(self, partition: int) -> None:
        self.topic, self.partition, self.offset = "hits", partition, 0


class _Event:
    __slots__ = ("message", "value")

    def __init__(self, value: bytes, partition: int) -> None:
        self.value, self.message = value, _Message(partition)


def measure_stage(
    reports: int = 20_000, rate: float = 1000.0, batch: int = 1000, seed: int = 13
) -> dict[str, Any]:
    """CPU per report of the surge stage in-process, without Kafka: the triage side (the hit record)
    and the surge agent's side (decode, detector, state serialisation, alert records), on benchmark
    traffic (:class:`~pipeline.bench.traffic.Traffic`, the flood-day mix off) arriving at ``rate``/s.

    Every place × category of the benchmark's traffic is far busier than the city's real ~500 a day,
    so against the priors nearly every group is in a surge: the detector's most expensive state."""
    import time

    from aiokafka.partitioner import DefaultPartitioner

    from ..processors.chain import settle_heap
    from ..settings import Settings
    from ..surge_stage import SurgeStage

    traffic = Traffic(seed=seed, run_tag="surge-cpu")
    t0 = time.time() - reports / rate
    envs = [traffic.envelope() for _ in range(reports)]
    chain = new_chain(cases=False)
    triaged: list[Report] = []
    seen: set[str] = set()
    for i in range(0, reports, 500):
        part = []
        for j, env in enumerate(envs[i : i + 500]):
            when = datetime.fromtimestamp(t0 + (i + j) / rate, UTC)
            r = Report.model_validate({**env, "received_at": when})
            if r.report_id not in seen:  # exact dedup drops redeliveries before triage
                seen.add(r.report_id)
                part.append(r)
        triaged.extend(chain.process(part))
    settle_heap()
    started = time.process_time()
    # the hits as the triage worker publishes them: per batch of 500, one record per kota x category
    hits = [kv for i in range(0, len(triaged), 500) for kv in hit_records(triaged[i : i + 500])]
    hit_cpu = time.process_time() - started

    partitioner = DefaultPartitioner()
    every = list(range(6))
    events = [_Event(v, partitioner(k, every, every)) for k, v in hits]
    stage = SurgeStage(Settings())
    table = _Table()
    records = 0
    started = time.process_time()
    for i in range(0, len(events), batch):
        out, touched, _ = stage.apply(table, events[i : i + batch])
        for r in out:
            r.dumps()
        records += len(out)
        for key, (state, p) in touched.items():
            stage.put(table, key, state, p)
    agent_cpu = time.process_time() - started
    n = len(triaged)
    return {
        "reports": n,
        "hits": len(hits),
        "rate_per_s": rate,
        "batch": batch,
        "triage_hit_us_per_report": round(1e6 * hit_cpu / n, 2),
        "surge_agent_us_per_report": round(1e6 * agent_cpu / n, 2),
        "alert_records": records,
        "changelog_records": table.changelog_records,
        "changelog_bytes_per_report": round(table.changelog_bytes / n, 1),
        "groups": len(table.data),
    }
