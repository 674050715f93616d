"""Readiness checks of the three things the pipeline stands on: the broker, Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..security import kafka_client_kwargs
from ..settings import Settings


async def check_kafka(settings: Settings, wait_s: float = 5.0) -> tuple[bool, str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        **kafka_client_kwargs(settings),
        client_id="crm-health",
        request_timeout_ms=int(wait_s * 1000),
    )
    try:
        await asyncio.wait_for(admin.start(), wait_s)
        brokers = admin._client.cluster.brokers()
        return bool(brokers), f"{len(brokers)} broker(s)"
    except Exception as exc:
        return False, f"unreachable: {type(exc).__name__}"
    finally:
        try:
            await admin.close()
        except Exception:  # noqa: S110 - closing a client that never connected
            pass


async def check_redis(settings: Settings, wait_s: float = 3.0) -> tuple[bool, str]:
    import redis.asyncio as aioredis

    client = aioredis.from_url(settings.redis_url, socket_timeout=wait_s, socket_connect_timeout=wait_s)
    try:
        await client.ping()
        return True, "ok"
    except Exception as exc:
        return False, f"unreachable: {type(exc).__name__}"
    finally:
        await client.aclose()


async def check_database(settings: Settings, wait_s: float = 3.0) -> tuple[bool, str]:
    import psycopg

    try:
        conn = await psycopg.AsyncConnection.connect(
            settings.database_url.get_secret_value(), connect_timeout=max(int(wait_s), 1)
        )
        async with conn:
            await conn.execute("SELECT 1")
        return True, "ok"
    except Exception as exc:
        return False, f"unreachable: {type(exc).__name__}"


async def readiness(
    settings: Settings, need: tuple[str, ...] = ("kafka", "redis", "database")
) -> dict[str, Any]:
    """``{"ready": bool, "checks": {name: {"ok": bool, "detail": str}}}``; only ``need`` decides ``ready``."""
    names = ("kafka", "redis", "database")
    fns = (check_kafka, check_redis, check_database)
    results = await asyncio.gather(*(fn(settings) for fn in fns))
    checks = {n: {"ok": ok, "detail": detail} for n, (ok, detail) in zip(names, results, strict=True)}
    return {"ready": all(checks[n]["ok"] for n in need), "checks": checks, "checked_at": time.time()}
