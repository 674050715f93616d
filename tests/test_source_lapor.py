"""``lapor1708`` against a local HTTP server that answers like the LAPOR! integration API, real Kafka/Redis.

The server is a real aiohttp server in a thread (so a poller subprocess can reach it too); it checks
the token header, applies ``updated_since``/``after_id``/``limit`` and pages with ``meta.has_more``.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import redis
from aiohttp import web

from pipeline.envelope import report_id_for
from pipeline.settings import Settings
from pipeline.sources.lapor import PATH, LaporSource, position
from pipeline.sources.poller import run_poller
from pipeline.topics import Topics, ensure_topics, topic_specs
from tests.harness import free_port, read_topic

pytestmark = pytest.mark.stack

TOKEN = "lapor-test-token-7c1e"


class ServerThread:
    """An aiohttp app served from its own thread and loop on 127.0.0.1."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        runner = web.AppRunner(self.app, access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@dataclass
class FakeLapor:
    """What the LAPOR! integration API holds for the province, and how it misbehaves on request."""

    items: list[dict[str, Any]] = field(default_factory=list)
    token: str = TOKEN
    ignore_cursor: bool = False  # an API that includes what the cursor already covers
    broken_body: bytes | None = None  # answer this (e.g. bad JSON) once
    requests: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(PATH, self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.query))
        if request.headers.get("X-Lapor-Token") != self.token:
            return web.json_response({"error": "invalid token"}, status=401)
        if self.broken_body is not None:
            body, self.broken_body = self.broken_body, None
            return web.Response(body=body, content_type="application/json")
        limit = int(request.query.get("limit", "100"))
        ordered = sorted(self.items, key=lambda i: position(i["updated_at"], str(i["id"])))
        if "updated_since" in request.query and not self.ignore_cursor:
            floor = position(request.query["updated_since"], request.query["after_id"])
            ordered = [i for i in ordered if position(i["updated_at"], str(i["id"])) > floor]
        page = ordered[:limit]
        return web.json_response({"data": page, "meta": {"has_more": len(ordered) > limit, "limit": limit}})


def item(n: int, base: int, **overrides: Any) -> dict[str, Any]:
    data = {
        "id": base + n,
        "tracking_id": f"LPR-{base + n}",
        "title": "Jalan rusak",
        "content": f"Jalan berlubang besar di Jl. Raya Bogor km {n}, membahayakan pengendara motor",
        "category": "Infrastruktur",
        "location": "Jl. Raya Bogor, Kel. Kramat Jati, Kec. Kramat Jati, Jakarta Timur",
        "created_at": f"2024-03-01T08:{n:02d}:00+07:00",
        "updated_at": f"2024-03-02T10:{n:02d}:00+07:00",
        "status": "Diteruskan",
        "is_anonymous": False,
        "is_confidential": n % 2 == 1,
        "reporter": {"id": f"u-{base + n}", "name": "Budi", "email": f"budi{n}@example.com", "phone": None},
        "attachments": [
            {
                "url": f"https://lapor.example/f/{n}.jpg",
                "file_name": f"{n}.jpg",
                "mime_type": "image/jpeg",
                "size": 2048,
            }
        ],
    }
    data.update(overrides)
    return data


@pytest.fixture
def space(iso) -> Iterator[Settings]:
    """A fresh topic namespace (topics + Redis keys) per test, on the session's stack."""
    ns = f"{iso.tag}-{uuid.uuid4().hex[:6]}"
    settings = iso.settings(topic_namespace=ns, lapor_token=TOKEN, lapor_page_size=2, produce_timeout_s=5)
    asyncio.run(ensure_topics(settings, topic_specs(settings, ["lapor1708", "twitter", "email"])))
    yield settings
    r = redis.Redis.from_url(settings.redis_url)
    for key in r.scan_iter(f"{ns}:*"):
        r.delete(key)


def poll_once(settings: Settings, api: ServerThread, **kw: Any):
    s = settings.model_copy(update={"lapor_api_base": api.url, **kw})
    return asyncio.run(run_poller(s, [LaporSource(s)], once=True))["lapor1708"]


