"""``crm-pipeline``: the one command ops, channel owners and scripts use.

Exit codes scripts may rely on: 0 success, 1 the operation failed, 2 bad usage or bad input file.
Each subcommand imports what it needs lazily so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _cmd_topics(args: argparse.Namespace) -> int:
    from .settings import get_settings
    from .topics import describe_partitions, ensure_topics
    from .worker_topics import all_topic_specs

    settings = get_settings()
    specs = all_topic_specs(settings)
    if args.action == "create":
        result = asyncio.run(ensure_topics(settings, specs))
        for name in sorted(result):
            print(f"{result[name]:8} {name}")
        return EXIT_OK
    found = asyncio.run(describe_partitions(settings, [s.name for s in specs]))
    bad = 0
    for spec in specs:
        have = found.get(spec.name)
        state = (
            "ok" if have is not None and have >= spec.partitions else "MISSING" if have is None else "FEWER"
        )
        bad += state != "ok"
        print(f"{state:8} {spec.name} partitions={have}/{spec.partitions}")
    return EXIT_OK if not bad else EXIT_FAILED


def _cmd_ingress(args: argparse.Namespace) -> int:
    from .ingress import serve
    from .sources.base import AdapterStartError
    from .sources.config import ChannelSettingsError

    try:
        asyncio.run(serve(host=args.host, port=args.port))
    except ChannelSettingsError as exc:  # a channel's declared settings: the variable is named
        print(f"crm-pipeline ingress: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AdapterStartError as exc:
        print(f"crm-pipeline ingress: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _cmd_worker(args: argparse.Namespace) -> int:
    from .worker import run_worker

    run_worker(loglevel=args.loglevel)
    return EXIT_OK


def _cmd_channels(args: argparse.Namespace) -> int:
    import orjson

    from .settings import get_settings
    from .sources.listing import channel_rows, print_config

    rows = channel_rows(get_settings(), config=args.config)
    problems = [r["id"] for r in rows for k in ("config", "reply_config") if (r.get(k) or {}).get("problem")]
    if args.json:
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif args.config:
        print_config(rows)
    else:
        for row in rows:
            print(f"{row['id']:18} {row['mode']:5} {row['topic']}")
    return EXIT_FAILED if problems else EXIT_OK


def _cmd_poll(args: argparse.Namespace) -> int:
    from .sources.poller import poll_main

    return poll_main(args.channel, once=args.once)


def _cmd_smtp(args: argparse.Namespace) -> int:
    from .sources.email import smtp_main

    return smtp_main(args.host, args.port)


def _cmd_store(args: argparse.Namespace) -> int:
    from .settings import get_settings
    from .sinks.postgres import migrate, show_reports

    settings = get_settings()
    if args.action == "migrate":
        applied = asyncio.run(migrate(settings))
        print("applied: " + (", ".join(applied) if applied else "nothing (schema up to date)"))
        return EXIT_OK
    asyncio.run(show_reports(settings, limit=args.limit))
    return EXIT_OK


def _cmd_api(args: argparse.Namespace) -> int:
    from .crm.api import serve

    serve(host=args.host, port=args.port)
    return EXIT_OK


def _cmd_notify(args: argparse.Namespace) -> int:
    from .crm.notify.cli import notify_main

    return notify_main(
        once=args.once, action=args.action, as_json=args.json, destination=args.destination, limit=args.limit
    )


def _cmd_status(args: argparse.Namespace) -> int:
    from .crm.status_cli import status_main

    return status_main(args)


def _cmd_triage(args: argparse.Namespace) -> int:
    from .offline import triage_main

    return triage_main(args)


def _cmd_desk_import(args: argparse.Namespace) -> int:
    from .sources.desk import import_main

    return import_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crm-pipeline",
        description="Jakarta CRM streaming pipeline: channel ingress, Faust triage workers, CRM store.",
        epilog="Settings come from CRM_* environment variables (see README: Configuration).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(fn=fn)
        return p

    p = add("topics", _cmd_topics, "create or verify every topic with its partitions and replication")
    p.add_argument("action", choices=["create", "verify"])

    p = add("ingress", _cmd_ingress, "serve the HTTP ingress for every push channel")
    p.add_argument("--host", default=None, help="bind address (default CRM_INGRESS_HOST)")
    p.add_argument("--port", type=int, default=None, help="port (default CRM_INGRESS_PORT)")

    p = add("worker", _cmd_worker, "run a Faust worker: dedup, triage and the CRM store sink")
    p.add_argument("--loglevel", default="info")

    p = add("channels", _cmd_channels, "list the registered channel adapters (id, push/poll, topic)")
    p.add_argument("--json", action="store_true", help="print JSON instead of one line each")
    p.add_argument(
        "--config",
        action="store_true",
        help="also list each channel's declared settings (secrets masked); exit 1 if any is invalid",
    )

    p = add("poll", _cmd_poll, "run the poll channels (twitter, lapor1708, ...) on their intervals")
    p.add_argument("--channel", action="append", help="only this channel (repeatable; default: all)")
    p.add_argument("--once", action="store_true", help="poll each channel until caught up, then exit")

    p = add("smtp", _cmd_smtp, "serve the inbound SMTP gateway of the email channel")
    p.add_argument("--host", default=None, help="bind address (default CRM_EMAIL_SMTP_HOST)")
    p.add_argument("--port", type=int, default=None, help="port (default CRM_EMAIL_SMTP_PORT)")

    p = add("store", _cmd_store, "CRM store: apply migrations or show the latest reports")
    p.add_argument("action", choices=["migrate", "show"])
    p.add_argument("--limit", type=int, default=20)

    p = add("api", _cmd_api, "serve the Open311 read API and the officer status API")
    p.add_argument("--host", default=None, help="bind address (default CRM_API_HOST)")
    p.add_argument("--port", type=int, default=None, help="port (default CRM_API_PORT)")

    p = add("notify", _cmd_notify, "send due citizen notifications from the outbox (acks, status changes)")
    p.add_argument("--once", action="store_true", help="one pass over the due rows, then exit")
    p.add_argument(
        "action", nargs="?", default="run", choices=["run", "undelivered"],
        help="undelivered: list notifications given up on (exit 1 when there are any)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="undelivered: print JSON")
    p.add_argument("--destination", help="undelivered: only this destination (jaki, sms, whatsapp, ...)")
    p.add_argument("--limit", type=int, default=100, help="undelivered: at most this many rows")

    p = add("status", _cmd_status, "apply officer status events from the status topic; raise escalations")
    p.add_argument("action", nargs="?", default="run", choices=["run", "escalate"])

    p = add("desk-import", _cmd_desk_import, "import a CSV of walk-in desk reports (offline desks)")
    p.add_argument("file", help="CSV file exported from the offline desk (UTF-8, header row)")
    p.add_argument("--channel", required=True, help="desk channel id, e.g. desk_kelurahan")
    p.add_argument("--office", required=True, help="Kemendagri code of the office, e.g. 31.71.01.1001")
    p.add_argument("--officer", required=True, help="officer who took the reports (a per-line column wins)")
    p.add_argument("--errors-out", help="also write refused lines with their reasons to this CSV")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("triage", _cmd_triage, "run normalise → classify → locate → route → group over a CSV, no Kafka")
    p.add_argument("input", help="CSV file of reports")
    p.add_argument("--id-column", required=True)
    p.add_argument("--text-column", required=True)
    p.add_argument("--location-column")
    p.add_argument(
        "--time-column",
        help="when each report was made (ISO 8601 date or time, WIB unless it says); without it the "
        "date/month/year columns of a CRM export are used if present, else every row is taken as made now",
    )
    p.add_argument(
        "--category-column", help="the category the citizen picked (JAKI/CRM), when the file has it"
    )
    p.add_argument("--channel-column", help="the channel each report came through")
    p.add_argument("--model", help="trained model file (default: the built-in lexicon classifier)")
    p.add_argument(
        "--target-precision",
        type=float,
        help="dispatch above the model's threshold for this precision (default CRM_ROUTE_TARGET_PRECISION)",
    )
    p.add_argument("--out", required=True, help="output JSON Lines file")

    from .learning.cli import add_model_command, add_train_command  # triage that learns (issue #16)

    add_train_command(add)
    add_model_command(add)

    from .ops.commands import add_ops_commands  # run, lag, deadletters, backfill, dashboard, health

    add_ops_commands(add)
    from .media.cli import add_media_command  # report media (issue #21)

    add_media_command(add)
    from .bench.cli import add_bench_command  # benchmark of issue #5

    add_bench_command(add)
    from .crm.cases_cli import add_cases_command  # cases quality (issue #23)

    add_cases_command(add)
    from .surge_cli import add_surge_command  # surges (issue #17)

    add_surge_command(add)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .logs import configure

    configure(getattr(args, "loglevel", None) or "info")
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
