"""Grouping repeated reports into cases: pure scoring plus a small store protocol.

A report joins an existing **open** case when it has the **same category** and is

* **with coordinates on both sides**: near (within :attr:`GroupingPolicy.radius_m`, 300 m) — the score
  mixes proximity (60 %) and text similarity (40 %), so two different potholes 200 m apart stay apart
  unless their texts agree; joins at :attr:`GroupingPolicy.join_at`;
* **otherwise**: in the **same kelurahan** with **the same complaint in (nearly) the same words** — the
  mean Jaccard similarity of content words and of character 4-gram shingles reaches
  :attr:`GroupingPolicy.join_at_text`, one text adds nothing the other contradicts (every content word
  of one has its counterpart, allowing for spelling, in the other: two filings of one reporter's
  boilerplate about two different poles differ in the words that name the poles), the shorter text has
  at least :attr:`GroupingPolicy.min_words` content words (a bare "lampu mati mohon diperbaiki" says
  nothing about which lamp), and the text is not a **template** (the same words filed in
  :attr:`GroupingPolicy.template_kelurahan` or more kelurahan within the window: a monitoring team's
  sentence, one shop per filing).

A report of one category is never joined to a case of another, but the classifier's doubt is kept: a
case without coordinates whose first report had a runner-up category (:attr:`GroupingPolicy.doubt_at`)
is also filed under that category in its kelurahan, and a later report of it there is flagged with the
case as a duplicate candidate.

A case is open for :attr:`GroupingPolicy.max_age` (30 days) after its first report and until it is
closed (its reports reached Selesai/TL Ditolak, or an officer merged it away): a problem reported again
after that is a new occurrence, so the report opens a **new case linked to the previous one**
(``recurs``, with the occurrence count) when it would have joined it. A report that would have joined a
case an officer merged away, within its age, joins the case it was merged into when that one is open
(officers' merges are learnt; a split takes the report's words out of its old case,
:func:`pipeline.processors.cases_redis.split_out`). The thresholds and the rules come
from the hand-labelled pairs of ``docs/grouping-labels.md`` (``make eval`` prints the curve).

Scores from :attr:`GroupingPolicy.candidate_at` that do not join (too low, or held back by a rule above)
do not merge: the report opens its own case and is marked a duplicate *candidate* of the best match, for
a person to confirm (as Mark-a-Spot and FixMyStreet do). Re-assigning a report already seen returns the
same decision (redelivery is harmless).

:class:`CaseIndex` does the scoring over a :class:`CaseStore`; :class:`MemoryCaseStore` keeps cases in
process memory, bucketed by (category, kelurahan) and by (category, ~500 m grid cell), so a Redis-backed
store only needs the same methods (sets per bucket, a hash per case).
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import lru_cache
from sys import intern
from typing import Any, Protocol

_CELL_DEG = 0.0045  # about 500 m
PRUNE_EVERY = 10_000  # assignments between two prunings of a store that supports it
#: open cases compared per bucket (the most recently active): bounds the work per report however many
#: cases a kelurahan or a cell holds; the Redis store applies the same bound when it loads a bucket.
#: 8 rather than 12: grouping was 40% of the worker's CPU once buckets filled; `make eval` grouping
#: precision/recall are the same at 6, 8 and 12.
BUCKET_LIMIT = 8
#: cases a memory bucket keeps at all (older ones can no longer be among the most recent)
_BUCKET_KEEP = 2 * BUCKET_LIMIT
#: candidates without coordinates compared character by character (the rest by shared words only)
TEXT_SHORTLIST = 4
#: merges of merges followed to find the case a report joins (officers rarely chain more)
MERGE_HOPS = 3
#: cases of another category's doubts compared per bucket (the most recently active): flags only, and
#: ``make eval`` catches as many true pairs with 1 as with 8, while each one is a case to load
DOUBTED_LIMIT = 1
#: open cases a report is flagged a possible duplicate of (the best-scoring ones)
CANDIDATES = 3
_SHINGLE_FLOOR = 0.2  # word Jaccard below which shingles are not worth computing
_MAX_SHINGLED = 600  # characters of a text that are shingled (the start of a complaint says what it is)


@dataclass(frozen=True, slots=True)
class GroupingPolicy:
    #: how far back (from a case's latest report) cases are compared at all: duplicate candidates and
    #: the previous occurrence of a recurring problem are looked for this far
    window: timedelta = timedelta(days=60)
    #: a case takes reports this long after its first one; later, the same problem is a new occurrence
    #: (the labelling rule's 30 days: CRM follow-up is due in 7 days, so after a month the earlier
    #: report has been dealt with one way or the other)
    max_age: timedelta = timedelta(days=30)
    radius_m: float = 300.0
    #: with coordinates: score = proximity_weight · (1 - distance/radius) + (1 - proximity_weight) · text
    proximity_weight: float = 0.6
    join_at: float = 0.6
    #: without coordinates the score is text similarity alone (same kelurahan required). Chosen from the
    #: labelled pairs' curve (``make eval``): the most recall with precision >= 0.95; the rules below
    #: (same words, length, templates) carry most of the precision, so the similarity floor is low
    join_at_text: float = 0.3
    #: flags from here: the lowest score whose flags still catch more of the true pairs (``make eval``)
    candidate_at: float = 0.2
    #: a case without coordinates is also filed under its first report's runner-up category when the
    #: classifier gave that one at least this probability, so a later report in its kelurahan
    #: classified as the runner-up is flagged with it (never joined): a stall read once as street
    #: vendors and once as public order is one problem. ``make eval`` prints the curve: at 0.1 the
    #: flags caught 4 of the 7 true pairs that were neither merged nor flagged, for 8 % more flagged
    #: reports. Located reports are not searched across categories (see :meth:`CaseIndex._doubtful`)
    doubt_at: float = 0.1
    #: content words the shorter text needs for a join without coordinates
    min_words: int = 8
    #: content words one text may have without a counterpart in the other, for a join without coordinates
    max_unmatched: int = 0
    #: a text filed in this many kelurahan within the window is a template: never joined on text alone
    template_kelurahan: int = 3
    #: members of a case whose texts a new report is compared with (the first and the latest ones)
    compare_members: int = 2


@dataclass(frozen=True, slots=True)
class GroupItem:
    """What grouping needs of a report."""

    report_id: str
    category: str | None
    text: str  # normalised text
    at: datetime
    lat: float | None = None
    lon: float | None = None
    kelurahan_code: str | None = None
    #: the classifier's other categories with their probabilities, best first: the report may be of
    #: one of those (see :attr:`GroupingPolicy.doubt_at`)
    runners_up: tuple[tuple[str, float], ...] = ()

    def doubts(self, at: float) -> tuple[str, ...]:
        """The runner-up category when it had at least ``at`` of the classifier's probability. One
        only: the second runner-up caught no more labelled pairs, and each is one more bucket to write."""
        return tuple([c for c, p in self.runners_up if p >= at and c != self.category][:1])

    @classmethod
    def from_report(cls, report: Any) -> GroupItem:
        """From a :class:`pipeline.envelope.Report` whose ``triage`` is filled."""
        t = report.triage
        region = t.region if t is not None else None
        return cls(
            report_id=report.report_id,
            category=t.category if t is not None else None,
            text=(t.normalised_text if t is not None and t.normalised_text else report.text),
            at=report.source_at or report.received_at,
            lat=report.location.lat,
            lon=report.location.lon,
            kelurahan_code=region.kelurahan_code if region is not None else None,
            runners_up=t.runners_up if t is not None else (),
        )


@dataclass(frozen=True, slots=True)
class CaseDecision:
    case_id: str
    joined: bool  # True: the report joined an existing case
    candidate_of: str | None  # a case it may duplicate (for a person to confirm)
    score: float
    reason: str
    recurs: str | None = None  # the closed case of the previous occurrence, when this one opens a new case
    occurrence: int = 1  # 1 for a first occurrence; n when n - 1 earlier cases of the problem closed
    #: every case flagged as perhaps the same problem (candidate_of first); for a joined report, other
    #: open cases that may be the same as the one it joined
    candidates: tuple[str, ...] = ()


class Fingerprint:
    """Content words of a text and (computed when first needed) its character 4-gram shingles and the
    places it names."""

    __slots__ = ("_kept", "_places", "_shingles", "_template", "_text", "words")

    def __init__(self, words: frozenset[str], text: str) -> None:
        self.words = words
        self._text = text
        self._shingles: frozenset[str] | tuple[str, ...] | None = None
        self._places: frozenset[str] | None = None
        self._template: str | None = None
        self._kept = False

    @property
    def places(self) -> frozenset[str]:
        if self._places is None:
            self._places = named_places(self._text)
        return self._places

    @property
    def shingles(self) -> frozenset[str] | tuple[str, ...]:
        """A frozenset; a tuple of the same shingles once the text is a case's member (:meth:`keep`)."""
        if self._shingles is None:
            words = self.words
            j = " ".join([w for w in self._text.split() if w in words])[:_MAX_SHINGLED]
            shingles = frozenset([intern(j[i : i + 4]) for i in range(max(1, len(j) - 3))] if j else ())
            self._shingles = tuple(shingles) if self._kept else shingles
        return self._shingles

    def keep(self) -> None:
        """The text is kept as a case's member: its shingles are held as a tuple, which
        :func:`_jaccard` intersects with the new report's frozenset just as fast, in a fifth of the
        memory (a worker's 10,000 cached cases held 10 MB of member shingle sets, 2 MB as tuples)."""
        self._kept = True
        if type(self._shingles) is frozenset:
            self._shingles = tuple(self._shingles)