def cursor(settings: Settings) -> str | None:
    value = redis.Redis.from_url(settings.redis_url).get(f"{settings.topic_namespace}:poll:cursor:lapor1708")
    return value.decode() if value else None


def ingest(iso, settings: Settings, n: int, timeout: float = 15) -> list[dict]:
    return read_topic(
        iso, Topics(settings.topic_namespace).ingest("lapor1708"), min_records=n, timeout=timeout
    )


def letters(iso, settings: Settings, n: int, timeout: float = 15) -> list[dict]:
    return read_topic(iso, Topics(settings.topic_namespace).deadletter, min_records=n, timeout=timeout)


def test_forwarded_reports_become_envelopes_and_the_cursor_follows(iso, space):
    fake = FakeLapor(items=[item(n, 9000) for n in range(1, 4)])
    with ServerThread(fake.app()) as api:
        outs = poll_once(space, api)
    assert [o.status for o in outs] == ["ok", "ok"] and sum(o.published for o in outs) == 3  # two pages of 2
    reports = ingest(iso, space, 3)
    assert sorted(r["provider_id"] for r in reports) == ["9001", "9002", "9003"]
    r = next(r for r in reports if r["provider_id"] == "9001")
    assert r["report_id"] == report_id_for("lapor1708", "9001") and r["channel"] == "lapor1708"
    assert r["text"].startswith("Jalan rusak\n\nJalan berlubang besar di Jl. Raya Bogor km 1")
    assert r["category_hint"] == "Infrastruktur" and "Kramat Jati" in r["location"]["address"]
    assert r["reporter"]["private"] is True and r["reporter"]["id"].startswith("rp-")
    assert r["contact"]["email"] == "budi1@example.com" and r["attachments"][0]["name"] == "1.jpg"
    assert r["source_at"].startswith("2024-03-01T01:01:00")  # WIB → UTC
    raw = read_topic(iso, Topics(space.topic_namespace).raw, min_records=3)
    assert any(
        x.get("id") == 9001 and x["tracking_id"] == "LPR-9001" for x in raw
    )  # the item as LAPOR! sent it
    assert orjson.loads(cursor(space)) == {"updated_at": "2024-03-02T10:03:00+07:00", "id": "9003"}
    # The second request carried the cursor of the first page.
    assert fake.requests[1]["after_id"] == "9002" and fake.requests[1]["limit"] == "2"


def test_overlapping_poll_and_redelivery_publish_no_second_copy(iso, space):
    fake = FakeLapor(items=[item(n, 9100) for n in range(1, 3)], ignore_cursor=True)
    with ServerThread(fake.app()) as api:
        poll_once(space, api, lapor_page_size=10)
        again = poll_once(space, api, lapor_page_size=10)  # the API hands back everything again
        fake.items.append(item(3, 9100))
        third = poll_once(space, api, lapor_page_size=10)
    assert sum(o.published for o in again) == 0
    assert sum(o.published for o in third) == 1
    reports = ingest(iso, space, 4, timeout=8)
    ids = [r["report_id"] for r in reports]
    assert len(ids) == 3 and len(set(ids)) == 3


def test_wrong_token_is_refused_nothing_published_cursor_kept(iso, space):
    fake = FakeLapor(items=[item(1, 9200)], token="the-real-token")
    with ServerThread(fake.app()) as api:
        outs = poll_once(space, api)
    assert outs[-1].status == "error" and "refused the token" in outs[-1].error
    assert cursor(space) is None
    assert ingest(iso, space, 1, timeout=3) == []
    assert letters(iso, space, 1, timeout=3) == []  # not citizen input: logged and counted, not dead-lettered


