"""One script call per batch of Redis writes: the same effects as the commands it replaces."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from pipeline.processors import redis_batch
from pipeline.processors.redis_batch import BatchWrite, pairs, top_by_score_script

pytestmark = pytest.mark.stack


def run(iso, fn):
    async def go():
        client = aioredis.from_url(iso.env["CRM_REDIS_URL"])
        try:
            return await fn(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_sets_zadds_ttls_and_nx_in_one_call(iso):
    ns = f"{iso.tag}-rb1"

    async def go(r):
        await r.set(f"{ns}:taken", "first")
        w = BatchWrite()
        w.set(f"{ns}:a", '{"teks":"pohon tumbang — Jl. Kemang"}', 60)
        w.set(f"{ns}:taken", "second", 60, nx=True)
        w.set(f"{ns}:fresh", "only", 30, nx=True)
        w.zadd(f"{ns}:z", [repr(1764686253.25), "case-1", repr(1764686250.5), "case-2"], 90)
        await w.execute(r)
        top = await top_by_score_script(r)(keys=[f"{ns}:z", f"{ns}:empty"], args=[1764686251, 12])
        return (
            await r.get(f"{ns}:a"),
            await r.get(f"{ns}:taken"),
            await r.get(f"{ns}:fresh"),
            await r.ttl(f"{ns}:a"),
            await r.ttl(f"{ns}:z"),
            await r.zrange(f"{ns}:z", 0, -1, withscores=True),
            [pairs(x) for x in top],
        )

    a, taken, fresh, ttl_a, ttl_z, members, top = run(iso, go)
    assert a.decode() == '{"teks":"pohon tumbang — Jl. Kemang"}'
    assert taken == b"first"  # NX never overwrites
    assert fresh == b"only"
    assert 50 < ttl_a <= 60 and 80 < ttl_z <= 90
    assert members == [(b"case-2", 1764686250.5), (b"case-1", 1764686253.25)]
    assert top == [[("case-1", 1764686253.25)], []]  # floor and per-key order respected


def test_a_bucket_ttl_is_renewed_once_half_is_gone_and_old_members_go_with_it(iso):
    ns = f"{iso.tag}-rb4"
    key = f"{ns}:bucket"

    async def write(r, *pairs_):
        w = BatchWrite()
        w.zadd(key, [x for score, member in pairs_ for x in (repr(score), member)], 1000, keep=1000)
        await w.execute(r)
        return await r.ttl(key), [m.decode() for m in await r.zrange(key, 0, -1)]

    async def go(r):
        other = BatchWrite()  # without keep, nothing is pruned, whatever the scores
        other.zadd(f"{ns}:plain", [repr(1.0), "a", repr(9999.0), "b"], 1000)
        await other.execute(r)
        await r.expire(f"{ns}:plain", 10)
        await other.execute(r)
        assert await r.zcard(f"{ns}:plain") == 2 and await r.ttl(f"{ns}:plain") > 990
        first = await write(r, (5000.0, "old"))
        await r.expire(key, 700)  # still more than half left: the next write leaves it alone
        kept = await write(r, (5500.0, "mid"))
        await r.expire(key, 400)  # less than half left: renewed, and "old" is now > 1000 s behind
        renewed = await write(r, (6200.0, "new"))
        return first, kept, renewed

    first, kept, renewed = run(iso, go)
    assert 990 < first[0] <= 1000 and first[1] == ["old"]
    assert 690 < kept[0] <= 700 and kept[1] == ["old", "mid"]
    assert 990 < renewed[0] <= 1000 and renewed[1] == ["mid", "new"]


def test_a_big_batch_is_split_into_calls_and_nothing_is_lost(iso, monkeypatch):
    monkeypatch.setattr(redis_batch, "CHUNK_OPS", 50)
    ns = f"{iso.tag}-rb2"

    async def go(r):
        w = BatchWrite()
        for i in range(333):
            w.set(f"{ns}:k{i}", str(i), 60)
        w.zadd(
            f"{ns}:big", [x for i in range(1500) for x in (repr(float(i)), f"m{i}")], 60
        )  # > unpack() comfort
        assert len(w._chunks()) > 6
        await w.execute(r)
        values = await r.mget([f"{ns}:k{i}" for i in range(333)])
        return values, await r.zcard(f"{ns}:big")

    values, card = run(iso, go)
    assert [int(v) for v in values] == list(range(333))
    assert card == 1500


def test_the_script_is_reloaded_after_redis_forgets_it(iso):
    ns = f"{iso.tag}-rb3"

    async def go(r):
        w = BatchWrite()
        w.set(f"{ns}:x", "1", 60)
        await w.execute(r)
        await r.script_flush()  # as after a Redis restart
        w = BatchWrite()
        w.set(f"{ns}:y", "2", 60)
        await w.execute(r)
        return await r.mget([f"{ns}:x", f"{ns}:y"])

    assert run(iso, go) == [b"1", b"2"]
