"""Conformance kit for push-channel adapters: the four promises every channel keeps, as pytest tests.

1. **valid input → envelope on the topic**: a correctly signed request is accepted and its report(s)
   are on ``<ns>.ingest.<channel>.v1`` as valid envelopes of this channel;
2. **malformed → dead letter**: a signed but broken request is answered 4xx with a reason, and its raw
   bytes are on ``<ns>.deadletter.v1`` with the channel, stage ``ingress`` and a code;
3. **redelivery → no duplicate**: the same request twice yields the same report ids, and (with a worker
   running) exactly one record per report on ``<ns>.normalised.v1``;
4. **forged signature → rejected**: a request with a wrong signature or token is answered 401/403 and
   nothing of it reaches any topic.

Two more promises, offline:

5. **declared settings** (when the adapter has a ``settings_model``): loaded and validated, no secret's
   value in ``repr`` or ``listing()``, and every secret's shipped default refused under
   ``CRM_ENV=production`` (defaults are development values containing ``dev-only-``, or empty);
6. **lifecycle**: ``start()`` and ``stop()`` are awaited around the offline checks (an ``async def
   parse`` is awaited the way the ingress does), so an adapter that needs ``start()`` is tested as run.

Each of the first four promises is checked twice: offline, against the adapter as a plain object (fast,
no broker), and through a running ingress with real HTTP and real Kafka. Use it by subclassing
:class:`PushConformance` in a test module (pytest collects the ``test_*`` methods) and providing a
``conformance_target`` fixture that names a running ingress and its broker::

    import pytest
    from pipeline.sources.conformance import HttpCall, PushConformance, Target

    @pytest.fixture(scope="session")
    def conformance_target() -> Target:        # e.g. from your own stack fixture
        return Target(url="http://127.0.0.1:8080", kafka_bootstrap="127.0.0.1:19092", namespace="crm")

    class TestMyChannel(PushConformance):
        adapter = MyChannelSource                 # the PushSource subclass under test

        def valid(self, nonce: str, base_url: str) -> HttpCall:      # correctly signed; nonce: unique ids
            ...
        def malformed(self, nonce: str, base_url: str) -> HttpCall:  # correctly signed, broken content
            ...
        def forged(self, nonce: str, base_url: str) -> HttpCall:     # valid(...) with a wrong signature
            ...

Put the nonce in the text too: the worker drops the same sender sending the same text within
``CRM_DEDUP_TEXT_WINDOW_S``, which would look like a lost report. ``base_url`` is the ingress the
call goes to (for providers that sign the URL, like Twilio).
Requests must be signed with the same secrets the ingress uses (``settings()`` returns the adapter's
settings; by default ``Settings(env="test")``, i.e. the development defaults). Set
``check_downstream = False`` when no worker runs behind the ingress. Without a ``conformance_target``
fixture only the offline half runs (the rest is skipped).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit

import orjson

from ..envelope import Report
from ..settings import Settings
from ..topics import Topics
from .base import InboundRequest, PushResult, PushSource, Rejected, parse_request
from .config import ChannelSettingsError
from .registry import discover


@dataclass(frozen=True)
class HttpCall:
    """One HTTP request to a push route, usable both over the wire and as an :class:`InboundRequest`."""

    path: str
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    method: str = "POST"

    def full_url(self, base_url: str) -> str:
        return base_url.rstrip("/") + self.path + (f"?{urlencode(dict(self.query))}" if self.query else "")

    def inbound(self, base_url: str = "http://127.0.0.1") -> InboundRequest:
        parts = urlsplit(base_url)
        return InboundRequest(
            method=self.method,
            path=self.path,
            headers=dict(self.headers),
            query=dict(self.query),
            body=self.body,
            remote="127.0.0.1",
            url=self.full_url(f"{parts.scheme}://{parts.netloc}"),
        )

    def send(self, base_url: str, timeout: float = 15) -> tuple[int, Any]:
        """Send it; the status and the decoded JSON answer (or the text, when it is not JSON)."""
        req = urllib.request.Request(  # noqa: S310 - the URL is the test's own ingress
            self.full_url(base_url),
            data=self.body if self.method != "GET" else None,
            method=self.method,
            headers=dict(self.headers),
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, orjson.loads(raw)
        except orjson.JSONDecodeError:
            return status, raw.decode(errors="replace")


@dataclass(frozen=True)
class Target:
    """A running ingress (with the adapter installed) and the broker and namespace it publishes to."""

    url: str
    kafka_bootstrap: str
    namespace: str
    #: a worker consumes the ingest topics (so the normalised topic can be checked)
    worker: bool = True

    @property
    def topics(self) -> Topics:
        return Topics(self.namespace)


def read_to_end(bootstrap: str, topic: str, timeout: float = 30) -> list[tuple[bytes | None, dict[str, Any]]]:
    """Every record on ``topic`` up to its end offsets as of now: (key, decoded JSON value)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def _read() -> list[tuple[bytes | None, dict[str, Any]]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            deadline = time.monotonic() + timeout
            partitions = consumer.partitions_for_topic(topic)
            while not partitions and time.monotonic() < deadline:
                await consumer._client.force_metadata_update()  # topic created moments ago
                partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                return []
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            out: list[tuple[bytes | None, dict[str, Any]]] = []
            while time.monotonic() < deadline:
                pending = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
                if not pending:
                    break
                batch = await consumer.getmany(*pending, timeout_ms=500)
                for records in batch.values():
                    out.extend((r.key, orjson.loads(r.value)) for r in records)
            return out
        finally:
            await consumer.stop()

    return asyncio.run(_read())


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# ----------------------------------------------------------------------------------------------------
# Checks as plain functions (for kits in other test frameworks)
# ----------------------------------------------------------------------------------------------------


OFFLINE_BASE = "http://127.0.0.1:8080"


def run_started(adapter: PushSource, work: Any) -> Any:
    """``await work()`` between the adapter's ``start()`` and ``stop()``, as the ingress runs it."""

    async def _run() -> Any:
        await adapter.start()
        try:
            return await work()
        finally:
            await adapter.stop()

    return asyncio.run(_run())


def expected_reports(adapter: PushSource, call: HttpCall, base_url: str = OFFLINE_BASE) -> list[Report]:
    """What the adapter makes of ``call`` (its ``parse``, awaited if async, with start/stop around it)."""
    result: PushResult = run_started(adapter, lambda: parse_request(adapter, call.inbound(base_url)))
    return result.reports


def check_offline(
    adapter: PushSource,
    valid: HttpCall,
    again: HttpCall,
    malformed: HttpCall,
    forged: HttpCall,
    base_url: str = OFFLINE_BASE,
) -> None:
    """The four promises against the adapter object alone. ``again`` is ``valid`` built a second time."""

    async def checks() -> None:
        adapter.authenticate(valid.inbound(base_url))
        reports = (await parse_request(adapter, valid.inbound(base_url))).reports
        assert reports, "a valid request must produce at least one report"
        for r in reports:
            assert r.channel == adapter.channel, f"report channel {r.channel!r} is not {adapter.channel!r}"
            assert Report.loads(r.dumps()).report_id == r.report_id, "the envelope must survive a round trip"
        redelivered = (await parse_request(adapter, again.inbound(base_url))).reports
        assert [r.report_id for r in redelivered] == [r.report_id for r in reports], (
            "redelivery changed the report ids"
        )
        try:
            adapter.authenticate(forged.inbound(base_url))
        except Rejected as exc:
            assert exc.status in (401, 403), f"a forged request must be 401/403, not {exc.status}"
        else:
            raise AssertionError("a forged request was authenticated")
        adapter.authenticate(malformed.inbound(base_url))  # malformed but authentic: past authentication
        try:
            await parse_request(adapter, malformed.inbound(base_url))
        except Rejected as exc:
            assert 400 <= exc.status < 500 and exc.reason, (
                "a malformed request needs a 4xx status and a reason"
            )
        else:
            raise AssertionError("a malformed request was parsed into reports")

    run_started(adapter, checks)


def check_settings(owner: type[Any], settings: Settings) -> None:
    """Promise 5: the declared settings of ``owner`` (an adapter or a reply sender class) load, never show
    a secret, and their shipped defaults are refused in production (a secret default must be a
    development value, ``dev-only-…``, or empty)."""
    model = getattr(owner, "settings_model", None)
    if model is None:
        return
    loaded = model.load(settings)
    shown = repr(loaded) + str(loaded) + orjson.dumps(loaded.listing()).decode()
    for name in model.model_fields:
        value = loaded.plain(name)
        if model.is_secret(name) and value:
            assert value not in shown, f"{model.env_name(name)}: its value shows in repr() or listing()"
    prod = Settings.model_construct(env="production")
    for name, info in model.model_fields.items():
        if not model.is_secret(name) or name in model.optional_secrets:
            continue
        try:
            model.load(prod, **{name: info.default})
        except ChannelSettingsError as exc:
            assert model.env_name(name) in str(exc), f"the refusal does not name {model.env_name(name)}"
        else:
            raise AssertionError(
                f"{model.env_name(name)}: its default is accepted in production; ship a 'dev-only-' value"
            )


def check_valid(target: Target, adapter: PushSource, call: HttpCall, timeout: float = 30) -> list[str]:
    ids = [r.report_id for r in expected_reports(adapter, call, target.url)]
    status, answer = call.send(target.url)
    assert 200 <= status < 300, f"valid request answered {status}: {answer}"
    topic = target.topics.ingest(adapter.channel)

    def landed() -> list[dict[str, Any]]:
        found = {
            v["report_id"]: v
            for k, v in read_to_end(target.kafka_bootstrap, topic)
            if k and k.decode() in ids
        }
        return list(found.values()) if set(found) == set(ids) else []

    for envelope in wait_for(landed, timeout, f"{len(ids)} envelope(s) on {topic}"):
        report = Report.model_validate(envelope)
        assert report.channel == adapter.channel and report.raw_ref is not None
    return ids


def check_malformed(
    target: Target, adapter: PushSource, call: HttpCall, timeout: float = 30
) -> dict[str, Any]:
    status, answer = call.send(target.url)
    if adapter.refused_status:  # a provider that must not see a 4xx (Telegram): the adapter's status
        assert status == adapter.refused_status, f"malformed request answered {status}: {answer}"
    else:
        assert 400 <= status < 500, f"malformed request answered {status}: {answer}"
    sha = hashlib.sha256(call.body).hexdigest()

    def letter() -> dict[str, Any] | None:
        for _, v in read_to_end(target.kafka_bootstrap, target.topics.deadletter):
            if v.get("raw_sha256") == sha and v.get("channel") == adapter.channel:
                return v
        return None

    found = wait_for(letter, timeout, "the dead letter")
    assert found["stage"] == "ingress" and found["code"] and found["reason"]
    assert base64.b64decode(found["raw_b64"]) == call.body[: len(base64.b64decode(found["raw_b64"]))]
    return found


def check_redelivery(
    target: Target, adapter: PushSource, call: HttpCall, downstream: bool = True, timeout: float = 60
) -> None:
    ids = check_valid(target, adapter, call)
    status, answer = call.send(target.url)
    assert 200 <= status < 300, f"redelivery answered {status}: {answer}"
    if not (downstream and target.worker):
        return

    def normalised() -> list[str]:
        return [
            v["report_id"]
            for _, v in read_to_end(target.kafka_bootstrap, target.topics.normalised)
            if v.get("report_id") in ids
        ]

    wait_for(lambda: set(normalised()) == set(ids), timeout, "the report(s) on the normalised topic")
    time.sleep(3)  # time for the redelivered copy to come through, were it not dropped
    seen = normalised()
    assert sorted(seen) == sorted(ids), f"redelivery produced duplicates downstream: {seen}"


def check_forged(target: Target, adapter: PushSource, forged: HttpCall, ids: list[str]) -> None:
    """``ids``: the report ids the request would have had if it were authentic."""
    status, answer = forged.send(target.url)
    assert status in (401, 403), f"forged request answered {status}: {answer}"
    # The ingress publishes before it answers, so whatever it published is on the topic by now.
    keys = {
        k.decode() for k, _ in read_to_end(target.kafka_bootstrap, target.topics.ingest(adapter.channel)) if k
    }
    assert not keys & set(ids), "a forged request reached the ingest topic"
    sha = hashlib.sha256(forged.body).hexdigest()
    letters = read_to_end(target.kafka_bootstrap, target.topics.deadletter)
    assert not [v for _, v in letters if v.get("raw_sha256") == sha], "a forged request was dead-lettered"


# ----------------------------------------------------------------------------------------------------
# The pytest base class
# ----------------------------------------------------------------------------------------------------


class PushConformance:
    """Subclass as ``Test<Channel>Conformance``; implement ``valid``, ``malformed`` and ``forged``."""

    adapter: ClassVar[type[PushSource]]
    #: check the normalised topic for duplicates (needs a worker behind the ingress)
    check_downstream: ClassVar[bool] = True

    # -- to implement --------------------------------------------------------------------------------
    def valid(self, nonce: str, base_url: str) -> HttpCall:
        """A correctly signed request; ``nonce`` makes its ids unique, ``base_url`` is where it goes."""
        raise NotImplementedError

    def malformed(self, nonce: str, base_url: str) -> HttpCall:
        """Correctly signed, broken content."""
        raise NotImplementedError

    def forged(self, nonce: str, base_url: str) -> HttpCall:
        """``valid(nonce, base_url)`` with a wrong signature or token."""
        raise NotImplementedError

    def settings(self) -> Settings:
        return Settings(env="test")

    # -- helpers -------------------------------------------------------------------------------------
    def source(self) -> PushSource:
        return self.adapter(self.settings())

    @staticmethod
    def nonce() -> str:
        return uuid.uuid4().hex[:12]

    @staticmethod
    def _target(request: Any) -> Target:
        import pytest

        try:
            return request.getfixturevalue("conformance_target")
        except pytest.FixtureLookupError:
            pytest.skip("no conformance_target fixture: only the offline conformance checks run")

    # -- offline ---------------------------------------------------------------------------------------
    def test_conformance_registered_as_entry_point(self) -> None:
        found = discover().get(self.adapter.channel)
        assert found is self.adapter, f"channel {self.adapter.channel!r} is registered as {found!r}"
        assert self.adapter.route.startswith("/"), "a push adapter names an absolute route"

    def test_conformance_offline(self) -> None:
        n, b = self.nonce(), OFFLINE_BASE
        check_offline(
            self.source(), self.valid(n, b), self.valid(n, b), self.malformed(n, b), self.forged(n, b), b
        )

    def test_conformance_settings_declared(self) -> None:
        check_settings(self.adapter, self.settings())

    # -- through the ingress and Kafka -----------------------------------------------------------------
    def test_conformance_valid_input_lands_on_ingest_topic(self, request: Any) -> None:
        t = self._target(request)
        check_valid(t, self.source(), self.valid(self.nonce(), t.url))

    def test_conformance_malformed_input_is_dead_lettered(self, request: Any) -> None:
        t = self._target(request)
        check_malformed(t, self.source(), self.malformed(self.nonce(), t.url))

    def test_conformance_redelivery_is_not_duplicated(self, request: Any) -> None:
        t = self._target(request)
        check_redelivery(t, self.source(), self.valid(self.nonce(), t.url), self.check_downstream)

    def test_conformance_forged_request_is_rejected(self, request: Any) -> None:
        t, n = self._target(request), self.nonce()
        ids = [r.report_id for r in expected_reports(self.source(), self.valid(n, t.url), t.url)]
        check_forged(t, self.source(), self.forged(n, t.url), ids)


# ----------------------------------------------------------------------------------------------------
# The answer-back half: reply senders (pipeline/crm/notify/replies.py)
# ----------------------------------------------------------------------------------------------------


class ReplyConformance:
    """The reply promises of a channel that answers its reporters, as pytest tests.

    1. the reply sender is registered under the channel id (``crm_pipeline.replies``) and the outbox
       answers this channel's reports on the channel itself;
    2. a status change produces exactly one reply per reporter and step: the acknowledgement and each
       status change reach the reporter once, through the real outbox, however often it runs;
    3. a failing provider is retried on the schedule and then marked undelivered (state ``failed``,
       listed by ``crm-pipeline notify undelivered``), never silently skipped;
    4. its declared settings (``settings_model``) keep promise 5 of the receiving half.

    Subclass as ``Test<Channel>Replies`` and implement ``report``, ``peer``, ``delivered`` and
    ``sender``. Promises 2 and 3 need a ``reply_database`` fixture returning a PostgreSQL URL whose
    schema is migrated (``crm-pipeline store migrate``); without it they are skipped.
    """

    reply_sender: ClassVar[type[Any]]

    # -- to implement --------------------------------------------------------------------------------
    def report(self, nonce: str) -> Report:
        """A report of this channel as its adapter makes it (with the contact the reply needs)."""
        raise NotImplementedError

    def peer(self) -> Any:
        """A fresh local stand-in of the provider's reply API: ``.app()`` (an aiohttp application) and a
        ``down`` attribute that makes it answer 503."""
        raise NotImplementedError

    def delivered(self, peer: Any, report: Report) -> int:
        """How many messages the peer accepted for this report's reporter."""
        raise NotImplementedError

    def sender(self, peer_url: str) -> Any:
        """The reply sender, pointed at the peer (``peer_url``: where its app listens)."""
        raise NotImplementedError

    def settings(self) -> Settings:
        return Settings(env="test")

    # -- helpers -------------------------------------------------------------------------------------
    @staticmethod
    def _database(request: Any) -> str:
        import pytest

        try:
            return request.getfixturevalue("reply_database")
        except pytest.FixtureLookupError:
            pytest.skip("no reply_database fixture: the outbox half of the reply conformance is skipped")

    async def _outbox(
        self, database_url: str, report: Report, steps: list[str], down: bool, max_attempts: int = 2
    ) -> tuple[Any, list[tuple[str, str, int]], list[dict[str, Any]]]:
        """Store ``report``, queue a status change per step, run the outbox on the peer; the peer, the
        report's outbox rows (event, state, attempts) and what ``undelivered`` lists for it."""
        from datetime import timedelta

        import psycopg
        from aiohttp import web

        from ..crm.notify.outbox import OutboxRunner, enqueue_status, undelivered
        from ..envelope import utcnow
        from ..sinks.postgres import PostgresReportSink

        settings = self.settings().model_copy(
            update={
                "database_url": type(self.settings().database_url)(database_url),
                "notify_max_attempts": max_attempts,
            }
        )
        peer = self.peer()
        peer.down = down
        runner_app = web.AppRunner(peer.app(), access_log=None)
        await runner_app.setup()
        site = web.TCPSite(runner_app, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            sink = PostgresReportSink(settings)
            try:
                await sink.write_until_stored([report])
                await sink.write_until_stored([report])  # a redelivered report queues nothing new
            finally:
                await sink.close()
            async with await psycopg.AsyncConnection.connect(database_url) as conn, conn.cursor() as cur:
                for i, step in enumerate(steps):
                    await enqueue_status(
                        cur, report.report_id, f"conformance-{report.report_id}-{i}", step, None, None
                    )
                    await enqueue_status(
                        cur, report.report_id, f"conformance-{report.report_id}-{i}", step, None, None
                    )
            runner = OutboxRunner(
                settings,
                senders={self.reply_sender.channel: self.sender(f"http://127.0.0.1:{port}")},
                only_reports=[report.report_id],  # other rows in this store are not the kit's to send
            )
            channel = self.reply_sender.channel
            async with await psycopg.AsyncConnection.connect(database_url) as conn:
                pause = await (
                    await conn.execute(
                        "SELECT failures, paused_until, last_error, updated_at FROM notify.destinations "
                        "WHERE destination = %s",
                        (channel,),
                    )
                ).fetchone()
            t0 = utcnow()
            try:
                for hours in (0, 1, 2, 3):  # due rows, retries, and runs with nothing left to send
                    await runner.run_once(t0 + timedelta(hours=hours))
            finally:
                await runner.close()
                # the simulated clock's pause must not hold the channel's real replies back
                async with await psycopg.AsyncConnection.connect(database_url) as conn:
                    await conn.execute("DELETE FROM notify.destinations WHERE destination = %s", (channel,))
                    if pause is not None:
                        await conn.execute(
                            "INSERT INTO notify.destinations (destination, failures, paused_until, "
                            "last_error, updated_at) VALUES (%s, %s, %s, %s, %s)",
                            (channel, *pause),
                        )
            async with await psycopg.AsyncConnection.connect(database_url) as conn:
                rows = await (
                    await conn.execute(
                        "SELECT event_key, state, attempts FROM notify.outbox WHERE report_id = %s "
                        "ORDER BY outbox_id",
                        (report.report_id,),
                    )
                ).fetchall()
                listed = [
                    r
                    for r in await undelivered(conn, self.reply_sender.channel, 1000)
                    if r["report_id"] == report.report_id
                ]
        finally:
            await runner_app.cleanup()
        return peer, [tuple(r) for r in rows], listed  # type: ignore[misc]

    # -- the promises ----------------------------------------------------------------------------------
    def test_reply_settings_declared(self) -> None:
        check_settings(self.reply_sender, self.settings())

    def test_reply_registered_as_entry_point(self) -> None:
        from ..crm.notify.outbox import destination_for
        from ..crm.notify.replies import discover_replies

        channel = self.reply_sender.channel
        assert discover_replies().get(channel) is self.reply_sender, f"{channel!r} has no reply sender"
        assert destination_for(channel, True, True) == channel, "the outbox does not answer on the channel"

    def test_reply_once_per_reporter_and_step(self, request: Any) -> None:
        database = self._database(request)
        report = self.report(PushConformance.nonce())
        peer, rows, listed = asyncio.run(self._outbox(database, report, ["Proses", "Selesai"], down=False))
        channel = self.reply_sender.channel
        assert [(state, n) for _, state, n in rows] == [("sent", 1)] * 3, f"outbox rows: {rows}"
        assert all(key.startswith(("ack", "status:")) for key, _, _ in rows)
        assert self.delivered(peer, report) == 3, "the ack and two status changes must arrive once each"
        assert not listed, f"{channel}: delivered rows listed as undelivered"

    def test_reply_failing_provider_is_retried_then_undelivered(self, request: Any) -> None:
        database = self._database(request)
        report = self.report(PushConformance.nonce())
        peer, rows, listed = asyncio.run(self._outbox(database, report, [], down=True, max_attempts=2))
        assert rows == [("ack", "failed", 2)], f"expected one ack, tried twice, then failed: {rows}"
        assert self.delivered(peer, report) == 0
        assert len(listed) == 1 and listed[0]["last_error"], "the failed reply is not listed as undelivered"
