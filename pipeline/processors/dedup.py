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
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from ..envelope import Report
from .normalise import normalise


def text_fingerprint(report: Report) -> str | None:
    """Sender + normalised text; None for anonymous reports (two strangers may write the same words)."""
    if report.reporter.id == "anonymous":
        return None
    digest = hashlib.blake2b(normalise(report.text).encode(), digest_size=12).hexdigest()
    return f"{report.reporter.id}:{digest}"


@dataclass(frozen=True, slots=True)
class Duplicate:
    report: Report
    duplicate_of: str
    reason: str


def split(
    reports: Sequence[Report], seen: Sequence[bool], fingerprint_owner: Sequence[str | None]
) -> tuple[list[Report], list[Duplicate]]:
    """Pure decision: which reports are fresh, given what the store already remembers.

    ``seen[i]`` says report i's id was stored before; ``fingerprint_owner[i]`` is the report id that
    first used report i's sender+text fingerprint within the window (or None).
    """
    fresh: list[Report] = []
    dups: list[Duplicate] = []
    batch_ids: set[str] = set()
    batch_fps: dict[str, str] = {}
    for report, was_seen, owner in zip(reports, seen, fingerprint_owner, strict=True):
        rid = report.report_id
        fp = text_fingerprint(report)
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
    """Remembers seen report ids and recent sender+text fingerprints, pipelined per batch."""

    def __init__(self, client: aioredis.Redis, namespace: str, ttl_s: int, window_s: int) -> None:
        self.r = client
        self.ns = namespace
        self.ttl_s = ttl_s
        self.window_s = window_s

    def _id_key(self, rid: str) -> str:
        return f"{self.ns}:dedup:id:{rid}"

    def _fp_key(self, fp: str) -> str:
        return f"{self.ns}:dedup:fp:{fp}"

    async def split(self, reports: Sequence[Report]) -> tuple[list[Report], list[Duplicate]]:
        fps = [text_fingerprint(r) for r in reports]
        pipe = self.r.pipeline(transaction=False)
        for report, fp in zip(reports, fps, strict=True):
            pipe.exists(self._id_key(report.report_id))
            if fp and self.window_s:
                pipe.get(self._fp_key(fp))
        answers = iter(await pipe.execute())
        seen: list[bool] = []
        owners: list[str | None] = []
        for fp in fps:
            seen.append(bool(next(answers)))
            owner = next(answers) if fp and self.window_s else None
            owners.append(owner.decode() if isinstance(owner, bytes) else owner)
        return split(reports, seen, owners)

    async def remember(self, reports: Sequence[Report]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for report in reports:
            pipe.set(self._id_key(report.report_id), b"1", ex=self.ttl_s)
            fp = text_fingerprint(report)
            if fp and self.window_s:
                pipe.set(self._fp_key(fp), report.report_id, ex=self.window_s, nx=True)
        await pipe.execute()