class _LazyFingerprint:
    """A text's fingerprint, computed the first time a comparison needs it."""

    __slots__ = ("_fp", "_kept", "text")

    def __init__(self, text: str, kept: bool = False) -> None:
        self.text = text
        self._fp: Fingerprint | None = None
        self._kept = kept

    def get(self) -> Fingerprint:
        if self._fp is None:
            self._fp = fingerprint(self.text)
            if self._kept:
                self._fp.keep()
        return self._fp

    def keep(self) -> _LazyFingerprint:
        """Kept as a case's member (:meth:`Fingerprint.keep`)."""
        self._kept = True
        if self._fp is not None:
            self._fp.keep()
        return self


@dataclass
class CaseRecord:
    case_id: str
    category: str
    first_at: datetime
    last_at: datetime
    lat: float | None
    lon: float | None
    kelurahan_code: str | None
    members: list[tuple[str, _LazyFingerprint]] = field(default_factory=list)  # (report_id, fingerprint)
    size: int = 1
    occurrence: int = 1
    recurs: str | None = None  # the previous occurrence's case
    closed: str | None = None  # why it takes no more reports (Selesai, TL Ditolak, merged:<case>)
    #: the category its first report may also be of (GroupingPolicy.doubt_at): filed under it too, in
    #: its kelurahan, for flags
    doubts: tuple[str, ...] = ()


