"""The poll runner's guarantees on the real stack: the cursor moves only after the broker confirmed,
a kill between fetch and publish loses nothing, a crash after publish repeats with the same ids, one
failing channel does not stop the others, one runner per channel, and the ``crm-pipeline poll`` CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from pipeline.publish import Publisher, make_producer
from pipeline.settings import Settings
from pipeline.sources.lapor import LaporSource
from pipeline.sources.poller import CursorStore, Poller, run_poller, split_reason
from pipeline.sources.twitter import TwitterSource
from pipeline.topics import Topics, ensure_topics, topic_specs
from tests.harness import ROOT, free_port, read_topic, wait_until
from tests.test_source_lapor import TOKEN, FakeLapor, ServerThread, item

pytestmark = pytest.mark.stack


def fresh(iso, **kw) -> Settings:
    return iso.settings(topic_namespace=f"{iso.tag}-{uuid.uuid4().hex[:6]}", lapor_token=TOKEN, **kw)


def create_topics(settings: Settings) -> None:
    asyncio.run(ensure_topics(settings, topic_specs(settings, ["lapor1708", "twitter", "email"])))


def cursor(settings: Settings, channel: str = "lapor1708") -> str | None:
    value = redis.Redis.from_url(settings.redis_url).get(f"{settings.topic_namespace}:poll:cursor:{channel}")
    return value.decode() if value else None


def ingest(iso, settings: Settings, n: int, timeout: float = 15) -> list[dict]:
    return read_topic(
        iso, Topics(settings.topic_namespace).ingest("lapor1708"), min_records=n, timeout=timeout
    )


def with_api(settings: Settings, api: ServerThread, **kw) -> Settings:
    return Settings(**{**settings.model_dump(), "lapor_api_base": api.url, **kw})


def test_broker_not_confirming_keeps_the_cursor_and_the_next_cycle_publishes_everything(iso):
    settings = fresh(iso, produce_timeout_s=2)  # topics not created yet: the broker cannot take the batch
    fake = FakeLapor(items=[item(n, 7000) for n in range(1, 4)])
    with ServerThread(fake.app()) as api:
        s = with_api(settings, api, lapor_page_size=10)
        [out] = asyncio.run(run_poller(s, [LaporSource(s)], once=True))["lapor1708"]
        assert out.status == "unavailable" and out.published == 0 and cursor(s) is None
        create_topics(s)
        [out] = asyncio.run(run_poller(s, [LaporSource(s)], once=True))["lapor1708"]
    assert out.status == "ok" and out.published == 3
    assert sorted(r["provider_id"] for r in ingest(iso, s, 3)) == ["7001", "7002", "7003"]
    assert "updated_since" not in fake.requests[1]  # the second cycle started from the same place
    assert orjson.loads(cursor(s))["id"] == "7003"


def test_a_poller_killed_between_fetch_and_publish_skips_nothing(iso):
    settings = fresh(iso)
    fake = FakeLapor(items=[item(n, 7100) for n in range(1, 3)])
    with ServerThread(fake.app()) as api:
        env = {
            **os.environ,
            **iso.env,
            "CRM_TOPIC_NAMESPACE": settings.topic_namespace,
            "CRM_LAPOR_TOKEN": TOKEN,
            "CRM_LAPOR_API_BASE": api.url,
            "CRM_PRODUCE_TIMEOUT_S": "120",
            "CRM_POLL_LEASE_S": "5",
        }
        # No topics yet: after its fetch the poller sits in publish (waiting for the broker), killed there.
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "poll", "--channel", "lapor1708", "--once"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: fake.requests, timeout=30, what="the poller's fetch")
            time.sleep(1.0)
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert cursor(settings) is None
        create_topics(settings)
        time.sleep(5.2)  # the killed runner's lease expires
        s = with_api(settings, api)
        outs = asyncio.run(run_poller(s, [LaporSource(s)], once=True))["lapor1708"]
    assert [o.status for o in outs] == ["ok"] and outs[0].published == 2
    assert "updated_since" not in fake.requests[-1]  # refetched from where the killed runner started
    assert sorted(r["provider_id"] for r in ingest(iso, settings, 2)) == ["7101", "7102"]


class CrashBeforeSave(CursorStore):
    async def save(self, channel: str, token: str, cursor: str) -> bool:
        raise RuntimeError("killed after the broker confirmed, before the cursor was written")


def test_a_crash_after_publish_repeats_with_the_same_report_ids(iso):
    settings = fresh(iso)
    create_topics(settings)
    fake = FakeLapor(items=[item(n, 7200) for n in range(1, 3)])

    async def cycle(s: Settings, store_cls: type[CursorStore]):
        producer = make_producer(s, client_id="test-poller")
        client = aioredis.from_url(s.redis_url)
        await producer.start()
        adapter = LaporSource(s)
        try:
            poller = Poller(s, Publisher(s, producer), store_cls(client, s.topic_namespace))
            try:
                return await poller.poll_once(adapter)
            except RuntimeError:
                return None
        finally:
            await adapter.aclose()
            await producer.stop()
            await client.aclose()

    with ServerThread(fake.app()) as api:
        s = with_api(settings, api, lapor_page_size=10)
        assert asyncio.run(cycle(s, CrashBeforeSave)) is None and cursor(s) is None
        out = asyncio.run(cycle(s, CursorStore))
    assert out.published == 2 and orjson.loads(cursor(s))["id"] == "7202"
    reports = ingest(iso, s, 4)
    # at-least-once: the repeat carries the same report ids, which the worker's exact dedup absorbs
    assert len(reports) == 4 and len({r["report_id"] for r in reports}) == 2


def test_one_runner_per_channel_and_a_failing_channel_does_not_stop_the_others(iso):
    settings = fresh(iso)
    create_topics(settings)
    fake = FakeLapor(items=[item(1, 7300)])
    with ServerThread(fake.app()) as api:
        s = with_api(
            settings,
            api,
            twitter_api_base=f"http://127.0.0.1:{free_port()}",
            twitter_user_id="1316286174",
            twitter_bearer_token="t",
        )
        # another runner holds the lapor1708 lease: this one must not poll it
        holder = redis.Redis.from_url(s.redis_url)
        holder.set(f"{s.topic_namespace}:poll:lease:lapor1708", "other-runner", px=60_000)
        busy = asyncio.run(run_poller(s, [LaporSource(s)], once=True))["lapor1708"]
        assert [o.status for o in busy] == ["busy"] and not fake.requests
        holder.delete(f"{s.topic_namespace}:poll:lease:lapor1708")
        # twitter's API is unreachable: it fails and backs off; lapor1708 goes on in the same run
        results = asyncio.run(run_poller(s, [TwitterSource(s), LaporSource(s)], once=True))
    assert results["twitter"][-1].status == "error" and "X API call failed" in results["twitter"][-1].error
    assert results["lapor1708"][-1].status == "ok" and results["lapor1708"][-1].published == 1
    assert cursor(s, "twitter") is None


def test_the_poll_command(iso):
    settings = fresh(iso)
    create_topics(settings)
    fake = FakeLapor(items=[item(n, 7400) for n in range(1, 4)])
    with ServerThread(fake.app()) as api:
        env = {
            **os.environ,
            **iso.env,
            "CRM_TOPIC_NAMESPACE": settings.topic_namespace,
            "CRM_LAPOR_TOKEN": TOKEN,
            "CRM_LAPOR_API_BASE": api.url,
            "CRM_LAPOR_PAGE_SIZE": "2",
        }
        run = subprocess.run(
            [sys.executable, "-m", "pipeline", "poll", "--channel", "lapor1708", "--once"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert "lapor1708" in run.stdout and "published=3" in run.stdout
        bad = subprocess.run(
            [sys.executable, "-m", "pipeline", "poll", "--channel", "web", "--once"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode == 2 and "not a poll channel" in bad.stdout
        env["CRM_LAPOR_TOKEN"] = "wrong"
        failed = subprocess.run(
            [sys.executable, "-m", "pipeline", "poll", "--channel", "lapor1708", "--once"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert failed.returncode == 1
    assert len(ingest(iso, settings, 3)) == 3


def test_reject_reasons_carry_their_code():
    assert split_reason("malformed_json: LAPOR! page: bad") == ("malformed_json", "LAPOR! page: bad")
    assert split_reason("something odd happened") == ("rejected", "something odd happened")
