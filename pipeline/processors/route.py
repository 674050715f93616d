"""Routing: category + confidence + region → the responsible agency and its office, always with a reason.

Two data files that ops can read and edit (``pipeline/data/``), validated on load (errors name the file
and line):

* ``agencies.v1.csv`` — every agency that may receive reports (official name = routed topic), the
  regional office that handles a report in its area (``Suku Dinas Bina Marga {kota}``,
  ``Kelurahan {kelurahan}, Kecamatan {kecamatan}``) and the upper-case unit labels CRM exports use.
* ``routing_table.v1.csv`` — one row per report category: agency, expected days (CRM rule: 7), an
  optional per-category confidence threshold, the CRM/JAKI categories it covers, and a note saying why.

Below the confidence threshold a report goes to ``triage`` (a person) with no agency. The threshold is
the classifier's own for the target precision (``CRM_ROUTE_TARGET_PRECISION``: its confidence is a
calibrated probability, see :mod:`pipeline.processors.calibration`); a routing row's
``min_confidence`` overrides it for that category; :data:`DEFAULT_MIN_CONFIDENCE` stands only for a
classifier that has no calibration. A classifier trained on handling-agency labels (for example a
CRM export's unit column) may output an agency label instead of a category; the router resolves it
through ``crm_labels``/names and routes to that agency directly. The file name carries the table's
version; :attr:`Router.version` is recorded in every reason.

Contract: ``route(category, confidence, region)`` returns a :class:`RouteDecision` that always says
why; ``agencies()`` names every agency that may receive reports (one routed topic each).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..envelope import Region

DEFAULT_EXPECTED_DAYS = 7
#: Below this confidence a report needs a person when the classifier states no threshold of its own
#: and the routing row none either.
DEFAULT_MIN_CONFIDENCE = 0.35

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
ROUTING_TABLE = DATA_DIR / "routing_table.v1.csv"
AGENCIES_TABLE = DATA_DIR / "agencies.v1.csv"
GAZETTEER_CSV = DATA_DIR / "jakarta_wilayah_gazetteer.csv"

_ROUTING_COLUMNS = ("category", "agency_id", "expected_days", "min_confidence", "crm_categories", "note")
_AGENCY_COLUMNS = ("agency_id", "name", "short", "regional_unit", "crm_labels")
_ID = re.compile(r"^[a-z][a-z0-9_]{1,59}$")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_REGION_FIELDS = {"kota", "kecamatan", "kelurahan"}


class RoutingTableError(ValueError):
    """A routing data file is malformed; the message names the file and line."""


def _err(path: Path, line: int, message: str) -> RoutingTableError:
    return RoutingTableError(f"{path}:{line}: {message}")


@dataclass(frozen=True, slots=True)
class RouteDecision:
    routed_to: str  # "agency" or "triage"
    agency: str | None
    agency_unit: str | None
    reason: str
    expected_days: int = DEFAULT_EXPECTED_DAYS
    threshold: float | None = None  # the confidence bar this decision was held to


@dataclass(frozen=True, slots=True)
class Agency:
    agency_id: str
    name: str
    short: str
    regional_unit: str | None
    crm_labels: tuple[str, ...]

    def unit_for(self, region: Region | None) -> tuple[str | None, list[str]]:
        """The office for ``region`` and, when it cannot be named, which parts of the region are missing."""
        if not self.regional_unit:
            return None, []
        needed = set(_PLACEHOLDER.findall(self.regional_unit))
        values = {f: getattr(region, f, None) if region is not None else None for f in needed}
        missing = sorted(f for f, v in values.items() if not v)
        if missing:
            return None, missing
        return self.regional_unit.format(**values), []


@dataclass(frozen=True, slots=True)
class RouteRule:
    category: str
    agency: Agency
    expected_days: int
    min_confidence: float | None
    crm_categories: tuple[str, ...]
    note: str
    line: int


def _rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a CSV whose ``#`` lines are comments, with their line numbers in the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutingTableError(f"{path}: cannot read: {exc.strerror or exc}") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    lines = [(n, line) for n, line in lines if not line.lstrip().startswith("#")]
    if not lines:
        raise RoutingTableError(f"{path}: empty file")
    reader = csv.reader([line for _, line in lines])
    header_line = lines[0][0]
    header = [h.strip() for h in next(reader)]
    missing = [c for c in columns if c not in header]
    if missing:
        raise RoutingTableError(f"{path}:{header_line}: header lacks column(s) {', '.join(missing)}")
    for (n, _), values in zip(lines[1:], reader, strict=True):
        if len(values) != len(header):
            raise _err(path, n, f"{len(values)} fields, the header has {len(header)}")
        yield n, {h: v.strip() for h, v in zip(header, values, strict=True)}


def read_agencies(path: str | Path) -> dict[str, Agency]:
    path = Path(path)
    agencies: dict[str, Agency] = {}
    names: set[str] = set()
    for n, row in _rows(path, _AGENCY_COLUMNS):
        aid, name = row["agency_id"], row["name"]
        if not _ID.match(aid):
            raise _err(path, n, f"agency_id {aid!r} must be lower_snake_case")
        if aid in agencies:
            raise _err(path, n, f"agency_id {aid!r} appears twice")
        if not name:
            raise _err(path, n, f"agency {aid!r} has no name")
        if name in names:
            raise _err(path, n, f"agency name {name!r} appears twice")
        unit = row["regional_unit"] or None
        if unit:
            unknown = set(_PLACEHOLDER.findall(unit)) - _REGION_FIELDS
            if unknown or unit.count("{") != unit.count("}"):
                raise RoutingTableError(
                    f"{path}:{n}: regional_unit {unit!r} may only use {{kota}}, {{kecamatan}}, {{kelurahan}}"
                )
        labels = tuple(x.strip().upper() for x in row["crm_labels"].split(";") if x.strip())
        names.add(name)
        agencies[aid] = Agency(aid, name, row["short"] or name, unit, labels)
    if not agencies:
        raise RoutingTableError(f"{path}: no agencies")
    return agencies


def read_routing_table(path: str | Path, agencies: dict[str, Agency]) -> dict[str, RouteRule]:
    path = Path(path)
    rules: dict[str, RouteRule] = {}
    for n, row in _rows(path, _ROUTING_COLUMNS):
        cat = row["category"]
        if not _ID.match(cat):
            raise _err(path, n, f"category {cat!r} must be lower_snake_case")
        if cat in rules:
            raise _err(path, n, f"category {cat!r} appears twice (first on line {rules[cat].line})")
        agency = agencies.get(row["agency_id"])
        if agency is None:
            raise _err(path, n, f"agency_id {row['agency_id']!r} is not in the agencies table")
        try:
            days = int(row["expected_days"]) if row["expected_days"] else DEFAULT_EXPECTED_DAYS
        except ValueError:
            raise _err(path, n, f"expected_days {row['expected_days']!r} is not a whole number") from None
        if not 1 <= days <= 365:
            raise _err(path, n, f"expected_days {days} outside 1..365")
        min_conf: float | None = None
        if row["min_confidence"]:
            try:
                min_conf = float(row["min_confidence"])
            except ValueError:
                raise _err(path, n, f"min_confidence {row['min_confidence']!r} is not a number") from None
            if not 0.0 <= min_conf <= 1.0:
                raise _err(path, n, f"min_confidence {min_conf} outside 0..1")
        if not row["note"]:
            raise _err(path, n, f"category {cat!r} has no note (the reason routed reports carry)")
        crm = tuple(x.strip() for x in row["crm_categories"].split(";") if x.strip())
        rules[cat] = RouteRule(cat, agency, days, min_conf, crm, row["note"], n)
    if not rules:
        raise RoutingTableError(f"{path}: no routing rows")
    return rules


def _read_kota_codes(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as fh:
        return sorted(r["kode_kemendagri"] for r in csv.DictReader(fh) if r["level"] == "kota_kabupaten")


def _label_key(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", label.lower()).strip()


class Router:
    """Routes by the routing table; see the module docstring."""

    def __init__(
        self,
        rules: dict[str, RouteRule],
        agencies: dict[str, Agency],
        kota_codes: list[str],
        version: str = "v1",
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    ) -> None:
        self.rules = rules
        self.agency_table = agencies
        self._kota_codes = kota_codes
        self.version = version
        self.min_confidence = min_confidence
        self._by_label: dict[str, Agency] = {}
        for agency in agencies.values():
            for label in (agency.agency_id, agency.name, agency.short, *agency.crm_labels):
                self._by_label.setdefault(_label_key(label), agency)

    def agencies(self) -> list[str]:
        """Official names of every agency a report may be routed to (one routed topic each)."""
        return sorted(a.name for a in self.agency_table.values())

    def kota_codes(self) -> list[str]:
        """Kemendagri codes of the five kota and Kepulauan Seribu (one regional topic each)."""
        return list(self._kota_codes)

    def categories(self) -> list[str]:
        return list(self.rules)

    def agency_for_label(self, label: str) -> Agency | None:
        """The agency a category id, agency id, official name or CRM unit label stands for."""
        rule = self.rules.get(label)
        if rule is not None:
            return rule.agency
        return self._by_label.get(_label_key(label))

    def route(
        self,
        category: str | None,
        confidence: float,
        region: Region | None,
        threshold: float | None = None,
        threshold_source: str = "",
    ) -> RouteDecision:
        """``threshold``: the model's confidence for the target precision (None: the router's default);
        a routing-table row's own ``min_confidence`` overrides both."""
        table = f"routing table {self.version}"
        if not category:
            return RouteDecision("triage", None, None, "no category: a person must read it")
        rule = self.rules.get(category)
        if rule is not None:
            agency, days, override = rule.agency, rule.expected_days, rule.min_confidence
            why = f"{category} → {agency.name} ({table}: {rule.note})"
        else:
            direct = self._by_label.get(_label_key(category))
            if direct is None:
                return RouteDecision("triage", None, None, f"category {category!r} is not in the {table}")
            agency, days, override = direct, DEFAULT_EXPECTED_DAYS, None
            why = f"classifier named the agency {agency.name} directly"
        if override is not None:
            bar, source = override, f"{table} threshold for {category}"
        elif threshold is not None:
            bar, source = threshold, threshold_source or "the model's threshold"
        else:
            bar, source = self.min_confidence, "default threshold"
        if confidence < bar:
            why = f"confidence {confidence:.2f} below {bar:.2f} ({source}); would be {why}"
            return RouteDecision("triage", None, None, why, days, bar)
        unit, missing = agency.unit_for(region)
        if agency.agency_id in missing:
            # A kelurahan (or kecamatan) handles it itself: without knowing which one, a person must pick.
            why = f"{why}, but the {agency.agency_id} is unknown"
            return RouteDecision("triage", None, None, why, days, bar)
        if missing:
            why += f"; {' and '.join(missing)} unknown, so the agency itself rather than its regional office"
        why += f"; confidence {confidence:.2f} ≥ {bar:.2f} ({source})"
        return RouteDecision("agency", agency.name, unit, why, days, bar)


def load_router(
    path: str | Path | None = None,
    agencies_path: str | Path | None = None,
    min_confidence: float | None = None,
) -> Router:
    """The router for the packaged routing table, or for ``path`` (its agencies file sits beside it)."""
    table = Path(path) if path else ROUTING_TABLE
    if agencies_path is None:
        m = re.search(r"\.(v\d+)\.csv$", table.name)
        sibling = table.with_name(f"agencies.{m.group(1)}.csv") if m else None
        agencies_path = sibling if sibling is not None and sibling.exists() else AGENCIES_TABLE
    return _load_router(str(table), str(agencies_path), min_confidence)


@lru_cache(maxsize=8)
def _load_router(table: str, agencies_path: str, min_confidence: float | None) -> Router:
    agencies = read_agencies(agencies_path)
    rules = read_routing_table(table, agencies)
    m = re.search(r"\.(v\d+)\.csv$", Path(table).name)
    return Router(
        rules,
        agencies,
        _read_kota_codes(GAZETTEER_CSV),
        version=m.group(1) if m else Path(table).name,
        min_confidence=DEFAULT_MIN_CONFIDENCE if min_confidence is None else min_confidence,
    )
