"""Batch-sized Redis round trips: a batch's writes go out as one buffer, its reads as one script call.

A redis-py pipeline of N commands costs the client N encodings, N reply parses and N read timeouts;
profiling the worker showed that per-command overhead (not Redis) ate a third of its CPU. A Lua
script that took the whole batch as one JSON argument fixed the client's side, but cost Redis itself
half as much again as the commands do (cjson, and the script engine's call per command: Redis spent
107 µs of CPU a report of the bench's traffic with it, 72 without; issue #19). So the writes are
plain commands again, encoded here straight into one buffer of the Redis protocol and sent on a
connection of :class:`BatchWriter`'s own, whose replies hiredis parses in C (an error among them
raises :class:`redis.exceptions.ResponseError`). The bucket reads stay one script call: they are few
(two a report) and come back as one nested reply. The script touches the keys it is given, so it
suits a standalone Redis (the deployment this project ships), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

_TOP_BY_SCORE = """
local out = {}
for i, k in ipairs(KEYS) do
  out[i] = redis.call('ZREVRANGEBYSCORE', k, '+inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
end
return out
"""


def _bulk(value: str | bytes | int) -> bytes:
    data = value if isinstance(value, bytes) else str(value).encode()
    return b"$%d\r\n%b\r\n" % (len(data), data)


def pack(*args: str | bytes | int) -> bytes:
    """One command in the Redis protocol (RESP2): ``*<n>`` then each argument as a bulk string."""
    return b"*%d\r\n" % len(args) + b"".join(map(_bulk, args))


# The batch's commands, one %-format each: packing argument by argument was most of the client's cost.
_SET = b"*5\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$2\r\nEX\r\n$%d\r\n%b\r\n"
_SET_NX = b"*6" + _SET[2:] + b"$2\r\nNX\r\n"
# ZADD's head, then (after its members) EXPIRE key ttl NX and TTL key
_ZADD = b"*%d\r\n$4\r\nZADD\r\n$%d\r\n%b\r\n"
_EXPIRE_NX_TTL = (
    b"*4\r\n$6\r\nEXPIRE\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$2\r\nNX\r\n*2\r\n$3\r\nTTL\r\n$%d\r\n%b\r\n"
)


class BatchWrite:
    """Collects SETs (with TTL, optionally NX) and ZADDs (with a bucket TTL) for one round trip.

    Each ZADD travels with ``EXPIRE key ttl NX`` (a new key gets its TTL in the same buffer) and a
    ``TTL`` whose reply says whether the key needs renewing: the few that do (less than half left)
    are renewed, and pruned, in a second, small round trip."""

    def __init__(self) -> None:
        self._commands: list[bytes] = []
        self._replies = 0
        # key, ttl, keep, its members [score, member, ...], the index of its TTL's reply
        self._buckets: list[tuple[str, int, float, list[str], int]] = []

    def set(self, key: str, value: str | bytes, ttl_s: int, nx: bool = False) -> None:
        k = key.encode()
        v = value if isinstance(value, bytes) else value.encode()
        t = b"%d" % int(ttl_s)
        self._commands.append((_SET_NX if nx else _SET) % (len(k), k, len(v), v, len(t), t))
        self._replies += 1

    def zadd(self, key: str, flat: list[str], ttl_s: int, keep: float = 0) -> None:
        """``flat`` is [score, member, score, member, ...], scores as text (``repr(float)``).

        The key lives at least ``ttl_s / 2`` after this write and at most ``ttl_s``: its TTL is
        renewed only once half of it has run out (one expiry a half-life for a busy key, not one a
        batch: a renewal per batch was a fifth of the append-only file, and every byte of that file
        is CPU again when Redis rewrites it). At that renewal, with ``keep`` > 0, members scored more
        than ``keep`` below the newest written here are dropped, so a key that never goes quiet does
        not grow for ever."""
        k, t = key.encode(), b"%d" % int(ttl_s)
        if len(flat) == 2:  # most buckets get one case a batch
            score, member = flat[0].encode(), flat[1].encode()
            members = b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(score), score, len(member), member)
        else:
            members = b"".join(map(_bulk, flat))
        self._commands.append(
            _ZADD % (2 + len(flat), len(k), k) + members + _EXPIRE_NX_TTL % (len(k), k, len(t), t, len(k), k)
        )
        self._replies += 3
        self._buckets.append((key, int(ttl_s), keep, flat, self._replies - 1))

    def __len__(self) -> int:
        return self._replies

    async def execute(self, client: aioredis.Redis) -> None:
        if not self._commands:
            return
        writer = BatchWriter.of(client)
        replies = await writer.run(self._commands, self._replies)
        renew: list[bytes] = []
        for key, ttl, keep, flat, at in self._buckets:
            if replies[at] < ttl / 2:  # -1 (no TTL) cannot happen after EXPIRE NX, but renews too
                renew.append(pack(b"EXPIRE", key, ttl))
                # the newest score is read only for the few keys renewed
                below = max(map(float, flat[::2])) - keep if keep > 0 else 0.0
                if below > 0:
                    renew.append(pack(b"ZREMRANGEBYSCORE", key, b"-inf", b"(" + repr(below).encode()))
        if renew:
            await writer.run(renew, len(renew))


class BatchWriter:
    """A connection of its own for batch writes (one a client, shared by its tasks in turn).

    It takes host, port, database, credentials and timeouts from the client's pool, so it talks to
    the Redis the rest of the worker does. A failure closes it (the next batch connects again) and is
    raised as redis-py's ConnectionError or TimeoutError, which callers already handle."""

    def __init__(self, client: aioredis.Redis) -> None:
        pool = client.connection_pool
        self._kwargs: dict[str, Any] = dict(pool.connection_kwargs)
        self._class = pool.connection_class
        self._lock = asyncio.Lock()
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    @classmethod
    def of(cls, client: aioredis.Redis) -> BatchWriter:
        writer = client.__dict__.get("_crm_batch_writer")
        if writer is None:
            writer = client.__dict__["_crm_batch_writer"] = cls(client)
        return writer

    async def run(self, commands: Sequence[bytes], replies_due: int) -> list[Any]:
        """Send ``commands`` (packed; ``replies_due`` replies in all), return the replies in order. An
        error reply raises, after every reply is read.

        A connection kept from an earlier batch may have been closed meanwhile (Redis restarted, or
        an idle timeout): the batch is then sent once more on a new one. Every write here may be
        repeated (SET to the same value, SET NX, ZADD of the same score, EXPIRE NX, TTL)."""
        timeout = self._kwargs.get("socket_timeout") or 30.0
        payload = b"".join(commands)  # a batch of 500 reports: about 1 MB
        async with self._lock:
            for attempt in (1, 2):
                reused = self._streams is not None
                try:
                    async with asyncio.timeout(timeout + replies_due / 10_000):
                        reader, writer = self._streams or await self._connect()
                        writer.write(payload)
                        await writer.drain()
                        replies = await self._replies(reader, replies_due)
                    break
                except (OSError, EOFError, hiredis.ProtocolError) as exc:
                    self._close()
                    if reused and attempt == 1:
                        continue
                    raise RedisConnectionError(f"batch write to Redis failed: {exc}") from exc
                except TimeoutError as exc:
                    self._close()
                    raise RedisTimeoutError(f"batch write to Redis timed out after {timeout} s") from exc
                except BaseException:
                    self._close()  # cancelled mid-batch: replies may still be on the way
                    raise
        errors = [r for r in replies if isinstance(r, hiredis.ReplyError)]
        if errors:
            raise ResponseError(f"{len(errors)} of {len(replies)} batch writes refused: {errors[0]}")
        return replies

    @staticmethod
    async def _replies(reader: asyncio.StreamReader, n: int) -> list[Any]:
        parser, out = hiredis.Reader(), []
        while len(out) < n:
            data = await reader.read(1 << 16)
            if not data:
                raise EOFError("Redis closed the connection")
            parser.feed(data)
            while (reply := parser.gets()) is not False:
                out.append(reply)
        return out

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        kw = self._kwargs
        if issubclass(self._class, UnixDomainSocketConnection):
            streams = await asyncio.open_unix_connection(kw["path"])
        else:
            tls = None
            if issubclass(self._class, SSLConnection):
                tls = ssl.create_default_context(cafile=kw.get("ssl_ca_certs"))
                if kw.get("ssl_certfile"):
                    tls.load_cert_chain(kw["ssl_certfile"], kw.get("ssl_keyfile"))
                if kw.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
                    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
            host, port = kw.get("host", "localhost"), kw.get("port", 6379)
            streams = await asyncio.open_connection(host, port, ssl=tls)
        hello: list[bytes] = []
        if kw.get("password"):
            user = kw.get("username")
            hello.append(pack(b"AUTH", user, kw["password"]) if user else pack(b"AUTH", kw["password"]))
        if kw.get("db"):
            hello.append(pack(b"SELECT", int(kw["db"])))
        self._streams = streams
        if hello:
            streams[1].write(b"".join(hello))
            await streams[1].drain()
            answers = await self._replies(streams[0], len(hello))
            if refused := [r for r in answers if isinstance(r, hiredis.ReplyError)]:
                raise OSError(f"Redis refused the batch connection: {refused[0]}")
        return streams

    def _close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def aclose(client: aioredis.Redis) -> None:
    """Close ``client`` and the batch writer's connection that goes with it."""
    writer: BatchWriter | None = client.__dict__.pop("_crm_batch_writer", None)
    if writer is not None:
        async with writer._lock:
            writer._close()
    await client.aclose()


def top_by_score_script(client: aioredis.Redis) -> Any:
    """Script: for each bucket key, its ``limit`` highest members scored at or above ``floor``."""
    return _script(client, "top", _TOP_BY_SCORE)


def pairs(reply: Sequence[bytes]) -> list[tuple[str, float]]:
    """A WITHSCORES reply from a script ([member, score, member, score, ...]) as (member, score)."""
    return [(reply[i].decode(), float(reply[i + 1])) for i in range(0, len(reply), 2)]


def _script(client: aioredis.Redis, name: str, source: str) -> Any:
    """Registered once per client; redis-py reloads it after a Redis restart (NOSCRIPT)."""
    cache: dict[str, Any] = client.__dict__.setdefault("_crm_scripts", {})
    if name not in cache:
        cache[name] = client.register_script(source)
    return cache[name]