def doubted(category: str) -> str:
    """The bucket name of the cases whose first report may be of ``category``."""
    return f"doubted:{category}"


class CaseStore(Protocol):
    """Where cases live. In memory here; a Redis store keeps the same buckets as sets and cases as hashes."""

    def cases_near(self, category: str, cells: Sequence[str], since: datetime) -> Iterable[CaseRecord]: ...

    def cases_in(
        self, category: str, kelurahan_code: str, since: datetime, limit: int = BUCKET_LIMIT
    ) -> Iterable[CaseRecord]: ...

    def put(self, case: CaseRecord, cell: str | None) -> None: ...

    def case(self, case_id: str) -> CaseRecord | None: ...

    def decision_for(self, report_id: str) -> CaseDecision | None: ...

    def remember(self, report_id: str, decision: CaseDecision) -> None: ...

    def template_spread(self, key: str, kelurahan_code: str, at: datetime, since: datetime) -> int: ...


class MemoryCaseStore:
    """Cases in process memory, bucketed by (category, kelurahan) and (category, grid cell)."""

    def __init__(self) -> None:
        self._by_cell: dict[tuple[str, str], dict[str, CaseRecord]] = defaultdict(dict)
        self._by_kel: dict[tuple[str, str], dict[str, CaseRecord]] = defaultdict(dict)
        self._decisions: dict[str, CaseDecision] = {}
        #: every case put here, by id: the case an officer merged another into is found by its id
        self._by_id: dict[str, CaseRecord] = {}
        #: template key -> kelurahan -> the latest time a text with those words was filed there
        self._templates: dict[str, dict[str, datetime]] = {}

    def template_spread(self, key: str, kelurahan_code: str, at: datetime, since: datetime) -> int:
        """Record a filing of ``key`` in ``kelurahan_code``; in how many kelurahan it was filed since
        ``since`` (this one included)."""
        seen = self._templates.setdefault(key, {})
        if seen.get(kelurahan_code) is None or seen[kelurahan_code] < at:
            seen[kelurahan_code] = at
        return sum(1 for t in seen.values() if t >= since)

    def cases_near(self, category: str, cells: Sequence[str], since: datetime) -> Iterable[CaseRecord]:
        return [c for cell in cells for c in _recent(self._by_cell.get((category, cell)), since)]

    def cases_in(
        self, category: str, kelurahan_code: str, since: datetime, limit: int = BUCKET_LIMIT
    ) -> Iterable[CaseRecord]:
        return _recent(self._by_kel.get((category, kelurahan_code)), since, limit)

    def put(self, case: CaseRecord, cell: str | None, own: bool = True, doubts: bool = True) -> None:
        """File a case under its category's buckets (``own``) and its doubts' (``doubts``). A view of a
        shared store files a case it loaded only where it was read from: a case read to flag is not
        compared with its own category's reports nearby, and one read for them is not doubted here."""
        self._by_id[case.case_id] = case
        if cell is not None and own:
            _put_latest(self._by_cell[(case.category, cell)], case)
        if case.kelurahan_code and own:
            _put_latest(self._by_kel[(case.category, case.kelurahan_code)], case)
        if case.kelurahan_code and doubts:
            for other in case.doubts:
                _put_latest(self._by_kel[(doubted(other), case.kelurahan_code)], case)

    def case(self, case_id: str) -> CaseRecord | None:
        return self._by_id.get(case_id)

    def decision_for(self, report_id: str) -> CaseDecision | None:
        return self._decisions.get(report_id)

    def remember(self, report_id: str, decision: CaseDecision) -> None:
        self._decisions[report_id] = decision

    def prune(self, before: datetime) -> int:
        """Forget cases whose latest report is older than ``before`` (and their reports' decisions)."""
        dropped: dict[str, CaseRecord] = {}
        for buckets in (self._by_kel, self._by_cell):
            for key in list(buckets):
                bucket = buckets[key]
                for case_id in [c for c, case in bucket.items() if case.last_at < before]:
                    dropped[case_id] = bucket.pop(case_id)
                if not bucket:
                    del buckets[key]
        self._by_id = {cid: case for cid, case in self._by_id.items() if case.last_at >= before}
        # By the case each decision named: a case keeps only the members a comparison reads, so the
        # decisions of the others outlived it (a million-row history left ~200 MB of them behind).
        self._decisions = {rid: d for rid, d in self._decisions.items() if d.case_id in self._by_id}
        for key in list(self._templates):
            seen = self._templates[key]
            for kel in [k for k, t in seen.items() if t < before]:
                del seen[kel]
            if not seen:
                del self._templates[key]
        return len(dropped)

    def __len__(self) -> int:
        ids = {c for bucket in self._by_kel.values() for c in bucket}
        ids |= {c for bucket in self._by_cell.values() for c in bucket}
        return len(ids)


