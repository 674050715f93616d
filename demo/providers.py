"""Small local stand-ins for the providers ``make demo`` talks to, all on 127.0.0.1.

One aiohttp app serves, under path prefixes (so one port is enough):

* ``/x``      — the X API v2 as the ``twitter`` poll adapter and the notifier use it: ``GET /2/users/me``,
  ``/2/users/:id/mentions`` (``since_id``, ``max_results``, ``pagination_token``), ``/2/dm_events``,
  ``/2/users/by/username/:name``, and the write calls ``POST /2/tweets`` and
  ``POST /2/dm_conversations/with/:id/messages``. Same recorded shapes as ``tests/test_source_twitter.py``
  (``data`` / ``includes.users`` / ``meta`` with ``newest_id``, ``oldest_id``, ``result_count``).
* ``/lapor``  — the SP4N-LAPOR! integration API (``GET /v1/integrasi/laporan`` with ``updated_since``,
  ``after_id``, ``limit``, ``meta.has_more``), as ``pipeline/sources/lapor.py`` documents it.
* ``/sms``    — the SMS gateway's send API (``POST /v1/send``) the notifier answers SMS reporters with.
* ``/jaki``   — the JAKI backend's callback endpoint (``POST /v1/crm/callbacks``): checks the HMAC
  signature and timestamp the way ``pipeline/crm/notify/channel_replies.py`` documents, answers a repeated
  ``Idempotency-Key`` as before without a second push.
* ``/lapor``  also takes follow-ups (``POST /v1/integrasi/laporan/<id>/tindak-lanjut``, same token).
* ``/graph``  — the Meta Graph API calls of the notifier (``POST /<version>/<id>/comments``,
  ``POST /<version>/me/messages``).

Tokens are checked like the real providers do (401 without the right bearer/header). A provider
named in :attr:`Providers.down` answers 503, as one that is down would. Everything sent
back to citizens is kept in :attr:`Providers.outbound` and passed to ``on_outbound``.

:class:`MailSink` is a real SMTP server (aiosmtpd) standing in for the city's mail relay: it keeps
every mail the pipeline sends (the gateway's acknowledgement and the notifier's status mails).

``python -m demo.providers --port 18190 --smtp-port 12526`` runs both alone (for trying the
poll channels by hand); ``demo.run`` runs them in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import hashlib
import hmac
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import orjson
from aiohttp import web
from aiosmtpd.controller import Controller

ME = "1316286174"  # the numeric id of @DKIJakarta in the simulated X API
LAPOR_PATH = "/v1/integrasi/laporan"


def snowflake(offset: int = 0) -> int:
    """An X-like id that grows with time, so ids of a later demo run sort after earlier ones."""
    return ((int(time.time() * 1000) - 1288834974657) << 22) + offset


def _x_error(status: int, title: str) -> web.Response:
    return web.json_response(
        {"title": title, "detail": title, "type": "about:blank", "status": status}, status=status
    )


@dataclass
class Outbound:
    """A message the pipeline sent back to a citizen through a provider."""

    provider: str  # x-reply | x-dm | sms | meta | jaki | lapor
    to: str
    text: str


@dataclass
class Providers:
    x_token: str
    lapor_token: str
    lapor_header: str = "X-Lapor-Token"
    mentions: list[dict[str, Any]] = field(default_factory=list)
    dms: list[dict[str, Any]] = field(default_factory=list)
    users: dict[str, dict[str, str]] = field(default_factory=dict)
    lapor_items: list[dict[str, Any]] = field(default_factory=list)
    jaki_reply_secret: str = "dev-only-jaki-reply-secret"  # noqa: S105 - the development default
    jaki_callbacks: list[dict[str, Any]] = field(default_factory=list)
    lapor_followups: list[dict[str, Any]] = field(default_factory=list)
    down: set[str] = field(default_factory=set)  # providers answering 503 (jaki, lapor, sms, graph)
    outbound: list[Outbound] = field(default_factory=list)
    on_outbound: Callable[[Outbound], None] | None = None
    calls: dict[str, int] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _idempotent: dict[str, str] = field(default_factory=dict)

    # ---------------------------------------------------------------------------------------- app
    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/x/2/users/me", self.x_me)
        r.add_get("/x/2/users/by/username/{username}", self.x_user_by_name)
        r.add_get("/x/2/users/{id}/mentions", self.x_mentions)
        r.add_get("/x/2/dm_events", self.x_dm_events)
        r.add_post("/x/2/tweets", self.x_create_tweet)
        r.add_post("/x/2/dm_conversations/with/{id}/messages", self.x_create_dm)
        r.add_get("/lapor" + LAPOR_PATH, self.lapor)
        r.add_post("/lapor" + LAPOR_PATH + "/{id}/tindak-lanjut", self.lapor_followup)
        r.add_post("/jaki/v1/crm/callbacks", self.jaki_callback)
        r.add_post("/sms/v1/send", self.sms_send)
        r.add_post("/graph/{version}/{target:.+}", self.graph)
        r.add_get("/photos/{name}", self.photo)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def photo(self, request: web.Request) -> web.Response:
        """A JAKI photo host: a JPEG carrying a phone model and GPS in its EXIF, as phones write them."""
        import io

        from PIL import Image

        self._count("photo")
        seed = int(hashlib.sha256(request.match_info["name"].encode()).hexdigest()[:6], 16)
        img = Image.new("RGB", (320, 240), (seed % 256, (seed >> 8) % 256, (seed >> 16) % 256))
        exif = Image.Exif()
        exif[0x010F], exif[0x0110] = "Samsung", "SM-A515F"
        exif.get_ifd(0x8825).update({1: "S", 2: (6.0, 17.0, 19.0), 3: "E", 4: (106.0, 49.0, 1.0)})
        buf = io.BytesIO()
        img.save(buf, "JPEG", exif=exif)
        return web.Response(body=buf.getvalue(), content_type="image/jpeg")

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def _sent(self, provider: str, to: str, text: str) -> None:
        out = Outbound(provider, to, text)
        self.outbound.append(out)
        if self.on_outbound is not None:
            self.on_outbound(out)

    @staticmethod
    def _bearer(request: web.Request) -> str | None:
        value = request.headers.get("Authorization", "")
        return value[7:] if value.startswith("Bearer ") else None

    # ------------------------------------------------------------------------------------ X API v2
    def _x_auth(self, request: web.Request) -> web.Response | None:
        return None if self._bearer(request) == self.x_token else _x_error(401, "Unauthorized")

    async def x_me(self, request: web.Request) -> web.Response:
        self._count("x.me")
        return self._x_auth(request) or web.json_response(
            {"data": {"id": ME, "name": "Pemprov DKI Jakarta", "username": "DKIJakarta"}}
        )

    async def x_user_by_name(self, request: web.Request) -> web.Response:
        if self._bearer(request) is None:
            return _x_error(401, "Unauthorized")
        name = request.match_info["username"]
        for user in self.users.values():
            if user["username"].lower() == name.lower():
                return web.json_response({"data": user})
        return web.json_response({"errors": [{"detail": f"Could not find user: {name}"}]})

    def _x_page(self, items: list[dict[str, Any]], request: web.Request, author_key: str) -> web.Response:
        size = int(request.query.get("max_results", "10"))
        start = int(request.query.get("pagination_token", "p0").removeprefix("p") or 0)
        chunk = items[start : start + size]
        body: dict[str, Any] = {"meta": {"result_count": len(chunk)}}
        if chunk:
            authors = {i.get(author_key) for i in chunk}
            body["data"] = chunk
            body["includes"] = {"users": [self.users[a] for a in authors if a in self.users]}
            body["meta"].update({"newest_id": chunk[0]["id"], "oldest_id": chunk[-1]["id"]})
        if start + size < len(items):
            body["meta"]["next_token"] = f"p{start + size}"
        return web.json_response(body)

    async def x_mentions(self, request: web.Request) -> web.Response:
        self._count("x.mentions")
        if (denied := self._x_auth(request)) is not None:
            return denied
        if request.match_info["id"] != ME:
            return _x_error(403, "Forbidden")
        items = sorted(self.mentions, key=lambda t: int(t["id"]), reverse=True)
        since = request.query.get("since_id")
        if since:
            items = [t for t in items if int(t["id"]) > int(since)]
        return self._x_page(items, request, "author_id")

    async def x_dm_events(self, request: web.Request) -> web.Response:
        self._count("x.dm_events")
        if (denied := self._x_auth(request)) is not None:
            return denied
        items = sorted(self.dms, key=lambda t: int(t["id"]), reverse=True)
        return self._x_page(items, request, "sender_id")

    async def x_create_tweet(self, request: web.Request) -> web.Response:
        if self._bearer(request) is None:
            return _x_error(401, "Unauthorized")
        body = await request.json()
        reply_to = (body.get("reply") or {}).get("in_reply_to_tweet_id", "")
        tid = str(snowflake(next(self._ids)))
        self._sent("x-reply", f"tweet {reply_to}", body.get("text", ""))
        return web.json_response({"data": {"id": tid, "text": body.get("text", "")}}, status=201)

    async def x_create_dm(self, request: web.Request) -> web.Response:
        if self._bearer(request) is None:
            return _x_error(401, "Unauthorized")
        body = await request.json()
        participant = request.match_info["id"]
        eid = str(snowflake(next(self._ids)))
        self._sent("x-dm", f"x user {participant}", body.get("text", ""))
        return web.json_response(
            {"data": {"dm_conversation_id": f"{ME}-{participant}", "dm_event_id": eid}}, status=201
        )

    # --------------------------------------------------------------------------------- LAPOR! 1708
    async def lapor(self, request: web.Request) -> web.Response:
        from pipeline.sources.lapor import position

        self._count("lapor")
        if request.headers.get(self.lapor_header) != self.lapor_token:
            return web.json_response({"error": "invalid token"}, status=401)
        limit = int(request.query.get("limit", "100"))
        ordered = sorted(self.lapor_items, key=lambda i: position(i["updated_at"], str(i["id"])))
        if "updated_since" in request.query:
            floor = position(request.query["updated_since"], request.query.get("after_id", ""))
            ordered = [i for i in ordered if position(i["updated_at"], str(i["id"])) > floor]
        return web.json_response(
            {"data": ordered[:limit], "meta": {"has_more": len(ordered) > limit, "limit": limit}}
        )

    async def lapor_followup(self, request: web.Request) -> web.Response:
        """A follow-up (tindak lanjut) on a LAPOR! report this instance received."""
        self._count("lapor.followup")
        if "lapor" in self.down:
            return web.json_response({"error": "service unavailable"}, status=503)
        if request.headers.get(self.lapor_header) != self.lapor_token:
            return web.json_response({"error": "invalid token"}, status=401)
        lapor_id = request.match_info["id"]
        if not any(str(i["id"]) == lapor_id for i in self.lapor_items):
            return web.json_response({"error": f"no report {lapor_id} forwarded to you"}, status=404)
        key = request.headers.get("Idempotency-Key", "")
        if key and key in self._idempotent:
            return web.json_response({"id": self._idempotent[key], "replayed": True})
        body = await request.json()
        if not isinstance(body.get("content"), str) or not body["content"].strip():
            return web.json_response({"error": "content is required"}, status=422)
        followup_id = f"tl-{next(self._ids)}"
        self._idempotent[key] = followup_id
        self.lapor_followups.append({"lapor_id": lapor_id, **body})
        self._sent("lapor", f"LAPOR! report {lapor_id}", body["content"])
        return web.json_response({"id": followup_id}, status=201)

    # ------------------------------------------------------------------------------- JAKI backend
    async def jaki_callback(self, request: web.Request) -> web.Response:
        """The JAKI backend receiving the CRM's signed callbacks and pushing them to the app."""
        self._count("jaki.callback")
        if "jaki" in self.down:
            return web.json_response({"error": "service unavailable"}, status=503)
        raw = await request.read()
        stamp = request.headers.get("X-CRM-Timestamp", "")
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > 300:
            return web.json_response({"error": "missing or stale X-CRM-Timestamp"}, status=401)
        mac = hmac.new(self.jaki_reply_secret.encode(), stamp.encode() + b"." + raw, hashlib.sha256)
        if not hmac.compare_digest(request.headers.get("X-CRM-Signature", ""), "sha256=" + mac.hexdigest()):
            return web.json_response({"error": "bad signature"}, status=401)
        key = request.headers.get("Idempotency-Key", "")
        if key and key in self._idempotent:
            return web.json_response({"id": self._idempotent[key], "replayed": True})
        body = orjson.loads(raw)
        if not body.get("report_id") or not body.get("message"):
            return web.json_response({"error": "report_id and message are required"}, status=422)
        notification_id = f"jaki-n-{next(self._ids)}"
        self._idempotent[key] = notification_id
        self.jaki_callbacks.append(body)
        self._sent("jaki", f"JAKI app, report {body['report_id']}", body["message"])
        return web.json_response({"id": notification_id})

    # ----------------------------------------------------------------------- notifier destinations
    async def sms_send(self, request: web.Request) -> web.Response:
        if "sms" in self.down:
            return web.json_response({"error": "service unavailable"}, status=503)
        if self._bearer(request) is None:
            return web.json_response({"error": "missing token"}, status=401)
        body = await request.json()
        self._sent("sms", str(body.get("to")), str(body.get("text", "")))
        return web.json_response({"id": f"sms-{next(self._ids)}", "status": "queued"})

    async def graph(self, request: web.Request) -> web.Response:
        if self._bearer(request) is None:
            return web.json_response({"error": {"message": "missing token", "code": 190}}, status=401)
        body = await request.json()
        target = request.match_info["target"]
        if target == "me/messages":
            recipient = body.get("recipient") or {}
            to = (
                f"private reply to comment {recipient['comment_id']}"
                if "comment_id" in recipient
                else (f"Messenger user {recipient.get('id')}")
            )
            text = (body.get("message") or {}).get("text", "")
        else:
            to, text = f"comment under {target.removesuffix('/comments')}", body.get("message", "")
        self._sent("meta", to, text)
        return web.json_response({"id": f"{target.split('/')[0]}_{next(self._ids)}"})


