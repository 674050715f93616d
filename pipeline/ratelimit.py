"""Rate limits on push channels: Redis token buckets per client IP and per reporter.

* per IP — every request to a push route, after authentication (a forged request is refused before it
  costs anything); ``CRM_RATE_LIMIT_IP_PER_MIN`` / ``_BURST``. Providers' webhook relays can be exempted
  (``CRM_RATE_LIMIT_IP_EXEMPT``, CIDRs). Behind a reverse proxy listed in ``CRM_INGRESS_TRUSTED_PROXIES``
  the client is the right-most untrusted address of ``X-Forwarded-For``; otherwise that header is ignored
  (a client cannot choose its own bucket).
* per sender — every report, keyed by its pseudonymous reporter id (an HMAC of the phone number, e-mail
  address or account: no contact detail is ever a Redis key); ``CRM_RATE_LIMIT_SENDER_PER_MIN`` /
  ``_BURST``. Anonymous reports have only the IP limit.

Each bucket is its own Redis key, so one number flooding the SMS gateway drains only its own bucket:
other senders are never starved. A throttled request is answered ``429`` with ``Retry-After`` and
*flagged*, never silently dropped: counted (``crm_ingress_rate_limited_total{channel,scope}``), logged
without contact details, and its raw payload goes to the dead-letter topic with code ``rate_limited``
(``crm-pipeline deadletters list --code rate_limited``; ``replay`` feeds a wrongly throttled report
through). In a batch of several reports (Meta webhooks) only the throttled senders' reports are
dead-lettered; the rest are published and the provider gets its usual 200.

If Redis is unreachable the limiter fails open (counted in ``crm_ratelimit_errors_total``): a report is
never refused because the limiter's store is down.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis
from prometheus_client import Counter

from .settings import Settings

log = logging.getLogger("pipeline.ratelimit")

LIMITED = Counter(
    "crm_ingress_rate_limited_total",
    "requests or reports throttled per channel and scope",
    ["channel", "scope"],
)
ERRORS = Counter("crm_ratelimit_errors_total", "rate-limit checks that failed open (Redis unavailable)")

# Token bucket: tokens refill continuously at `rate` per second up to `burst`; a request takes one.
# Returns {allowed, ms until one token is available}. Time from the Redis server (one clock for all
# ingress replicas).
_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int = 0
    scope: str = ""
    key: str = ""


def _networks(spec: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(c.strip(), strict=False) for c in spec.split(",") if c.strip()]


def _ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not value:
        return None
    try:
        ip = ipaddress.ip_address(value.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class RateLimiter:
    def __init__(self, settings: Settings, redis: aioredis.Redis | None = None) -> None:
        self.settings = settings
        self.enabled = settings.rate_limit_enabled
        self.redis = redis or aioredis.from_url(
            settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        self._script = self.redis.register_script(_BUCKET)
        self.exempt = _networks(settings.rate_limit_ip_exempt)
        self.proxies = _networks(settings.ingress_trusted_proxies)
        self.prefix = f"{settings.topic_namespace}:rl"
        # Desk officers enter many walk-in reports from one office: authenticated and bound to an office,
        # they are not throttled (CRM_RATE_LIMIT_TRUSTED_CHANNELS).
        self.trusted = {c.strip() for c in settings.rate_limit_trusted_channels.split(",") if c.strip()}

    async def aclose(self) -> None:
        await self.redis.aclose()

    def client_ip(self, remote: str | None, headers: Mapping[str, str]) -> str | None:
        """The client's address: ``remote``, or behind trusted proxies the right-most untrusted hop."""
        ip = _ip(remote)
        if ip is None or not any(ip in net for net in self.proxies):
            return str(ip) if ip else remote
        hops = [h.strip() for h in (headers.get("X-Forwarded-For") or "").split(",") if h.strip()]
        for hop in reversed(hops):
            hop_ip = _ip(hop)
            if hop_ip is None:
                return str(ip)  # a malformed hop: fall back to the proxy itself
            if not any(hop_ip in net for net in self.proxies):
                return str(hop_ip)
        return str(ip)

    async def _take(self, scope: str, key: str, per_min: float, burst: int) -> Decision:
        if not self.enabled or per_min <= 0:
            return Decision(True, scope=scope, key=key)
        try:
            allowed, wait_ms = await self._script(
                keys=[f"{self.prefix}:{scope}:{key}"], args=[per_min / 60.0, burst]
            )
        except (aioredis.RedisError, OSError) as exc:
            ERRORS.inc()
            log.warning("rate limiter unavailable, failing open: %s", type(exc).__name__)
            return Decision(True, scope=scope, key=key)
        return Decision(
            bool(allowed), max(1, math.ceil(int(wait_ms) / 1000)) if not allowed else 0, scope, key
        )

    async def check_ip(self, channel: str, ip: str | None) -> Decision:
        addr = _ip(ip)
        if channel in self.trusted or addr is None or any(addr in net for net in self.exempt):
            return Decision(True, scope="ip", key=str(ip))
        s = self.settings
        decision = await self._take("ip", str(addr), s.rate_limit_ip_per_min, s.rate_limit_ip_burst)
        if not decision.allowed:
            LIMITED.labels(channel, "ip").inc()
        return decision

    async def check_reader(self, ip: str | None) -> Decision:
        """An Open311 read without an API key: one bucket per client (``CRM_OPEN311_PUBLIC_*``)."""
        addr = _ip(ip)
        if addr is None or any(addr in net for net in self.exempt):
            return Decision(True, scope="read", key=str(ip))
        s = self.settings
        decision = await self._take("read", str(addr), s.open311_public_per_min, s.open311_public_burst)
        if not decision.allowed:
            LIMITED.labels("open311", "read").inc()
        return decision

    async def check_sender(self, channel: str, reporter_id: str) -> Decision:
        if channel in self.trusted or not reporter_id or reporter_id == "anonymous":
            return Decision(True, scope="sender", key=reporter_id)
        s = self.settings
        # The key is the reporter pseudonym (an HMAC), never a phone number or address.
        decision = await self._take(
            "sender", reporter_id, s.rate_limit_sender_per_min, s.rate_limit_sender_burst
        )
        if not decision.allowed:
            LIMITED.labels(channel, "sender").inc()
        return decision
