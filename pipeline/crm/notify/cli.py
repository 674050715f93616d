"""``crm-pipeline notify``: the outbox runner."""

from __future__ import annotations

import asyncio

from ...settings import get_settings
from .outbox import OutboxRunner


def notify_main(once: bool = False) -> int:
    runner = OutboxRunner(get_settings())
    if once:
        result = asyncio.run(runner.run_once())
        print(f"sent {len(result.sent)}, failed {len(result.failed)}, deferred {len(result.deferred)}")
        return 0 if not result.failed else 1
    asyncio.run(runner.run_forever())
    return 0
