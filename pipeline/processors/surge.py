"""Surges: far more reports of one category from one place than that place has at that hour.

Pure (no I/O): the live worker (``pipeline/surge_stage.py``) and ``crm-pipeline surge replay`` run the
same code. The worker keeps one :class:`GroupState` per kota × category in a Faust table; everything a
decision needs about that kota and category (its kelurahan, kecamatan and the kota itself) is in it.

**Counts.** Every report with a category and a place is a :class:`Hit`. It is counted for its
kelurahan, its kecamatan and its kota in sliding windows (15 min, 1 h, 6 h by default), each kept as
16 slots of a fifteenth of the window (:class:`Ring`), so a window's count covers the last window plus
at most one slot. A report id counted once is never counted again (``GroupState.seen``).

**The test.** For each window, with ``n`` reports observed and ``mu`` expected (:class:`Baseline`: the
place's rate for that hour of the week, integrated over the window), the place × category fires when

    n >= min_count,  n >= min_ratio * mu  and  P(X >= n | X ~ Poisson(mu)) <= open_p

(thresholds per category: ``pipeline/data/surge_thresholds.v1.csv``). ``score`` is ``-log10`` of that
tail probability.

**Incidents.** A firing place opens a surge unless an open surge of the same category already covers
it (the same place, one inside it, or one it lies in). The surge's place is the smallest region
(kelurahan ⊂ kecamatan ⊂ kota) holding at least :data:`CONCENTRATION` of the firing window's reports,
so a flood in three kelurahan of one kecamatan is one surge of that kecamatan, not three. States:

* ``opened``: the first time; its id is stable (uuid5 of category, place and the report that opened it),
  so a worker that replays its input after a crash opens the same surge again, not a second one.
* ``growing``: the count in the surge's window reached 1.5 × (and 3 more than) the count last
  published, or the surge spread to a larger place.
* ``subsiding``: the shortest window's rate fell below half of the middle window's.
* ``closed``: neither the shortest nor the middle window is improbable any more (tail probability
  above ``close_p``), nor the window that opened it.

Every change is a :class:`SurgeRecord` with a ``seq`` that grows by one; consumers keep the highest
``seq`` of each ``surge_id``.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from .route import DATA_DIR, RoutingTableError, _rows, load_router

SURGE_SCHEMA_VERSION = "1.0"
THRESHOLDS_TABLE = DATA_DIR / "surge_thresholds.v1.csv"
#: Namespace of surge ids; changing it would give every open surge a new id, so it is frozen.
SURGE_ID_NAMESPACE = uuid.UUID("0a5b7d1e-3c1f-5e8a-9b2d-4f6c8e0a1b17")

DEFAULT_WINDOWS = (900, 3600, 21600)
SLOTS = 15  # full slots per window; one more holds the current, partial slot
LEVELS = ("kelurahan", "kecamatan", "kota")
#: the surge's place is the smallest region holding this share of the firing window's reports
CONCENTRATION = 0.75
GROW_FACTOR, GROW_MIN = 1.5, 3
SUBSIDE_RATIO = 0.5
#: report ids remembered per kota × category (6-byte digests): a report counted once is never counted
#: again within the last SEEN_MAX reports of its kota and category (all of them for hours at the real
#: volume; at least the last minute at the benchmark's 1,000 reports/s)
SEEN_MAX = 1024
RECENT_MAX = 48  # latest reports kept per kota × category to seed a new surge's report ids
RECORD_IDS_MAX = 100  # report ids a record carries (the first ones; report_count has the total)
CASES_MAX = 50
WIB_S = 7 * 3600
LN10 = math.log(10)

State = Literal["opened", "growing", "subsiding", "closed"]


class SurgeConfigError(RoutingTableError):
    """The thresholds file is malformed; the message names the file and line."""


def level_of(code: str) -> str:
    return {1: "kota", 2: "kecamatan", 3: "kelurahan"}[code.count(".")]


def window_label(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|min|h)?\s*$")


def parse_windows(spec: str) -> tuple[int, ...]:
    """``"15m,1h,6h"`` → ``(900, 3600, 21600)``: three increasing windows."""
    out = []
    for part in spec.split(","):
        m = _DURATION.match(part)
        if not m:
            raise ValueError(f"surge window {part.strip()!r} is not like 15m, 1h or 90s")
        n, unit = int(m.group(1)), m.group(2) or "s"
        out.append(n * {"s": 1, "m": 60, "min": 60, "h": 3600}[unit])
    if len(out) != 3 or not out[0] < out[1] < out[2] or out[0] < SLOTS:
        raise ValueError(f"surge windows {spec!r}: need three increasing windows of at least {SLOTS}s")
    return tuple(out)


# ------------------------------------------------------------------------------------------ the test
def poisson_score(n: int, mu: float) -> float:
    """``-log10 P(X >= n)`` for ``X ~ Poisson(mu)``; 0 when ``n <= mu`` (nothing unusual)."""
    if n <= 0 or n <= mu:
        return 0.0
    if mu <= 0:
        return math.inf
    log_term = -mu + n * math.log(mu) - math.lgamma(n + 1)  # log P(X = n)
    if mu / (n + 1) < 0.8:  # the tail's terms shrink fast: sum them (exact, no underflow)
        total = term = 1.0
        i = n
        while term > 1e-12 * total:
            i += 1
            term *= mu / i
            total += term
        return max(0.0, -(log_term + math.log(total)) / LN10)
    from scipy.special import gammainc  # P(X >= n) is the regularised lower incomplete gamma

    p = float(gammainc(n, mu))
    return -math.log10(p) if p > 0 else -log_term / LN10


# ------------------------------------------------------------------------------------ thresholds
@dataclass(frozen=True, slots=True)
class CategoryRule:
    category: str
    min_count: int
    min_ratio: float
    open_p: float
    close_p: float
    prior_daily: float
    notify_also: tuple[str, ...]
    note: str
    line: int

    @property
    def open_score(self) -> float:
        return -math.log10(self.open_p)

    @property
    def close_score(self) -> float:
        return -math.log10(self.close_p)


_THRESHOLD_COLUMNS = (
    "category", "min_count", "min_ratio", "open_p", "close_p", "prior_daily", "notify_also", "note",
)  # fmt: skip


def read_thresholds(path: str | Path | None = None) -> dict[str, CategoryRule]:
    """The thresholds table, validated (errors name the file and line). ``*`` is the default row."""
    path = Path(path) if path else THRESHOLDS_TABLE
    router = load_router()
    known = set(router.categories())
    agencies = router.agency_table
    rules: dict[str, CategoryRule] = {}

    def err(n: int, msg: str) -> SurgeConfigError:
        return SurgeConfigError(f"{path}:{n}: {msg}")

    def number(n: int, row: dict[str, str], col: str, kind: type = float) -> Any:
        try:
            return kind(row[col])
        except ValueError:
            raise err(n, f"{col} {row[col]!r} is not a {'whole ' if kind is int else ''}number") from None

    try:
        rows = list(_rows(path, _THRESHOLD_COLUMNS))
    except SurgeConfigError:
        raise
    except RoutingTableError as exc:
        raise SurgeConfigError(str(exc)) from None
    for n, row in rows:
        cat = row["category"]
        if cat != "*" and cat not in known:
            raise err(n, f"category {cat!r} is not in the routing table (nor '*', the default)")
        if cat in rules:
            raise err(n, f"category {cat!r} appears twice (first on line {rules[cat].line})")
        min_count = number(n, row, "min_count", int)
        if not 2 <= min_count <= 10_000:
            raise err(n, f"min_count {min_count} outside 2..10000 (one report is never a surge)")
        min_ratio = number(n, row, "min_ratio")
        if not 1.0 <= min_ratio <= 1000:
            raise err(n, f"min_ratio {min_ratio} outside 1..1000")
        open_p, close_p = number(n, row, "open_p"), number(n, row, "close_p")
        if not 0 < open_p < 0.5:
            raise err(n, f"open_p {open_p} outside (0, 0.5)")
        if not open_p < close_p < 1:
            raise err(n, f"close_p {close_p} must lie between open_p ({open_p}) and 1")
        prior = number(n, row, "prior_daily")
        if not 0 < prior <= 1_000_000:
            raise err(n, f"prior_daily {prior} must be a positive number of reports a day")
        also = tuple(a.strip() for a in row["notify_also"].split(";") if a.strip())
        for a in also:
            if a not in agencies:
                raise err(n, f"notify_also {a!r} is not an agency_id of the agencies table")
        rules[cat] = CategoryRule(cat, min_count, min_ratio, open_p, close_p, prior, also, row["note"], n)
    if "*" not in rules:
        raise SurgeConfigError(f"{path}: no '*' row (the default for categories not listed)")
    return rules


@dataclass(frozen=True)
class SurgeConfig:
    rules: dict[str, CategoryRule]
    windows: tuple[int, ...] = DEFAULT_WINDOWS

    def rule(self, category: str) -> CategoryRule:
        return self.rules.get(category) or self.rules["*"]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(window_label(w) for w in self.windows)

    @classmethod
    def load(cls, path: str | Path | None = None, windows: str | Sequence[int] | None = None) -> SurgeConfig:
        wins = parse_windows(windows) if isinstance(windows, str) else tuple(windows or DEFAULT_WINDOWS)
        return cls(_cached_thresholds(str(path or THRESHOLDS_TABLE)), wins)


@lru_cache(maxsize=4)
def _cached_thresholds(path: str) -> dict[str, CategoryRule]:
    return read_thresholds(path)


# -------------------------------------------------------------------------------------- the baseline
#: Share of a day's reports in each hour (WIB) when no history says otherwise: quiet at night, the
#: most in the morning and early afternoon, as the CRM's intake runs. Normalised to a mean of 1.
DEFAULT_DAY_CYCLE = (
    0.25, 0.15, 0.1, 0.1, 0.15, 0.35, 0.7, 1.1, 1.5, 1.7, 1.75, 1.7,
    1.5, 1.55, 1.6, 1.5, 1.35, 1.2, 1.1, 1.1, 1.05, 0.9, 0.65, 0.4,
)  # fmt: skip
#: Weight of the priors when history is fitted: as if this many days of prior-rate history were added.
PRIOR_DAYS = 7.0
#: Kepulauan Seribu (islands, ~28,000 people) reports far less than a mainland kelurahan.
SERIBU_WEIGHT = 0.1


def hour_of_week(t: float) -> int:
    """0 = Monday 00:00-01:00 WIB."""
    return (int((t + WIB_S) // 3600) + 72) % 168  # 1970-01-01 was a Thursday


def _normalised(values: Sequence[float]) -> list[float]:
    mean = sum(values) / len(values)
    return [v / mean for v in values] if mean > 0 else [1.0] * len(values)


@dataclass
class Baseline:
    """Expected reports per place × category: a daily rate times the city's hour-of-week profile.

    ``daily(code, category)`` is the fitted rate of that place and category shrunk towards its prior
    (``PRIOR_DAYS``), or the prior alone: the category's city-wide ``prior_daily`` times the place's
    share of the city's reports (fitted, else equal per mainland kelurahan).
    """

    profile: list[float] = field(default_factory=lambda: _normalised(DEFAULT_DAY_CYCLE * 7))
    category_daily: dict[str, float] = field(default_factory=dict)
    place_share: dict[str, float] = field(default_factory=dict)  # kelurahan code → share
    key_daily: dict[str, float] = field(default_factory=dict)  # "code|category" → reports a day
    source: str = "priors (no history)"
    history_days: float = 0.0

    def __post_init__(self) -> None:
        if len(self.profile) != 168:
            raise ValueError("the hour-of-week profile needs 168 values")
        cum = [0.0]
        for v in self.profile:
            cum.append(cum[-1] + v)
        self._cum = cum
        self._share: dict[str, float] = {}
        self._daily_cache: dict[tuple[str, str], float] = {}

    # -- shares of the city's reports per place
    def share(self, code: str) -> float:
        s = self._share.get(code)
        if s is None:
            s = self._share[code] = self._compute_share(code)
        return s

    def _compute_share(self, code: str) -> float:
        shares = self.place_share or _default_shares()
        if code in shares:
            return shares[code]
        prefix = code + "."
        return sum(v for k, v in shares.items() if k.startswith(prefix))

    def daily(self, code: str, category: str, prior_daily: float) -> float:
        key = (code, category)
        d = self._daily_cache.get(key)
        if d is None:
            city = self.category_daily.get(category, prior_daily)
            d = self.key_daily.get(f"{code}|{category}")
            if d is None:
                d = city * self.share(code)
            self._daily_cache[key] = d = max(d, 1e-4)
        return d

    def _integral(self, t: float) -> float:
        """Hours since the epoch weighted by the profile (a week of hours weighs 168)."""
        h = (t + WIB_S) / 3600 + 72
        weeks, within = divmod(h, 168)
        i = int(within)
        return weeks * self._cum[168] + self._cum[i] + (within - i) * self.profile[i]

    def expected(self, code: str, category: str, prior_daily: float, t0: float, t1: float) -> float:
        """Reports expected between ``t0`` and ``t1`` (epoch seconds)."""
        return self.daily(code, category, prior_daily) / 24.0 * (self._integral(t1) - self._integral(t0))

    def per_hour(self, code: str, category: str, prior_daily: float, t: float) -> float:
        return self.daily(code, category, prior_daily) / 24.0 * self.profile[hour_of_week(t)]

    # -- file
    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "version": 1,
                "source": self.source,
                "history_days": round(self.history_days, 2),
                "hour_of_week": [round(v, 4) for v in self.profile],
                "category_daily": {k: round(v, 4) for k, v in sorted(self.category_daily.items())},
                "place_share": {k: round(v, 6) for k, v in sorted(self.place_share.items())},
                "key_daily": {k: round(v, 5) for k, v in sorted(self.key_daily.items())},
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def load(cls, path: str | Path) -> Baseline:
        p = Path(path)
        try:
            data = orjson.loads(p.read_bytes())
            return cls(
                profile=[float(v) for v in data["hour_of_week"]],
                category_daily={k: float(v) for k, v in data.get("category_daily", {}).items()},
                place_share={k: float(v) for k, v in data.get("place_share", {}).items()},
                key_daily={k: float(v) for k, v in data.get("key_daily", {}).items()},
                source=str(data.get("source", p.name)),
                history_days=float(data.get("history_days", 0)),
            )
        except OSError as exc:
            raise SurgeConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise SurgeConfigError(f"{p}: not a surge baseline file: {exc}") from None


@lru_cache(maxsize=1)
def _default_shares() -> dict[str, float]:
    from .locate import load_gazetteer

    kel = [p.code for p in load_gazetteer().places if p.level == "kelurahan"]
    weights = {c: SERIBU_WEIGHT if c.startswith("31.01") else 1.0 for c in kel}
    total = sum(weights.values())
    return {c: w / total for c, w in weights.items()}


def fit_baseline(
    hits: Iterable[tuple[float, str, Sequence[str]]],
    rules: dict[str, CategoryRule],
    source: str = "history",
) -> Baseline:
    """A baseline from history: ``(time, category, place codes)`` per report (codes of every level).

    The hour-of-week profile is the city's (all categories), smoothed towards the default day cycle;
    each place × category rate is its count over the history's days, shrunk towards the prior with
    weight :data:`PRIOR_DAYS` so a place that had nothing in a short history is not expected to have
    nothing forever.
    """
    how = [0.0] * 168
    cat_n: dict[str, int] = {}
    key_n: dict[str, int] = {}
    kel_n: dict[str, int] = {}
    first = last = None
    n = 0
    for t, category, codes in hits:
        n += 1
        first = t if first is None or t < first else first
        last = t if last is None or t > last else last
        how[hour_of_week(t)] += 1
        cat_n[category] = cat_n.get(category, 0) + 1
        for code in codes:
            k = f"{code}|{category}"
            key_n[k] = key_n.get(k, 0) + 1
            if code.count(".") == 3:
                kel_n[code] = kel_n.get(code, 0) + 1
    if not n or first is None or last is None:
        raise ValueError("no reports with a category and a place to fit a baseline on")
    days = max(1.0, (last - first) / 86400)
    weeks = days / 7
    prior_profile = _normalised(DEFAULT_DAY_CYCLE * 7)
    per_hour = n / (weeks * 168)  # mean reports per hour of the week
    # each hour of the week: observed count plus PRIOR_DAYS/7 weeks of the default shape
    k = PRIOR_DAYS / 7
    profile = _normalised([(how[i] + k * per_hour * prior_profile[i]) / (weeks + k) for i in range(168)])
    default_rule = rules["*"]
    category_daily = {}
    for cat in set(cat_n) | {c for c in rules if c != "*"}:
        prior = (rules.get(cat) or default_rule).prior_daily
        category_daily[cat] = (cat_n.get(cat, 0) + PRIOR_DAYS * prior) / (days + PRIOR_DAYS)
    defaults = _default_shares()
    total_kel = sum(kel_n.values())
    share = {
        c: (kel_n.get(c, 0) + PRIOR_DAYS * s * total_kel / days) / (total_kel + PRIOR_DAYS * total_kel / days)
        for c, s in defaults.items()
    }
    base = Baseline(profile, category_daily, share, {}, source, days)
    key_daily = {}
    for key, count in key_n.items():
        code, cat = key.split("|", 1)
        prior = category_daily[cat] * base.share(code)
        key_daily[key] = (count + PRIOR_DAYS * prior) / (days + PRIOR_DAYS)
    base.key_daily = key_daily
    base.__post_init__()
    return base


# -------------------------------------------------------------------------------------------- places
@dataclass(frozen=True, slots=True)
class PlaceName:
    level: str
    code: str
    kota: str | None
    kota_code: str
    kecamatan: str | None
    kecamatan_code: str | None
    kelurahan: str | None
    kelurahan_code: str | None


@lru_cache(maxsize=1)
def place_names() -> dict[str, PlaceName]:
    from .locate import load_gazetteer

    return {
        p.code: PlaceName(
            p.level, p.code, p.kota, p.kota_code, p.kecamatan, p.kecamatan_code, p.kelurahan, p.kelurahan_code
        )
        for p in load_gazetteer().places
    }


def place_of(code: str) -> PlaceName:
    known = place_names().get(code)
    if known is not None:
        return known
    parts = code.split(".")
    level = level_of(code)
    return PlaceName(
        level,
        code,
        None,
        ".".join(parts[:2]),
        None,
        ".".join(parts[:3]) if len(parts) > 2 else None,
        None,
        code if level == "kelurahan" else None,
    )


# ------------------------------------------------------------------------------------------ the hits
@dataclass(slots=True)
class Hit:
    """What the detector needs of one report (the worker publishes it keyed by :meth:`group_key`)."""

    report_id: str
    at: float  # epoch seconds: when it was reported
    category: str
    kota_code: str
    kecamatan_code: str | None = None
    kelurahan_code: str | None = None
    case_id: str | None = None

    @property
    def group_key(self) -> str:
        return f"{self.kota_code}|{self.category}"

    def codes(self) -> list[str]:
        return [c for c in (self.kelurahan_code, self.kecamatan_code, self.kota_code) if c]

    def to_list(self) -> list[Any]:
        return [
            self.report_id,
            round(self.at, 3),
            self.category,
            self.kota_code,
            self.kecamatan_code,
            self.kelurahan_code,
            self.case_id,
        ]

    def dumps(self) -> bytes:
        return orjson.dumps(self.to_list())

    @classmethod
    def from_list(cls, item: Any) -> Hit:
        rid, at, cat, kota, kec, kel, case = item
        if not isinstance(rid, str) or not isinstance(cat, str) or not isinstance(kota, str):
            raise ValueError("a surge hit needs a report id, a category and a kota code")
        return cls(rid, float(at), cat, kota, kec, kel, case)

    @classmethod
    def loads(cls, data: bytes) -> Hit:
        return cls.from_list(orjson.loads(data))

    @classmethod
    def loads_many(cls, data: bytes) -> list[Hit]:
        """A hits record: an array of hits of one kota × category, or a single hit (the first format)."""
        items = orjson.loads(data)
        if not isinstance(items, list) or not items:
            raise ValueError("a surge hits record is a non-empty array")
        if not isinstance(items[0], list):
            return [cls.from_list(items)]
        return [cls.from_list(item) for item in items]


#: A report made longer ago than this before the pipeline received it (a back-filled history, a poller
#: catching up) is not a live signal: counting it would raise surges for events long past.
LIVE_LAG_S = 6 * 3600


def hit_for(report: Any) -> Hit | None:
    """The report's hit, or None (no category, no kota, or too old to be live)."""
    t = report.triage
    if t is None or not t.category or t.region is None or not t.region.kota_code:
        return None
    received = report.received_at.timestamp()
    at = received
    if report.source_at is not None:
        made = report.source_at.timestamp()
        if received - made > LIVE_LAG_S:
            return None
        at = min(made, received)
    r = t.region
    return Hit(report.report_id, at, t.category, r.kota_code, r.kecamatan_code, r.kelurahan_code, t.case_id)


