"""``lapor1708``: reports the national SP4N-LAPOR! system forwards (disposisi) to the province, polled.

There is no public specification of the LAPOR! integration API for this pipeline, so this module
fixes the shape it expects; these are assumptions, to be checked against the real integration
agreement (only this module changes if they are wrong):

Request::

    GET {CRM_LAPOR_API_BASE}/v1/integrasi/laporan?updated_since=<ISO 8601>&after_id=<id>&limit=<n>
    X-Lapor-Token: <CRM_LAPOR_TOKEN>            (header name: CRM_LAPOR_TOKEN_HEADER)
    Accept: application/json

* only reports forwarded to this instance (Pemprov DKI Jakarta) are returned;
* ordered ascending by ``(updated_at, id)``; the API returns items with
  ``(updated_at, id) > (updated_since, after_id)``; both parameters absent = from the beginning;
* ``limit`` at most 500; ``meta.has_more`` says whether another page is waiting.

Response ``200 application/json``::

    {"data": [{
        "id": 4312876,                          # LAPOR! report id (number or string): the provider id
        "tracking_id": "LPR-4312876",           # optional, the code citizens see
        "title": "Jalan berlubang",             # optional
        "content": "Isi laporan ...",           # required: the report text
        "category": "Infrastruktur",            # optional: becomes category_hint
        "location": "Jl. ..., Kel. ..., Kec. ...",  # optional free-text address
        "latitude": -6.2, "longitude": 106.8,   # optional, both or neither
        "created_at": "2024-03-01T08:15:00+07:00",  # when the citizen sent it
        "updated_at": "2024-03-02T10:00:00+07:00",  # required: the cursor position
        "status": "Diteruskan",                 # optional
        "is_anonymous": false,                  # reporter identity withheld by LAPOR!
        "is_confidential": false,               # "rahasia": not to be named publicly
        "reporter": {"id": "u-8812", "name": "...", "email": "...", "phone": "..."} | null,
        "attachments": [{"url": "https://...", "file_name": "a.jpg", "mime_type": "image/jpeg", "size": 1234}]
     }],
     "meta": {"has_more": false}}

Answers other than 200: 401/403 bad token (nothing is published; the runner backs off and logs),
429 with ``Retry-After`` seconds (honoured), 5xx (backoff). Timestamps without an offset are WIB
(+07:00). The cursor is ``{"updated_at": ..., "id": ...}`` of the last item covered; items at or
before it are dropped locally too, so an API that includes the boundary item never yields a repeat.
A report LAPOR! updates later comes back with the same provider id, hence the same report id: the
worker's dedup keeps the first one.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import aiohttp
import orjson
from pydantic import ValidationError

from ..envelope import Attachment, Contact, Location, Report, Reporter, max_length, reporter_pseudonym
from ..settings import Settings
from .base import PollSource
from .common import in_jakarta, in_utc_range, is_url, normalise_email, normalise_phone
from .config import core_view
from .poller import PollAuthError, PolledBatch, PollError

WIB = timezone(timedelta(hours=7))
MAX_REPORTER_ID = max_length(Contact, "handle") - len("lapor:")  # the handle is "lapor:<id>"
PATH = "/v1/integrasi/laporan"


class ItemError(ValueError):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def parse_time(value: Any, name: str) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise ItemError("bad_field", f"{name} must be an ISO 8601 timestamp, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ItemError("bad_field", f"{name} is not an ISO 8601 timestamp: {value!r}") from None
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=WIB)
    if not in_utc_range(parsed):
        raise ItemError("bad_field", f"{name} is out of range (year 1 to 9999 in UTC): {value!r}")
    return parsed


MAX_ID = 200


def _id_key(value: str) -> tuple[int, int, str]:
    # isdigit() alone admits '\u00b2' and other digits int() refuses; callers cap the length (int() refuses
    # more than 4300 digits)
    return (0, int(value), "") if value.isascii() and value.isdigit() else (1, 0, value)


def position(updated_at: str, item_id: str) -> tuple[datetime, tuple[int, int, str]]:
    return parse_time(updated_at, "updated_at"), _id_key(item_id)


def _opt_text(item: dict[str, Any], key: str, max_len: int) -> str | None:
    value = item.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ItemError("bad_field", f"{key} must be a string, got {type(value).__name__}")
    value = value.strip()
    return value[:max_len] or None


LaporSettings = core_view(
    "LaporSettings",
    "CRM_LAPOR_",
    ["lapor_api_base", "lapor_token", "lapor_token_header", "lapor_poll_interval_s", "lapor_page_size"],
)


class LaporSource(PollSource):
    channel: ClassVar[str] = "lapor1708"
    settings_model = LaporSettings

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.interval_s = settings.lapor_poll_interval_s  # type: ignore[misc]
        self._session: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def stop(self) -> None:
        await self.aclose()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self._session

    async def fetch(self, cursor: str | None) -> PolledBatch:
        state = orjson.loads(cursor) if cursor else {}
        params = {"limit": str(self.settings.lapor_page_size)}
        if state:
            params["updated_since"], params["after_id"] = state["updated_at"], state["id"]
        headers = {
            self.settings.lapor_token_header: self.settings.lapor_token.get_secret_value(),
            "Accept": "application/json",
        }
        url = self.settings.lapor_api_base.rstrip("/") + PATH
        try:
            async with self._http().get(url, params=params, headers=headers) as resp:
                body = await resp.read()
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PollError(f"LAPOR! API unreachable: {exc!r}") from exc
        if status in (401, 403):
            raise PollAuthError(f"LAPOR! API refused the token ({status}): check CRM_LAPOR_TOKEN")
        if status == 429:
            wait = float(retry_after) if retry_after and retry_after.isdigit() else self.interval_s
            return PolledBatch(reports=[], next_cursor=None, retry_at=time.time() + wait)
        if status != 200:
            raise PollError(f"LAPOR! API answered {status}: {body[:200]!r}")
        return self.parse_page(body, state)

    def parse_page(self, body: bytes, state: dict[str, str]) -> PolledBatch:
        """Turn one page into reports; bad items become rejects, a bad page one reject and no move."""
        try:
            page = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return PolledBatch(
                reports=[], next_cursor=None, rejects=[(body, f"malformed_json: LAPOR! page: {exc}")]
            )
        if not isinstance(page, dict) or not isinstance(page.get("data"), list):
            return PolledBatch(
                reports=[],
                next_cursor=None,
                rejects=[(body, "malformed_page: LAPOR! page must be an object with a 'data' list")],
            )
        floor = position(state["updated_at"], state["id"]) if state else None
        last: tuple[Any, dict[str, str]] | None = None
        meta = page.get("meta")
        more = isinstance(meta, dict) and bool(meta.get("has_more"))
        batch = PolledBatch(reports=[], next_cursor=None, more=more)
        for item in page["data"]:
            raw = orjson.dumps(item)
            try:
                if not isinstance(item, dict):
                    raise ItemError("bad_item", "a LAPOR! item must be a JSON object")
                item_id = item.get("id")
                if (
                    isinstance(item_id, bool)
                    or not isinstance(item_id, int | str)
                    or not str(item_id).strip()
                ):
                    raise ItemError("bad_field", f"id must be a number or string, got {item_id!r}")
                item_id = str(item_id).strip()
                if len(item_id) > MAX_ID:
                    raise ItemError("bad_field", f"id is {len(item_id)} characters long (at most {MAX_ID})")
                pos = position(item.get("updated_at"), item_id)  # type: ignore[arg-type]
            except ItemError as exc:
                batch.rejects.append((raw, f"{exc.code}: {exc.reason}"))
                continue
            if floor is not None and pos <= floor:
                continue  # overlap with what the cursor already covers
            if last is None or pos > last[0]:
                last = (pos, {"updated_at": item["updated_at"], "id": item_id})
            try:
                report = self.to_report(item, item_id)
            except ItemError as exc:
                batch.rejects.append((raw, f"{exc.code}: {exc.reason} (LAPOR! id {item_id})"))
                continue
            except ValidationError as exc:
                batch.rejects.append((raw, f"bad_item: LAPOR! id {item_id}: {exc.errors()[0]['msg']}"))
                continue
            batch.reports.append(report)
            batch.raws[report.report_id] = (raw, "application/json")
        if last is not None:
            batch.next_cursor = orjson.dumps(last[1]).decode()
        else:
            batch.more = False  # no progress on this page: do not spin on it
        return batch

    def to_report(self, item: dict[str, Any], item_id: str) -> Report:
        title = _opt_text(item, "title", 500)
        content = _opt_text(item, "content", 19000)
        if content is None:
            raise ItemError("missing_text", "content (the report text) is missing or empty")
        text = f"{title}\n\n{content}" if title and not content.startswith(title) else content

        anonymous = bool(item.get("is_anonymous"))
        who = item.get("reporter")
        if who is not None and not isinstance(who, dict):
            raise ItemError("bad_field", "reporter must be an object or null")
        contact = None
        reporter_id = "anonymous"
        if who and not anonymous:
            contact = Contact(name=_opt_text(who, "name", 200))
            email, phone = _opt_text(who, "email", 320), _opt_text(who, "phone", 32)
            try:
                contact.email = normalise_email(email) if email else None
            except ValueError:
                contact.email = None
            try:
                contact.phone = normalise_phone(phone) if phone else None
            except ValueError:
                contact.phone = None
            lapor_user = who.get("id")
            if lapor_user not in (None, "") and (
                isinstance(lapor_user, bool)
                or not isinstance(lapor_user, int | str)
                or len(str(lapor_user)) > MAX_REPORTER_ID
            ):
                # the handle was not validated on assignment: the envelope went out past its 200-character
                # limit and the worker dead-lettered it as "not a valid report envelope"
                raise ItemError(
                    "bad_field",
                    f"reporter.id must be a number or a string of at most {MAX_REPORTER_ID} characters",
                )
            contact.handle = f"lapor:{lapor_user}" if lapor_user not in (None, "") else None
            if contact.email:
                reporter_id = reporter_pseudonym(self.reporter_key, "email", contact.email)
            elif contact.phone:
                reporter_id = reporter_pseudonym(self.reporter_key, "phone", contact.phone)
            elif contact.handle:
                reporter_id = reporter_pseudonym(self.reporter_key, "lapor", str(lapor_user))
            if not (contact.name or contact.email or contact.phone or contact.handle):
                contact = None

        location = Location(address=_opt_text(item, "location", 1000))
        lat, lon = item.get("latitude"), item.get("longitude")
        if lat is not None and lon is not None:
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lat, lon)):
                raise ItemError("bad_coordinates", "latitude/longitude must be numbers")
            if in_jakarta(float(lat), float(lon)):
                location.lat, location.lon = float(lat), float(lon)

        attachments = []
        raw_attachments = item.get("attachments") or []
        if not isinstance(raw_attachments, list):
            raise ItemError("bad_attachments", "attachments must be a list")
        for att in raw_attachments[:50]:
            if not isinstance(att, dict) or not isinstance(att.get("url"), str) or not is_url(att["url"]):
                raise ItemError("bad_attachments", f"attachment {att!r} has no http(s) url")
            size = att.get("size")
            attachments.append(
                Attachment(
                    url=att["url"],
                    name=_opt_text(att, "file_name", 300),
                    media_type=_opt_text(att, "mime_type", 100),
                    size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
                )
            )

        created = item.get("created_at")
        return Report.create(
            channel=self.channel,
            provider_id=item_id,
            source_at=parse_time(created, "created_at") if created else None,
            reporter=Reporter(id=reporter_id, private=bool(item.get("is_confidential"))),
            contact=contact,
            text=text,
            category_hint=_opt_text(item, "category", 200),
            location=location,
            attachments=attachments,
        )
