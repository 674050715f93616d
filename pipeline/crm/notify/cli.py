"""``crm-pipeline notify``: the outbox runner, and what could not be delivered (``notify undelivered``)."""

from __future__ import annotations

import asyncio
import sys

import orjson

from ...settings import get_settings
from .outbox import OutboxRunner, give_up_after, outbox_summary, undelivered


def notify_main(
    once: bool = False,
    action: str = "run",
    as_json: bool = False,
    destination: str | None = None,
    limit: int = 100,
) -> int:
    runner = OutboxRunner(get_settings())
    if action == "undelivered":
        return asyncio.run(_undelivered(runner, as_json, destination, limit))
    if once:

        async def one() -> tuple[int, int, int]:
            try:
                result = await runner.run_once()
            finally:
                await runner.close()
            return len(result.sent), len(result.failed), len(result.deferred)

        sent, failed, deferred = asyncio.run(one())
        print(f"sent {sent}, failed {failed}, deferred {deferred}")
        return 0 if not failed else 1
    asyncio.run(runner.run_forever())
    return 0


async def _undelivered(runner: OutboxRunner, as_json: bool, destination: str | None, limit: int) -> int:
    """Exit 0 when nothing is undelivered, 1 when something is (for scripts and cron checks)."""
    async with await runner.connect() as conn:
        rows = await undelivered(conn, destination, limit, desk_overdue=give_up_after(runner.settings))
        summary = await outbox_summary(conn)
    if as_json:
        payload = {"undelivered": rows, "by_destination": summary}
        sys.stdout.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 1 if rows else 0
    if not rows:
        print("nothing undelivered")
        return 0
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["destination"]] = counts.get(r["destination"], 0) + 1
    print(f"{len(rows)} undelivered: " + ", ".join(f"{d} {n}" for d, n in sorted(counts.items())))
    for r in rows:
        print(
            f"{r['created_at']:%Y-%m-%d %H:%M} {r['tracking_number'] or '-':14} {r['destination']:10} "
            f"{r['kind']:6} {r['to_status'] or '':18} after {r['attempts']} attempt(s): {r['last_error']}"
        )
    return 1