class _Mailbox:
    def __init__(self, on_mail: Callable[[EmailMessage], None] | None) -> None:
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()
        self.on_mail = on_mail

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(msg)  # type: ignore[arg-type]
        if self.on_mail is not None:
            self.on_mail(msg)  # type: ignore[arg-type]
        return "250 2.0.0 OK"


class MailSink:
    """A real SMTP server (aiosmtpd, own thread) standing in for the city's outgoing mail relay."""

    def __init__(self, port: int, on_mail: Callable[[EmailMessage], None] | None = None) -> None:
        self.port = port
        self.mailbox = _Mailbox(on_mail)
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=port)

    @property
    def messages(self) -> list[EmailMessage]:
        with self.mailbox.lock:
            return list(self.mailbox.messages)

    def start(self) -> MailSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


def first_line(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    text = part.get_content() if part is not None else ""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


async def start_http(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def main() -> int:  # pragma: no cover - manual use
    from pipeline.crm.notify.channel_replies import JakiReplySettings
    from pipeline.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18190)
    parser.add_argument("--smtp-port", type=int, default=12526)
    args = parser.parse_args()
    s = get_settings()
    providers = Providers(
        x_token=s.twitter_bearer_token.get_secret_value(),
        lapor_token=s.lapor_token.get_secret_value(),
        lapor_header=s.lapor_token_header,
        jaki_reply_secret=JakiReplySettings.load(s).secret.get_secret_value(),
        on_outbound=lambda o: print(f"[{o.provider}] to {o.to}: {o.text}", flush=True),
    )
    sink = MailSink(args.smtp_port, lambda m: print(f"[mail] {m['To']}: {m['Subject']}", flush=True)).start()

    async def run() -> None:
        runner = await start_http(providers.app(), args.port)
        where = f"http://127.0.0.1:{args.port} (/x /lapor /sms /graph /jaki)"
        print(f"providers on {where}, SMTP sink on {args.smtp_port}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    finally:
        sink.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