def test_bad_json_page_is_dead_lettered_and_the_cursor_does_not_move(iso, space):
    fake = FakeLapor(items=[item(1, 9300)], broken_body=b'{"data": [{"id": 9301, "content": "Banjir')
    with ServerThread(fake.app()) as api:
        first = poll_once(space, api)
        assert first[-1].status == "ok" and first[-1].rejected == 1 and cursor(space) is None
        second = poll_once(space, api)  # the API recovered: the same item comes, nothing was skipped
    assert second[-1].published == 1
    [letter] = letters(iso, space, 1)
    assert (
        letter["channel"] == "lapor1708" and letter["stage"] == "poll" and letter["code"] == "malformed_json"
    )
    assert "LAPOR! page" in letter["reason"]
    assert base64.b64decode(letter["raw_b64"]) == b'{"data": [{"id": 9301, "content": "Banjir'
    assert [r["provider_id"] for r in ingest(iso, space, 1)] == ["9301"]


def test_one_bad_item_is_dead_lettered_and_the_others_go_through(iso, space):
    fake = FakeLapor(items=[item(1, 9400), item(2, 9400, content="   "), item(3, 9400, attachments="x.jpg")])
    fake.items.append(item(4, 9400))
    with ServerThread(fake.app()) as api:
        outs = poll_once(space, api)
    assert sum(o.published for o in outs) == 2 and sum(o.rejected for o in outs) == 2
    assert sorted(r["provider_id"] for r in ingest(iso, space, 2)) == ["9401", "9404"]
    found = {d["code"]: d for d in letters(iso, space, 2)}
    assert set(found) == {"missing_text", "bad_attachments"}
    assert "9402" in found["missing_text"]["reason"]
    assert orjson.loads(base64.b64decode(found["missing_text"]["raw_b64"]))["id"] == 9402
    assert (
        orjson.loads(cursor(space))["id"] == "9404"
    )  # moved past the bad ones: they are in the dead letters


@pytest.mark.parametrize("field", ["updated_at", "created_at"])
def test_a_time_outside_the_utc_range_is_a_dead_letter_not_a_crash(field):
    # needs no stack: the page parser alone. Year 1 at +01:00 (or naive, read as WIB) is year 0 in UTC: the
    # envelope's UTC conversion raised OverflowError out of parse_page.
    good = {"id": 1, "content": "Jalan rusak", "updated_at": "2024-03-02T10:00:00+07:00"}
    body = orjson.dumps({"data": [{**good, field: "0001-01-01T00:00:00"}]})
    batch = LaporSource(Settings(env="test")).parse_page(body, {})
    [(_, reason)] = batch.rejects
    assert batch.reports == [] and reason.startswith("bad_field: ") and "out of range" in reason


def test_ids_int_cannot_read_are_string_ids_or_refused_not_a_crash():
    # needs no stack. '\u00b2'.isdigit() is true but int('\u00b2') raised ValueError out of parse_page (and
    # int() refuses more than 4300 digits): a non-ASCII id is a string id, an id over 200 characters a reject.
    item = {"content": "Jalan rusak", "updated_at": "2024-03-02T10:00:00+07:00"}
    body = orjson.dumps({"data": [{**item, "id": "\u00b2"}, {**item, "id": "1" * 5000}]})
    batch = LaporSource(Settings(env="test")).parse_page(body, {})
    assert [r.provider_id for r in batch.reports] == ["\u00b2"]
    [(_, reason)] = batch.rejects
    assert reason == "bad_field: id is 5000 characters long (at most 200)"


@pytest.mark.parametrize("reporter_id", ["u" * 195, ["u"], {"id": 1}])
def test_a_reporter_id_the_envelope_cannot_hold_is_a_reject_not_a_dead_envelope(reporter_id):
    # needs no stack. contact.handle is not validated on assignment: "lapor:" + a 195-character id went out
    # past the envelope's 200-character limit and the worker dead-lettered it as not a valid envelope.
    item = {"id": 7, "content": "Jalan rusak", "updated_at": "2024-03-02T10:00:00+07:00"}
    body = orjson.dumps({"data": [{**item, "reporter": {"id": reporter_id}}]})
    batch = LaporSource(Settings(env="test")).parse_page(body, {})
    [(_, reason)] = batch.rejects
    assert batch.reports == [] and reason.startswith("bad_field: reporter.id must be")
    body = orjson.dumps({"data": [{**item, "reporter": {"id": 9}}]})
    ok = LaporSource(Settings(env="test")).parse_page(body, {})
    assert ok.reports[0].contact.handle == "lapor:9"
