"""Batch-sized Redis round trips: one server-side script call instead of thousands of commands.

A pipeline of N commands still costs the client N encodings, N reply parses and N read timeouts;
profiling the worker showed that per-command overhead (not Redis) eating a third of its CPU. Here a
whole batch's writes travel as one JSON argument to a Lua script, and the bucket reads come back as one
nested reply. The scripts touch keys they are given in the payload, so they suit a standalone Redis
(the deployment this project ships), not Redis Cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis

#: writes per script call: keeps each call short so Redis is never blocked for long
CHUNK_OPS = 2000

_WRITE = """
local w = cjson.decode(ARGV[1])
for _, s in ipairs(w.set) do
  if s[4] == 1 then
    redis.call('SET', s[1], s[2], 'EX', s[3], 'NX')
  else
    redis.call('SET', s[1], s[2], 'EX', s[3])
  end
end
for _, z in ipairs(w.zadd) do
  redis.call('ZADD', z[1], unpack(z[3]))
  -- The TTL is renewed only once less than half of it is left (and then members scored more than
  -- z[4] below the newest go, when z[4] > 0): a renewal per batch was a fifth of the append-only
  -- file, and every byte of that file is CPU again when Redis rewrites it.
  if redis.call('TTL', z[1]) < z[2] / 2 then
    redis.call('EXPIRE', z[1], z[2])
    if z[4] > 0 then
      local newest = redis.call('ZREVRANGE', z[1], 0, 0, 'WITHSCORES')[2]
      redis.call('ZREMRANGEBYSCORE', z[1], '-inf', '(' .. (tonumber(newest) - z[4]))
    end
  end
end
return #w.set + #w.zadd
"""

_TOP_BY_SCORE = """
local out = {}
for i, k in ipairs(KEYS) do
  out[i] = redis.call('ZREVRANGEBYSCORE', k, '+inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
end
return out
"""


class BatchWrite:
    """Collects SETs (with TTL, optionally NX) and ZADDs (with a bucket TTL) for one round trip."""

    def __init__(self) -> None:
        self._sets: list[list[Any]] = []
        self._zadds: list[list[Any]] = []

    def set(self, key: str, value: str | bytes, ttl_s: int, nx: bool = False) -> None:
        text = value.decode() if isinstance(value, bytes) else value
        self._sets.append([key, text, int(ttl_s), 1 if nx else 0])

    def zadd(self, key: str, flat: list[str], ttl_s: int, keep: float = 0) -> None:
        """``flat`` is [score, member, score, member, ...], scores as text (``repr(float)``).

        The key lives at least ``ttl_s / 2`` after this write and at most ``ttl_s``: its TTL is
        renewed only once half of it has run out (one expiry a half-life for a busy key, not one a
        batch). At that renewal, with ``keep`` > 0, members scored more than ``keep`` below the
        newest are dropped, so a key that never goes quiet does not grow for ever."""
        if len(flat) <= 1000:
            self._zadds.append([key, int(ttl_s), flat, keep])
            return
        for i in range(0, len(flat), 1000):  # Lua's unpack() has a stack limit
            self._zadds.append([key, int(ttl_s), flat[i : i + 1000], keep])

    def __len__(self) -> int:
        return len(self._sets) + len(self._zadds)

    def _chunks(self) -> list[bytes]:
        out, sets, zadds = [], self._sets, self._zadds
        while sets or zadds:
            take_s = sets[:CHUNK_OPS]
            take_z = zadds[: max(0, CHUNK_OPS - len(take_s))]
            sets, zadds = sets[len(take_s) :], zadds[len(take_z) :]
            # cjson turns an empty JSON array into an empty table, so both lists are always present.
            out.append(orjson.dumps({"set": take_s, "zadd": take_z}))
        return out

    async def execute(self, client: aioredis.Redis) -> None:
        if not len(self):
            return
        script = _script(client, "write", _WRITE)
        chunks = self._chunks()
        if len(chunks) == 1:
            await script(keys=[], args=[chunks[0]])
            return
        pipe = client.pipeline(transaction=False)
        for chunk in chunks:
            await script(keys=[], args=[chunk], client=pipe)
        await pipe.execute()


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
