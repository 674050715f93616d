"""``email``: dki@jakarta.go.id, an inbound SMTP gateway the city's mail relay forwards to.

The relay delivers over SMTP to ``crm-pipeline smtp`` (aiosmtpd, bound to ``CRM_EMAIL_SMTP_HOST``,
loopback by default). The mode shown by ``crm-pipeline channels`` is ``push``: the provider (the relay)
calls us, over SMTP rather than HTTP, so the adapter has no HTTP route and the ingress ignores it.

The SMTP transaction is the acknowledgement protocol:

* ``MAIL FROM`` from a peer outside ``CRM_EMAIL_ALLOWED_RELAYS`` → ``554 5.7.1`` (counted, logged,
  not stored: it is not citizen input); ``RCPT TO`` other than ``CRM_EMAIL_RECIPIENTS`` → ``550 5.1.1``;
  more than ``CRM_EMAIL_MAX_BYTES`` → ``552`` (aiosmtpd's size limit, also announced in EHLO SIZE).
* ``DATA`` is answered ``250`` only after the broker confirmed the raw message and the report
  (idempotent producer, acks=all); ``451 4.3.0`` when it did not (the relay keeps the mail and retries);
  ``550 5.6.0 <reason>`` for a malformed message, after its raw bytes and the reason are on the
  dead-letter topic (if even that cannot be published the answer is ``451``: nothing is lost).

Parsing (stdlib ``email``, ``policy=default``): the text is the subject plus the ``text/plain`` body,
else the ``text/html`` body turned into text; charsets are decoded from the part's ``charset``
(unknown ones fall back to UTF-8 with replacement). Attachments never travel on the report topics:
the whole message is the raw record (``<ns>.raw.v1``, keyed by its sha256, which ``raw_ref`` names),
and each attachment is a reference ``raw:<raw topic>/<message sha256>?part=<n>&sha256=<part sha256>``
with its file name, media type and size — the bytes are the ``n``-th leaf part of that raw message
(depth-first, counting from 0; an attached ``message/rfc822`` counts as one leaf and is not descended).
(Hence the size limit stays under the broker's record limit; larger media need an object store.)

Ids and threads: the provider id is the ``Message-ID`` without angle brackets (``sha256:<hex>`` of
the message when it has none). A reply carries ``in_reply_to``: the original report's Message-ID,
taken from our acknowledgement's id when the citizen answered the acknowledgement (its id encodes the
original), else the thread root in ``References``, else ``In-Reply-To``.

Acknowledgement: after the 250, an acknowledgement (``Auto-Submitted: auto-replied``, null return
path, ``In-Reply-To`` the original Message-ID) is sent through ``CRM_EMAIL_RELAY_HOST`` with
aiosmtplib, retried with backoff, at most once per report (a Redis marker survives a relay's
redelivery). Mail loops are avoided: nothing is acknowledged that has an empty return path (bounces),
``Auto-Submitted`` other than ``no``, ``Precedence: bulk/junk/list``, list headers,
``X-Auto-Response-Suppress``, a ``multipart/report`` body, or comes from our own or a daemon address.
Such mail is still published (a bounce on a report's thread is worth seeing), only never answered.
"""

from __future__ import annotations

import asyncio
import base64
import email
import hashlib
import ipaddress
import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses, make_msgid
from html.parser import HTMLParser
from typing import Any, ClassVar

import aiosmtplib
import redis.asyncio as aioredis
from aiosmtpd.smtp import SMTP, Envelope, Session
from prometheus_client import Counter

from ..deadletter import DeadLetter
from ..envelope import Attachment, Contact, Report, Reporter, reporter_pseudonym, utcnow
from ..publish import Publisher, PublishError, make_producer
from ..settings import Settings
from ..topics import Topics
from .base import Rejected, SourceAdapter, start_adapters, stop_adapters
from .common import normalise_email
from .config import core_view

