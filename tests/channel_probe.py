"""A Telegram-style bot channel, as a plug-in of its own, for the tests of the fuller adapter contract.

It uses everything the contract offers beside ``parse`` (docs/channels.md): declared settings with a
secret, ``start()`` (checks the bot token with ``getMe``) and ``stop()`` (says ``bye`` so the test sees
it ran), an ``async def parse`` that looks a photo's file path up with ``getFile`` while parsing,
the metrics handle (updates that are not messages), an account-only reporter (the chat id) and
``refused_status = 200`` because the provider retries every non-2xx answer. :class:`BotApi` is the
provider's local stand-in; the adapter is registered through a dist-info folder (:func:`plugin_site`)
exactly as ``pip install`` would register it.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import orjson
from aiohttp import web
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from pipeline.envelope import Attachment, Contact, Report
from pipeline.sources.base import InboundRequest, PushResult, PushSource, Rejected
from pipeline.sources.common import header
from pipeline.sources.config import ChannelSettings

CHANNEL = "probe"
ROUTE = "/v1/channels/probe/webhook"
MEDIA_ONLY_TEXT = "(foto tanpa keterangan)"
ENTRY_POINTS = {"crm_pipeline.sources": {CHANNEL: "tests.channel_probe:ProbeSource"}}


class ProbeSettings(ChannelSettings):
    model_config = SettingsConfigDict(env_prefix="CRM_PROBE_", extra="ignore")

    secret_token: SecretStr = Field(
        SecretStr("dev-only-probe-secret-token"), description="X-Telegram-Bot-Api-Secret-Token"
    )
    api_base: str = Field("http://127.0.0.1:9/bot", description="the Bot API, with the bot's token")
    lookup_timeout_s: float = Field(5.0, gt=0, description="getFile while parsing")


class ProbeSource(PushSource):
    channel: ClassVar[str] = CHANNEL
    route: ClassVar[str] = ROUTE
    settings_model = ProbeSettings
    refused_status = 200  # Telegram retries every non-2xx and holds the chat's later updates back

    http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.lookup_timeout_s))
        async with self.http.get(f"{self.config.api_base}/getMe") as resp:
            if resp.status != 200:
                await self.http.close()
                raise RuntimeError(f"getMe answered {resp.status}: check the bot token")

    async def stop(self) -> None:
        if self.http is not None:
            async with self.http.post(f"{self.config.api_base}/bye") as resp:
                await resp.read()
            await self.http.close()
            self.http = None

    def authenticate(self, request: InboundRequest) -> None:
        given = header(request, "X-Telegram-Bot-Api-Secret-Token") or ""
        if not given:
            raise Rejected("missing X-Telegram-Bot-Api-Secret-Token", status=401, code="unauthenticated")
        if not hmac.compare_digest(given.encode(), self.config.secret_token.get_secret_value().encode()):
            raise Rejected("wrong secret token", status=403, code="bad_token")

    async def parse(self, request: InboundRequest) -> PushResult:
        try:
            update = orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            raise Rejected(f"malformed JSON: {exc}", code="malformed_json") from None
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            raise Rejected("an update without its update_id", code="malformed_update", field="update_id")
        message = update.get("message")
        if message is None:  # edited messages, channel posts, callbacks…: not reports
            self.metrics.ignored(reason="update_type")
            return PushResult([], response={"ok": True, "accepted": 0, "ignored": 1}, status=200)
        chat = (message.get("chat") or {}).get("id") if isinstance(message, dict) else None
        if not isinstance(chat, int):
            raise Rejected("a message without its chat id", code="malformed_update", field="chat")
        attachments = []
        photos = message.get("photo") or []
        if photos:
            file_id = max(photos, key=lambda p: p.get("file_size", 0)).get("file_id")
            attachments.append(Attachment(url=await self._file_url(str(file_id)), media_type="image/jpeg"))
        text = (message.get("text") or message.get("caption") or "").strip()
        if not text and attachments:
            text = MEDIA_ONLY_TEXT
        if not text:
            raise Rejected("a message with neither text nor photo", code="empty_message")
        report = Report.create(
            channel=self.channel,
            provider_id=str(update["update_id"]),
            source_at=datetime.fromtimestamp(int(message.get("date", 0)), UTC)
            if message.get("date")
            else None,
            reporter=self.account_reporter(str(chat)),
            contact=Contact(handle=str(chat), name=(message.get("from") or {}).get("first_name")),
            text=text,
            attachments=attachments,
        )
        return PushResult([report], response={"ok": True, "accepted": 1, "ignored": 0}, status=200)

    async def _file_url(self, file_id: str) -> str:
        assert self.http is not None, "start() opens the session"
        try:
            async with self.http.get(f"{self.config.api_base}/getFile", params={"file_id": file_id}) as resp:
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise Rejected(f"getFile failed: {exc!r}", code="media_lookup") from None
        if not data.get("ok"):
            raise Rejected(f"getFile refused file {file_id}", code="media_lookup")
        # The download URL embeds the bot token: keep a reference, the channel's media fetcher adds it.
        return f"probe-file:{data['result']['file_path']}"


def update(update_id: int, chat: int, text: str | None = None, photo: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"message_id": update_id % 1000, "date": 1714540800, "chat": {"id": chat}}
    message["from"] = {"id": chat, "first_name": "Sari"}
    if text is not None:
        message["text" if photo is None else "caption"] = text
    if photo is not None:
        message["photo"] = [{"file_id": f"{photo}-s", "file_size": 10}, {"file_id": photo, "file_size": 900}]
    return {"update_id": update_id, "message": message}


class BotApi:
    """The Bot API, local: getMe, getFile, and bye (what stop() says), in a thread of the test process."""

    def __init__(self, token: str = "123:probe") -> None:  # noqa: S107 - a test bot token
        self.token = token
        self.calls: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot{self.token}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/bot{token}/getMe", self._me)
        app.router.add_get("/bot{token}/getFile", self._file)
        app.router.add_post("/bot{token}/bye", self._bye)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def _authorised(self, request: web.Request) -> bool:
        return request.match_info["token"] == self.token

    async def _me(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"ok": False, "description": "Unauthorized"}, status=401)
        self.calls.append("getMe")
        return web.json_response({"ok": True, "result": {"id": 123, "is_bot": True, "username": "probe_bot"}})

    async def _file(self, request: web.Request) -> web.Response:
        file_id = request.query.get("file_id", "")
        self.calls.append(f"getFile:{file_id}")
        if not self._authorised(request) or not file_id:
            return web.json_response({"ok": False}, status=400)
        return web.json_response(
            {"ok": True, "result": {"file_id": file_id, "file_path": f"photos/{file_id}.jpg"}}
        )

    async def _bye(self, request: web.Request) -> web.Response:
        self.calls.append("bye")
        return web.json_response({"ok": True})

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def plugin_site(tmp: Path, name: str, version: str, entry_points: dict[str, dict[str, str]]) -> Path:
    """A folder that makes ``name`` look pip-installed (its entry points in a dist-info) once on the
    path (``sys.path`` or ``PYTHONPATH``)."""
    info = tmp / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, eps in entry_points.items():
        lines += [f"[{group}]", *(f"{ep} = {target}" for ep, target in eps.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines))
    return tmp
