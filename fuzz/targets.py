"""One entry point per parser, shared by the atheris fuzz targets (``fuzz/fuzz_*.py``) and the
hypothesis property tests (``tests/test_parsers_property.py``).

Each target feeds bytes to a parser the way the pipeline does and checks the contract: the parser
returns, or refuses with :class:`~pipeline.sources.base.Rejected` carrying a non-empty reason and code
(or, for the poll adapters, the error type their runner documents). Anything else escapes and is a bug.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from pipeline.envelope import Report
from pipeline.settings import Settings
from pipeline.sources.base import InboundRequest, PushSource, Rejected
from pipeline.sources.desk import DeskKelurahanSource, read_csv_lines
from pipeline.sources.email import EmailGatewaySource
from pipeline.sources.jaki import JakiSource
from pipeline.sources.lapor import LaporSource
from pipeline.sources.meta import FacebookPageSource, GovernorSocialSource, sign
from pipeline.sources.poller import PolledBatch
from pipeline.sources.sms import SmsGatewaySource, gateway_signature, twilio_signature
from pipeline.sources.twitter import TwitterSource, _Page

SETTINGS = Settings(env="test")
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def check_rejected(exc: Rejected) -> None:
    if not (isinstance(exc.reason, str) and exc.reason.strip()):
        raise AssertionError(f"Rejected without a reason: {exc!r}")
    if not (isinstance(exc.code, str) and exc.code) or not 400 <= exc.status < 500:
        raise AssertionError(f"Rejected with a bad code/status: {exc.code!r} {exc.status}")


def check_report(report: Report) -> None:
    """A report must serialise and read back: the worker dead-letters an envelope past its limits."""
    Report.loads(report.dumps())


def push(adapter: PushSource, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
    """authenticate + parse as the ingress does; every report must serialise (envelope schema)."""
    request = InboundRequest(
        method="POST",
        path=adapter.route,
        headers={"Content-Type": ctype, **(headers or {})},
        query={},
        body=body,
        remote="127.0.0.1",
        url="http://127.0.0.1:8080" + adapter.route,
    )
    try:
        adapter.authenticate(request)
        result = adapter.parse(request)
    except Rejected as exc:
        check_rejected(exc)
        return
    for report in result.reports:
        check_report(report)


WEB = __import__("pipeline.sources.web", fromlist=["WebFormSource"]).WebFormSource(SETTINGS)
JAKI = JakiSource(SETTINGS)
FACEBOOK = FacebookPageSource(SETTINGS)
GOVERNOR = GovernorSocialSource(SETTINGS)
SMS = SmsGatewaySource(SETTINGS)
DESK = DeskKelurahanSource(SETTINGS)
EMAIL = EmailGatewaySource(SETTINGS)
TWITTER = TwitterSource(SETTINGS)
LAPOR = LaporSource(SETTINGS)


def web(data: bytes) -> None:
    push(WEB, data, JSON)
    push(WEB, data, FORM)


def jaki(data: bytes) -> None:
    push(JAKI, data, JSON, {"Authorization": f"Bearer {SETTINGS.jaki_token.get_secret_value()}"})


def meta(data: bytes) -> None:
    for adapter in (FACEBOOK, GOVERNOR):
        push(adapter, data, JSON, {"X-Hub-Signature-256": sign(adapter.app_secret(), data)})


def sms_twilio(data: bytes) -> None:
    from urllib.parse import parse_qsl

    try:
        params = parse_qsl(data.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        params = []
    url = "http://127.0.0.1:8080" + SMS.route
    sig = twilio_signature(SETTINGS.sms_twilio_auth_token.get_secret_value(), url, params)
    push(SMS, data, FORM, {"X-Twilio-Signature": sig})


def sms_gateway(data: bytes) -> None:
    stamp = str(int(time.time()))
    sig = gateway_signature(SETTINGS.sms_gateway_secret.get_secret_value(), stamp, data)
    push(SMS, data, JSON, {"X-Gateway-Timestamp": stamp, "X-Gateway-Signature": sig})


def desk_api(data: bytes) -> None:
    push(DESK, data, JSON, {"Authorization": "Bearer dev-only-desk-kelurahan"})


# CRM_FUZZ_TMP: where a run's scratch files and seed corpus go (the test suite passes its tmp_path).
SCRATCH = Path(os.environ.get("CRM_FUZZ_TMP") or tempfile.gettempdir())
_TMP = SCRATCH / f"crm-fuzz-desk-{os.getpid()}.csv"


def desk_csv(data: bytes) -> None:
    """The offline desk CSV import: a bad file is a ValueError with the reason, a bad line an error line."""
    _TMP.write_bytes(data)
    try:
        lines = list(read_csv_lines(_TMP, "desk_kelurahan", "31.71.01.1001", "Petugas", SETTINGS))
    except ValueError as exc:
        if not str(exc).strip():
            raise AssertionError("ValueError without a reason") from exc
        if isinstance(exc, ValidationError):  # one bad line's envelope error must not refuse the file
            raise
        return
    for line in lines:
        if line.report is None and not (line.code and line.reason):
            raise AssertionError(f"line {line.line} refused without a code/reason")
        if line.report is not None:
            check_report(line.report)
    # The refused lines' export must be free of spreadsheet formulas.
    from pipeline.sources.desk import write_errors_csv

    out = _TMP.with_suffix(".errors.csv")
    write_errors_csv(out, _TMP, [line for line in lines if line.report is None])
    for row in csv.reader(io.StringIO(out.read_text(encoding="utf-8"), newline="")):
        for cell in row:
            if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
                raise AssertionError(f"formula cell in the errors export: {cell!r}")


def email(data: bytes) -> None:
    try:
        parsed = EMAIL.parse(data, "warga@example.com")
    except Rejected as exc:
        check_rejected(exc)
        return
    check_report(parsed.report)
    if parsed.no_ack is None:
        # The acknowledgement must build without header injection or crash.
        ack = EMAIL.acknowledgement(parsed).as_bytes()
        head = ack.split(b"\n\n", 1)[0]
        if b"\nBcc:" in head:
            raise AssertionError("header injected into the acknowledgement")


def twitter(data: bytes) -> None:
    """An X API page: ValueError for a page that is not an object; per item, the errors _add catches."""
    try:
        page = _Page(data)
    except ValueError:
        return  # orjson.JSONDecodeError is a ValueError: the runner dead-letters the page
    # The adapter's own per-item path: every item becomes a report or a reject with a reason.
    batch = PolledBatch(reports=[], next_cursor=None)
    for item in page.data:
        for kind in ("tweet", "dm"):
            TWITTER._add(batch, item, page, kind)
    for raw, reason in batch.rejects:
        if not reason:
            raise AssertionError(f"reject without a reason: {raw!r}")


def lapor(data: bytes) -> None:
    """A LAPOR! page never raises: bad items and pages become rejects with reasons."""
    batch = LAPOR.parse_page(data, {})
    for raw, reason in batch.rejects:
        if not reason.strip() or not isinstance(raw, bytes):
            raise AssertionError("reject without a reason")
    for report in batch.reports:
        check_report(report)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "web": web,
    "jaki": jaki,
    "meta": meta,
    "sms_twilio": sms_twilio,
    "sms_gateway": sms_gateway,
    "desk_api": desk_api,
    "desk_csv": desk_csv,
    "email": email,
    "twitter": twitter,
    "lapor": lapor,
}

#: Seed inputs (valid shapes) so the fuzzer starts from what the providers send.
SEEDS: dict[str, list[bytes]] = {
    "web": [
        b'{"text": "Lampu PJU mati di Jl. Pramuka", "email": "a@example.com", "lat": -6.2, "lon": 106.8}',
        b"laporan=Jalan+rusak+parah+sekali&no_hp=08123456789",
        # is_url() passed a 2001-2008 character URL: the envelope's ValidationError (found by reading)
        b'{"text": "Lampu PJU mati di Jl. Pramuka", "attachments": ["https://' + b"a" * 1995 + b'"]}',
    ],
    "jaki": [
        b'{"report_id": "J-1", "text": "Pohon tumbang", "location": {"lat": -6.2, "lng": 106.8}}',
        # year 1 at +01:00 is year 0 in UTC: the envelope's UTC conversion raised OverflowError
        b'{"report_id": "J-1", "text": "Pohon tumbang", "created_at": "0001-01-01T00:00:00+01:00"}',
    ],
    "meta": [
        b'{"object": "page", "entry": [{"id": "1", "time": 1700000000, "changes": [{"field": "feed",'
        b' "value": {"item": "comment", "verb": "add", "comment_id": "1_2", "message": "Banjir",'
        b' "from": {"id": "9", "name": "Ani"}}}]}]}',
        b'{"object": "page", "entry": [{"id": "1", "messaging": [{"sender": {"id": "9"},'
        b' "message": {"mid": "m_1", "text": "Sampah"}}]}]}',
        # '\u00b2'.isdigit() but int() refused it: ValueError out of the replay check (found by reading)
        b'{"object": "page", "entry": [{"id": "1", "time": "\xc2\xb2", "messaging": []}]}',
        # attachments not a list: TypeError; a 201-character sender id: the envelope's ValidationError
        b'{"object": "page", "entry": [{"id": "1", "messaging": [{"sender": {"id": "9"},'
        b' "message": {"mid": "m_1", "text": "Sampah", "attachments": 5}}]}]}',
        b'{"object": "page", "entry": [{"id": "1", "messaging": [{"sender": {"id": "' + b"9" * 201 + b'"},'
        b' "message": {"mid": "m_1", "text": "Sampah"}}]}]}',
    ],
    "sms_twilio": [
        b"MessageSid=SM1&From=%2B6281234567890&Body=Lampu+mati&NumMedia=0",
        # a 101-character MediaContentType went to the envelope as is: ValidationError (found by reading)
        b"MessageSid=SM1&From=%2B6281234567890&Body=Lampu+mati&NumMedia=1&MediaUrl0=https%3A%2F%2Fx.id%2Fa"
        b"&MediaContentType0=" + b"t" * 101,
    ],
    "sms_gateway": [
        b'{"id": "g1", "from": "0812 3456 7890", "parts": [{"ref": "a", "part": 1, "total": 2,'
        b' "text": "Jalan "}, {"ref": "a", "part": 2, "total": 2, "text": "rusak"}]}',
        b'{"id": "g1", "from": "0812 3456 7890", "text": "Banjir",'
        b' "received_at": "9999-12-31T23:59:59-01:00"}',
    ],
    "desk_api": [
        b'{"entry_id": "E1", "officer": "Siti", "text": "Saluran air tersumbat", "phone": "0812345678"}',
        b'{"entry_id": "E1", "officer": "Siti", "text": "Saluran air tersumbat",'
        b' "taken_at": "0001-01-01T00:00:00+01:00"}',
    ],
    "desk_csv": [
        b"text,phone,name\nJalan rusak di gang 3,0812345678,Ani\n=cmd|' /C calc'!A0,,\n",
        b"text,taken_at\nSaluran air tersumbat,0001-01-01T00:00:00+01:00\n",
        # an entry_id over 200 characters refused the whole file (the envelope's ValidationError)
        b"text,entry_id\nSaluran air tersumbat," + b"E" * 600 + b"\n",
    ],
    "email": [
        b"From: Ani <ani@example.com>\r\nTo: dki@jakarta.go.id\r\nSubject: Jalan rusak\r\n"
        b"Message-ID: <1@example.com>\r\n\r\nJalan berlubang.\r\n",
        # CPython 3.11's Message-ID parser raised UnboundLocalError on an empty domain literal (CI's fuzz run)
        b"From: Ai <ani@example.co\nMessage-ID: <1@[\n\r\nJalaex",
    ],
    "twitter": [
        b'{"data": [{"id": "1", "text": "@DKIJakarta banjir", "author_id": "5"}],'
        b' "includes": {"users": [{"id": "5", "username": "ani"}]}, "meta": {"newest_id": "1"}}',
        b'{"data": [{"id": "1", "text": "banjir", "author_id": "5",'
        b' "created_at": "0001-01-01T00:00:00+01:00"}]}',
    ],
    "lapor": [
        b'{"data": [{"id": 1, "content": "Jalan rusak", "updated_at": "2024-03-02T10:00:00+07:00",'
        b' "reporter": {"email": "a@example.com"}}], "meta": {"has_more": false}}',
        b'{"data": [{"id": 1, "content": "Jalan rusak", "updated_at": "2024-03-02T10:00:00",'
        b' "created_at": "0001-01-01T00:00:00"}]}',
        # a reporter id over 194 characters: an envelope the worker refuses (contact.handle over 200)
        b'{"data": [{"id": 1, "content": "Jalan rusak", "updated_at": "2024-03-02T10:00:00",'
        b' "reporter": {"id": "' + b"u" * 300 + b'"}}]}',
        # '\u00b2'.isdigit() but int() refused it: ValueError out of parse_page (found by reading)
        b'{"data": [{"id": "\xc2\xb2", "content": "Jalan rusak", "updated_at": "2024-03-02T10:00:00"}]}',
    ],
}