log = logging.getLogger("pipeline.email")

MAILS = Counter("crm_email_messages_total", "SMTP DATA outcomes", ["outcome"])
REFUSED = Counter("crm_email_refused_total", "SMTP commands refused (relay, recipient)", ["code"])
ACKS = Counter("crm_email_acks_total", "acknowledgement mails", ["outcome"])

MAX_TEXT = 19000
_MSGID = re.compile(r"<([^<>\s]{1,500})>")
_DAEMON = re.compile(r"^(mailer-daemon|postmaster|no-?reply|do-?not-?reply|bounces?)([+-].*)?$", re.I)
_BLOCK_TAGS = {
    "p",
    "div",
    "br",
    "li",
    "tr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "ul",
    "ol",
    "blockquote",
    "pre",
    "hr",
    "section",
    "article",
    "header",
    "footer",
}
ACK_PREFIX = "ack."


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style", "head", "title"):
            self.skip += 1
        elif tag in _BLOCK_TAGS:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head", "title"):
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK_TAGS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data)


def html_to_text(html: str) -> str:
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.out).splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


#: what the stdlib's header parser raises on some malformed headers instead of registering a defect
_UNREADABLE = (IndexError, TypeError, AttributeError, LookupError, ValueError, AssertionError, NameError)
_STDLIB_EMAIL = os.path.dirname(email.__file__) + os.sep


