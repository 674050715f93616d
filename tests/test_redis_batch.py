"""A batch of Redis writes in one buffer on the writer's own connection: the effects of the commands."""

from __future__ import annotations

import asyncio
import socket

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from pipeline.processors import redis_batch
from pipeline.processors.redis_batch import BatchWrite, pairs, top_by_score_script

pytestmark = pytest.mark.stack


def run(iso, fn):
    async def go():
        client = aioredis.from_url(iso.env["CRM_REDIS_URL"])
        try:
            return await fn(client)
        finally:
            await redis_batch.aclose(client)

    return asyncio.run(go())


def test_sets_zadds_ttls_and_nx_in_one_round_trip(iso):
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


def test_a_big_batch_goes_through_and_nothing_is_lost(iso):
    ns = f"{iso.tag}-rb2"

    async def go(r):
        w = BatchWrite()
        for i in range(3333):
            w.set(f"{ns}:k{i}", f"{i} — ümlaut", 60)
        w.zadd(f"{ns}:big", [x for i in range(1500) for x in (repr(float(i)), f"m{i}")], 60)
        await w.execute(r)
        values = await r.mget([f"{ns}:k{i}" for i in range(3333)])
        return values, await r.zcard(f"{ns}:big"), await r.ttl(f"{ns}:big")

    values, card, ttl = run(iso, go)
    assert [v.decode() for v in values] == [f"{i} — ümlaut" for i in range(3333)]
    assert card == 1500 and 50 < ttl <= 60


def test_a_refused_write_raises_and_the_next_batch_still_goes_through(iso):
    ns = f"{iso.tag}-rb3"

    async def go(r):
        await r.set(f"{ns}:text", "not a sorted set")
        w = BatchWrite()
        w.set(f"{ns}:before", "1", 60)
        w.zadd(f"{ns}:text", [repr(1.0), "case-1"], 60)  # WRONGTYPE
        w.set(f"{ns}:after", "2", 60)
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await w.execute(r)
        w = BatchWrite()
        w.set(f"{ns}:next", "3", 60)
        await w.execute(r)
        return await r.mget([f"{ns}:before", f"{ns}:after", f"{ns}:next"])

    # the commands around the refused one took effect, as in any pipeline
    assert run(iso, go) == [b"1", b"2", b"3"]


def test_the_writer_sends_again_on_a_new_connection_after_redis_dropped_its_own(iso):
    ns = f"{iso.tag}-rb5"

    async def go(r):
        w = BatchWrite()
        w.set(f"{ns}:x", "1", 60)
        await w.execute(r)
        before = redis_batch.BatchWriter.of(r)._streams[1].get_extra_info("sockname")[:2]
        assert await r.client_kill_filter(addr=f"{before[0]}:{before[1]}") == 1  # as an idle timeout
        w = BatchWrite()
        w.set(f"{ns}:y", "2", 60)
        w.zadd(f"{ns}:z", [repr(5.0), "case-1"], 60)
        await w.execute(r)
        after = redis_batch.BatchWriter.of(r)._streams[1].get_extra_info("sockname")[:2]
        return before != after, await r.mget([f"{ns}:x", f"{ns}:y"]), await r.ttl(f"{ns}:z")

    reconnected, values, ttl = run(iso, go)
    assert reconnected and values == [b"1", b"2"] and 50 < ttl <= 60


def test_a_redis_that_cannot_be_reached_is_a_connection_error(iso):
    async def go():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # nothing listens here once the socket is closed
        gone = aioredis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=2)
        try:
            w = BatchWrite()
            w.set("never", "1", 60)
            with pytest.raises(RedisConnectionError, match="batch write to Redis failed"):
                await w.execute(gone)
        finally:
            await redis_batch.aclose(gone)

    asyncio.run(go())


def test_the_writer_uses_the_clients_database_and_password(iso):
    ns = f"{iso.tag}-rb6"

    async def go(r):
        url = iso.env["CRM_REDIS_URL"].rsplit("/", 1)[0]
        await r.acl_setuser(f"{ns}-u", enabled=True, passwords=[f"+{ns}-pw"], keys=["*"], commands=["+@all"])
        other = aioredis.from_url(f"redis://{ns}-u:{ns}-pw@{url.split('//', 1)[1]}/3")
        try:
            w = BatchWrite()
            w.set(f"{ns}:in-db-3", "yes", 60)
            await w.execute(other)
            seen = await other.get(f"{ns}:in-db-3"), await r.get(f"{ns}:in-db-3")
            await other.delete(f"{ns}:in-db-3")
        finally:
            await redis_batch.aclose(other)
            await r.acl_deluser(f"{ns}-u")
        wrong = aioredis.from_url(f"redis://{ns}-u:nope@{url.split('//', 1)[1]}/0")
        try:
            w = BatchWrite()
            w.set(f"{ns}:never", "1", 60)
            with pytest.raises(RedisConnectionError, match="refused"):
                await w.execute(wrong)
        finally:
            await redis_batch.aclose(wrong)
        return seen

    assert run(iso, go) == (b"yes", None)


def test_the_read_script_is_reloaded_after_redis_forgets_it(iso):
    ns = f"{iso.tag}-rb7"

    async def go(r):
        await r.zadd(f"{ns}:z", {"case-1": 10.0})
        first = await top_by_score_script(r)(keys=[f"{ns}:z"], args=[0, 8])
        await r.script_flush()  # as after a Redis restart
        again = await top_by_score_script(r)(keys=[f"{ns}:z"], args=[0, 8])
        return [pairs(x) for x in first], [pairs(x) for x in again]

    assert run(iso, go) == ([[("case-1", 10.0)]], [[("case-1", 10.0)]])
