"""The workers' event loop.

A Faust worker spends much of its CPU in the event loop itself (selector polling, handles, socket
writes between its consumer thread and its agents); libuv's loop (uvloop, what Faust's own docs
recommend for production) does the same work in C. ``CRM_WORKER_EVENT_LOOP=asyncio`` goes back to the
standard loop, e.g. to rule the loop out while chasing a bug.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("pipeline.loop")


def use_event_loop(kind: str) -> str:
    """Install ``kind`` as the loop of every loop this process creates from now on; the one in use."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:  # a platform without the wheel: the standard loop works the same, slower
            log.warning("uvloop is not installed: running on the standard asyncio loop")
            return "asyncio"
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    return "asyncio"