#: Hits a record carries at most (about 100 bytes each: far under the broker's message size limit).
HITS_PER_RECORD = 500


def hit_records(reports: Iterable[Any]) -> list[tuple[bytes, bytes]]:
    """The surge hits of a batch of reports as (key, value) records: one per kota × category (in
    the reports' order within it), not one per report. The surge worker's cost is mostly per record
    (Faust's consumer, the broker), so a batch of 500 reports in a few dozen groups costs it a few
    dozen records."""
    groups: dict[str, list[list[Any]]] = {}
    for report in reports:
        hit = hit_for(report)
        if hit is not None:
            groups.setdefault(hit.group_key, []).append(hit.to_list())
    out = []
    for key, items in groups.items():
        k = key.encode()
        for i in range(0, len(items), HITS_PER_RECORD):
            out.append((k, orjson.dumps(items[i : i + HITS_PER_RECORD])))
    return out


# ------------------------------------------------------------------------------------------- windows
class Ring:
    """Sliding counts of one place × category: per window, SLOTS+1 slots of window/SLOTS seconds."""

    __slots__ = ("heads", "slots", "totals")

    def __init__(self, n: int = 3) -> None:
        self.heads = [-(10**12)] * n
        self.slots = [[0] * (SLOTS + 1) for _ in range(n)]
        self.totals = [0] * n

    def _advance(self, w: int, slot_no: int) -> None:
        head = self.heads[w]
        if slot_no <= head:
            return
        s = self.slots[w]
        if slot_no - head > SLOTS:
            for i in range(SLOTS + 1):
                s[i] = 0
            self.totals[w] = 0
        else:
            for k in range(head + 1, slot_no + 1):
                i = k % (SLOTS + 1)
                self.totals[w] -= s[i]
                s[i] = 0
        self.heads[w] = slot_no

    def add(self, at: float, now: float, slot_s: Sequence[int]) -> None:
        """Count one report made at ``at`` (``now`` >= every earlier ``now``; ``slot_s``: slot sizes)."""
        self.add_slots([int(at // s) for s in slot_s], [int(now // s) for s in slot_s])

    def add_slots(self, ks: list[int], curs: list[int]) -> None:
        """:meth:`add` with the report's and the current slot numbers per window worked out once for
        the kelurahan, kecamatan and kota rings a report counts in."""
        heads, totals, slots = self.heads, self.totals, self.slots
        w = 0
        for cur in curs:
            if cur != heads[w]:
                self._advance(w, cur)
            k = ks[w]
            if k > cur - SLOTS - 1:
                slots[w][k % (SLOTS + 1)] += 1
                totals[w] += 1
            w += 1

    def counts(self, now: float, slot_s: Sequence[int]) -> list[int]:
        heads = self.heads
        for w in range(len(slot_s)):
            cur = int(now // slot_s[w])
            if cur != heads[w]:
                self._advance(w, cur)
        return list(self.totals)

    @staticmethod
    def span_start(now: float, size: int) -> float:
        """Start of the time a window's count covers (its oldest slot's start)."""
        slot = size // SLOTS
        return (int(now // slot) - SLOTS) * slot

    def empty(self) -> bool:
        return not any(self.totals)

    def to_list(self) -> list[Any]:
        return [self.heads, self.slots]

    @classmethod
    def from_list(cls, data: list[Any]) -> Ring:
        ring = cls(len(data[0]))
        ring.heads = [int(h) for h in data[0]]
        ring.slots = [[int(v) for v in s] for s in data[1]]
        ring.totals = [sum(s) for s in ring.slots]
        return ring

    def to_sparse(self) -> list[Any]:
        """[heads, per window [slot, count, slot, count, ...]]: most slots of most places are 0, and
        the table value is written to the changelog on every batch that touches its group."""
        return [self.heads, [[x for i, n in enumerate(s) if n for x in (i, n)] for s in self.slots]]

    @classmethod
    def from_sparse(cls, data: list[Any]) -> Ring:
        ring = cls(len(data[0]))
        ring.heads = [int(h) for h in data[0]]
        for w, pairs in enumerate(data[1]):
            s = ring.slots[w]
            for j in range(0, len(pairs), 2):
                s[int(pairs[j])] = int(pairs[j + 1])
        ring.totals = [sum(s) for s in ring.slots]
        return ring


def _digest(report_id: str) -> bytes:
    return hashlib.blake2b(report_id.encode(), digest_size=6).digest()


# ------------------------------------------------------------------------------------------ incidents
@dataclass
class Incident:
    surge_id: str
    code: str
    window: int
    opened_at: float
    state: str
    seq: int
    last_count: int
    first_report_id: str
    latest_report_id: str
    report_ids: list[str]
    report_count: int
    case_ids: list[str]

    def attach(self, report_id: str, case_id: str | None) -> None:
        self.latest_report_id = report_id
        self.report_count += 1
        if len(self.report_ids) < RECORD_IDS_MAX:
            self.report_ids.append(report_id)
        if case_id and case_id not in self.case_ids and len(self.case_ids) < CASES_MAX:
            self.case_ids.append(case_id)

    def contains(self, code: str) -> bool:
        """``code`` is the surge's place or lies in it."""
        return code == self.code or code.startswith(self.code + ".")

    def related(self, code: str) -> bool:
        """``code`` lies in the surge's place or contains it."""
        return self.contains(code) or self.code.startswith(code + ".")


@dataclass
class GroupState:
    """Everything the detector keeps about one kota × category (one Faust table value)."""

    key: str
    now: float = 0.0
    rings: dict[str, Ring] = field(default_factory=dict)
    recent: deque[tuple[str, float, str, str | None]] = field(
        default_factory=lambda: deque(maxlen=RECENT_MAX)
    )
    seen: dict[bytes, None] = field(default_factory=dict)  # insertion-ordered set of id digests
    incidents: list[Incident] = field(default_factory=list)
    settled: int = -1  # the shortest window's slot when open surges were last checked
    pruned: float = 0.0
    closed: list[tuple[str, float]] = field(default_factory=list)  # (place, when) of recent closes

    @property
    def category(self) -> str:
        return self.key.split("|", 1)[1]

    def is_open(self) -> bool:
        return bool(self.incidents)

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "k": self.key,
                "now": self.now,
                "rs": {c: r.to_sparse() for c, r in self.rings.items()},
                "rc": list(self.recent),
                "s": base64.b64encode(b"".join(self.seen)).decode(),
                "i": [vars(i) for i in self.incidents],
                "st": self.settled,
                "pr": self.pruned,
                "cl": self.closed,
            }
        )

    @classmethod
    def loads(cls, data: bytes) -> GroupState:
        d = orjson.loads(data)
        raw = base64.b64decode(d["s"])
        state = cls(
            key=d["k"],
            now=float(d["now"]),
            rings=(
                {c: Ring.from_sparse(v) for c, v in d["rs"].items()}
                if "rs" in d
                else {c: Ring.from_list(v) for c, v in d["r"].items()}  # written before sparse rings
            ),
            recent=deque((tuple(x) for x in d["rc"]), maxlen=RECENT_MAX),  # type: ignore[misc]
            seen=dict.fromkeys(raw[i : i + 6] for i in range(0, len(raw), 6)),
            incidents=[Incident(**i) for i in d["i"]],
            settled=int(d.get("st", -1)),
            pruned=float(d.get("pr", 0.0)),
            closed=[(c, float(t)) for c, t in d.get("cl", [])],
        )
        return state


# -------------------------------------------------------------------------------------------- records
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlaceCount(_Model):
    kelurahan_code: str
    kelurahan: str | None = None
    kecamatan: str | None = None
    count: int = Field(
        description="reports from this kelurahan in the surge's window (at least the middle one)"
    )


class SurgeRecord(_Model):
    """One state change of a surge, as published on ``<ns>.alerts.v1`` (keyed by ``surge_id``)."""

    schema_version: str = SURGE_SCHEMA_VERSION
    surge_id: str = Field(description="stable id of the surge: every change of one surge carries it")
    seq: int = Field(ge=1, description="1 for opened, +1 per later change; keep the highest per surge_id")
    state: Literal["opened", "growing", "subsiding", "closed"]
    at: datetime = Field(description="when the change happened (the report or clock tick that caused it)")
    opened_at: datetime
    level: Literal["kelurahan", "kecamatan", "kota"] = Field(description="level of the surge's place")
    kota: str | None = None
    kota_code: str
    kecamatan: str | None = None
    kecamatan_code: str | None = None
    kelurahan: str | None = None
    kelurahan_code: str | None = None
    category: str
    window: str = Field(description="the window that decided: 15m, 1h or 6h by default")
    count: int = Field(description="reports from the place in that window")
    expected: float = Field(description="reports expected from the place in that window")
    expected_per_hour: float = Field(description="the place's expected rate (reports/hour) at `at`")
    score: float = Field(description="-log10 P(X >= count) for X ~ Poisson(expected)")
    counts: dict[str, int] = Field(description="reports from the place per window")
    expected_counts: dict[str, float] = Field(description="reports expected from the place per window")
    first_report_id: str
    latest_report_id: str
    report_ids: list[str] = Field(description=f"the surge's reports, the first {RECORD_IDS_MAX}")
    report_count: int = Field(description="reports attached to the surge so far")
    case_ids: list[str] = Field(default_factory=list, description="cases the reports were grouped into")
    places: list[PlaceCount] = Field(default_factory=list, description="kelurahan within the place")
    agency: str | None = Field(None, description="the category's responsible agency (routing table)")
    agency_unit: str | None = None
    notify: list[str] = Field(default_factory=list, description="agencies told (responsible + notify_also)")
    thresholds: dict[str, float] = Field(default_factory=dict)
    baseline: str = Field("", description="where the expected rates come from")

    def dumps(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def loads(cls, data: bytes | str) -> SurgeRecord:
        return cls.model_validate_json(data)

    def replay_row(self, id_of: Callable[[str], str] = str) -> dict[str, Any]:
        """The flat row ``crm-pipeline surge replay`` writes."""
        return {
            "surge_id": self.surge_id,
            "state": self.state,
            "at": self.at.isoformat(),
            "kota": self.kota,
            "kecamatan": self.kecamatan,
            "kelurahan": self.kelurahan,
            "kelurahan_code": self.kelurahan_code,
            "category": self.category,
            "count": self.count,
            "expected": round(self.expected, 3),
            "score": round(self.score, 2),
            "report_ids": [id_of(r) for r in self.report_ids],
        }


def json_schema() -> dict[str, Any]:
    schema = SurgeRecord.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://jakarta.go.id/schemas/crm/alert.v1.schema.json"
    schema["title"] = f"CRM surge alert v{SURGE_SCHEMA_VERSION}"
    return schema


def _iso(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


# ------------------------------------------------------------------------------------------ detector
class SurgeDetector:
    """Feeds hits and clock ticks into :class:`GroupState` values and returns the records to publish."""

    def __init__(self, config: SurgeConfig | None = None, baseline: Baseline | None = None) -> None:
        self.config = config or SurgeConfig.load()
        self.baseline = baseline or Baseline()
        self.windows = self.config.windows
        self.slot_s = tuple(w // SLOTS for w in self.windows)
        self.labels = self.config.labels
        self._router = load_router()
        self._expected_cache: dict[tuple[str, str, int, int], float] = {}
        self._who_cache: dict[tuple[str, str], tuple[str | None, str | None, list[str]]] = {}

    def new_state(self, key: str) -> GroupState:
        return GroupState(key=key)

    # -- numbers
    def _expected(self, code: str, category: str, rule: CategoryRule, w: int, now: float) -> float:
        size = self.windows[w]
        slot = size // SLOTS
        head = int(now // slot)
        key = (code, category, w, head)
        mu = self._expected_cache.get(key)
        if mu is None:
            if len(self._expected_cache) > 50_000:
                self._expected_cache.clear()
            start = (head - SLOTS) * slot
            end = (head + 1) * slot  # the whole current slot: a slight overestimate, never under
            mu = self._expected_cache[key] = self.baseline.expected(
                code, category, rule.prior_daily, start, end
            )
        return mu

    def _fires(
        self, code: str, counts: list[int], rule: CategoryRule, category: str, now: float, state: GroupState
    ) -> tuple[float, int]:
        """(best score among windows that pass the test, that window) or (0, -1).

        A window that still holds reports of a surge that closed at a related place does not count:
        a flood that has subsided would otherwise open again from its own reports in the 6 h window."""
        best, best_w = 0.0, -1
        quiet_since = max(
            (t for c, t in state.closed if c == code or c.startswith(code + ".") or code.startswith(c + ".")),
            default=None,
        )
        for w, n in enumerate(counts):
            if n < rule.min_count:
                continue
            if quiet_since is not None and Ring.span_start(now, self.windows[w]) < quiet_since:
                continue
            mu = self._expected(code, category, rule, w, now)
            if n < rule.min_ratio * mu:
                continue
            s = poisson_score(n, mu)
            if s >= rule.open_score and s > best:
                best, best_w = s, w
        return best, best_w

    def _place(self, state: GroupState, code: str, w: int, now: float) -> str:
        """The smallest region within ``code`` holding CONCENTRATION of its window-``w`` reports."""
        total = state.rings[code].counts(now, self.slot_s)[w]
        place = code
        while level_of(place) != "kelurahan":
            prefix = place + "."
            best, best_n = None, 0
            for c, ring in state.rings.items():
                if c.startswith(prefix) and c.count(".") == place.count(".") + 1:
                    n = ring.counts(now, self.slot_s)[w]
                    if n > best_n:
                        best, best_n = c, n
            if best is None or best_n < CONCENTRATION * total:
                break
            place = best
        return place

    # -- input
    def observe(self, state: GroupState, hit: Hit) -> list[SurgeRecord]:
        """Count one report (once: a report id seen before changes nothing) and decide."""
        d = _digest(hit.report_id)
        if d in state.seen:
            return []
        longest = self.windows[-1]
        now = max(state.now, hit.at)
        if hit.at < now - longest:
            return []  # older than every window
        state.seen[d] = None
        if len(state.seen) > SEEN_MAX:
            del state.seen[next(iter(state.seen))]
        state.now = now
        codes = hit.codes()
        slot_s = self.slot_s
        ks = [int(hit.at // s) for s in slot_s]
        curs = [int(now // s) for s in slot_s]
        rings = state.rings
        for code in codes:
            ring = rings.get(code)
            if ring is None:
                ring = rings[code] = Ring(len(slot_s))
            ring.add_slots(ks, curs)
        state.recent.append((hit.report_id, hit.at, codes[0], hit.case_id))
        records: list[SurgeRecord] = []
        incidents = state.incidents
        touched = [inc for inc in incidents if inc.contains(codes[0])] if incidents else []
        for inc in touched:
            inc.attach(hit.report_id, hit.case_id)
        category = state.category
        rule = self.config.rule(category)
        changed: set[str] = set()
        for code in reversed(codes):  # kota first: a wide surge takes the narrower ones in
            inside = False
            for i in incidents:
                if i.contains(code):
                    inside = True  # already inside an open surge: nothing to open or widen
                    break
            if inside:
                continue
            counts = list(rings[code].totals)  # add_slots just moved this ring to now
            if max(counts) < rule.min_count:
                continue
            _, w = self._fires(code, counts, rule, category, now, state)
            if w < 0:
                continue
            place = self._place(state, code, w, now)
            inc = next((i for i in state.incidents if i.related(place)), None)
            if inc is None:
                inc = self._open(state, place, w, hit, now)
                records.append(self._record(state, inc, "opened", now))
            elif inc.code.startswith(place + "."):  # spread to a larger place
                inc.code = place
                self._reseed(state, inc, w, now)
                records.append(self._record(state, inc, "growing", now))
            else:
                continue
            changed.add(inc.surge_id)
        for inc in touched:
            if inc.surge_id not in changed and inc in state.incidents:
                ring = rings.get(inc.code)  # one of the report's own rings, so already at now
                if ring is not None and ring.heads == curs:
                    n = ring.totals[inc.window]
                else:
                    n = self._count(state, inc.code, inc.window, now)
                if n >= max(GROW_FACTOR * inc.last_count, inc.last_count + GROW_MIN):
                    records.append(self._record(state, inc, "growing", now))
        slot = int(now // (self.windows[0] // SLOTS))
        if state.incidents and slot != state.settled:
            state.settled = slot
            records += self._settle(state, now, rule)
        self._prune(state, now)
        return records

    def advance(self, state: GroupState, now: float) -> list[SurgeRecord]:
        """The clock moved on (no report needed): surges may subside or close."""
        if now <= state.now:
            return []
        state.now = now
        state.settled = int(now // (self.windows[0] // SLOTS))
        records = self._settle(state, now, self.config.rule(state.category))
        self._prune(state, now)
        return records

    # -- state machine
    def _count(self, state: GroupState, code: str, w: int, now: float) -> int:
        ring = state.rings.get(code)
        return ring.counts(now, self.slot_s)[w] if ring is not None else 0

    def _open(self, state: GroupState, place: str, w: int, hit: Hit, now: float) -> Incident:
        sid = str(uuid.uuid5(SURGE_ID_NAMESPACE, f"{state.category}|{place}|{hit.report_id}"))
        inc = Incident(sid, place, w, now, "opened", 0, 0, hit.report_id, hit.report_id, [], 0, [])
        self._reseed(state, inc, w, now)
        state.incidents.append(inc)
        return inc

    def _reseed(self, state: GroupState, inc: Incident, w: int, now: float) -> None:
        """The surge's reports: those of its window from its place (a wider place takes in more)."""
        start = Ring.span_start(now, self.windows[w])
        have = set(inc.report_ids)
        earlier = [
            (rid, case)
            for rid, at, code, case in state.recent
            if at >= start and inc.contains(code) and rid not in have
        ]
        ids = [rid for rid, _ in earlier] + inc.report_ids
        cases = [c for _, c in earlier if c] + inc.case_ids
        inc.report_ids = ids[:RECORD_IDS_MAX]
        inc.report_count += len(earlier)
        inc.case_ids = list(dict.fromkeys(cases))[:CASES_MAX]
        if ids:
            inc.first_report_id = ids[0]

    def _settle(self, state: GroupState, now: float, rule: CategoryRule) -> list[SurgeRecord]:
        out = []
        for inc in list(state.incidents):
            counts = state.rings[inc.code].counts(now, self.slot_s) if inc.code in state.rings else [0, 0, 0]
            scores = [
                poisson_score(counts[w], self._expected(inc.code, state.category, rule, w, now))
                for w in range(len(self.slot_s))
            ]
            calm = max(scores[0], scores[1], scores[inc.window]) < rule.close_score
            if calm:
                out.append(self._record(state, inc, "closed", now))
                state.incidents.remove(inc)
                state.closed.append((inc.code, now))
                continue
            w0, w1 = self.windows[0], self.windows[1]
            falling = counts[0] / w0 < SUBSIDE_RATIO * counts[1] / w1
            if inc.state in ("opened", "growing") and falling:
                out.append(self._record(state, inc, "subsiding", now))
        return out

    def _record(self, state: GroupState, inc: Incident, new: str, now: float) -> SurgeRecord:
        inc.state = new
        inc.seq += 1
        category = state.category
        rule = self.config.rule(category)
        counts = state.rings[inc.code].counts(now, self.slot_s) if inc.code in state.rings else [0] * 3
        expected = [self._expected(inc.code, category, rule, w, now) for w in range(len(self.slot_s))]
        w = inc.window
        inc.last_count = counts[w]
        place = place_of(inc.code)
        names = place_names()
        wp = max(w, 1)  # the breakdown over at least the middle window: still telling while subsiding
        kel_counts = sorted(
            (
                (ring.counts(now, self.slot_s)[wp], c)
                for c, ring in state.rings.items()
                if c.count(".") == 3 and (c == inc.code or c.startswith(inc.code + "."))
            ),
            reverse=True,
        )
        places = [
            PlaceCount(
                kelurahan_code=c,
                kelurahan=names[c].kelurahan if c in names else None,
                kecamatan=names[c].kecamatan if c in names else None,
                count=n,
            )
            for n, c in kel_counts[:10]
            if n > 0
        ]
        agency, unit, notify = self._who(category, place)
        return SurgeRecord(
            surge_id=inc.surge_id,
            seq=inc.seq,
            state=new,  # type: ignore[arg-type]
            at=_iso(now),
            opened_at=_iso(inc.opened_at),
            level=place.level,  # type: ignore[arg-type]
            kota=place.kota,
            kota_code=place.kota_code,
            kecamatan=place.kecamatan,
            kecamatan_code=place.kecamatan_code,
            kelurahan=place.kelurahan,
            kelurahan_code=place.kelurahan_code,
            category=category,
            window=self.labels[w],
            count=counts[w],
            expected=round(expected[w], 4),
            expected_per_hour=round(self.baseline.per_hour(inc.code, category, rule.prior_daily, now), 4),
            score=round(poisson_score(counts[w], expected[w]), 3),
            counts=dict(zip(self.labels, counts, strict=True)),
            expected_counts={lb: round(e, 4) for lb, e in zip(self.labels, expected, strict=True)},
            first_report_id=inc.first_report_id,
            latest_report_id=inc.latest_report_id,
            report_ids=list(inc.report_ids),
            report_count=max(inc.report_count, len(inc.report_ids)),
            case_ids=list(inc.case_ids),
            places=places,
            agency=agency,
            agency_unit=unit,
            notify=notify,
            thresholds={
                "min_count": rule.min_count,
                "min_ratio": rule.min_ratio,
                "open_p": rule.open_p,
                "close_p": rule.close_p,
            },
            baseline=self.baseline.source,
        )

    def _who(self, category: str, place: PlaceName) -> tuple[str | None, str | None, list[str]]:
        key = (category, place.code)
        found = self._who_cache.get(key)
        if found is None:
            found = self._who_cache[key] = self._route(category, place)
        return found[0], found[1], list(found[2])

    def _route(self, category: str, place: PlaceName) -> tuple[str | None, str | None, list[str]]:
        from ..envelope import Region

        region = Region(
            kota=place.kota,
            kota_code=place.kota_code,
            kecamatan=place.kecamatan,
            kecamatan_code=place.kecamatan_code,
            kelurahan=place.kelurahan,
            kelurahan_code=place.kelurahan_code,
        )
        decision = self._router.route(category, 1.0, region)
        notify = [decision.agency] if decision.agency else []
        for agency_id in self.config.rule(category).notify_also:
            name = self._router.agency_table[agency_id].name
            if name not in notify:
                notify.append(name)
        return decision.agency, decision.agency_unit, notify

    def _prune(self, state: GroupState, now: float) -> None:
        """Forget places whose every window is empty, and reports older than every window."""
        longest = self.windows[-1]
        if now - state.pruned >= self.windows[0]:
            state.pruned = now
            for code in [c for c, r in state.rings.items() if r.counts(now, self.slot_s)[-1] == 0]:
                if not any(i.code == code for i in state.incidents):
                    del state.rings[code]
        while state.recent and state.recent[0][1] < now - longest:
            state.recent.popleft()
        if state.closed and state.closed[0][1] < now - longest:
            state.closed = [(c, t) for c, t in state.closed if t >= now - longest]


def replay(hits: Iterable[Hit], detector: SurgeDetector, tick_s: float = 60.0) -> Iterable[SurgeRecord]:
    """Run time-ordered hits through the detector as the live worker would, ticking the clock every
    ``tick_s`` of data time for places with open surges; after the last hit the clock runs on for the
    middle window (as if nothing more was reported), so open surges can close."""
    states: dict[str, GroupState] = {}
    next_tick: float | None = None
    last = 0.0

    def tick(now: float) -> Iterable[SurgeRecord]:
        for state in states.values():
            if state.incidents:
                yield from detector.advance(state, now)

    for hit in hits:
        if next_tick is None:
            next_tick = (hit.at // tick_s + 1) * tick_s
        while hit.at >= next_tick:
            yield from tick(next_tick)
            next_tick += tick_s
        state = states.get(hit.group_key)
        if state is None:
            state = states[hit.group_key] = detector.new_state(hit.group_key)
        yield from detector.observe(state, hit)
        last = max(last, hit.at)
    if next_tick is not None:
        end = last + detector.windows[1] + detector.windows[0]
        while next_tick <= end:
            yield from tick(next_tick)
            next_tick += tick_s
