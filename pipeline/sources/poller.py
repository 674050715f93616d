"""The poll runner: every registered :class:`PollSource` on its interval, with a cursor that never lies.

One poll cycle of a channel is::

    lease → cursor = load() → batch = adapter.fetch(cursor)
          → publish raw payloads + envelopes + dead letters, wait for the broker (acks=all)
          → save(batch.next_cursor) → release lease

Guarantees, and why they hold:

* **No skip.** The cursor is written only after the broker confirmed every record the batch covers
  (reports *and* its dead letters). A crash, a kill or a broker outage anywhere before that leaves
  the old cursor, so the next cycle fetches the same items again.
* **No repeat that matters.** A crash between the broker's confirmation and the cursor write makes
  the next cycle publish the same items again — with the same report ids (uuid5 of channel and the
  provider's id), which the worker's exact dedup absorbs. Overlap between polls is also filtered by
  the adapters against their cursor (e.g. tweet ids ≤ ``since_id`` are dropped), so in normal
  operation nothing reaches the ingest topic twice.
* **One bad item never blocks the others.** Adapters turn an item they cannot map into a reject
  (raw item + reason); the runner publishes it to the dead-letter topic and moves the cursor past it.
  A whole response that cannot be read (bad JSON) is dead-lettered without moving the cursor. A
  channel that fails (network, 5xx, bad credentials) backs off exponentially; other channels go on.
* **Rate limits.** An adapter that was told to wait (X's 429 + ``x-rate-limit-reset``) returns what
  it has with ``retry_at``; the runner sleeps until then instead of crashing or hammering.

Where the cursor lives: **Redis**, key ``<namespace>:poll:cursor:<channel>``. Redis already holds the
pipeline's dedup state (run with appendonly, fsync every second), the runner is a producer-side
process that otherwise needs no database, and losing a cursor is safe: the adapter refetches from
its default start and the stable report ids make that a repeat, never a loss. A lease
(``<namespace>:poll:lease:<channel>``, SET NX PX) keeps two runners from polling one channel at once,
and the cursor write is a compare-and-set on that lease, so a runner that stalled past its lease
cannot overwrite the cursor of the runner that took over.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from prometheus_client import Counter

from ..deadletter import DeadLetter
from ..envelope import RawRef
from ..ops.slo import mark_intake
from ..publish import Publisher, PublishError, make_producer
from ..settings import Settings
from .base import AdapterStartError, PollBatch, PollSource, start_adapters, stop_adapters
from .config import ChannelSettingsError

log = logging.getLogger("pipeline.poller")

POLLS = Counter("crm_poll_cycles_total", "poll cycles per channel and outcome", ["channel", "outcome"])
POLLED = Counter("crm_poll_reports_total", "reports published by the poller per channel", ["channel"])
POLL_REJECTED = Counter(
    "crm_poll_rejected_total", "polled items dead-lettered per channel", ["channel", "code"]
)

_CODE = re.compile(r"^([a-z][a-z0-9_]{1,40}): (.+)$", re.S)


@dataclass
class PolledBatch(PollBatch):
    """A :class:`PollBatch` with what the runner can use when the adapter knows it.

    ``raws``: the raw item per report id, exactly as the provider sent it (else the runner stores
    the envelope itself as the raw payload). ``retry_at``: the provider asked us to wait until this
    Unix time. ``more``: the provider has more right now; poll again without waiting.
    """

    raws: dict[str, tuple[bytes, str | None]] = field(default_factory=dict)
    retry_at: float | None = None
    more: bool = False


class PollError(RuntimeError):
    """The provider could not be polled now (network, 5xx, unreadable answer): retry with backoff."""


class PollAuthError(PollError):
    """The provider refused our credentials (401/403): nothing to publish; fix the settings."""


def split_reason(reason: str) -> tuple[str, str]:
    """Rejects carry ``"code: human reason"``; a bare reason gets the code ``rejected``."""
    m = _CODE.match(reason)
    return (m.group(1), m.group(2)) if m else ("rejected", reason)


class CursorStore:
    """Cursors and leases in Redis, under the topic namespace."""

    _SET_IF_OWNER = """
    if redis.call('GET', KEYS[1]) == ARGV[1] then
        redis.call('SET', KEYS[2], ARGV[2])
        return 1
    end
    return 0
    """
    _RELEASE = """
    if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
    return 0
    """

    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self.client = client
        self.ns = namespace

    def cursor_key(self, channel: str) -> str:
        return f"{self.ns}:poll:cursor:{channel}"

    def lease_key(self, channel: str) -> str:
        return f"{self.ns}:poll:lease:{channel}"

    async def get(self, channel: str) -> str | None:
        value = await self.client.get(self.cursor_key(channel))
        return value.decode() if isinstance(value, bytes) else value

    async def acquire(self, channel: str, token: str, ttl_s: float) -> bool:
        return bool(await self.client.set(self.lease_key(channel), token, nx=True, px=int(ttl_s * 1000)))

    async def save(self, channel: str, token: str, cursor: str) -> bool:
        """Write the cursor only while we still hold the lease; False if another runner took over."""
        done = await self.client.eval(
            self._SET_IF_OWNER, 2, self.lease_key(channel), self.cursor_key(channel), token, cursor
        )
        return bool(done)

    async def release(self, channel: str, token: str) -> None:
        await self.client.eval(self._RELEASE, 1, self.lease_key(channel), token)


@dataclass
class PollOutcome:
    channel: str
    status: str  # ok | busy | error | unavailable
    published: int = 0
    rejected: int = 0
    cursor_before: str | None = None
    cursor_after: str | None = None
    retry_at: float | None = None
    more: bool = False
    error: str | None = None


class Poller:
    def __init__(self, settings: Settings, publisher: Publisher, cursors: CursorStore) -> None:
        self.settings = settings
        self.publisher = publisher
        self.cursors = cursors
        self.token = f"{uuid.uuid4().hex}"

    def _records(
        self, channel: str, batch: PollBatch
    ) -> tuple[list[tuple[str, bytes | None, bytes]], int, int]:
        topics = self.publisher.topics
        raws = batch.raws if isinstance(batch, PolledBatch) else {}
        records: list[tuple[str, bytes | None, bytes]] = []
        seen_raw: set[str] = set()
        seen_ids: set[str] = set()
        for report in batch.reports:
            if report.report_id in seen_ids:  # a provider page overlap inside one batch
                continue
            seen_ids.add(report.report_id)
            raw, ctype = raws.get(report.report_id) or (report.dumps(), "application/json")
            sha = hashlib.sha256(raw).hexdigest()
            report.raw_ref = RawRef(topic=topics.raw, key=sha, sha256=sha, size=len(raw), content_type=ctype)
            if sha not in seen_raw:
                seen_raw.add(sha)
                records.append((topics.raw, sha.encode(), raw))
            records.append((topics.ingest(report.channel), report.report_id.encode(), report.dumps()))
        for raw, reason in batch.rejects:
            code, text = split_reason(reason)
            letter = DeadLetter.build(
                raw=raw,
                cap=self.settings.dead_letter_raw_cap_bytes,
                channel=channel,
                stage="poll",
                code=code,
                reason=text,
                content_type="application/json",
            )
            POLL_REJECTED.labels(channel, code).inc()
            records.append((topics.deadletter, letter.raw_sha256.encode(), letter.dumps()))
        return records, len(seen_ids), len(batch.rejects)

    async def poll_once(self, adapter: PollSource) -> PollOutcome:
        """One cycle for one channel. Never raises for provider or broker trouble: see the outcome."""
        channel = adapter.channel
        if not await self.cursors.acquire(channel, self.token, self.settings.poll_lease_s):
            POLLS.labels(channel, "busy").inc()
            return PollOutcome(channel, "busy")
        try:
            cursor = await self.cursors.get(channel)
            out = PollOutcome(channel, "ok", cursor_before=cursor, cursor_after=cursor)
            try:
                batch = await adapter.fetch(cursor)
            except PollError as exc:
                log.warning("poll %s failed: %s", channel, exc)
                POLLS.labels(channel, "auth" if isinstance(exc, PollAuthError) else "error").inc()
                out.status, out.error = "error", str(exc)
                return out
            except Exception as exc:  # an adapter bug: the channel backs off, the others go on
                log.exception("adapter %s crashed while polling", channel)
                POLLS.labels(channel, "adapter_error").inc()
                out.status, out.error = "error", f"adapter raised {exc!r}"
                return out

            records, out.published, out.rejected = self._records(channel, batch)
            if isinstance(batch, PolledBatch):
                out.retry_at, out.more = batch.retry_at, batch.more
            try:
                if records:
                    await self.publisher.send_many(records)
            except PublishError as exc:
                # Nothing is acknowledged: the cursor stays, the same items come back next cycle.
                log.error("poll %s: broker did not confirm, cursor kept at %r: %s", channel, cursor, exc)
                POLLS.labels(channel, "unavailable").inc()
                out.status, out.error, out.published, out.rejected = "unavailable", str(exc), 0, 0
                return out
            POLLED.labels(channel).inc(out.published)
            if out.published:
                mark_intake([channel])
            if batch.next_cursor is not None and batch.next_cursor != cursor:
                if await self.cursors.save(channel, self.token, batch.next_cursor):
                    out.cursor_after = batch.next_cursor
                else:
                    log.warning(
                        "poll %s: lease lost before the cursor was saved; another runner goes on", channel
                    )
            POLLS.labels(channel, "ok").inc()
            return out
        finally:
            await self.cursors.release(channel, self.token)

    def _delay(self, adapter: PollSource, out: PollOutcome, failures: int) -> float:
        if out.status in ("error", "unavailable"):
            base = min(
                self.settings.poll_backoff_max_s, max(1.0, adapter.interval_s / 4) * 2 ** min(failures, 10)
            )
            delay = base * (0.75 + random.random() / 2)
        elif out.more:
            delay = 0.0
        else:
            delay = adapter.interval_s
        if out.retry_at is not None:
            delay = max(delay, out.retry_at - time.time())
        return min(max(delay, 0.0), max(self.settings.poll_backoff_max_s, adapter.interval_s))

    async def run_channel(
        self, adapter: PollSource, once: bool = False, stop: asyncio.Event | None = None
    ) -> list[PollOutcome]:
        """Poll one channel until ``stop`` (or, with ``once``, until it is caught up or fails)."""
        stop = stop or asyncio.Event()
        outcomes: list[PollOutcome] = []
        failures = 0
        while not stop.is_set():
            try:
                out = await self.poll_once(adapter)
            except (aioredis.RedisError, OSError) as exc:  # the cursor store is down: nothing moved
                log.error("poll %s: cursor store unavailable: %s", adapter.channel, exc)
                out = PollOutcome(adapter.channel, "error", error=f"cursor store unavailable: {exc!r}")
            outcomes.append(out)
            failures = failures + 1 if out.status in ("error", "unavailable") else 0
            if out.published or out.rejected or out.status != "ok":
                log.info(
                    "poll %s: %s, %d published, %d dead-lettered, cursor %r → %r",
                    adapter.channel,
                    out.status,
                    out.published,
                    out.rejected,
                    out.cursor_before,
                    out.cursor_after,
                )
            if once and (not out.more or out.status != "ok"):
                break
            delay = self._delay(adapter, out, failures)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay) if delay > 0 else None
            except TimeoutError:
                pass
        return outcomes

    async def run(
        self, adapters: Sequence[PollSource], once: bool = False, stop: asyncio.Event | None = None
    ) -> dict[str, list[PollOutcome]]:
        results = await asyncio.gather(*(self.run_channel(a, once=once, stop=stop) for a in adapters))
        return {a.channel: r for a, r in zip(adapters, results, strict=True)}


def poll_adapters(settings: Settings, channels: Sequence[str] | None = None) -> list[PollSource]:
    """The registered poll adapters, or the named ones (ValueError for unknown or non-poll ids)."""
    from .registry import discover

    found = discover()
    if channels:
        bad = [c for c in channels if c not in found or not issubclass(found[c], PollSource)]
        if bad:
            polls = sorted(c for c, cls in found.items() if issubclass(cls, PollSource))
            raise ValueError(f"not a poll channel: {', '.join(bad)} (poll channels: {', '.join(polls)})")
        return [found[c](settings) for c in channels]  # type: ignore[misc]
    return [cls(settings) for cls in found.values() if issubclass(cls, PollSource)]  # type: ignore[misc]


async def run_poller(
    settings: Settings, adapters: Sequence[PollSource], once: bool = False, stop: asyncio.Event | None = None
) -> dict[str, list[PollOutcome]]:
    """Producer, Redis and adapters (``start()`` before the first poll, ``stop()`` at the end) around
    :meth:`Poller.run`; closes everything it opened."""
    producer = make_producer(settings, client_id="crm-poller")
    client = aioredis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    await producer.start()
    started = False
    try:
        await start_adapters(adapters)
        started = True
        poller = Poller(
            settings, Publisher(settings, producer), CursorStore(client, settings.topic_namespace)
        )
        return await poller.run(adapters, once=once, stop=stop)
    finally:
        if started:
            await stop_adapters(adapters)
        for adapter in adapters:
            # adapters written before start/stop existed close themselves in aclose()
            close = getattr(adapter, "aclose", None)
            if close is not None and type(adapter).stop is PollSource.stop:
                await close()
        await producer.stop()
        await client.aclose()


def poll_main(channels: Sequence[str] | None, once: bool) -> int:
    """``crm-pipeline poll``: 0 ok, 1 a channel failed (with --once), 2 bad channel id."""
    import signal

    from ..settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    try:
        adapters = poll_adapters(settings, channels)
    except (ValueError, ChannelSettingsError) as exc:
        print(f"crm-pipeline poll: {exc}")
        return 2
    if not adapters:
        print("crm-pipeline poll: no poll channel is registered")
        return 2

    async def main() -> dict[str, list[PollOutcome]]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await run_poller(settings, adapters, once=once, stop=stop)

    try:
        results = asyncio.run(main())
    except AdapterStartError as exc:
        print(f"crm-pipeline poll: {exc}")
        return 1
    failed = [c for c, outs in results.items() if outs and outs[-1].status in ("error", "unavailable")]
    for channel, outs in results.items():
        total = sum(o.published for o in outs)
        rejected = sum(o.rejected for o in outs)
        last = outs[-1] if outs else None
        print(
            f"{channel:12} {last.status if last else '-':11} published={total} dead_lettered={rejected} "
            f"cursor={last.cursor_after if last else None!r}"
        )
    return 1 if once and failed else 0