def _raised_in_stdlib_email(exc: BaseException) -> bool:
    """Whether ``exc`` came out of the stdlib's ``email`` package (a message it cannot read), not out
    of this adapter's own code (a bug, which the gateway dead-letters as ``adapter_error``)."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith(_STDLIB_EMAIL):
            return True
        tb = tb.tb_next
    return False


def msg_ids(value: Any) -> list[str]:
    return _MSGID.findall(str(value)) if value else []


def ack_message_id(original_id: str, domain: str) -> str:
    """Our acknowledgement's Message-ID encodes the report's Message-ID, so a reply finds its report."""
    code = base64.b32encode(original_id.encode()).decode().rstrip("=").lower()
    return f"<{ACK_PREFIX}{code}@{domain}>"


def original_from_ack(msgid: str, domain: str) -> str | None:
    local, _, host = msgid.rpartition("@")
    if host.lower() != domain.lower() or not local.startswith(ACK_PREFIX):
        return None
    code = local[len(ACK_PREFIX) :].upper()
    try:
        return base64.b32decode(code + "=" * (-len(code) % 8)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def _decode_text(part: EmailMessage) -> str:
    try:
        content = part.get_content()
        if isinstance(content, str):
            return content
    except (LookupError, UnicodeError, KeyError, AssertionError):
        pass
    payload = part.get_payload(decode=True) or b""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def _leaves(part: EmailMessage) -> list[EmailMessage]:
    if part.get_content_maintype() == "multipart":
        out: list[EmailMessage] = []
        for sub in part.iter_parts():
            out.extend(_leaves(sub))  # type: ignore[arg-type]
        return out
    return [part]


def _is_attachment(part: EmailMessage) -> bool:
    disposition = part.get_content_disposition()
    return (
        disposition == "attachment"
        or bool(part.get_filename())
        or part.get_content_maintype() not in ("text",)
        or part.get_content_subtype() not in ("plain", "html")
    )


@dataclass
class ParsedMail:
    report: Report
    subject: str
    message_id: str | None
    references: list[str]
    reply_to: str | None
    no_ack: str | None = None
    attachments: list[Attachment] = field(default_factory=list)


EmailSettings = core_view(
    "EmailSettings",
    "CRM_EMAIL_",
    [
        "email_smtp_host",
        "email_smtp_port",
        "email_max_bytes",
        "email_allowed_relays",
        "email_recipients",
        "email_ack_enabled",
        "email_ack_from",
        "email_relay_host",
        "email_relay_port",
        "email_relay_starttls",
        "email_relay_username",
        "email_relay_password",
        "email_relay_timeout_s",
    ],
    optional_secrets=["relay_password"],  # a relay without login
)


class EmailGatewaySource(SourceAdapter):
    channel: ClassVar[str] = "email"
    settings_model = EmailSettings
    mode = "push"  # the relay pushes to us over SMTP; no HTTP route, so the ingress skips it

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.topics = Topics(settings.topic_namespace)
        self.domain = settings.email_ack_from.rpartition("@")[2] or "jakarta.go.id"
        self.own = {a.strip().lower() for a in settings.email_recipients.split(",") if a.strip()}
        self.own.add(settings.email_ack_from.lower())

    def parse(self, raw: bytes, mail_from: str | None) -> ParsedMail:
        """One message as received, to a report; :class:`Rejected` (with the reason) if malformed."""
        try:
            return self._parse(raw, mail_from)
        except _UNREADABLE as exc:
            # The stdlib's header parser raises on some malformed headers (found by fuzzing, issue #6;
            # NameError: 3.11's UnboundLocalError on "Message-ID: <1@["). Headers are parsed when read,
            # all through _parse, so what raised is told by where it was raised.
            if not _raised_in_stdlib_email(exc):
                raise
            raise Rejected(
                f"unreadable message headers or structure: {type(exc).__name__}: {exc}"[:500],
                code="malformed_mime",
            ) from None

    def _parse(self, raw: bytes, mail_from: str | None) -> ParsedMail:
        if not raw.strip():
            raise Rejected("empty message", code="malformed_mime")
        msg: EmailMessage = BytesParser(policy=policy.default).parsebytes(raw)  # type: ignore[assignment]
        defects = {type(d).__name__ for d in msg.defects}
        if not msg.keys() or ("MissingHeaderBodySeparatorDefect" in defects and not msg.get("From")):
            raise Rejected(
                "no RFC 5322 header section (no From/Subject/Message-ID headers)", code="malformed_mime"
            )
        for part in msg.walk():
            bad = {type(d).__name__ for d in part.defects} & {
                "NoBoundaryInMultipartDefect",
                "StartBoundaryNotFoundDefect",
            }
            if bad:
                raise Rejected(
                    f"broken MIME structure: {', '.join(sorted(bad))} in a {part.get_content_type()} part",
                    code="malformed_mime",
                )

        try:
            from_header = str(msg.get("From") or "")
        except (ValueError, IndexError) as exc:
            raise Rejected(f"unreadable From header: {exc}", code="bad_sender") from None
        addresses = [a for _, a in getaddresses([from_header]) if "@" in a]
        if not addresses:
            raise Rejected(f"no sender address in From: {from_header[:200]!r}", code="bad_sender")
        name = next((n for n, a in getaddresses([from_header]) if a == addresses[0]), "") or None
        sender = addresses[0]
        try:
            email = normalise_email(sender)
        except ValueError:
            email = None
        try:
            subject = " ".join(str(msg.get("Subject") or "").split())
        except (ValueError, IndexError):
            subject = ""

        sha = hashlib.sha256(raw).hexdigest()
        body_parts, attachments = [], []
        for index, part in enumerate(_leaves(msg)):
            if _is_attachment(part):
                if part.get_content_type() == "message/rfc822":
                    inner = part.get_payload()
                    data = (inner[0] if isinstance(inner, list) else inner).as_bytes() if inner else b""
                else:
                    data = part.get_payload(decode=True) or b""
                digest = hashlib.sha256(data).hexdigest()
                attachments.append(
                    Attachment(
                        url=f"raw:{self.topics.raw}/{sha}?part={index}&sha256={digest}",
                        media_type=part.get_content_type(),
                        name=(part.get_filename() or None),
                        size=len(data),
                    )
                )
            else:
                body_parts.append(part)
        plain = [p for p in body_parts if p.get_content_subtype() == "plain"]
        html = [p for p in body_parts if p.get_content_subtype() == "html"]
        if plain:
            body = "\n\n".join(_decode_text(p).strip() for p in plain)
        else:
            body = "\n\n".join(html_to_text(_decode_text(p)) for p in html)
        body = body.replace("\r\n", "\n").strip()
        text = "\n\n".join(t for t in (subject, body) if t)[:MAX_TEXT]
        if not text:
            raise Rejected("the message has neither a subject nor any text", code="missing_text")

        ids = msg_ids(msg.get("Message-ID"))
        message_id = ids[0] if ids else None
        references = msg_ids(msg.get("References"))
        in_reply = msg_ids(msg.get("In-Reply-To"))
        thread = None
        for candidate in references + in_reply:
            original = original_from_ack(candidate, self.domain)
            if original:
                thread = original
                break
        if thread is None and (references or in_reply):
            thread = (references or in_reply)[0]
        if thread == message_id:
            thread = None

        source_at = None
        try:
            date = msg.get("Date")
            if date is not None and date.datetime is not None and date.datetime.tzinfo is not None:
                source_at = date.datetime
        except (ValueError, TypeError, AttributeError):
            pass

        reply_to = [a for _, a in getaddresses([str(msg.get("Reply-To") or "")]) if "@" in a]
        report = Report.create(
            channel=self.channel,
            provider_id=message_id or f"sha256:{sha}",
            source_at=source_at,
            reporter=Reporter(id=reporter_pseudonym(self.reporter_key, "email", email or sender.lower())),
            contact=Contact(name=name[:200] if name else None, email=email),
            text=text,
            attachments=attachments[:50],
            in_reply_to=thread,
        )
        parsed = ParsedMail(
            report=report,
            subject=subject,
            message_id=message_id,
            references=references,
            reply_to=(reply_to[0] if reply_to else email),
            attachments=attachments,
        )
        parsed.no_ack = self.no_ack_reason(msg, mail_from, parsed.reply_to)
        return parsed

    def no_ack_reason(self, msg: EmailMessage, mail_from: str | None, reply_to: str | None) -> str | None:
        """Why this message must not be answered (RFC 3834 and common practice), or None."""
        if not self.settings.email_ack_enabled:
            return "acknowledgements disabled"
        if not mail_from or mail_from == "<>":
            return "empty return path (a bounce or an auto-reply)"
        auto = str(msg.get("Auto-Submitted") or "").strip().lower()
        if auto and not auto.startswith("no"):
            return f"Auto-Submitted: {auto}"
        if str(msg.get("Precedence") or "").strip().lower() in ("bulk", "junk", "list"):
            return "Precedence: bulk/junk/list"
        if msg.get("List-Id") or msg.get("List-Unsubscribe"):
            return "mailing-list message"
        if msg.get("X-Auto-Response-Suppress"):
            return "X-Auto-Response-Suppress"
        if msg.get_content_type() == "multipart/report":
            return "delivery/disposition report"
        if not reply_to:
            return "no valid sender address"
        local = reply_to.rpartition("@")[0]
        if reply_to.lower() in self.own or _DAEMON.match(local) or mail_from.lower() in self.own:
            return "own or daemon address"
        return None

    def acknowledgement(self, parsed: ParsedMail) -> EmailMessage:
        report = parsed.report
        original = parsed.message_id
        ack = EmailMessage()
        ack["From"] = Address("Jakarta CRM (DKI Jakarta)", addr_spec=self.settings.email_ack_from)
        ack["To"] = parsed.reply_to
        subject = parsed.subject or "laporan Anda"
        ack["Subject"] = (subject if subject.lower().startswith("re:") else f"Re: {subject}")[:900]
        ack["Date"] = format_datetime(utcnow())
        ack["Message-ID"] = (
            ack_message_id(original, self.domain) if original else make_msgid(domain=self.domain)
        )
        if original:
            ack["In-Reply-To"] = f"<{original}>"
            ack["References"] = " ".join(f"<{i}>" for i in [*parsed.references, original][-20:])
        ack["Auto-Submitted"] = "auto-replied"
        ack["X-Auto-Response-Suppress"] = "All"
        ack["X-CRM-Report-Id"] = report.report_id
        ack.set_content(
            "Terima kasih. Laporan Anda telah kami terima dan akan diteruskan ke instansi terkait.\n"
            f"Nomor laporan: {report.report_id}\n\n"
            "Thank you. Your report has been received and will be forwarded to the responsible agency.\n"
            f"Report number: {report.report_id}\n\n"
            "Balas surel ini untuk menambahkan keterangan pada laporan yang sama.\n"
            "-- \nCitizen Relations Management, Pemerintah Provinsi DKI Jakarta\n"
        )
        return ack


class EmailGateway:
    """The aiosmtpd handler: relay and recipient checks, parse, publish, answer, acknowledge."""

    def __init__(self, settings: Settings, publisher: Publisher, redis: aioredis.Redis | None = None) -> None:
        self.settings = settings
        self.publisher = publisher
        self.redis = redis
        self.adapter = EmailGatewaySource(settings)
        self.relays = [
            ipaddress.ip_network(c.strip(), strict=False)
            for c in settings.email_allowed_relays.split(",")
            if c.strip()
        ]
        self.recipients = {a.strip().lower() for a in settings.email_recipients.split(",") if a.strip()}
        self.ack_tasks: set[asyncio.Task[None]] = set()

    # -- SMTP hooks -----------------------------------------------------------------------------
    def _relay_allowed(self, peer: Any) -> bool:
        host = peer[0] if isinstance(peer, tuple) else str(peer)
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in net for net in self.relays)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if not self._relay_allowed(session.peer):
            REFUSED.labels("relay_not_allowed").inc()
            log.warning("refused mail from %s: not an allowed relay", session.peer)
            return "554 5.7.1 Relay access denied: this gateway takes mail from the city's relay only"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower() not in self.recipients:
            REFUSED.labels("unknown_recipient").inc()
            return f"550 5.1.1 <{address}>: recipient not accepted here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw: bytes = envelope.original_content or b""
        try:
            parsed = self.adapter.parse(raw, envelope.mail_from)
        except Rejected as exc:
            return await self._reject(raw, exc.code, exc.reason, envelope)
        except Exception as exc:  # an adapter bug must not lose the message
            log.exception("email adapter crashed on a message")
            return await self._reject(raw, "adapter_error", f"adapter raised {exc!r}", envelope)
        try:
            await self.publisher.publish_reports([parsed.report], raw, "message/rfc822")
        except PublishError as exc:
            MAILS.labels("unavailable").inc()
            log.error("broker unavailable, answering 451: %s", exc)
            return "451 4.3.0 Temporary failure: the report could not be stored, please retry later"
        MAILS.labels("accepted").inc()
        if parsed.no_ack:
            ACKS.labels("suppressed").inc()
            log.info("no acknowledgement for %s: %s", parsed.report.provider_id, parsed.no_ack)
        else:
            task = asyncio.create_task(self.acknowledge(parsed))
            self.ack_tasks.add(task)
            task.add_done_callback(self.ack_tasks.discard)
        return f"250 2.0.0 Ok: report {parsed.report.report_id}"

    async def _reject(self, raw: bytes, code: str, reason: str, envelope: Envelope) -> str:
        letter = DeadLetter.build(
            raw=raw,
            cap=self.settings.dead_letter_raw_cap_bytes,
            channel="email",
            stage="ingress",
            code=code,
            reason=reason,
            content_type="message/rfc822",
            meta={"mail_from": envelope.mail_from, "rcpt_to": list(envelope.rcpt_tos)},
        )
        try:
            await self.publisher.dead_letter(letter)
        except PublishError as exc:
            MAILS.labels("unavailable").inc()
            log.error("malformed mail could not be dead-lettered, answering 451 (%s): %s", code, exc)
            return "451 4.3.0 Temporary failure: please retry later"
        MAILS.labels(code).inc()
        one_line = " ".join(reason.split())[:300]
        return f"550 5.6.0 Message refused ({code}): {one_line}"

    # -- acknowledgement ------------------------------------------------------------------------
    async def acknowledge(self, parsed: ParsedMail, delays: tuple[float, ...] = (1, 5, 25)) -> None:
        key = f"{self.settings.topic_namespace}:email:ack:{parsed.report.report_id}"
        marked = False
        if self.redis is not None:
            try:
                if not await self.redis.set(key, "1", nx=True, ex=self.settings.dedup_ttl_s):
                    ACKS.labels("duplicate").inc()
                    return  # a redelivered message: acknowledged already
                marked = True
            except (aioredis.RedisError, OSError) as exc:
                log.warning("ack dedup marker unavailable, sending anyway: %s", exc)
        message = self.adapter.acknowledgement(parsed)
        password = self.settings.email_relay_password
        for attempt in range(len(delays) + 1):
            try:
                await aiosmtplib.send(
                    message,
                    sender="",
                    recipients=[parsed.reply_to or ""],
                    hostname=self.settings.email_relay_host,
                    port=self.settings.email_relay_port,
                    start_tls=self.settings.email_relay_starttls,
                    username=self.settings.email_relay_username,
                    password=password.get_secret_value() if password else None,
                    timeout=self.settings.email_relay_timeout_s,
                )
                ACKS.labels("sent").inc()
                return
            except (aiosmtplib.SMTPException, OSError) as exc:
                if attempt == len(delays):
                    ACKS.labels("failed").inc()
                    log.error(
                        "acknowledgement for %s failed after %d attempts: %s",
                        parsed.report.report_id,
                        attempt + 1,
                        exc,
                    )
                    if marked and self.redis is not None:
                        try:
                            await self.redis.delete(key)  # a redelivery may try again
                        except (aioredis.RedisError, OSError):
                            pass
                    return
                await asyncio.sleep(delays[attempt])

    async def drain(self, wait_s: float = 30) -> None:
        """Wait for acknowledgements in flight (shutdown, tests)."""
        if self.ack_tasks:
            await asyncio.wait(list(self.ack_tasks), timeout=wait_s)

    # -- server ---------------------------------------------------------------------------------
    def protocol(self) -> SMTP:
        return SMTP(
            self,
            data_size_limit=self.settings.email_max_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=f"crm-mx.{self.adapter.domain}",
            ident="Jakarta CRM mail gateway",
            timeout=300,
        )

    async def start(self, host: str | None = None, port: int | None = None) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            self.protocol,
            host or self.settings.email_smtp_host,
            self.settings.email_smtp_port if port is None else port,
        )


async def serve_smtp(
    settings: Settings, host: str | None = None, port: int | None = None, stop: asyncio.Event | None = None
) -> None:
    producer = make_producer(settings, client_id=f"crm-smtp-{uuid.uuid4().hex[:6]}")
    client = aioredis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    await producer.start()
    gateway = EmailGateway(settings, Publisher(settings, producer), client)
    await start_adapters([gateway.adapter])
    server = await gateway.start(host, port)
    where = ", ".join(str(s.getsockname()) for s in server.sockets)
    log.info("SMTP gateway listening on %s", where)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        server.close()
        await server.wait_closed()
        await gateway.drain()
        await stop_adapters([gateway.adapter])
        await producer.stop()
        await client.aclose()


def smtp_main(host: str | None, port: int | None) -> int:
    """``crm-pipeline smtp``: serve until SIGINT/SIGTERM."""
    import signal

    from ..settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_smtp(get_settings(), host, port, stop)

    asyncio.run(main())
    return 0
