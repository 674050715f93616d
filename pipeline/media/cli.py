"""``crm-pipeline media run|failed|gc``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

import psycopg

from ..settings import get_settings


def _run(args: argparse.Namespace) -> int:
    from ..ops.telemetry import start_worker_telemetry
    from ..sinks.postgres import migrate
    from .stage import MediaStage

    settings = get_settings()
    asyncio.run(migrate(settings))
    # /metrics /healthz /readyz on CRM_MEDIA_METRICS_PORT (0 = off): its own port, beside a worker's.
    start_worker_telemetry(settings.model_copy(update={"worker_metrics_port": settings.media_metrics_port}))
    try:
        asyncio.run(MediaStage(settings).run())
    except KeyboardInterrupt:
        pass
    return 0


def _failed(args: argparse.Namespace) -> int:
    from .stage import dumps_rows, failed

    rows = asyncio.run(failed(get_settings(), limit=args.limit))
    if args.json:
        sys.stdout.buffer.write(dumps_rows(rows) + b"\n")
        return 0
    if not rows:
        print("no failed or refused media")
        return 0
    for r in rows:
        print(
            f"{r['updated_at']:%Y-%m-%d %H:%M}  {r['state']:7}  {r['tracking_number'] or r['report_id']}"
            f"  {r['channel']}  {r['kind']} #{r['idx']}  {r['code']}: {r['reason']}"
        )
    print(f"({len(rows)} shown)")
    return 0


async def gc(dry_run: bool) -> tuple[int, int]:
    """Delete objects that no report references any more (their reports were deleted): the retention
    rule is 'media lives as long as its report's record'. Returns (objects deleted, objects kept)."""
    from .store import MediaStore

    settings = get_settings()
    store = MediaStore(settings)
    async with await psycopg.AsyncConnection.connect(settings.database_url.get_secret_value()) as conn:
        rows = await (
            await conn.execute(
                "SELECT o.sha256, o.original_key, o.public_key, o.thumb_key FROM media_objects o"
                " WHERE NOT EXISTS (SELECT 1 FROM report_media m WHERE m.sha256 = o.sha256)"
            )
        ).fetchall()
        for sha, *keys in rows:
            if not dry_run:
                for key in keys:
                    await store.delete(key)
                await conn.execute(
                    "DELETE FROM media_objects o WHERE sha256 = %s"
                    " AND NOT EXISTS (SELECT 1 FROM report_media m WHERE m.sha256 = o.sha256)",
                    (sha,),
                )
                await conn.commit()
        kept = (await (await conn.execute("SELECT count(*) FROM media_objects")).fetchone() or (0,))[0]
    return len(rows), kept


def _gc(args: argparse.Namespace) -> int:
    deleted, kept = asyncio.run(gc(args.dry_run))
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {deleted} unreferenced media objects; {kept} kept")
    return 0


def add_media_command(add: Callable[..., Any]) -> None:
    p = add("media", lambda a: a.media_fn(a), "report media: the media stage, failed fetches, retention")
    sub = p.add_subparsers(dest="media_action", required=True, metavar="ACTION")
    q = sub.add_parser("run", help="the media stage: fetch, check and store every report attachment")
    q.set_defaults(media_fn=_run)
    q = sub.add_parser("failed", help="attachments not kept: fetches failed for good, refused content")
    q.add_argument("--json", action="store_true")
    q.add_argument("--limit", type=int, default=100)
    q.set_defaults(media_fn=_failed)
    q = sub.add_parser("gc", help="delete objects of deleted reports from the object store")
    q.add_argument("--dry-run", action="store_true")
    q.set_defaults(media_fn=_gc)