def _recent(
    bucket: dict[str, CaseRecord] | None, since: datetime, limit: int = BUCKET_LIMIT
) -> list[CaseRecord]:
    """The bucket's most recently active open cases, newest first, at most ``limit``."""
    out: list[CaseRecord] = []
    if bucket:
        for case in reversed(bucket.values()):
            if case.last_at >= since:
                out.append(case)
                if len(out) == limit:
                    break
    return out


def _put_latest(bucket: dict[str, CaseRecord], case: CaseRecord) -> None:
    """Insertion order is activity order: a case that changes moves to the end."""
    bucket.pop(case.case_id, None)
    bucket[case.case_id] = case
    if len(bucket) > _BUCKET_KEEP:
        del bucket[next(iter(bucket))]


# --- similarity ---------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    words = set(
        "yang di ke dari dan atau ini itu ada sudah belum tidak sangat mohon tolong segera pak bu "
        "admin terima kasih untuk dengan saya kami warga sekitar lagi juga karena bisa akan agar "
        "pada oleh sama banget nya lah kok saja masih jadi tindak lanjut ditindaklanjuti lokasi "
        "depan rt rw nomor jalan gang hari sejak kalau tapi kembali".split()
    )
    try:
        from indoNLP.preprocessing.stopwords_data import STOPWORDS

        words.update(w for w in STOPWORDS if " " not in w)
    except ImportError:  # pragma: no cover
        pass
    return frozenset(words)


def fingerprint(text: str) -> Fingerprint:
    """Content words and (lazily) character 4-gram shingles of a text: shingles also catch affixes and
    typos. Made once per text: a report's is handed to :meth:`CaseIndex.assign`, and the members of
    cases kept between batches keep theirs."""
    words = frozenset(map(intern, text.split())) - _stopwords()
    if "[" in text:  # masked contact details say nothing about the problem
        words = frozenset(w for w in words if not w.startswith("["))
    return Fingerprint(words, text)


def _jaccard(a: frozenset[str] | tuple[str, ...], b: frozenset[str] | tuple[str, ...]) -> float:
    """Jaccard of two sets of distinct strings, either side a frozenset or (a kept member's shingles,
    :meth:`Fingerprint.keep`) a tuple."""
    if not a or not b:
        return 0.0
    if type(a) is frozenset:
        inter = len(a & b) if type(b) is frozenset else len(a.intersection(b))
    elif type(b) is frozenset:
        inter = len(b.intersection(a))
    else:  # two kept members: rare (explanations compare fresh fingerprints)
        inter = len(frozenset(a).intersection(b))
    return inter / (len(a) + len(b) - inter)


def _similarity_bound(words: float) -> float:
    """The most :func:`text_similarity` can give for texts whose word Jaccard is ``words``."""
    return words if words < _SHINGLE_FLOOR else 0.5 * words + 0.5


def text_similarity(a: Fingerprint, b: Fingerprint) -> float:
    """Mean of the word and character-shingle Jaccard similarities, in [0, 1].

    Texts that share few content words (word Jaccard below :data:`_SHINGLE_FLOOR`, well under the
    candidate threshold) are not compared character by character: their word Jaccard stands for both.
    """
    words = _jaccard(a.words, b.words)
    if words < _SHINGLE_FLOOR:
        return words
    return 0.5 * words + 0.5 * _jaccard(a.shingles, b.shingles)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_000.0 * math.asin(min(1.0, math.sqrt(h)))


#: words after which a text names a place (normalised forms: "jl", "gg", "no" are expanded by normalise)
_STREET_WORDS = frozenset({"jalan", "gang", "komplek", "kompleks", "perumahan", "kampung", "pasar", "taman"})
_NUMBER_WORDS = frozenset({"nomor", "blok", "rt", "rw"})
#: words after "jalan" & co. that describe the road rather than name it
_NOT_NAMES = frozenset(
    "rusak berlubang lubang umum utama raya besar kecil tersebut sepanjang menuju arah ini itu sekitar "
    "depan belakang samping dekat seberang ke di dan yang rawan gelap licin macet tidak".split()
)


def named_places(text: str) -> frozenset[str]:
    """The places a normalised text names: ``street:<name>`` after jalan/gang/komplek/…, and
    ``nomor:<n>``, ``blok:<x>``, ``rt:<n>``, ``rw:<n>``."""
    words = text.split()
    out = []
    for i, w in enumerate(words[:-1]):
        nxt = words[i + 1]
        if w in _STREET_WORDS:
            if nxt not in _NOT_NAMES and nxt not in _STREET_WORDS and len(nxt) > 2 and not nxt.isdigit():
                out.append(f"street:{nxt}")
        elif w in _NUMBER_WORDS and (nxt.isdigit() or (w == "blok" and len(nxt) <= 4)):
            out.append(f"{w}:{nxt.lstrip('0') or '0'}")
    return frozenset(out)


def same_place(a: frozenset[str], b: frozenset[str]) -> bool:
    """Both texts name one street (gang, komplek, …) and one number on it (house, blok, RT), and no
    number they both give differs (a street alone is too long to be one place)."""
    shared = a & b
    if not any(p.startswith("street:") for p in shared) or len(shared) < 2:
        return False
    for kind in ("nomor:", "blok:", "rt:", "rw:"):
        mine, theirs = {p for p in a if p.startswith(kind)}, {p for p in b if p.startswith(kind)}
        if mine and theirs and not (mine & theirs):
            return False
    return True


