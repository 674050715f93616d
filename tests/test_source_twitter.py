"""``twitter``: the real tweepy AsyncClient against a local server that answers like the X API v2.

The server speaks the recorded shapes of ``GET /2/users/:id/mentions`` and ``GET /2/dm_events``
(``data`` / ``includes.users`` / ``includes.media`` / ``meta`` with ``newest_id``, ``oldest_id``,
``result_count``, ``next_token``), honours ``since_id``, ``max_results`` and ``pagination_token``,
checks the bearer token, and can answer 429 with ``x-rate-limit-reset`` like X does.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import redis
from aiohttp import web

from pipeline.envelope import report_id_for
from pipeline.settings import Settings
from pipeline.sources.poller import run_poller
from pipeline.sources.twitter import TwitterSource
from pipeline.topics import Topics, ensure_topics, topic_specs
from tests.harness import read_topic
from tests.test_source_lapor import ServerThread

pytestmark = pytest.mark.stack

BEARER = "x-test-user-token-41f0"
ME = "1316286174"  # @DKIJakarta (the account id the adapter polls)


def _err(status: int, title: str) -> web.Response:
    return web.json_response(
        {"title": title, "detail": title, "type": "about:blank", "status": status}, status=status
    )


@dataclass
class FakeX:
    """Mentions and DM events as X holds them, newest first, and the misbehaviours we need."""

    mentions: list[dict[str, Any]] = field(default_factory=list)
    dms: list[dict[str, Any]] = field(default_factory=list)
    users: dict[str, dict[str, str]] = field(default_factory=dict)
    media: dict[str, dict[str, str]] = field(default_factory=dict)
    ignore_since_id: bool = False
    rate_limit_at: dict[str, int] = field(default_factory=dict)  # kind -> the call (1-based) answered 429
    reset_in: float = 2.0
    reset_at: float | None = None
    page_size: int | None = None  # smaller pages than max_results, to exercise pagination
    calls: dict[str, list[float]] = field(default_factory=dict)
    raw_mentions: bytes | None = None  # answer this body once on mentions
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/2/users/me", self.me)
        app.router.add_get("/2/users/{id}/mentions", self.get_mentions)
        app.router.add_get("/2/dm_events", self.get_dms)
        return app

    def _auth(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {BEARER}":
            return _err(401, "Unauthorized")
        return None

    def _limited(self, kind: str) -> web.Response | None:
        self.calls.setdefault(kind, []).append(time.time())
        if self.rate_limit_at.get(kind) == len(self.calls[kind]):
            reset = int(time.time() + self.reset_in)
            self.reset_at = reset
            resp = _err(429, "Too Many Requests")
            resp.headers.update(
                {"x-rate-limit-limit": "180", "x-rate-limit-remaining": "0", "x-rate-limit-reset": str(reset)}
            )
            return resp
        return None

    async def me(self, request: web.Request) -> web.Response:
        return self._auth(request) or web.json_response(
            {"data": {"id": ME, "name": "Pemprov DKI Jakarta", "username": "DKIJakarta"}}
        )

    def _page(self, items: list[dict[str, Any]], request: web.Request, author_key: str) -> web.Response:
        q = request.query
        size = self.page_size or int(q.get("max_results", "10"))
        start = int(q.get("pagination_token", "0").removeprefix("p") or 0)
        chunk = items[start : start + size]
        users = {i.get(author_key) for i in chunk}
        keys = {k for i in chunk for k in (i.get("attachments") or {}).get("media_keys", [])}
        body: dict[str, Any] = {"meta": {"result_count": len(chunk)}}
        if chunk:
            body["data"] = chunk
            body["includes"] = {"users": [self.users[u] for u in users if u in self.users]}
            if keys:
                body["includes"]["media"] = [self.media[k] for k in keys if k in self.media]
            body["meta"].update({"newest_id": chunk[0]["id"], "oldest_id": chunk[-1]["id"]})
        if start + size < len(items):
            body["meta"]["next_token"] = f"p{start + size}"
        return web.json_response(body)

    async def get_mentions(self, request: web.Request) -> web.Response:
        self.seen.append(("mentions", dict(request.query)))
        if (r := self._auth(request) or self._limited("mentions")) is not None:
            return r
        assert request.match_info["id"] == ME
        if self.raw_mentions is not None:
            body, self.raw_mentions = self.raw_mentions, None
            return web.Response(body=body, content_type="application/json")
        since = request.query.get("since_id")
        items = sorted(self.mentions, key=lambda t: int(t["id"]), reverse=True)
        if since and not self.ignore_since_id:
            items = [t for t in items if int(t["id"]) > int(since)]
        resp = self._page(items, request, "author_id")
        if since and not items:
            resp = web.json_response({"meta": {"result_count": 0}})
        return resp

    async def get_dms(self, request: web.Request) -> web.Response:
        self.seen.append(("dm", dict(request.query)))
        if (r := self._auth(request) or self._limited("dm")) is not None:
            return r
        assert request.query.get("event_types") == "MessageCreate"
        items = sorted(self.dms, key=lambda t: int(t["id"]), reverse=True)
        return self._page(items, request, "sender_id")


def citizen(uid: str, username: str, name: str) -> dict[str, str]:
    return {"id": uid, "username": username, "name": name}


def mention(tid: int, author: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(tid),
        "text": text,
        "author_id": author,
        "created_at": "2024-05-02T03:04:05.000Z",
        "conversation_id": str(tid),
        "lang": "in",
        "edit_history_tweet_ids": [str(tid)],
        **extra,
    }


def dm(eid: int, sender: str, text: str) -> dict[str, Any]:
    return {
        "id": str(eid),
        "event_type": "MessageCreate",
        "text": text,
        "sender_id": sender,
        "dm_conversation_id": f"{ME}-{sender}",
        "created_at": "2024-05-02T04:00:00.000Z",
    }


@pytest.fixture
def space(iso):
    ns = f"{iso.tag}-{uuid.uuid4().hex[:6]}"
    settings = iso.settings(
        topic_namespace=ns, twitter_bearer_token=BEARER, twitter_poll_interval_s=0.2, produce_timeout_s=5
    )
    asyncio.run(ensure_topics(settings, topic_specs(settings, ["twitter", "lapor1708", "email"])))
    yield settings
    r = redis.Redis.from_url(settings.redis_url)
    for key in r.scan_iter(f"{ns}:*"):
        r.delete(key)


def poll(
    settings: Settings, api: ServerThread, once: bool = True, stop_after: float | None = None, **kw: Any
):
    s = Settings(**{**settings.model_dump(), "twitter_api_base": api.url, **kw})

    async def go():
        stop = asyncio.Event()
        if stop_after is not None:
            asyncio.get_running_loop().call_later(stop_after, stop.set)
        return await run_poller(s, [TwitterSource(s)], once=once, stop=stop)

    return asyncio.run(go())["twitter"]


def cursor(settings: Settings) -> dict | None:
    value = redis.Redis.from_url(settings.redis_url).get(f"{settings.topic_namespace}:poll:cursor:twitter")
    return orjson.loads(value) if value else None


def ingest(iso, settings: Settings, n: int, timeout: float = 15) -> list[dict]:
    return read_topic(iso, Topics(settings.topic_namespace).ingest("twitter"), min_records=n, timeout=timeout)


def world() -> FakeX:
    fake = FakeX()
    fake.users = {
        "501": citizen("501", "warga_tebet", "Warga Tebet"),
        "502": citizen("502", "ibu_sari", "Sari"),
        ME: citizen(ME, "DKIJakarta", "Pemprov DKI Jakarta"),
    }
    fake.media = {
        "3_900": {"media_key": "3_900", "type": "photo", "url": "https://pbs.twimg.com/media/a.jpg"}
    }
    fake.mentions = [
        mention(
            1790000000000000101,
            "501",
            "@DKIJakarta lampu PJU mati di Jl. Tebet Raya sudah seminggu",
            attachments={"media_keys": ["3_900"]},
        ),
        mention(
            1790000000000000102, "502", "@DKIJakarta sampah menumpuk di kali Ciliwung dekat Kampung Melayu"
        ),
        mention(
            1790000000000000103,
            "501",
            "@DKIJakarta @warga_tebet update: masih mati",
            referenced_tweets=[{"type": "replied_to", "id": "1790000000000000101"}],
        ),
        mention(1790000000000000104, ME, "@DKIJakarta (our own reply thread)"),
    ]
    fake.dms = [
        dm(1790000000000000201, "502", "Selamat siang, saluran air di RT 05 RW 02 Kel. Bukit Duri mampet"),
        dm(1790000000000000202, ME, "Terima kasih, laporan diteruskan"),
    ]
    return fake


def test_mentions_and_dms_become_envelopes_and_the_since_id_is_kept(iso, space):
    fake = world()
    fake.page_size = 2  # two pages of mentions, walked with next_token
    with ServerThread(fake.app()) as api:
        outs = poll(space, api, twitter_max_pages=5)
    assert outs[-1].status == "ok" and outs[-1].published == 4
    reports = {r["provider_id"]: r for r in ingest(iso, space, 4)}
    assert set(reports) == {
        "tweet:1790000000000000101",
        "tweet:1790000000000000102",
        "tweet:1790000000000000103",
        "dm:1790000000000000201",
    }
    first = reports["tweet:1790000000000000101"]
    assert first["report_id"] == report_id_for("twitter", "tweet:1790000000000000101")
    assert first["contact"] == {"name": "Warga Tebet", "handle": "@warga_tebet"}
    assert first["reporter"]["id"].startswith("rp-") and first["source_at"].startswith("2024-05-02T03:04:05")
    assert first["attachments"] == [{"url": "https://pbs.twimg.com/media/a.jpg", "media_type": "photo"}]
    assert reports["tweet:1790000000000000103"]["in_reply_to"] == "tweet:1790000000000000101"
    assert reports["tweet:1790000000000000103"]["reporter"]["id"] == first["reporter"]["id"]
    assert reports["dm:1790000000000000201"]["contact"]["handle"] == "@ibu_sari"
    assert cursor(space) == {"mentions": "1790000000000000104", "dm": "1790000000000000202"}
    # tweepy sent what the X API expects
    kind, q = fake.seen[0]
    assert kind == "mentions" and "since_id" not in q and q["max_results"] == "100"
    assert "author_id" in q["expansions"] and "created_at" in q["tweet.fields"]
    raw = read_topic(iso, Topics(space.topic_namespace).raw, min_records=4)
    assert any(
        r["data"]["id"] == "1790000000000000101" and r["includes"]["users"][0]["username"] == "warga_tebet"
        for r in raw
    )


def test_a_restart_resumes_from_since_id_and_overlap_is_not_published_twice(iso, space):
    fake = world()
    with ServerThread(fake.app()) as api:
        poll(space, api)
        fake.mentions.append(
            mention(1790000000000000105, "502", "@DKIJakarta trotoar rusak di Jl. Casablanca")
        )
        second = poll(space, api)  # a new process: the cursor comes from Redis
        since = [q.get("since_id") for k, q in fake.seen if k == "mentions"]
        assert since[-1] == "1790000000000000104"
        fake.ignore_since_id = True  # an overlapping answer: everything again
        third = poll(space, api)
    assert second[-1].published == 1 and third[-1].published == 0
    reports = ingest(iso, space, 6, timeout=8)
    ids = [r["report_id"] for r in reports]
    assert len(ids) == 5 and len(set(ids)) == 5


def test_429_is_honoured_with_x_rate_limit_reset_and_nothing_is_lost(iso, space):
    fake = world()
    fake.rate_limit_at = {"dm": 1}
    fake.reset_in = 1.5
    with ServerThread(fake.app()) as api:
        started = time.monotonic()
        outs = poll(space, api, once=False, stop_after=4.0)
    # first cycle: mentions published and their cursor kept, DMs hit 429 → wait for the reset, then DMs
    assert outs[0].status == "ok" and outs[0].published == 3 and outs[0].retry_at is not None
    assert cursor(space) == {"mentions": "1790000000000000104", "dm": "1790000000000000202"}
    dm_calls = fake.calls["dm"]
    assert len(dm_calls) >= 2 and dm_calls[1] >= fake.reset_at - 0.05  # waited for x-rate-limit-reset
    assert time.monotonic() - started >= 0.5
    assert sum(o.published for o in outs) == 4
    assert len({r["report_id"] for r in ingest(iso, space, 4)}) == 4


def test_a_429_in_the_middle_of_paging_publishes_nothing_of_that_stream(iso, space):
    fake = world()
    with ServerThread(fake.app()) as api:
        s = space.model_copy(update={"twitter_poll_dms": False})
        fake.page_size = 2
        fake.rate_limit_at = {"mentions": 2}  # page 1 read, page 2 refused
        first = poll(s, api)
        assert first[-1].status == "ok" and first[-1].published == 0 and first[-1].retry_at > time.time() - 1
        assert cursor(space) is None
        second = poll(s, api)
    assert second[-1].published == 3 and cursor(space) == {"mentions": "1790000000000000104"}


def test_wrong_token_is_an_auth_error_not_a_crash(iso, space):
    fake = world()
    with ServerThread(fake.app()) as api:
        outs = poll(space, api, twitter_bearer_token="forged", twitter_user_id=ME)
    assert outs[-1].status == "error" and "refused the credentials" in outs[-1].error
    assert cursor(space) is None and ingest(iso, space, 1, timeout=3) == []


def test_malformed_page_and_bad_items_are_dead_lettered(iso, space):
    fake = world()
    fake.mentions.append({"id": "1790000000000000106", "author_id": "501"})  # no text
    fake.raw_mentions = b'{"data": [{"id": "17900000000000001'
    with ServerThread(fake.app()) as api:
        first = poll(space, api)
        assert first[-1].rejected == 1 and cursor(space) == {"dm": "1790000000000000202"}
        second = poll(space, api)
    assert second[-1].published == 3 and second[-1].rejected == 1
    letters = read_topic(iso, Topics(space.topic_namespace).deadletter, min_records=2)
    codes = {d["code"]: d for d in letters}
    assert codes["malformed_json"]["channel"] == "twitter"
    assert base64.b64decode(codes["malformed_json"]["raw_b64"]) == b'{"data": [{"id": "17900000000000001'
    assert "text is missing" in codes["bad_item"]["reason"]
    assert cursor(space)["mentions"] == "1790000000000000106"


def test_a_created_at_outside_the_utc_range_is_a_bad_item_not_a_crash():
    # needs no stack: the per-item path alone. Year 1 at +01:00 is year 0 in UTC: the envelope's UTC
    # conversion raised OverflowError out of the page.
    from pipeline.sources.poller import PolledBatch
    from pipeline.sources.twitter import _Page

    page = _Page(
        b'{"data": [{"id": "1", "text": "banjir", "author_id": "5",'
        b' "created_at": "0001-01-01T00:00:00+01:00"}]}'
    )
    batch = PolledBatch(reports=[], next_cursor=None)
    TwitterSource(Settings(env="test"))._add(batch, page.data[0], page, "tweet")
    [(_, reason)] = batch.rejects
    assert batch.reports == [] and reason.startswith("bad_item: ") and "out of range" in reason


def test_an_id_int_cannot_read_is_a_bad_item_not_a_crashed_poll():
    # needs no stack. '\u00b2'.isdigit() is true but int('\u00b2') raised ValueError in _pages(), outside
    # the per-item handling: every poll of the stream crashed on the same page.
    from pipeline.sources.poller import PolledBatch
    from pipeline.sources.twitter import _Page, _snowflake

    assert _snowflake("\u00b2") is None and _snowflake("1" * 5000) is None and _snowflake("17") == 17
    page = _Page('{"data": [{"id": "\u00b2", "text": "banjir", "author_id": "5"}]}'.encode())
    batch = PolledBatch(reports=[], next_cursor=None)
    TwitterSource(Settings(env="test"))._add(batch, page.data[0], page, "tweet")
    [(_, reason)] = batch.rejects
    assert batch.reports == [] and "id must be a numeric string" in reason
