"""Case grouping on the live stream: the open cases live in Redis, shared by every worker.

Per batch, with three round trips (see :mod:`.redis_batch`; a fourth, small, when bucket TTLs are
due for renewal): load the buckets the batch's reports could join (and the decisions already made
for them), run the pure :class:`~pipeline.processors.group.CaseIndex` over an in-memory view, then
write back only what changed. A replayed report finds its earlier decision, so re-processing after
a crash yields the same case. Two workers grouping two reports of one problem at the very same
moment may open two cases; the second becomes a duplicate candidate at worst, which an officer can
merge.

Besides the cases, Redis keeps what grouping learns across workers: per template key (the words of a
text), the kelurahan it was filed in lately (a sorted set read in the same script call as the buckets),
and per closed case a marker (``case:closed:<id>``: Selesai, TL Ditolak or ``merged:<case>``) that the
status service and the officer API set (:func:`mark_closed`) and that is read with the cases.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis

from .group import (
    BUCKET_LIMIT,
    DOUBTED_LIMIT,
    MERGE_HOPS,
    CaseDecision,
    CaseIndex,
    CaseRecord,
    GroupingPolicy,
    GroupItem,
    MemoryCaseStore,
    _cell,
    _cell_key,
    _LazyFingerprint,
    _successor,
    doubted,
    fingerprint,
    template_key,
)
from .redis_batch import BatchWrite, pairs, top_by_score_script

#: members of a case kept for text comparison (the first and the latest few)
KEEP_MEMBERS = 4
#: a case another worker changed is re-read after at most this long (own changes are seen at once)
CACHE_FRESH_S = 5.0
CACHE_MAX = 10_000  # cases touched in the last CACHE_FRESH_S; 50,000 took the worker past 400 MB


class _TrackingStore(MemoryCaseStore):
    """A memory view that records which cases and decisions a batch changed."""

    def __init__(self) -> None:
        super().__init__()
        self.dirty_cases: dict[str, tuple[CaseRecord, str | None]] = {}
        self.new_decisions: dict[str, CaseDecision] = {}
        self.new_filings: dict[str, dict[str, datetime]] = {}  # template key -> kelurahan -> time

    def template_spread(self, key: str, kelurahan_code: str, at: datetime, since: datetime) -> int:
        self.new_filings.setdefault(key, {})[kelurahan_code] = at
        return super().template_spread(key, kelurahan_code, at, since)

    def load(self, case: CaseRecord, cell: str | None, own: bool, doubts: bool) -> None:
        super().put(case, cell, own, doubts)

    def put(self, case: CaseRecord, cell: str | None) -> None:
        super().put(case, cell)
        self.dirty_cases[case.case_id] = (case, cell)

    def remember(self, report_id: str, decision: CaseDecision) -> None:
        super().remember(report_id, decision)
        self.new_decisions[report_id] = decision


def _encode_case(case: CaseRecord) -> bytes:
    members = case.members[:1] + case.members[1:][-(KEEP_MEMBERS - 1) :]
    return orjson.dumps(
        {
            "case_id": case.case_id,
            "category": case.category,
            "first_at": case.first_at,
            "last_at": case.last_at,
            "lat": case.lat,
            "lon": case.lon,
            "kel": case.kelurahan_code,
            "size": case.size,
            "members": [[rid, fp.text] for rid, fp in members],
            "occurrence": case.occurrence,
            "recurs": case.recurs,
            **({"doubts": case.doubts} if case.doubts else {}),
        }
    )


def _decode_case(raw: bytes, known: CaseRecord | None = None) -> CaseRecord:
    """``known``: this case as read before; its members' fingerprints are kept for the members it
    still has (a member's text never changes), so a re-read case is not fingerprinted again."""
    d = orjson.loads(raw)
    prior = {rid: fp for rid, fp in known.members} if known is not None else {}
    return CaseRecord(
        case_id=d["case_id"],
        category=d["category"],
        first_at=datetime.fromisoformat(d["first_at"]),
        last_at=datetime.fromisoformat(d["last_at"]),
        lat=d["lat"],
        lon=d["lon"],
        kelurahan_code=d["kel"],
        members=[(rid, _member_fingerprint(prior.get(rid), text)) for rid, text in d["members"]],
        size=d["size"],
        occurrence=d.get("occurrence", 1),
        recurs=d.get("recurs"),
        doubts=tuple(d.get("doubts") or ()),
    )


def _member_fingerprint(known: _LazyFingerprint | None, text: str) -> _LazyFingerprint:
    return known if known is not None and known.text == text else _LazyFingerprint(text, kept=True)


def decode_decision(raw: bytes) -> CaseDecision:
    d = orjson.loads(raw)
    d["candidates"] = tuple(d.get("candidates") or ())
    return CaseDecision(**d)


def closed_key(namespace: str, case_id: str) -> str:
    return f"{namespace}:case:closed:{case_id}"


def store_ttl_s(policy: GroupingPolicy | None = None) -> int:
    """How long grouping keeps a case (and what is said of it) in Redis: a little longer than it can be
    joined or linked."""
    return int((policy or GroupingPolicy()).window.total_seconds() * 2)


async def set_decision(
    client: aioredis.Redis, namespace: str, report_id: str, decision: CaseDecision, ttl_s: int
) -> None:
    """Record ``decision`` as the one grouping made for ``report_id``: a redelivered report keeps it (an
    officer split the report out of its case: a replay must not put it back)."""
    await client.set(f"{namespace}:case:decision:{report_id}", orjson.dumps(decision), ex=ttl_s)


async def mark_closed(client: aioredis.Redis, namespace: str, case_id: str, reason: str, ttl_s: int) -> None:
    """Tell grouping that ``case_id`` takes no more reports (``reason``: Selesai, TL Ditolak, or
    ``merged:<case>`` when an officer merged it into another). Later reports of the same problem open a
    new case linked to it (to the case it was merged into).

    The case's score in its buckets moves up by a millisecond: a worker that holds the case in its cache
    sees a newer score than its copy and reads the case again, closed marker included."""
    await client.set(closed_key(namespace, case_id), reason, ex=ttl_s)
    grouper = RedisCaseGrouper(client, namespace)
    raw = await client.get(grouper._k_case(case_id))
    if not raw:
        return
    case = _decode_case(raw)
    pipe = client.pipeline(transaction=False)
    _bump(pipe, grouper, case)
    await pipe.execute()


def _bump(pipe: Any, grouper: RedisCaseGrouper, case: CaseRecord) -> None:
    """Move ``case`` up a millisecond in every bucket it is filed under: a worker holding it in its cache
    sees a newer score than its copy and reads it again."""
    for key in grouper.filed_under(case):
        pipe.zadd(key, {case.case_id: case.last_at.timestamp() + 0.001}, xx=True)


async def split_out(
    client: aioredis.Redis,
    namespace: str,
    report: GroupItem,
    case_id: str,
    new_case_id: str,
    policy: GroupingPolicy | None = None,
) -> None:
    """An officer split ``report`` out of ``case_id`` into ``new_case_id``: grouping forgets the report's
    words in the old case and files the new case where its repeats will look. Without this, the next
    report of the split-out problem matched the old case through the very words the officer took out
    of it, and joined it again.

    The old case's score in its buckets moves up by a millisecond (as in :func:`mark_closed`), so a
    worker holding it in its cache reads it again. A worker persisting the old case at the same moment
    may write its copy back with the words: the report's own decision stays split (set first), and the
    next repeat is then at worst a candidate of both cases."""
    grouper = RedisCaseGrouper(client, namespace, policy)
    decision = CaseDecision(new_case_id, False, None, 0.0, "new case (split out of its case by an officer)")
    await set_decision(client, namespace, report.report_id, decision, grouper.ttl_s)
    writes, bumps = BatchWrite(), client.pipeline(transaction=False)
    raw = await client.get(grouper._k_case(case_id))
    if raw:
        old = _decode_case(raw)
        kept = [m for m in old.members if m[0] != report.report_id]
        if kept:  # a case of one report is not split (the officer API refuses it)
            old.members, old.size = kept, max(1, old.size - 1)
            writes.set(grouper._k_case(case_id), _encode_case(old), grouper.ttl_s)
            _bump(bumps, grouper, old)
    if report.category:
        new = CaseRecord(
            case_id=new_case_id,
            category=report.category,
            first_at=report.at,
            last_at=report.at,
            lat=report.lat,
            lon=report.lon,
            kelurahan_code=report.kelurahan_code,
            members=[(report.report_id, _LazyFingerprint(report.text, kept=True))],
        )
        writes.set(grouper._k_case(new_case_id), _encode_case(new), grouper.ttl_s)
        for key in grouper.filed_under(new):
            writes.zadd(key, [repr(report.at.timestamp()), new_case_id], grouper.ttl_s, keep=grouper.ttl_s)
    await writes.execute(client)  # the old case without the words first, then its buckets' bumps
    if len(bumps):
        await bumps.execute()


def _note_merge(case: CaseRecord, into: set[str]) -> None:
    if (case.closed or "").startswith("merged:"):
        into.add(_successor(case))


class RedisCaseGrouper:
    def __init__(self, client: aioredis.Redis, namespace: str, policy: GroupingPolicy | None = None) -> None:
        self.r = client
        self.ns = namespace
        self.policy = policy or GroupingPolicy()
        self.ttl_s = store_ttl_s(self.policy)
        # Decoded cases kept between batches: case id -> (monotonic time read, record).
        self._cache: OrderedDict[str, tuple[float, CaseRecord]] = OrderedDict()
        self._cell_keys: dict[tuple[str, int, int], str] = {}
        self._filed: dict[str, list[str]] = {}  # case id -> the bucket keys it is filed under
        # Latitude degrees a case reaches (haversine metres per degree, with 2% to spare).
        self._reach_deg = self.policy.radius_m / 111_195.0 * 1.02

    def _k_case(self, case_id: str) -> str:
        return f"{self.ns}:case:{case_id}"

    def _k_cell(self, category: str, cell: str) -> str:
        return f"{self.ns}:case:cell:{category}:{cell}"

    def _k_kel(self, category: str, kel: str) -> str:
        return f"{self.ns}:case:kel:{category}:{kel}"

    def _k_kel_unplaced(self, category: str, kel: str) -> str:
        """The kelurahan's cases that have no coordinates (a located report can only join those there)."""
        return f"{self.ns}:case:kel-nocoords:{category}:{kel}"

    def _k_decision(self, report_id: str) -> str:
        return f"{self.ns}:case:decision:{report_id}"

    def _k_template(self, key: str) -> str:
        """The kelurahan a text with these words was filed in lately (member), scored by time."""
        return f"{self.ns}:case:tmpl:{key}"

    def _bucket_keys(self, item: GroupItem) -> list[str]:
        """One key per place: a case is filed under every cell a report within the radius could be in
        (:meth:`_filed_in_cells`), so a report only reads its own cell and still sees every case within
        the radius, at most BUCKET_LIMIT of them. (Reading the nine cells instead multiplies the
        candidates to score by up to nine once cells fill up: the bench's throughput fell by a third
        over 90,000 reports.)"""
        if not item.category:
            return []
        keys = []
        located = item.lat is not None and item.lon is not None
        if located:
            keys.append(self._k_cell(item.category, _cell_key(_cell(item.lat, item.lon))))  # type: ignore[arg-type]
        if item.kelurahan_code:
            # A located report scores 0 against a located case more than the radius away, so from its
            # kelurahan it needs only the cases without coordinates: half the candidates to load.
            kel = self._k_kel_unplaced if located else self._k_kel
            keys.append(kel(item.category, item.kelurahan_code))
        return keys

    def _doubted_keys(self, item: GroupItem) -> list[str]:
        """The bucket of the cases another category's report opened in this kelurahan that may have
        been of this one (flags only: GroupingPolicy.doubt_at), read for its DOUBTED_LIMIT most recent."""
        if not item.category or not item.kelurahan_code or item.lat is not None:
            return []
        return [self._k_kel(doubted(item.category), item.kelurahan_code)]

    async def assign(self, items: Sequence[GroupItem]) -> list[CaseDecision]:
        store = _TrackingStore()
        bucket_keys = sorted({k for item in items for k in self._bucket_keys(item)})
        doubted_keys = sorted({k for item in items for k in self._doubted_keys(item)})
        # the texts' template keys (their fingerprints are handed on: grouping reads them again)
        fps = {
            i.report_id: fingerprint(i.text)
            for i in items
            if i.category and i.kelurahan_code and (i.lat is None or i.lon is None)
        }
        templates = sorted({template_key(fp) for fp in fps.values()})
        since = min((i.at for i in items), default=None)
        floor = (since - self.policy.window).timestamp() if since else 0
        # Round trip 1: the buckets' most recent cases and the templates' kelurahan (one script call),
        # the doubted buckets' (another, with its own limit), and earlier decisions (MGET).
        pipe = self.r.pipeline(transaction=False)
        read_keys = bucket_keys + [self._k_template(k) for k in templates]
        if read_keys:
            await top_by_score_script(self.r)(keys=read_keys, args=[floor, BUCKET_LIMIT], client=pipe)
        if doubted_keys:
            await top_by_score_script(self.r)(keys=doubted_keys, args=[floor, DOUBTED_LIMIT], client=pipe)
        if items:
            pipe.mget([self._k_decision(item.report_id) for item in items])
        answers = await pipe.execute() if len(pipe) else []
        latest: dict[str, float] = {}
        read = answers[0] if read_keys else []
        for members in read[: len(bucket_keys)]:
            for cid, score in pairs(members):
                latest[cid] = score
        own = set(latest)
        # the doubted buckets' cases are filed in the view under their doubts only, unless also read for
        # their own category (MemoryCaseStore.put)
        doubted_ids = set()
        for members in answers[1 if read_keys else 0] if doubted_keys else []:
            for cid, score in pairs(members):
                doubted_ids.add(cid)
                latest.setdefault(cid, score)
        for key, members in zip(templates, read[len(bucket_keys) :], strict=True):
            store._templates[key] = {kel: datetime.fromtimestamp(ts, UTC) for kel, ts in pairs(members)}
        earlier = answers[-1] if items else []
        for item, raw in zip(items, earlier, strict=True):
            if raw:
                store._decisions[item.report_id] = decode_decision(raw)

        now = time.monotonic()
        stale = []
        merged: set[str] = set()  # the cases officers merged read cases into
        for cid, score in latest.items():
            hit = self._cache.get(cid)
            if hit is not None and now - hit[0] < CACHE_FRESH_S and hit[1].last_at.timestamp() >= score:
                store.load(hit[1], CaseIndex._cell_of(hit[1]), cid in own, cid in doubted_ids)
                _note_merge(hit[1], merged)
            else:
                stale.append(cid)
        if stale:  # round trip 2: the cases not fresh in the local cache, and whether they were closed
            for case in await self._read(stale, now):
                cid = case.case_id
                store.load(case, CaseIndex._cell_of(case), cid in own, cid in doubted_ids)
                _note_merge(case, merged)
        for _ in range(MERGE_HOPS):  # rare: only after an officer's merge, one more round trip a hop
            wanted = sorted(cid for cid in merged if store.case(cid) is None)
            if not wanted:
                break
            merged = set()
            for case in await self._read(wanted, now):
                store.load(case, CaseIndex._cell_of(case), False, False)  # found by id, not compared
                _note_merge(case, merged)

        index = CaseIndex(store, self.policy)
        decisions = [index.assign(item, fps.get(item.report_id)) for item in items]
        await self._persist(store.dirty_cases.values(), store.new_decisions, store.new_filings)
        for case, _ in store.dirty_cases.values():
            self._remember(case, now)
        return decisions

    async def _read(self, case_ids: list[str], now: float) -> list[CaseRecord]:
        """Cases from Redis with their closed markers (one MGET), remembered in the local cache."""
        keys = [self._k_case(cid) for cid in case_ids] + [closed_key(self.ns, cid) for cid in case_ids]
        found = await self.r.mget(keys)
        out = []
        for cid, raw, closed in zip(case_ids, found[: len(case_ids)], found[len(case_ids) :], strict=True):
            if raw:
                cached = self._cache.get(cid)
                case = _decode_case(raw, cached[1] if cached is not None else None)
                case.closed = closed.decode() if isinstance(closed, bytes) else closed
                self._remember(case, now)
                out.append(case)
        return out

    def _remember(self, case: CaseRecord, now: float) -> None:
        self._cache[case.case_id] = (now, case)
        self._cache.move_to_end(case.case_id)
        while len(self._cache) > CACHE_MAX:
            self._cache.popitem(last=False)

    def filed_under(self, case: CaseRecord) -> list[str]:
        """Every bucket key a case is filed under: its category's, and one for each of its doubts."""
        keys = self._filed.get(case.case_id)  # a case's place and categories never change: remembered
        if keys is not None:
            return keys
        keys = []
        located = case.lat is not None and case.lon is not None
        if located:
            keys += self._filed_in_cells(case.category, case.lat, case.lon)  # type: ignore[arg-type]
        if case.kelurahan_code:
            keys.append(self._k_kel(case.category, case.kelurahan_code))
            if not located:
                keys.append(self._k_kel_unplaced(case.category, case.kelurahan_code))
            keys += [self._k_kel(doubted(other), case.kelurahan_code) for other in case.doubts]
        if len(self._filed) >= CACHE_MAX:
            self._filed.clear()
        self._filed[case.case_id] = keys
        return keys

    def _filed_in_cells(self, category: str, lat: float, lon: float) -> list[str]:
        """The bucket keys a located case is filed under: every cell in which a report within the
        radius could be. That is 2 or 3 cells a side, 4.8 on average rather than all 9 around it:
        cell ZADDs were half of what Redis appends to its file, and a case filed under a cell it
        cannot reach only crowds that cell's most recent few."""
        d = self._reach_deg
        d_lon = d / math.cos(math.radians(min(abs(lat) + d, 89.0)))
        y0, x0 = _cell(lat - d, lon - d_lon)
        y1, x1 = _cell(lat + d, lon + d_lon)
        return [self._cell_bucket(category, y, x) for y in range(y0, y1 + 1) for x in range(x0, x1 + 1)]

    def _cell_bucket(self, category: str, y: int, x: int) -> str:
        """Bucket key of one cell (remembered: a city has a few thousand occupied cells per category)."""
        key = self._cell_keys.get((category, y, x))
        if key is None:
            if len(self._cell_keys) > 200_000:
                self._cell_keys.clear()
            key = self._cell_keys[(category, y, x)] = self._k_cell(category, _cell_key((y, x)))
        return key

    async def _persist(
        self,
        cases: Iterable[tuple[CaseRecord, str | None]],
        decisions: dict[str, CaseDecision],
        filings: dict[str, dict[str, datetime]],
    ) -> None:
        writes = BatchWrite()  # round trip 3: every change of the batch in one buffer
        buckets: dict[str, list[str]] = {}  # bucket key -> [score, case id, score, case id, ...]
        for case, _own_cell in cases:
            writes.set(self._k_case(case.case_id), _encode_case(case), self.ttl_s)
            member = [repr(case.last_at.timestamp()), case.case_id]
            for key in self.filed_under(case):
                buckets.setdefault(key, []).extend(member)
        # One ZADD and one EXPIRE per bucket for the whole batch, however many cases share it.
        for key, flat in buckets.items():  # scores are seconds: cases idle for a TTL are dropped
            writes.zadd(key, flat, self.ttl_s, keep=self.ttl_s)
        for report_id, decision in decisions.items():
            writes.set(self._k_decision(report_id), orjson.dumps(decision), self.ttl_s)
        for key, kels in filings.items():
            flat = [x for kel, at in kels.items() for x in (repr(at.timestamp()), kel)]
            writes.zadd(self._k_template(key), flat, self.ttl_s, keep=self.ttl_s)
        await writes.execute(self.r)
