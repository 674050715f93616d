"""Walk-in desks: ``desk_kelurahan``, ``desk_kecamatan``, ``desk_walikota``, ``desk_balaikota``,
``desk_inspektorat``.

**Desk API.** An officer's desk application POSTs one JSON entry per report taken in person, with
``Authorization: Bearer <token>``. ``CRM_DESK_CREDENTIALS`` is a JSON map of token →
``{"office_code": "<Kemendagri code>", "office_level": "<level>"}``: each credential is bound to one office,
so to one region. No token is 401; an unknown token, a token of another desk level, or an entry naming
another office is 403. The entry::

    {"entry_id": "KEL-3171011001-2024-0042",   # the desk's own id: the provider id
     "officer": "Siti Aminah (NIP 1987…)",      # who took the report: required
     "text": "…", "name": "…", "phone": "…", "email": "…", "address": "…",
     "category": "…", "taken_at": "2024-05-01T09:30:00+07:00", "private": false,
     "office_code": "31.71.01.1001"}            # optional; must be the credential's office

The report's ``location.desk_office`` is the office's Kemendagri code (the locate stage resolves it to a
region). The officer is kept with the raw payload on the raw topic (the envelope has no officer field).

**CSV import** (``crm-pipeline desk-import``) for desks that work offline: see :func:`import_main`.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import orjson

from ..envelope import Contact, Location, Report, Reporter, reporter_pseudonym
from ..settings import Settings
from .base import InboundRequest, PushResult, PushSource, Rejected
from .common import (
    field,
    header,
    normalise_email,
    normalise_phone,
    parse_body,
    parse_bool,
    parse_timestamp,
    text_value,
)
from .config import core_view

MIN_TEXT, MAX_TEXT = 10, 5000
GAZETTEER_CSV = Path(__file__).resolve().parents[1] / "data" / "jakarta_wilayah_gazetteer.csv"

#: which gazetteer level each desk channel's office is at
CHANNEL_LEVEL: dict[str, str] = {
    "desk_kelurahan": "kelurahan",
    "desk_kecamatan": "kecamatan",
    "desk_walikota": "kota",
    "desk_balaikota": "balaikota",
    "desk_inspektorat": "inspektorat",
}
_GAZETTEER_LEVEL = {
    "kelurahan": "kelurahan",
    "kecamatan": "kecamatan",
    "kota": "kota_kabupaten",
    "balaikota": "provinsi",
    "inspektorat": "provinsi",
}

ALIASES: dict[str, tuple[str, ...]] = {
    "entry_id": ("entry_id", "id", "no_entri"),
    "officer": ("officer", "petugas"),
    "text": ("text", "laporan", "isi_laporan", "description"),
    "name": ("name", "nama"),
    "phone": ("phone", "telepon", "no_hp"),
    "email": ("email", "surel"),
    "address": ("address", "alamat"),
    "category": ("category", "kategori"),
    "taken_at": ("taken_at", "tanggal", "waktu"),
    "private": ("private", "rahasia"),
    "office_code": ("office_code", "kode_kantor"),
}


@lru_cache(maxsize=1)
def gazetteer_levels() -> dict[str, tuple[str, str]]:
    """Kemendagri code → (gazetteer level, name), from the packaged gazetteer."""
    with GAZETTEER_CSV.open(newline="", encoding="utf-8") as fh:
        return {row["kode_kemendagri"]: (row["level"], row["nama"]) for row in csv.DictReader(fh)}


def check_office(channel: str, office_code: str) -> str:
    """The office's name, or ValueError when the code is not an office of this desk's level."""
    level = CHANNEL_LEVEL[channel]
    found = gazetteer_levels().get(office_code.strip())
    if found is None:
        raise ValueError(f"office code {office_code!r} is not in the Jakarta gazetteer")
    if found[0] != _GAZETTEER_LEVEL[level]:
        raise ValueError(f"office code {office_code!r} is a {found[0]} ({found[1]}), not a {level} office")
    return found[1]


@dataclass(frozen=True)
class Credential:
    office_code: str
    office_level: str


def load_credentials(settings: Settings) -> list[tuple[bytes, Credential]]:
    try:
        raw = orjson.loads(settings.desk_credentials.get_secret_value())
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"CRM_DESK_CREDENTIALS is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError("CRM_DESK_CREDENTIALS must be a JSON object: token -> {office_code, office_level}")
    out = []
    for token, spec in raw.items():
        if not isinstance(spec, dict) or not {"office_code", "office_level"} <= spec.keys():
            raise ValueError("each CRM_DESK_CREDENTIALS value needs office_code and office_level")
        out.append((str(token).encode(), Credential(str(spec["office_code"]), str(spec["office_level"]))))
    return out


def _field(data: dict[str, Any], key: str) -> Any:
    return field(data, ALIASES, key)


def _text(data: dict[str, Any], key: str, max_len: int) -> str | None:
    return text_value(_field(data, key), key, max_len)


def build_entry_report(
    settings: Settings, channel: str, office_code: str, data: dict[str, Any], provider_id: str | None = None
) -> Report:
    """One desk entry (API body or CSV row) as a report; ``provider_id`` defaults to ``entry_id``."""
    officer = _text(data, "officer", 200)
    if officer is None:
        raise Rejected(
            "officer (who took the report) is required (nama petugas wajib)",
            code="missing_officer",
            field="officer",
        )
    text = _text(data, "text", MAX_TEXT)
    if text is None or len(text) < MIN_TEXT:
        raise Rejected(
            f"text is required, at least {MIN_TEXT} characters (isi laporan wajib)",
            code="missing_text",
            field="text",
        )
    if provider_id is None:
        entry_id = _text(data, "entry_id", 200)
        if entry_id is None:
            raise Rejected(
                "entry_id (the desk's own entry id) is required", code="missing_id", field="entry_id"
            )
        provider_id = f"{office_code}:{entry_id}"
    contact = Contact(name=_text(data, "name", 200))
    phone, email = _text(data, "phone", 32), _text(data, "email", 320)
    try:
        contact.phone = normalise_phone(phone) if phone else None
    except ValueError:
        raise Rejected(
            f"phone {phone!r} is not a valid Indonesian number", code="bad_phone", field="phone"
        ) from None
    try:
        contact.email = normalise_email(email) if email else None
    except ValueError:
        raise Rejected(f"email {email!r} is not a valid address", code="bad_email", field="email") from None
    if contact.email:
        reporter_id = reporter_pseudonym(
            settings.reporter_id_key.get_secret_value().encode(), "email", contact.email
        )
    elif contact.phone:
        reporter_id = reporter_pseudonym(
            settings.reporter_id_key.get_secret_value().encode(), "phone", contact.phone
        )
    else:
        reporter_id = "anonymous"
    taken = _field(data, "taken_at")
    source_at: datetime | None = (
        parse_timestamp(taken if isinstance(taken, str) else None, "taken_at") if taken else None
    )
    return Report.create(
        channel=channel,
        provider_id=provider_id,
        source_at=source_at,
        reporter=Reporter(id=reporter_id, private=parse_bool(_field(data, "private"))),
        contact=contact if (contact.name or contact.phone or contact.email) else None,
        text=text,
        category_hint=_text(data, "category", 200),
        location=Location(address=_text(data, "address", 1000), desk_office=office_code),
    )


#: one credential map for the five desk channels (each token is bound to one office of one level)
DeskSettings = core_view("DeskSettings", "CRM_DESK_", ["desk_credentials"])


class DeskSource(PushSource):
    """One desk level. The five channels differ only in id, route and the office level they accept."""

    channel: ClassVar[str]
    route: ClassVar[str]
    settings_model = DeskSettings

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._credentials = load_credentials(settings)

    def credential(self, request: InboundRequest) -> Credential:
        auth = header(request, "Authorization") or ""
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Rejected(
                "missing bearer token: send 'Authorization: Bearer <desk token>'",
                status=401,
                code="unauthenticated",
            )
        given = token.strip().encode()
        match: Credential | None = None
        for known, cred in self._credentials:  # every entry compared, so timing tells nothing
            if hmac.compare_digest(given, known):
                match = cred
        if match is None:
            raise Rejected("the desk token is not valid", status=403, code="forbidden")
        if match.office_level != CHANNEL_LEVEL[self.channel]:
            raise Rejected(
                f"this credential belongs to a {match.office_level} desk, not to {self.channel}",
                status=403,
                code="wrong_office",
            )
        return match

    def authenticate(self, request: InboundRequest) -> None:
        self.credential(request)

    def parse(self, request: InboundRequest) -> PushResult:
        cred = self.credential(request)
        data = parse_body(request)
        named = _text(data, "office_code", 50)
        if named is not None and named != cred.office_code:
            raise Rejected(
                f"this credential is bound to office {cred.office_code}, not {named}",
                status=403,
                code="wrong_office",
                field="office_code",
            )
        report = build_entry_report(self.settings, self.channel, cred.office_code, data)
        return PushResult([report])


def _desk(channel: str) -> type[DeskSource]:
    cls = type(
        "".join(p.capitalize() for p in channel.split("_")) + "Source",
        (DeskSource,),
        {"channel": channel, "route": f"/v1/channels/{channel}/entries", "__module__": __name__},
    )
    cls.__doc__ = f"Walk-in desk API for ``{channel}``."
    return cls


DeskKelurahanSource = _desk("desk_kelurahan")
DeskKecamatanSource = _desk("desk_kecamatan")
DeskWalikotaSource = _desk("desk_walikota")
DeskBalaikotaSource = _desk("desk_balaikota")
DeskInspektoratSource = _desk("desk_inspektorat")


# ------------------------------------------------------------------------------------------------------
# CSV batch import
# ------------------------------------------------------------------------------------------------------

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: str) -> str:
    """A cell a spreadsheet would run as a formula gets a leading apostrophe (CSV injection)."""
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


@dataclass
class ImportLine:
    line: int
    raw: bytes
    report: Report | None = None
    code: str | None = None
    reason: str | None = None


def read_csv_lines(
    path: Path, channel: str, office: str, officer: str, settings: Settings
) -> Iterator[ImportLine]:
    """Every data line of the file, parsed into a report or an error. Raises ValueError for a bad file."""
    raw_bytes = path.read_bytes()
    try:
        content = raw_bytes.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 (byte {exc.start}); save the sheet as CSV UTF-8") from None
    physical = content.splitlines(keepends=True)
    reader = csv.reader(io.StringIO(content, newline=""))
    try:
        header_row = next(reader)
    except StopIteration:
        raise ValueError(f"{path}: the file is empty") from None
    except csv.Error as exc:
        raise ValueError(f"{path}:1: unreadable header: {exc}") from None
    columns = [h.strip().lower() for h in header_row]
    known = {alias for aliases in ALIASES.values() for alias in aliases}
    if not any(c in ALIASES["text"] for c in columns):
        raise ValueError(f"{path}:1: no report text column (one of: {', '.join(ALIASES['text'])})")
    unknown = [c for c in columns if c and c not in known]
    if unknown:
        raise ValueError(
            f"{path}:1: unknown column(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    seen_content: dict[str, int] = {}
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = start
            start = reader.line_num + 1
            yield ImportLine(line, b"", code="malformed_csv", reason=f"unreadable CSV: {exc}")
            continue
        line, end = start, reader.line_num
        start = end + 1
        raw = "".join(physical[line - 1 : end]).encode()
        if not any(cell.strip() for cell in row):
            continue  # blank line
        if len(row) != len(columns):
            yield ImportLine(
                line,
                raw,
                code="bad_columns",
                reason=f"{len(row)} values but the header has {len(columns)} columns",
            )
            continue
        data = {c: v for c, v in zip(columns, row, strict=True) if c}
        data.setdefault("officer", officer)
        if not data.get("officer"):
            data["officer"] = officer
        try:
            # At most 200 characters, as through the API: a longer one made the envelope's provider id
            # too long, and its ValidationError (a ValueError) refused the whole file instead of the line.
            entry_id = _text(data, "entry_id", 200)
            if entry_id:
                provider_id = f"{office}:{entry_id}"
            else:
                # No entry id: the line's content (normalised) identifies it, so re-importing the same
                # file, or a longer version of it, finds the same ids; identical lines are told apart by
                # occurrence.
                canonical = "\x1f".join(" ".join(cell.split()) for cell in row)
                digest = hashlib.sha256(f"{office}\x1f{canonical}".encode()).hexdigest()[:32]
                n = seen_content.get(digest, 0) + 1
                seen_content[digest] = n
                provider_id = f"{office}:csv:{digest}:{n}"
            report = build_entry_report(settings, channel, office, data, provider_id=provider_id)
        except Rejected as exc:
            yield ImportLine(line, raw, code=exc.code, reason=exc.reason)
            continue
        yield ImportLine(line, raw, report=report)


def import_main(
    args: Any, *, settings: Settings | None = None, out: Callable[[str], None] | None = None
) -> int:
    """``crm-pipeline desk-import FILE.csv --channel desk_kelurahan --office CODE --officer NAME``.

    Exit codes: 0 every line imported; 1 the broker did not take them (nothing is lost: run it again);
    2 bad usage, an unreadable file, or some lines invalid (those are listed as ``FILE:LINE: reason``,
    sent to the dead-letter topic and, with ``--errors-out``, written to a CSV to fix and re-import;
    the valid lines are imported all the same). Re-importing a file never duplicates a report.
    """
    import asyncio

    from ..settings import get_settings

    settings = settings or get_settings()
    from tqdm import tqdm

    # tqdm.write keeps the per-line errors from tearing the progress bar.
    err = out or (lambda s: tqdm.write(s, file=sys.stderr))
    if args.channel not in CHANNEL_LEVEL:
        err(f"error: --channel must be one of {', '.join(CHANNEL_LEVEL)}")
        return 2
    try:
        office_name = check_office(args.channel, args.office)
    except ValueError as exc:
        err(f"error: --office: {exc}")
        return 2
    if not args.officer or not args.officer.strip():
        err("error: --officer must name the officer who took the reports")
        return 2
    path = Path(args.file)
    if not path.is_file():
        err(f"error: {path}: no such file")
        return 2
    try:
        lines = list(read_csv_lines(path, args.channel, args.office.strip(), args.officer.strip(), settings))
    except ValueError as exc:
        err(f"error: {exc}")
        return 2
    try:
        return asyncio.run(_publish_import(settings, args, path, office_name, lines, err))
    except KeyboardInterrupt:
        return 1


async def _publish_import(
    settings: Settings,
    args: Any,
    path: Path,
    office_name: str,
    lines: list[ImportLine],
    err: Callable[[str], None],
) -> int:
    from tqdm import tqdm

    from ..deadletter import DeadLetter
    from ..envelope import RawRef
    from ..publish import Publisher, PublishError, make_producer

    producer = make_producer(settings, client_id="crm-desk-import")
    try:
        await producer.start()
    except Exception as exc:  # aiokafka raises KafkaConnectionError and friends
        err(f"error: cannot reach Kafka at {settings.kafka_bootstrap}: {exc}")
        return 1
    publisher = Publisher(settings, producer)
    imported = invalid = 0
    failed: list[ImportLine] = []
    try:
        batch: list[tuple[str, bytes | None, bytes]] = []
        batch_lines = 0
        with tqdm(total=len(lines), unit="line", desc=path.name, file=sys.stderr, disable=args.quiet) as bar:
            for item in lines:
                if item.report is not None:
                    # The raw record keeps who took the report, where, and from which file line.
                    raw = orjson.dumps(
                        {
                            "file": path.name,
                            "line": item.line,
                            "office_code": args.office,
                            "officer": args.officer,
                            "csv": item.raw.decode(errors="replace"),
                        }
                    )
                    sha = hashlib.sha256(raw).hexdigest()
                    item.report.raw_ref = RawRef(
                        topic=publisher.topics.raw,
                        key=sha,
                        sha256=sha,
                        size=len(raw),
                        content_type="application/json",
                    )
                    batch.append((publisher.topics.raw, sha.encode(), raw))
                    batch.append(
                        (
                            publisher.topics.ingest(args.channel),
                            item.report.report_id.encode(),
                            item.report.dumps(),
                        )
                    )
                    imported += 1
                else:
                    invalid += 1
                    failed.append(item)
                    err(f"{path}:{item.line}: {item.reason}")
                    letter = DeadLetter.build(
                        raw=item.raw,
                        cap=settings.dead_letter_raw_cap_bytes,
                        channel=args.channel,
                        stage="import",
                        code=item.code or "invalid",
                        reason=f"{path.name}:{item.line}: {item.reason}",
                        content_type="text/csv",
                        meta={
                            "file": path.name,
                            "line": item.line,
                            "office_code": args.office,
                            "officer": args.officer,
                        },
                    )
                    batch.append((publisher.topics.deadletter, letter.raw_sha256.encode(), letter.dumps()))
                batch_lines += 1
                if len(batch) >= 400:
                    await publisher.send_many(batch)
                    bar.update(batch_lines)
                    batch, batch_lines = [], 0
            if batch:
                await publisher.send_many(batch)
                bar.update(batch_lines)
    except PublishError as exc:
        err(f"error: the broker did not confirm the import ({exc}); nothing was lost, run the command again")
        return 1
    finally:
        await producer.stop()

    if failed and args.errors_out:
        write_errors_csv(Path(args.errors_out), path, failed)
    print(
        f"{path.name}: {imported} imported, {invalid} invalid, {len(lines)} lines "
        f"({args.channel}, office {args.office} {office_name}, officer {args.officer})"
    )
    return 0 if invalid == 0 else 2


def write_errors_csv(target: Path, source: Path, failed: list[ImportLine]) -> None:
    """The refused lines with their reasons, as CSV a person opens in a spreadsheet: formulas neutralised."""
    with target.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "line", "code", "reason", "original_line"])
        for item in failed:
            cells = [
                source.name,
                str(item.line),
                item.code or "",
                item.reason or "",
                item.raw.decode(errors="replace").rstrip("\r\n"),
            ]
            writer.writerow([neutralise_cell(c) for c in cells])
