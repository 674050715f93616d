"""Exact deduplication: redeliveries and re-sends never become a second report.

Two keys say "seen":

* the report id (channel + provider id): provider redeliveries, overlapping polls, replays;
* the sender + normalised text within a short window: a citizen pressing "send" twice.

Order matters for at-least-once: ``split`` only reads; ``remember`` is called by the worker *after*
the outputs are confirmed by the broker. A crash in between re-processes the batch and produces the
same report ids again, which every sink absorbs idempotently: a retry, never a loss. If Redis loses
its state the same holds, at the cost of some repeated work.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from ..envelope import Report
from .redis_batch import BatchWrite

_WORDS = re.compile(r"\w+")


def text_fingerprint(report: Report) -> str | None:
    """Sender + the text's words (case and punctuation ignored); None for anonymous reports (two
    strangers may write the same words). A double "send" repeats the text exactly, so this needs no
    full normalisation, which was the costliest step of the check."""
    if report.reporter.id == "anonymous":
        return None
    words = " ".join(_WORDS.findall(report.text.casefold()))
    digest = hashlib.blake2b(words.encode(), digest_size=12).hexdigest()
    return f"{report.reporter.id}:{digest}"


@dataclass(frozen=True, slots=True)
class Duplicate:
    report: Report
    duplicate_of: str
    reason: str


def split(
    reports: Sequence[Report],
    seen: Sequence[bool],
    fingerprint_owner: Sequence[str | None],
    fingerprints: Sequence[str | None] | None = None,
) -> tuple[list[Report], list[Duplicate]]:
    """Pure decision: which reports are fresh, given what the store already remembers.

    ``seen[i]`` says report i's id was stored before; ``fingerprint_owner[i]`` is the report id that
    first used report i's sender+text fingerprint within the window (or None).
    """
    fresh: list[Report] = []
    dups: list[Duplicate] = []
    batch_ids: set[str] = set()
    batch_fps: dict[str, str] = {}
    fps = fingerprints if fingerprints is not None else [text_fingerprint(r) for r in reports]
    for report, was_seen, owner, fp in zip(reports, seen, fingerprint_owner, fps, strict=True):
        rid = report.report_id
        if was_seen or rid in batch_ids:
            dups.append(Duplicate(report, rid, "redelivery: report id already seen"))
            continue
        first = owner if owner not in (None, rid) else batch_fps.get(fp) if fp else None
        if first is not None and first != rid:
            dups.append(Duplicate(report, first, "same sender sent the same text within the window"))
            continue
        batch_ids.add(rid)
        if fp:
            batch_fps[fp] = rid
        fresh.append(report)
    return fresh, dups


class RedisDedupStore:
    """Remembers seen report ids and recent sender+text fingerprints: one round trip per batch each way."""

    def __init__(self, client: aioredis.Redis, namespace: str, ttl_s: int, window_s: int) -> None:
        self.r = client
        self.ns = namespace
        self.ttl_s = ttl_s
        self.window_s = window_s
        # Split as fresh but not remembered yet (a batch still being stored): its redeliveries are
        # duplicates too. They reach this same worker, since the report id is the partition key.
        self._pending_ids: set[str] = set()
        self._pending_fps: dict[str, str] = {}
        # The fingerprint of each pending report, computed once in split() (it was 3.5% of the worker
        # when remember() and release() computed it again).
        self._fp_of: dict[str, str | None] = {}

    def _id_key(self, rid: str) -> str:
        return f"{self.ns}:dedup:id:{rid}"

    def _fp_key(self, fp: str) -> str:
        return f"{self.ns}:dedup:fp:{fp}"

    async def split(self, reports: Sequence[Report]) -> tuple[list[Report], list[Duplicate]]:
        fps = [text_fingerprint(r) for r in reports]
        fp_keys = [self._fp_key(fp) for fp in fps if fp] if self.window_s else []
        pipe = self.r.pipeline(transaction=False)  # two MGETs, one round trip
        pipe.mget([self._id_key(r.report_id) for r in reports])
        if fp_keys:
            pipe.mget(fp_keys)
        answers = await pipe.execute() if reports else [[]]
        seen = [raw is not None for raw in answers[0]]
        fp_owner = iter(answers[1] if fp_keys else [])
        owners: list[str | None] = []
        for i, fp in enumerate(fps):
            owner = next(fp_owner) if fp and fp_keys else None
            owners.append(owner.decode() if isinstance(owner, bytes) else owner)
            if fp and self.window_s and owners[i] is None:
                owners[i] = self._pending_fps.get(fp)
        seen = [was or r.report_id in self._pending_ids for was, r in zip(seen, reports, strict=True)]
        fresh, dups = split(reports, seen, owners, fps)
        fresh_ids = {r.report_id for r in fresh}
        for r, fp in zip(reports, fps, strict=True):
            if r.report_id in fresh_ids:
                self._pending_ids.add(r.report_id)
                self._fp_of[r.report_id] = fp
                if fp is not None:
                    self._pending_fps.setdefault(fp, r.report_id)
        return fresh, dups

    def release(self, reports: Sequence[Report]) -> None:
        """The batch is done (remembered, or given up on): no longer pending."""
        for r in reports:
            self._pending_ids.discard(r.report_id)
            fp = self._fingerprint(r)
            self._fp_of.pop(r.report_id, None)
            if fp is not None and self._pending_fps.get(fp) == r.report_id:
                del self._pending_fps[fp]

    def _fingerprint(self, report: Report) -> str | None:
        rid = report.report_id
        return self._fp_of[rid] if rid in self._fp_of else text_fingerprint(report)

    async def remember(self, reports: Sequence[Report]) -> None:
        writes = BatchWrite()
        for report in reports:
            writes.set(self._id_key(report.report_id), "1", self.ttl_s)
            fp = self._fingerprint(report)
            if fp and self.window_s:
                writes.set(self._fp_key(fp), report.report_id, self.window_s, nx=True)
        await writes.execute(self.r)