def template_key(fp: Fingerprint) -> str:
    """What two filings of one template share: their content words, ``di-`` prefixes and order aside
    ("dikawasan dilarang" and "kawasan di larang" are the same sentence)."""
    if fp._template is None:
        words = sorted({w[2:] if w[:2] == "di" and len(w) > 5 else w for w in fp.words})
        # 32 bits: a collision (two word sets, one key, in 3+ kelurahan within the window) would only
        # hold back a text-only join
        fp._template = f"{zlib.crc32(' '.join(words).encode()):08x}"
    return fp._template


@lru_cache(maxsize=1 << 16)
def _bigrams(word: str) -> frozenset[str]:
    """A word's letter pairs (remembered: content words recur across a city's reports)."""
    return frozenset([word[i : i + 2] for i in range(len(word) - 1)])


@lru_cache(maxsize=1 << 16)
def _has_digit(word: str) -> bool:
    return any(ch.isdigit() for ch in word)


def _unalike(words: frozenset[str], others: frozenset[str]) -> list[str]:
    """``words`` that are no spelling of any of ``others``: a counterpart shares the first four letters
    or most letter pairs ("pascasariana"/"pascasarjana", "kemecetan"/"kemacetan"). A word with a digit
    has no other spelling: numbers say which house, blok or RT."""
    if not words:
        return []
    digit = _has_digit
    spelt = [o for o in others if not digit(o)]
    prefixes = {o[:4] for o in spelt}
    grams = [_bigrams(o) for o in spelt]
    out = []
    for word in words:
        if digit(word):
            out.append(word)
            continue
        if word[:4] in prefixes:
            continue
        mine = _bigrams(word)
        if not any(mine and g and 2 * len(mine & g) >= 0.7 * (len(mine) + len(g)) for g in grams):
            out.append(word)
    return sorted(out)


def unmatched_words(a: frozenset[str], b: frozenset[str]) -> tuple[list[str], list[str]]:
    """Content words of ``a`` with no counterpart in ``b`` and those of ``b`` with none in ``a``."""
    only_a, only_b = a - b, b - a
    return _unalike(only_a, only_b), _unalike(only_b, only_a)


def _cell(lat: float, lon: float) -> tuple[int, int]:
    return math.floor(lat / _CELL_DEG), math.floor(lon / _CELL_DEG)


def _cell_key(c: tuple[int, int]) -> str:
    return f"{c[0]}:{c[1]}"


_AROUND: dict[tuple[int, int], list[str]] = {}


