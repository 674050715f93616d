"""``crm-pipeline train`` and ``crm-pipeline model list|show|shadow|promote|rollback|compare|…``.

Training reads labelled history from a CSV (text, label and, when the file has them, the citizen's
category, the location and the channel) and/or from the CRM store (``--from-store``: reports with
the agency officers settled on, see :meth:`ModelRegistry.training_rows`). It measures the model on
held-out folds, calibrates it, writes it to a file (``--out``) and/or registers it in the store
(``--register``; the default with ``--from-store``), where workers can shadow and promote it.

Exit codes: 0 done, 1 the store failed, 2 bad usage or bad input (the message names the file and line).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from ..crm.cases_cli import since_arg

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: a label needs this many examples to be learnt (and to sit in every calibration fold)
MIN_EXAMPLES_PER_LABEL = 3
#: held-out folds at most (fewer when the rarest kept label has fewer examples)
MAX_FOLDS = 5


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"crm-pipeline: {message}", file=sys.stderr)
    return code


def read_labelled_csv(args: argparse.Namespace) -> tuple[list[Any], list[str], int]:
    """Signals and labels of a labelled CSV; rows lacking text or label are skipped and counted."""
    from ..offline import InputError, _location, _open_csv, _rows
    from ..processors.classify import Signals
    from ..processors.locate import load_gazetteer
    from ..processors.normalise import normalise

    needed = {
        "--text-column": args.text_column,
        "--label-column": args.label_column,
        "--category-column": args.category_column,
        "--location-column": args.location_column,
        "--channel-column": args.channel_column,
    }
    if args.text_column is None or args.label_column is None:
        raise InputError(f"{args.data}: --data needs --text-column and --label-column")
    fh, reader = _open_csv(args.data, needed)
    gaz = load_gazetteer() if args.location_column else None
    items, labels, skipped = [], [], 0
    with fh:
        for _, row in _rows(args.data, reader):
            text = (row.get(args.text_column) or "").strip()
            label = (row.get(args.label_column) or "").strip()
            if not text or not label:
                skipped += 1
                continue
            region = None
            if gaz is not None:
                region, _ = gaz.locate(_location(row.get(args.location_column)), text)
            hint = (row.get(args.category_column) or "").strip() or None if args.category_column else None
            channel = (row.get(args.channel_column) or "").strip() or None if args.channel_column else None
            items.append(Signals(normalise(text), hint, channel, region))
            labels.append(label)
    return items, labels, skipped


def canonical_labels(labels: list[str]) -> list[str]:
    """Labels naming an agency the routing table knows (its name, id, short name or a CRM unit label
    such as DINAS PERHUBUNGAN) become its official name, so CSV history and officers' labels in the
    store are one class; others (project categories, 'other') are kept as they are."""
    from ..processors.route import load_router

    router = load_router()
    names: dict[str, str] = {}
    out = []
    for label in labels:
        if label not in names:
            agency = None if label in router.rules else router.agency_for_label(label)
            names[label] = agency.name if agency is not None else label
        out.append(names[label])
    return out


def train_main(args: argparse.Namespace) -> int:
    from ..offline import InputError
    from ..processors.trained import train
    from ..settings import get_settings

    if not args.data and not args.from_store:
        return _fail("train needs --data FILE.csv, --from-store, or both")
    register = args.register or (args.from_store and not args.out)
    if not args.out and not register:
        return _fail("train needs --out FILE and/or --register (where should the model go?)")
    items: list[Any] = []
    labels: list[str] = []
    sources: dict[str, Any] = {}
    if args.data:
        try:
            got, got_labels, skipped = read_labelled_csv(args)
        except InputError as exc:
            return _fail(str(exc))
        items += got
        labels += got_labels
        sources["csv"] = {"file": args.data, "rows": len(got), "skipped": skipped}
        if skipped:
            print(
                f"crm-pipeline: {skipped} rows without text or label skipped in {args.data}", file=sys.stderr
            )
    registry = None
    if args.from_store or register:
        import psycopg

        from .registry import ModelRegistry

        registry = ModelRegistry(get_settings().database_url.get_secret_value())
        if args.from_store:
            from ..ops.common import parse_when

            try:
                since = parse_when(args.since) if args.since else None
            except ValueError as exc:
                return _fail(f"--since: {exc}")
            try:
                rows = registry.training_rows(since, labelled_only=args.labelled_only)
            except psycopg.Error as exc:
                return _fail(f"cannot read the CRM store: {exc}".strip(), EXIT_FAILED)
            items += [r.signals for r in rows]
            labels += [r.agency for r in rows]
            sources["store"] = {
                "since": since.isoformat() if since else None,
                "rows": len(rows),
                "by_source": dict(Counter(r.source for r in rows)),
            }
    labels = canonical_labels(labels)
    counts = Counter(labels)
    rare = sorted(label for label, c in counts.items() if c < MIN_EXAMPLES_PER_LABEL)
    if rare:
        print(
            f"crm-pipeline: leaving out {len(rare)} label(s) with fewer than {MIN_EXAMPLES_PER_LABEL} "
            f"examples: {', '.join(rare)}",
            file=sys.stderr,
        )
        keep = [i for i, label in enumerate(labels) if label not in set(rare)]
        items, labels = [items[i] for i in keep], [labels[i] for i in keep]
    if len(set(labels)) < 2:
        where = " and ".join(sources) or "the input"
        return _fail(f"{where}: need at least two labels with {MIN_EXAMPLES_PER_LABEL}+ examples each")
    folds = max(2, min(args.folds, min(Counter(labels).values())))
    started = time.perf_counter()
    progress: Callable[[str], None] | None = (
        None if args.quiet else (lambda m: print(f"  {m}", file=sys.stderr))
    )
    model = train(items, labels, folds=folds, calibration_folds=MIN_EXAMPLES_PER_LABEL, sources=sources,
                  progress=progress)  # fmt: skip
    took = time.perf_counter() - started
    if args.out:
        try:
            model.save(args.out)
        except OSError as exc:
            return _fail(f"{args.out}: cannot write: {exc.strerror or exc}")
    cv = model.meta["cv"]
    target = get_settings().route_target_precision
    t = model.threshold_for(target)
    cal = model.calibration
    print(
        f"trained on {len(labels)} examples, {len(set(labels))} labels in {took:.1f}s → "
        f"{args.out or 'the registry'}\n"
        f"  {folds}-fold held-out: accuracy {cv['accuracy']:.3f}, macro-F1 {cv['macro_f1']:.3f}, "
        f"dispatch at precision {target:.2f}: threshold {'none' if t is None else f'{t:.3f}'}, "
        f"coverage {cal.coverage_at(t) if cal else 0.0:.3f}",
        file=sys.stderr,
    )
    if register and registry is not None:
        import psycopg

        try:
            model_id = registry.register(model, actor=args.actor)
        except psycopg.Error as exc:
            return _fail(f"cannot register the model: {exc}".strip(), EXIT_FAILED)
        print(f"registered model {model_id} (crm-pipeline model shadow {model_id})", file=sys.stderr)
        print(model_id)
    return EXIT_OK


def add_train_command(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("train", train_main, "train the triage classifier on labelled history (CSV and/or the store)")
    p.add_argument("--data", help="CSV of labelled reports")
    p.add_argument("--text-column")
    p.add_argument("--label-column", help="the handling agency (or a project category)")
    p.add_argument(
        "--category-column", help="the category the citizen picked (JAKI/CRM), when the file has it"
    )
    p.add_argument(
        "--location-column", help="address, kelurahan, 'lat,lon' or a Kemendagri code: place features"
    )
    p.add_argument("--channel-column", help="the channel each report came through")
    p.add_argument(
        "--from-store", action="store_true", help="train on the CRM store's reports and their final agencies"
    )
    p.add_argument("--since", help="with --from-store: reports received since (2026-01-31, 30d, ...)")
    p.add_argument(
        "--labelled-only",
        action="store_true",
        help="with --from-store: only officers' labels (re-route, dispatch, confirm), not merely accepted",
    )
    p.add_argument("--out", help="model file to write")
    p.add_argument(
        "--register", action="store_true", help="register the model in the store (default with --from-store)"
    )
    p.add_argument("--folds", type=int, default=MAX_FOLDS, help="held-out folds for metrics and calibration")
    p.add_argument("--actor", default="cli", help="who trained it (kept in the registry)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


# ---------------------------------------------------------------------------------------- model
def _registry() -> Any:
    from ..settings import get_settings
    from .registry import ModelRegistry

    return ModelRegistry(get_settings().database_url.get_secret_value())


def _fmt(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def model_main(args: argparse.Namespace) -> int:
    import psycopg

    from .registry import RegistryError

    reg = _registry()
    try:
        if args.action == "list":
            rows = reg.list()
            if args.json:
                print(orjson.dumps(rows, default=str).decode())
                return EXIT_OK
            live, _ = reg.roles()
            line = "{:24} {:9} {:20} {:>8} {:>8} {:>8} {}"
            print(line.format("model", "role", "created", "examples", "accuracy", "macro-F1", "cov@0.95"))
            for r in rows:
                cv = r["cv"] or {}
                created = f"{r['created_at']:%Y-%m-%d %H:%M:%S}"
                cells = [r["model_id"], r["role"], created, _fmt(r["n_examples"])]
                cells += [_fmt(cv.get(k)) for k in ("accuracy", "macro_f1", "coverage_at_0.95")]
                print(line.format(*cells))
            if live is None:
                print("no live model: workers route with the built-in lexicon classifier")
            return EXIT_OK
        if args.action == "show":
            print(orjson.dumps(reg.get(args.id), default=str, option=orjson.OPT_INDENT_2).decode())
            return EXIT_OK
        if args.action == "shadow":
            reg.shadow(args.id, args.actor)
            print(f"{args.id} now runs in shadow: workers record its decisions beside the live model's")
            return EXIT_OK
        if args.action == "unshadow":
            gone = reg.unshadow(args.actor)
            print(f"shadow {gone} stopped" if gone else "no shadow model was running")
            return EXIT_OK
        if args.action == "promote":
            previous = reg.promote(args.id, args.actor)
            was = previous or "the built-in lexicon classifier"
            print(f"{args.id} is live: workers route with it from their next check; {was} kept for rollback")
            return EXIT_OK
        if args.action == "rollback":
            restored, stood_down = reg.rollback(args.actor)
            print(f"{restored or 'the built-in lexicon classifier'} routes again ({stood_down} retired)")
            return EXIT_OK
        if args.action == "retire":
            gone = reg.retire(args.actor)
            print(
                f"{gone} retired: workers route with the built-in lexicon classifier"
                if gone
                else "no live model"
            )
            return EXIT_OK
        if args.action == "compare":
            out = reg.compare(args.id, since=args.since, whole=args.all)
            if args.json:
                print(orjson.dumps(out).decode())
                return EXIT_OK
            live_ids = ", ".join(out["live"]) or "-"
            since = f" since {out['since']}" if out["since"] else ""
            print(f"shadow {out['shadow']} against live {live_ids}{since}: {out['decisions']} reports "
                  f"decided by both, agreement {_fmt(out['agreement'])}")  # fmt: skip
            for name in ("live_model", "shadow_model"):
                s = out[name]
                print(f"  {name.split('_')[0]:6} accuracy {_fmt(s['accuracy'])} on {s['labelled']} with a "
                      f"final agency, dispatched {_fmt(s['coverage'])}, precision of dispatched "
                      f"{_fmt(s['precision_routed'])}")  # fmt: skip
            return EXIT_OK
    except RegistryError as exc:
        return _fail(str(exc))
    except psycopg.Error as exc:
        return _fail(f"the CRM store failed: {exc}".strip(), EXIT_FAILED)
    return _fail(f"unknown action {args.action!r}")


def add_model_command(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("model", model_main, "the triage model registry: list, show, shadow, promote, compare, rollback")
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("list", help="every registered model with its role and held-out metrics")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("show", help="one model: training data, metrics, calibration, thresholds, history")
    s.add_argument("id")
    s = sub.add_parser("shadow", help="run a model beside the live one, decisions recorded, not acted on")
    s.add_argument("id")
    sub.add_parser("unshadow", help="stop the shadow model")
    s = sub.add_parser("promote", help="make a model live in every worker (no restart); the old one stays")
    s.add_argument("id")
    sub.add_parser("rollback", help="put back the model the live one replaced")
    sub.add_parser("retire", help="stand the live model down: back to the built-in lexicon classifier")
    s = sub.add_parser(
        "compare", help="shadow against live since the shadow started, against officers' agencies"
    )
    s.add_argument("id", nargs="?", help="the shadow model (default: the current one)")
    when = s.add_mutually_exclusive_group()
    when.add_argument(
        "--since",
        type=since_arg,
        help="count decisions from an ISO date or 7d/12h back (default: since it was last shadowed)",
    )
    when.add_argument("--all", action="store_true", help="every decision it made in shadow, in any run")
    s.add_argument("--json", action="store_true")
    for name, sp in sub.choices.items():
        if name in ("shadow", "unshadow", "promote", "rollback", "retire"):
            sp.add_argument("--actor", default="cli", help="who did it (kept in the model's history)")
