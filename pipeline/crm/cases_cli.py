"""``crm-pipeline cases quality --since DATE``: grouping on the live store, as officers corrected it."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


def since_arg(value: str) -> datetime:
    """An ISO date or time, or a span back from now (``7d``, ``12h``)."""
    value = value.strip()
    if value[-1:] in ("d", "h") and value[:-1].isdigit():
        span = timedelta(days=int(value[:-1])) if value[-1] == "d" else timedelta(hours=int(value[:-1]))
        return datetime.now(UTC) - span
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--since wants an ISO date (2026-12-01), a time or 7d/12h, not {value!r}"
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _cmd_cases(args: argparse.Namespace) -> int:
    import orjson

    from ..settings import get_settings
    from .cases import CaseService, format_quality

    quality = asyncio.run(CaseService(get_settings()).quality(args.since))
    print(
        orjson.dumps(quality, option=orjson.OPT_INDENT_2).decode() if args.json else format_quality(quality)
    )
    return 0


def add_cases_command(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("cases", _cmd_cases, "cases on the live store: grouping's merges and the officers' corrections")
    p.add_argument("action", choices=["quality"], help="quality: merges, splits, merges by officers, pairs")
    p.add_argument(
        "--since", type=since_arg, default=since_arg("30d"), help="ISO date/time or 7d, 12h (default 30d)"
    )
    p.add_argument("--json", action="store_true", help="the figures as JSON")
