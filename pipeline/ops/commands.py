"""The operations subcommands of ``crm-pipeline`` (issue #7): run, lag, deadletters, backfill, dashboard.

Registered by ``pipeline.cli.build_parser``; everything heavy is imported inside the commands so
``--help`` stays fast. Exit codes: 0 ok, 1 the operation failed (broker or store unreachable, letters
that still fail), 2 bad usage or bad input (with ``FILE:LINE: reason`` for input files).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

FILTER_HELP = """filters (combine freely):
  --channel web --channel sms      only these channels
  --code malformed_json            only these codes (see `deadletters list`)
  --since 6h | --since 2025-01-31  failed at or after (ISO 8601, or relative: 30m, 6h, 2d, 1w)
  --until 2025-02-01T00:00+07:00   failed before"""


def _err(message: str) -> None:
    print(f"crm-pipeline: error: {message}", file=sys.stderr)


def _failed(exc: BaseException) -> int:
    _err(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    return EXIT_FAILED


# ------------------------------------------------------------------------------------------------ run
def _cmd_run(args: argparse.Namespace) -> int:
    from ..settings import get_settings
    from .run import TooManyWorkers, check_workers, plan_children, supervise

    if args.workers < 1 or args.concurrency < 1:
        _err("--workers and --concurrency must be at least 1")
        return EXIT_USAGE
    settings = get_settings()
    try:
        partitions = check_workers(settings, args.workers)
    except TooManyWorkers as exc:
        _err(str(exc))
        return EXIT_USAGE
    print(
        f"[run] ingress + {args.workers} worker(s) x {args.concurrency} agent instance(s) "
        f"over {partitions} partitions" + (" + dashboard" if args.dashboard else ""),
        file=sys.stderr,
    )
    return supervise(
        plan_children(
            settings, args.workers, args.concurrency, args.dashboard, args.loglevel, media=args.media
        )
    )


# ------------------------------------------------------------------------------------------------ lag
def _cmd_lag(args: argparse.Namespace) -> int:
    import orjson

    from ..settings import get_settings
    from .lag import consumer_lag, format_lag

    settings = get_settings()
    group = args.group or settings.worker_app_id
    try:
        rows = asyncio.run(consumer_lag(settings, group))
    except Exception as exc:
        return _failed(exc)
    if args.json:
        data = [r.__dict__ for r in rows]
        sys.stdout.write(
            orjson.dumps({"group": group, "partitions": data}, option=orjson.OPT_INDENT_2).decode()
        )
        sys.stdout.write("\n")
    else:
        print(format_lag(rows, group))
    if args.max_lag is not None and sum(r.lag for r in rows) > args.max_lag:
        return EXIT_FAILED
    return EXIT_OK


# ------------------------------------------------------------------------------------ dead letters
def _filters(args: argparse.Namespace) -> Any:
    from .common import parse_when
    from .deadletters import Filters

    return Filters(
        channel=args.channel,
        code=args.code,
        stage=args.stage,
        since=parse_when(args.since) if args.since else None,
        until=parse_when(args.until) if args.until else None,
    )


def _cmd_deadletters(args: argparse.Namespace) -> int:
    import orjson

    from ..settings import get_settings
    from . import deadletters as dl

    settings = get_settings()
    try:
        filters = _filters(args) if args.action != "inspect" else None
    except ValueError as exc:
        _err(str(exc))
        return EXIT_USAGE
    try:
        letters, unreadable = asyncio.run(dl.load(settings, filters))
    except Exception as exc:
        return _failed(exc)
    if unreadable:
        print(
            f"(note: {unreadable} record(s) on the topic are not dead letters and were skipped)",
            file=sys.stderr,
        )

    if args.action == "list":
        letters = letters[-args.limit :] if args.limit else letters
        if args.json:
            rows = [{**dl.summarise(x.letter), "position": x.position} for x in letters]
            sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            print(dl.format_list(letters))
        return EXIT_OK

    if args.action == "inspect":
        found = dl.find(letters, args.id)
        if not found:
            _err(f"no dead letter {args.id!r} (give a dead-letter id, a report id or PARTITION:OFFSET)")
            return EXIT_USAGE
        for x in found:
            if args.raw:
                sys.stdout.buffer.write(x.letter.raw())
            elif args.json:
                sys.stdout.write(dl.letter_json(x).decode() + "\n")
            else:
                print(dl.format_inspect(x))
        return EXIT_OK

    # replay
    if args.dry_run:
        print(dl.format_list(letters))
        print(f"dry run: {len(letters)} dead letter(s) would be replayed")
        return EXIT_OK
    try:
        summary = asyncio.run(dl.replay(settings, letters, progress=not args.quiet))
    except Exception as exc:
        return _failed(exc)
    print(summary.text())
    return EXIT_OK if summary.ok else EXIT_FAILED


# ------------------------------------------------------------------------------------------------ backfill
def _cmd_backfill(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..settings import get_settings
    from .backfill import InputError, Mapping, parse_file, publish

    mapping = Mapping(
        id_column=args.id_column,
        text_column=args.text_column,
        location_column=args.location_column or None,
        category_column=args.category_column or None,
        time_column=args.time_column,
        timezone_hours=args.utc_offset,
    )
    path = Path(args.file)
    try:
        parsed = parse_file(path, mapping, limit=args.limit)
    except InputError as exc:
        _err(str(exc))
        return EXIT_USAGE
    if parsed.errors:
        for line in parsed.errors[:50]:
            print(line, file=sys.stderr)
        if len(parsed.errors) > 50:
            print(f"… and {len(parsed.errors) - 50} more invalid rows", file=sys.stderr)
        if not args.skip_invalid:
            _err(
                f"{path}: {len(parsed.errors)} invalid row(s); nothing was published "
                "(fix them, or pass --skip-invalid to publish the valid rows)"
            )
            return EXIT_USAGE
    if args.dry_run:
        print(f"dry run {path}: {len(parsed.reports)} report(s) valid, {len(parsed.errors)} invalid")
        return EXIT_OK
    try:
        summary = asyncio.run(publish(get_settings(), parsed, progress=not args.quiet))
    except Exception as exc:
        return _failed(exc)
    print(summary.text(str(path)))
    return EXIT_OK


# ------------------------------------------------------------------------------------------------ dashboard
def _cmd_dashboard(args: argparse.Namespace) -> int:
    from ..dashboard.app import serve

    asyncio.run(serve(host=args.host, port=args.port))
    return EXIT_OK


def _cmd_health(args: argparse.Namespace) -> int:
    import orjson

    from ..settings import get_settings
    from .health import readiness

    result = asyncio.run(readiness(get_settings()))
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    return EXIT_OK if result["ready"] else EXIT_FAILED


# ------------------------------------------------------------------------------------------------ parser
def add_ops_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    raw = argparse.RawDescriptionHelpFormatter

    p = add(
        "run", _cmd_run, "start the ingress and N workers (and the dashboard) as supervised child processes"
    )
    p.add_argument(
        "--workers", type=int, default=1, help="worker processes (at most the ingest partitions; default 1)"
    )
    p.add_argument(
        "--concurrency", type=int, default=1, help="agent instances inside each worker (default 1)"
    )
    p.add_argument("--dashboard", action="store_true", help="also serve the operations dashboard")
    p.add_argument("--media", action="store_true", help="also run the media stage (report photos)")
    p.add_argument("--loglevel", default="info")

    p = add("lag", _cmd_lag, "consumer lag of the worker group per input topic and partition")
    p.add_argument("--group", help="consumer group (default CRM_WORKER_APP_ID)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--max-lag", type=int, help="exit 1 when the total lag is above this (for alerts)")

    p = add("deadletters", _cmd_deadletters, "list, inspect and replay dead letters")
    p.formatter_class = raw
    p.epilog = (
        "examples:\n"
        "  crm-pipeline deadletters list --since 1d --code adapter_error\n"
        "  crm-pipeline deadletters inspect 3f0c2a9e\n"
        "  crm-pipeline deadletters replay --channel sms --since 6h\n\n"
        "replay feeds ingress letters through their channel's adapter again and re-publishes the\n"
        "envelope of worker letters; report ids are stable, so running it twice stores nothing twice.\n"
        "exit codes: 0 ok, 1 broker unreachable or some letters still fail, 2 bad usage"
    )
    dsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def filters(q: argparse.ArgumentParser) -> None:
        q.add_argument("--channel", action="append", help="only this channel (repeatable)")
        q.add_argument("--code", action="append", help="only this code, e.g. malformed_json (repeatable)")
        q.add_argument("--stage", action="append", choices=["ingress", "decode", "triage", "sink"])
        q.add_argument("--since", help="failed at or after: ISO 8601 or 30m / 6h / 2d")
        q.add_argument("--until", help="failed before: ISO 8601 or 30m / 6h / 2d")

    q = dsub.add_parser(
        "list", help="one line per dead letter, oldest first", epilog=FILTER_HELP, formatter_class=raw
    )
    filters(q)
    q.add_argument("--limit", type=int, default=0, help="only the newest N")
    q.add_argument("--json", action="store_true", help="print JSON")

    q = dsub.add_parser("inspect", help="everything about one dead letter, with its raw payload")
    q.add_argument(
        "id", metavar="ID", help="dead-letter id (or a prefix of 8+), report id, or PARTITION:OFFSET"
    )
    q.add_argument("--raw", action="store_true", help="write only the raw payload bytes to stdout")
    q.add_argument("--json", action="store_true", help="print JSON")

    q = dsub.add_parser(
        "replay",
        help="feed dead letters through the pipeline again (all, or filtered)",
        epilog=FILTER_HELP,
        formatter_class=raw,
    )
    filters(q)
    q.add_argument("--dry-run", action="store_true", help="show what would be replayed, publish nothing")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=_cmd_deadletters)

    p = add("backfill", _cmd_backfill, "feed a historical CRM export (CSV) through the pipeline")
    p.formatter_class = raw
    p.epilog = (
        "Each row becomes a report on the `backfill` channel with the id uuid5('backfill', <id column>):\n"
        "re-running the same file stores nothing twice. The whole file is checked first; invalid rows\n"
        "are printed as FILE:LINE: reason and nothing is published (exit 2) unless --skip-invalid.\n"
        "The time is --time-column, else date/month/year columns (the CRM export layout), else now."
    )
    p.add_argument("file", metavar="FILE.csv", help="UTF-8 CSV with a header row")
    p.add_argument("--id-column", default="report_id", help="stable id of each report (default report_id)")
    p.add_argument("--text-column", default="description", help="the citizen's text (default description)")
    p.add_argument("--location-column", default="location", help="free-text address (default location)")
    p.add_argument("--category-column", default="category", help="category as recorded (default category)")
    p.add_argument("--time-column", help="ISO 8601 date/time of the report")
    p.add_argument(
        "--utc-offset", type=int, default=7, help="hours east of UTC for times without a zone (WIB: 7)"
    )
    p.add_argument("--limit", type=int, help="only the first N valid rows")
    p.add_argument(
        "--skip-invalid", action="store_true", help="publish the valid rows even if some are invalid"
    )
    p.add_argument("--dry-run", action="store_true", help="check the file only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("dashboard", _cmd_dashboard, "serve the live operations dashboard (web page, SSE updates)")
    p.add_argument("--host", default=None, help="bind address (default CRM_DASHBOARD_HOST)")
    p.add_argument("--port", type=int, default=None, help="port (default CRM_DASHBOARD_PORT)")

    add("health", _cmd_health, "check the broker, Redis and the CRM store; exit 1 if any is down")
