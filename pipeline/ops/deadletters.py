"""Dead letters: list, inspect and replay the records of ``<ns>.deadletter.v1``.

Replay, after a fix, feeds each letter through again:

* ``ingress`` letters hold the raw request: it goes through the ``parse`` of its channel's adapter
  again, and what comes out is published as the ingress would (raw topic + ingest topic);
* worker letters (``decode``, ``triage``, ``sink``) hold an envelope: it is published again to the
  topic of the stage that failed (ingest topic of its channel, or the normalised topic for ``sink``).

Report ids are stable (``uuid5(channel, provider id)``), so a replay run twice stores nothing twice:
the worker's dedup and the store's primary key absorb it, and reports the store already has are
counted as ``already stored`` and not published at all. Letters are never deleted from the topic.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from ..deadletter import DeadLetter
from ..envelope import RawRef, Report
from ..publish import Publisher, make_producer
from ..settings import Settings
from ..sources.base import InboundRequest, PushSource, Rejected, parse_request, start_adapters, stop_adapters
from ..sources.registry import discover
from ..topics import Topics
from .common import already_stored
from .kafka import read_to_end

WORKER_STAGES = {"decode", "triage", "sink"}


@dataclass(frozen=True)
class Letter:
    partition: int
    offset: int
    letter: DeadLetter

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"


@dataclass
class Filters:
    channel: list[str] | None = None
    code: list[str] | None = None
    stage: list[str] | None = None
    since: datetime | None = None
    until: datetime | None = None

    def match(self, d: DeadLetter) -> bool:
        return (
            (not self.channel or (d.channel or "-") in self.channel)
            and (not self.code or d.code in self.code)
            and (not self.stage or d.stage in self.stage)
            and (self.since is None or d.failed_at >= self.since)
            and (self.until is None or d.failed_at < self.until)
        )


async def load(settings: Settings, filters: Filters | None = None) -> tuple[list[Letter], int]:
    """Dead letters matching ``filters`` (oldest first) and how many records could not be read."""
    records = await read_to_end(settings, Topics(settings.topic_namespace).deadletter)
    out, unreadable = [], 0
    for r in records:
        try:
            d = DeadLetter.loads(r.value)
        except Exception:
            unreadable += 1
            continue
        if filters is None or filters.match(d):
            out.append(Letter(r.partition, r.offset, d))
    return out, unreadable


def find(letters: list[Letter], ident: str) -> list[Letter]:
    """By dead-letter id (or a unique prefix of it), report id, or ``partition:offset``."""
    ident = ident.strip().lower()
    exact = [
        x
        for x in letters
        if ident in (x.letter.dead_letter_id, (x.letter.report_id or "").lower(), x.position)
    ]
    if exact:
        return exact
    return [x for x in letters if len(ident) >= 4 and x.letter.dead_letter_id.startswith(ident)]


def summarise(d: DeadLetter) -> dict[str, Any]:
    return {
        "dead_letter_id": d.dead_letter_id,
        "failed_at": d.failed_at.isoformat(),
        "channel": d.channel,
        "stage": d.stage,
        "code": d.code,
        "reason": d.reason,
        "report_id": d.report_id,
        "raw_size": d.raw_size,
    }


def format_list(letters: list[Letter]) -> str:
    lines = [f"{'failed at (UTC)':19}  {'dead letter id':36}  {'channel':15} {'stage':7} {'code':18} reason"]
    for x in letters:
        d = x.letter
        reason = " ".join(d.reason.split())
        lines.append(
            f"{d.failed_at:%Y-%m-%d %H:%M:%S}  {d.dead_letter_id:36}  {(d.channel or '-')[:15]:15} "
            f"{d.stage[:7]:7} {d.code[:18]:18} {reason[:80]}"
        )
    by_code = Counter(x.letter.code for x in letters)
    lines.append(
        f"{len(letters)} dead letter(s)"
        + (": " + ", ".join(f"{c} {n}" for c, n in by_code.most_common()) if letters else "")
    )
    return "\n".join(lines)


def format_inspect(x: Letter, raw_limit: int = 4000) -> str:
    d = x.letter
    data = d.model_dump(exclude_none=True, exclude={"raw_b64"}, mode="json")
    lines = [f"{k:16} {v}" for k, v in data.items()]
    lines.insert(0, f"{'position':16} {x.position}")
    raw = d.raw()
    text = raw.decode("utf-8", errors="replace")
    shown = text[:raw_limit]
    lines.append(
        f"raw payload ({len(raw)} of {d.raw_size} bytes"
        + (", truncated at the cap" if d.raw_truncated else "")
        + "):"
    )
    lines.append(
        shown + (f"\n… ({len(text) - raw_limit} more characters; use --raw)" if len(text) > raw_limit else "")
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- replay
@dataclass
class ReplaySummary:
    selected: int = 0
    replayed: int = 0
    reports: int = 0
    already_stored: int = 0
    still_rejected: list[tuple[Letter, str]] = field(default_factory=list)
    unreplayable: list[tuple[Letter, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.still_rejected and not self.unreplayable

    def text(self) -> str:
        lines = [
            f"replay: {self.selected} dead letter(s) selected; {self.replayed} replayed "
            f"({self.reports} report(s) published), {self.already_stored} already stored (skipped), "
            f"{len(self.still_rejected)} still rejected, {len(self.unreplayable)} cannot be replayed"
        ]
        for x, why in (self.still_rejected + self.unreplayable)[:20]:
            lines.append(f"  {x.letter.dead_letter_id} ({x.letter.channel or '-'}/{x.letter.code}): {why}")
        more = len(self.still_rejected) + len(self.unreplayable) - 20
        if more > 0:
            lines.append(f"  … and {more} more")
        return "\n".join(lines)


@dataclass
class _Plan:
    letter: Letter
    records: list[tuple[str, bytes | None, bytes]]
    report_ids: list[str]


async def _plan(
    settings: Settings, x: Letter, topics: Topics, started: dict[str, PushSource]
) -> _Plan | str | Rejected:
    """What to publish for one letter, or why it cannot be replayed (str) / is still refused (Rejected).
    ``started``: the adapters built (and started) so far, by channel."""
    d = x.letter
    if d.raw_truncated:
        return f"raw payload was cut at {len(d.raw())} of {d.raw_size} bytes: ask the sender to resend"
    raw = d.raw()
    if d.stage == "ingress":
        adapters = discover()
        if not d.channel or d.channel not in adapters:
            return f"no adapter installed for channel {d.channel!r}"
        adapter = started.get(d.channel)
        if adapter is None:
            built = adapters[d.channel](settings)
            if not isinstance(built, PushSource):
                return f"channel {d.channel!r} is not a push channel"
            await start_adapters([built])
            adapter = started[d.channel] = built
        inbound = InboundRequest(
            method="POST",
            path=adapter.route,
            headers={"Content-Type": d.content_type} if d.content_type else {},
            query={},
            body=raw,
            remote="replay",
        )
        try:
            result = await parse_request(adapter, inbound)
        except Rejected as exc:
            return exc
        except Exception as exc:
            return Rejected(f"adapter still raises {exc!r}", code="adapter_error")
        sha = hashlib.sha256(raw).hexdigest()
        ref = RawRef(topic=topics.raw, key=sha, sha256=sha, size=len(raw), content_type=d.content_type)
        records: list[tuple[str, bytes | None, bytes]] = [(topics.raw, sha.encode(), raw)]
        for report in result.reports:
            report.raw_ref = ref
            records.append((topics.ingest(report.channel), report.report_id.encode(), report.dumps()))
        return _Plan(x, records, [r.report_id for r in result.reports])
    if d.stage in WORKER_STAGES:
        try:
            report = Report.loads(raw)
        except Exception as exc:
            return Rejected(f"still not a valid report envelope: {str(exc)[:300]}", code="bad_envelope")
        # Every worker stage (the store included) is re-entered through the ingest topic: triage is
        # deterministic and a report the store refused was never remembered as seen.
        topic = topics.ingest(report.channel)
        return _Plan(x, [(topic, report.report_id.encode(), report.dumps())], [report.report_id])
    return f"stage {d.stage!r} has no replay path"


async def replay(settings: Settings, letters: list[Letter], progress: bool = True) -> ReplaySummary:
    from tqdm import tqdm

    topics = Topics(settings.topic_namespace)
    summary = ReplaySummary(selected=len(letters))
    plans: list[_Plan] = []
    started: dict[str, PushSource] = {}
    try:
        for x in letters:
            plan = await _plan(settings, x, topics, started)
            if isinstance(plan, Rejected):
                summary.still_rejected.append((x, f"{plan.code}: {plan.reason}"))
            elif isinstance(plan, str):
                summary.unreplayable.append((x, plan))
            else:
                plans.append(plan)
    finally:
        await stop_adapters(list(started.values()))
    stored = already_stored(settings, [rid for p in plans for rid in p.report_ids]) or set()
    todo = []
    for p in plans:
        if p.report_ids and all(rid in stored for rid in p.report_ids):
            summary.already_stored += 1
        else:
            todo.append(p)

    producer = make_producer(settings, client_id="crm-replay")
    await producer.start()
    try:
        publisher = Publisher(settings, producer)
        bar = tqdm(total=len(todo), desc="replaying", unit="letter", disable=not progress, leave=True)
        for i in range(0, len(todo), 100):
            chunk = todo[i : i + 100]
            records = [r for p in chunk for r in p.records]
            await publisher.send_many_retrying(records)
            summary.replayed += len(chunk)
            summary.reports += sum(len(p.report_ids) for p in chunk)
            bar.update(len(chunk))
        bar.close()
    finally:
        await producer.stop()
    return summary


def letter_json(x: Letter) -> bytes:
    data = x.letter.model_dump(exclude_none=True, mode="json")
    data["position"] = x.position
    data["raw_text"] = base64.b64decode(x.letter.raw_b64).decode("utf-8", errors="replace")
    return orjson.dumps(data, option=orjson.OPT_INDENT_2)