def _around_cell(lat: float, lon: float) -> list[str]:
    """The keys of a point's cell and the eight around it (remembered: a city has a few thousand
    occupied cells, and formatting nine keys a report was a tenth of grouping's CPU)."""
    c = _cell(lat, lon)
    keys = _AROUND.get(c)
    if keys is None:
        if len(_AROUND) > 100_000:
            _AROUND.clear()
        cy, cx = c
        keys = _AROUND[c] = [_cell_key((cy + dy, cx + dx)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return keys


# --- the index ----------------------------------------------------------------------------------------


class CaseIndex:
    """Assigns reports to cases (see the module docstring)."""

    def __init__(self, store: CaseStore | None = None, policy: GroupingPolicy | None = None) -> None:
        self.store: CaseStore = store if store is not None else MemoryCaseStore()
        self.policy = policy or GroupingPolicy()
        self._assigned = 0
        self._floor = min(self.policy.join_at, self.policy.join_at_text)
        p = self.policy
        self._below = (f"below {p.join_at}", f"below {p.join_at_text}")

    @staticmethod
    def new_case_id(report_id: str) -> str:
        return f"case-{report_id}"

    def score(
        self, item: GroupItem, fp: _LazyFingerprint | Fingerprint, case: CaseRecord
    ) -> tuple[float, str]:
        """Score of ``item`` against ``case`` in [0, 1] and a short explanation; 0 when not comparable."""
        reach = self._reach(item, case)
        if isinstance(reach, str):
            return 0.0, reach
        mine = fp.get() if isinstance(fp, _LazyFingerprint) else fp
        sim = max((text_similarity(mine, m.get()) for _, m in self._compared(case)), default=0.0)
        return self._combine(item, reach, sim)

    def _reach(
        self, item: GroupItem, case: CaseRecord, around: tuple[datetime, datetime] | None = None
    ) -> float | str:
        """Distance in metres when both sides are located, -1.0 when only text can compare them (same
        kelurahan), or why they cannot be compared. ``around`` is the item's time window (from
        :meth:`_around`), passed in when many cases are gated against one item."""
        if item.category != case.category:
            return "other category"
        lo, hi = around or self._around(item)
        if not (lo <= case.last_at <= hi or lo <= case.first_at <= hi):
            return "outside the time window"
        if item.lat is not None and item.lon is not None and case.lat is not None and case.lon is not None:
            d = distance_m(item.lat, item.lon, case.lat, case.lon)
            return f"{d:.0f} m apart" if d > self.policy.radius_m else d
        if not (item.kelurahan_code and item.kelurahan_code == case.kelurahan_code):
            return "no common place"
        return -1.0

    def _around(self, item: GroupItem) -> tuple[datetime, datetime]:
        return item.at - self.policy.window, item.at + self.policy.window

    def is_open(self, case: CaseRecord, at: datetime) -> bool:
        """Whether a report filed at ``at`` may still join ``case``: not closed, and within the case's
        maximum age of its first report (a report filed before the case began counts from it too)."""
        return case.closed is None and abs(at - case.first_at) <= self.policy.max_age

    def _combine(self, item: GroupItem, reach: float, sim: float) -> tuple[float, str]:
        if reach >= 0:
            p = self.policy
            proximity = 1.0 - reach / p.radius_m
            score = p.proximity_weight * proximity + (1.0 - p.proximity_weight) * sim
            return score, f"{reach:.0f} m apart, text similarity {sim:.2f}"
        return sim, f"same kelurahan {item.kelurahan_code}, text similarity {sim:.2f}"

    def _candidates(self, item: GroupItem) -> list[CaseRecord]:
        since = item.at - self.policy.window
        found: dict[str, CaseRecord] = {}
        if item.lat is not None and item.lon is not None:
            for case in self.store.cases_near(item.category or "", _around_cell(item.lat, item.lon), since):
                found.setdefault(case.case_id, case)
        if item.kelurahan_code:
            for case in self.store.cases_in(item.category or "", item.kelurahan_code, since):
                found.setdefault(case.case_id, case)
        return list(found.values())

    def _doubtful(self, item: GroupItem, fp: _LazyFingerprint) -> list[tuple[float, CaseRecord]]:
        """Open cases of another category, in the report's kelurahan and time window, whose first report
        may have been of this one's category, with the content-word Jaccard of that first report:
        flags, never joins. Only between reports without coordinates: that is where the labelled pairs
        showed the misses, and filing every located case twice over cost the bench's grouping about a
        fifth more CPU (``docs/runbook.md``, Cases)."""
        out: list[tuple[float, CaseRecord]] = []
        if not item.kelurahan_code or item.lat is not None:
            return out
        # the bucket is the item's kelurahan's and holds only cases without coordinates, and an open
        # case is within the time window: nothing else to check before comparing words
        category, since = doubted(item.category or ""), item.at - self.policy.window
        for case in self.store.cases_in(category, item.kelurahan_code, since, DOUBTED_LIMIT):
            if not self.is_open(case, item.at):
                continue
            words = fp.get().words
            top = _jaccard(words, case.members[0][1].get().words)  # its first report: what it is about
            out.append((top, case))
        return out

    def assign(self, report_like: Any, known_fp: Fingerprint | None = None) -> CaseDecision:
        """The case of one report (a :class:`GroupItem` or a triaged ``Report``); records it in the store.
        ``known_fp``: its text's fingerprint, when the caller already made it."""
        item = report_like if isinstance(report_like, GroupItem) else GroupItem.from_report(report_like)
        known = self.store.decision_for(item.report_id)
        if known is not None:
            return known
        p = self.policy
        self._assigned += 1
        if self._assigned % PRUNE_EVERY == 0 and hasattr(self.store, "prune"):
            # cases past the window cannot be joined or linked any more: bound a long-running worker
            self.store.prune(item.at - 2 * p.window)
        fp = _LazyFingerprint(item.text)
        fp._fp = known_fp
        template = False
        cases: list[CaseRecord] = []
        if item.category:
            if item.kelurahan_code and (item.lat is None or item.lon is None):  # only text can join it
                key = template_key(fp.get())
                spread = self.store.template_spread(key, item.kelurahan_code, item.at, item.at - p.window)
                template = spread >= p.template_kelurahan
            cases = self._candidates(item)
        # One pass over open and closed cases alike (the cost of a report does not grow with the
        # lifecycle): the best is joined when open, or is the previous occurrence when closed.
        others: list[tuple[float, CaseRecord]] = []
        cases.sort(key=lambda c: not self.is_open(c, item.at))  # stable: on a tie an open case wins
        best = self._best(item, fp, cases, others) if cases else None
        if item.category:  # cases of another category that its first report may have been of this one
            others += self._doubtful(item, fp)
        best_open = best is not None and self.is_open(best[1], item.at)
        held = self._held_back(item, fp, best, template) if best is not None else "no similar open case"
        target = None  # the case it joins: (score, case, why)
        if best is not None and held is None:
            if best_open:
                target = best[:3]
            elif best[1].first_at <= item.at and (successor := self._merged_into(best[1], item.at)):
                # it would have joined the case an officer merged away: it joins what that became
                why = f"{best[2]}, like {best[1].case_id}, which an officer merged into it"
                target = (best[0], successor, why)
        if target is not None:
            score, case, why = target
            case.members.append((item.report_id, fp.keep()))
            case.members[:] = self._compared(case)  # keep only what a comparison reads (memory)
            case.size += 1
            case.last_at = max(case.last_at, item.at)
            case.first_at = min(case.first_at, item.at)
            self.store.put(case, self._cell_of(case))
            # another open case of perhaps the same problem: the two cases may be one (officers merge)
            also = tuple(self._runners_up(item, others, case, CANDIDATES))
            decision = CaseDecision(
                case.case_id, True, also[0] if also else None, round(score, 3), f"joined case ({why})",
                candidates=also,
            )  # fmt: skip
        else:
            previous, merged_into = None, None
            if best is not None and not best_open and held is None and best[1].first_at <= item.at:
                if (best[1].closed or "").startswith("merged:") and self.is_open(
                    replace(best[1], closed=None), item.at
                ):
                    # merged into a case not at hand (or no longer open): the same occurrence, flag that
                    merged_into = _successor(best[1])
                else:
                    previous = best[1]  # it would have joined it, were it open: the problem recurs
            case = CaseRecord(
                case_id=self.new_case_id(item.report_id),
                category=item.category or "",
                first_at=item.at,
                last_at=item.at,
                lat=item.lat,
                lon=item.lon,
                kelurahan_code=item.kelurahan_code,
                members=[(item.report_id, fp.keep())],
                occurrence=previous.occurrence + 1 if previous is not None else 1,
                recurs=_successor(previous) if previous is not None else None,
                doubts=item.doubts(p.doubt_at) if item.runners_up and item.lat is None else (),
            )
            if item.category:
                self.store.put(case, self._cell_of(case))
            recurs = f"; recurring: occurrence {case.occurrence}, after {case.recurs}" if case.recurs else ""
            if best is not None and best_open and best[0] >= p.candidate_at:
                score, other, why, _ = best
                why = f"new case, possible duplicate ({why}; {held}){recurs}"
                flagged: tuple[str, ...] = (
                    other.case_id,
                    *self._runners_up(item, others, other, CANDIDATES - 1),
                )
                decision = CaseDecision(
                    case.case_id, False, other.case_id, round(score, 3), why, case.recurs, case.occurrence,
                    candidates=flagged,
                )  # fmt: skip
            else:
                # the best was closed (or nothing came close): open cases sharing words are still flagged
                flagged = tuple(self._runners_up(item, others, None, CANDIDATES))
                if merged_into and merged_into not in flagged:
                    flagged = (merged_into, *flagged[: CANDIDATES - 1])
                if not item.category:
                    why = "new case (no category)"
                elif flagged:
                    why = f"new case, possible duplicate (shares words with {flagged[0]})"
                    why = why[:-1] + "; template text)" if template else why
                else:
                    why = "new case (no similar open case)"
                score = round(best[0], 3) if best else 0.0
                decision = CaseDecision(
                    case.case_id, False, flagged[0] if flagged else None, score, why + recurs, case.recurs,
                    case.occurrence, candidates=flagged,
                )  # fmt: skip
        self.store.remember(item.report_id, decision)
        return decision

    def _merged_into(self, case: CaseRecord, at: datetime) -> CaseRecord | None:
        """The open case an officer merged ``case`` into (following merges of merges), when ``case`` would
        still take the report were it open and the store holds the case it went into."""
        if not (case.closed or "").startswith("merged:") or not self.is_open(replace(case, closed=None), at):
            return None
        for _ in range(MERGE_HOPS):
            into = self.store.case(_successor(case))
            if into is None or into.case_id == case.case_id:
                return None
            if into.closed is None:
                return into if self.is_open(into, at) else None
            if not into.closed.startswith("merged:"):
                return None
            case = into
        return None

    def _held_back(
        self,
        item: GroupItem,
        fp: _LazyFingerprint,
        best: tuple[float, CaseRecord, str, Fingerprint],
        template: bool,
    ) -> str | None:
        """Why the best open case is not joined, or None when it is."""
        score, case, _, member = best
        p = self.policy
        if self._has_coords(item, case):
            return None if score >= p.join_at else self._below[0]
        if score < p.join_at_text:
            return self._below[1]
        if template:
            return f"template text (filed in {p.template_kelurahan}+ kelurahan)"
        if same_place(fp.get().places, member.places):
            return None  # one named place: the rest of the wording may differ
        mine, theirs = fp.get().words, member.words
        if min(len(mine), len(theirs)) < p.min_words:
            return f"fewer than {p.min_words} content words"
        # unmatched_words, cheapest test first: a spelling check only ever removes words from the plain
        # set differences, so a side already short enough decides without it
        only_mine, only_theirs = mine - theirs, theirs - mine
        if min(len(only_mine), len(only_theirs)) <= p.max_unmatched:
            return None
        unmatched = _unalike(only_mine, only_theirs)
        if len(unmatched) <= p.max_unmatched:
            return None
        others = _unalike(only_theirs, only_mine)
        if len(others) <= p.max_unmatched:
            return None
        return f"different details: {' '.join(unmatched[:3])} / {' '.join(others[:3])}"

    def _best(
        self,
        item: GroupItem,
        fp: _LazyFingerprint,
        cases: list[CaseRecord],
        others: list[tuple[float, CaseRecord]] | None = None,
        floor: float = 0.0,
    ) -> tuple[float, CaseRecord, str, Fingerprint] | None:
        """The best-scoring comparable case (the first one on a tie), as :meth:`score` would find it, and
        the member text that scored best. ``others`` (when given) receives every comparable case with
        the content-word Jaccard of its closest member: runners-up are ranked by that, never shingled.
        Cases that cannot reach ``floor`` are not scored in full.

        Cheap before dear: the word Jaccard of every compared member is computed once; without
        coordinates only the :data:`TEXT_SHORTLIST` cases sharing the most words go further (a case
        sharing few words never wins on character shingles, which were half the triage time of a
        dense history); and shingles are only compared where their best possible outcome could still
        beat the best score so far.
        """
        reachable: list[tuple[float, CaseRecord, float, list[tuple[float, Fingerprint]]]] = []
        words: frozenset[str] | None = None
        around = self._around(item)
        for case in cases:
            reach = self._reach(item, case, around)
            if isinstance(reach, str):
                continue
            if words is None:
                words = fp.get().words
            members = []
            top = 0.0
            for _, lazy in self._compared(case):
                other = lazy.get()
                w = _jaccard(words, other.words)
                members.append((w, other))
                top = w if w > top else top
            reachable.append((top, case, reach, members))
            if others is not None:
                others.append((top, case))
        if len(reachable) > TEXT_SHORTLIST and (item.lat is None or item.lon is None):
            reachable.sort(key=lambda r: r[0], reverse=True)  # stable: ties keep the store's order
            del reachable[TEXT_SHORTLIST:]
        p = self.policy
        best: tuple[float, CaseRecord, float, float, Fingerprint] | None = None
        for top_words, case, reach, members in reachable:
            base, scale = 0.0, 1.0
            if reach >= 0:
                base = p.proximity_weight * (1.0 - reach / p.radius_m)
                scale = 1.0 - p.proximity_weight
            bound = base + scale * _similarity_bound(top_words)
            if (best is not None and bound <= best[0]) or bound < floor:
                continue  # cannot beat the best so far (or reach the floor), whatever its shingles say
            sim, closest = 0.0, members[0][1]
            for w, other in members:
                if w < _SHINGLE_FLOOR:
                    if w > sim:
                        sim, closest = w, other
                elif _similarity_bound(w) > sim:
                    s = 0.5 * w + 0.5 * _jaccard(fp.get().shingles, other.shingles)
                    if s > sim:
                        sim, closest = s, other
            score = base + scale * sim if reach >= 0 else sim
            if score > 0 and (best is None or score > best[0]):
                best = (score, case, reach, sim, closest)
        if best is None:
            return None
        score, case, reach, sim, closest = best
        return score, case, self._combine(item, reach, sim)[1], closest

    def _runners_up(
        self, item: GroupItem, others: list[tuple[float, CaseRecord]], best: CaseRecord | None, room: int
    ) -> list[str]:
        """Other open cases sharing enough words to flag (``candidate_at`` on the content-word Jaccard),
        most words in common first."""
        if not room:
            return []
        floor = self.policy.candidate_at
        flags = [o for o in others if o[0] >= floor and o[1] is not best and self.is_open(o[1], item.at)]
        ranked = sorted(flags, key=lambda o: o[0], reverse=True)
        return [case.case_id for _, case in ranked[:room]]

    def _compared(self, case: CaseRecord) -> list[tuple[str, Any]]:
        """The members a new report is compared with: the first and the latest ones."""
        return case.members[:1] + case.members[1:][-(self.policy.compare_members - 1) :]

    @staticmethod
    def _has_coords(item: GroupItem, case: CaseRecord) -> bool:
        return None not in (item.lat, item.lon, case.lat, case.lon)

    def assign_many(self, items: Iterable[Any]) -> list[CaseDecision]:
        return [self.assign(i) for i in items]

    @staticmethod
    def _cell_of(case: CaseRecord) -> str | None:
        if case.lat is None or case.lon is None:
            return None
        return _cell_key(_cell(case.lat, case.lon))


def _successor(case: CaseRecord) -> str:
    """The case a closed case's problem continued in: itself, or the case it was merged into."""
    if case.closed and case.closed.startswith("merged:"):
        return case.closed.removeprefix("merged:")
    return case.case_id


def with_policy(index: CaseIndex, **changes: Any) -> CaseIndex:
    """A fresh index (empty memory store) with some policy values changed; handy for experiments."""
    return CaseIndex(MemoryCaseStore(), replace(index.policy, **changes))


def explain(
    item: GroupItem, others: Sequence[GroupItem], policy: GroupingPolicy | None = None
) -> dict[str, Any]:
    """Why ``item`` belongs with ``others`` (the rest of its case): its score against the case — against the
    closest of them, as grouping scores a report against a case's members — and what drove it: the text
    similarity, the distance when both are located, the days apart, the content words they share, the
    words each has that the other lacks, and the places both name. For officers reading a case."""
    p = policy or GroupingPolicy()
    mine = fingerprint(item.text)
    best: dict[str, Any] | None = None
    for other in others:
        theirs = fingerprint(other.text)
        sim = text_similarity(mine, theirs)
        d = None
        if None not in (item.lat, item.lon, other.lat, other.lon):
            d = distance_m(item.lat, item.lon, other.lat, other.lon)  # type: ignore[arg-type]
        if d is not None and d <= p.radius_m:
            score = p.proximity_weight * (1.0 - d / p.radius_m) + (1.0 - p.proximity_weight) * sim
        else:
            score = sim if item.kelurahan_code and item.kelurahan_code == other.kelurahan_code else 0.0
        if best is None or score > best["score"]:
            only_mine, only_theirs = unmatched_words(mine.words, theirs.words)
            best = {
                "score": round(score, 3),
                "closest": other.report_id,
                "text_similarity": round(sim, 3),
                "distance_m": None if d is None else round(d),
                "days_apart": round(abs((item.at - other.at).total_seconds()) / 86400, 1),
                "same_kelurahan": bool(item.kelurahan_code and item.kelurahan_code == other.kelurahan_code),
                "shared_words": sorted(mine.words & theirs.words, key=lambda w: (-len(w), w))[:12],
                "only_here": only_mine[:8],
                "only_there": only_theirs[:8],
                "same_place": sorted(mine.places & theirs.places),
            }
    return best or {"score": None, "closest": None}
