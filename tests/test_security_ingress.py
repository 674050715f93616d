"""Hostile input through the real ingress (real HTTP, real broker, real worker and store): forged and
replayed signatures, wrong credentials, oversized and deeply nested bodies, invalid UTF-8, SQL text,
header injection, CSV formula injection in the desk-import error export, rate limits (per IP, per
sender) — each refused or neutralised, and counted on /metrics. Also: contact details never reach the
routed topics or the logs, and are encrypted in the store.
"""

from __future__ import annotations

import asyncio
import csv
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
import pytest

from pipeline.deadletter import DeadLetter
from pipeline.ops.kafka import read_to_end
from pipeline.security import ContactCipher
from pipeline.sources.meta import sign as meta_sign
from pipeline.sources.sms import gateway_signature, twilio_signature
from pipeline.topics import Topics
from tests.harness import Isolated, Process, free_port, wait_http, wait_until

pytestmark = pytest.mark.stack

# Known contact details: they must never show up in logs or routed topics (clear text).
EMAIL = "rahasia.warga77@example.com"
PHONE_RAW = "0812 7777 3141"
PHONE = "+6281277773141"
NAME = "Siti Rahasia Wulandari"


@pytest.fixture(scope="module")
def secure(stack: None) -> Iterator[dict[str, Any]]:
    iso = Isolated()
    iso.create_database()
    port = free_port()
    env = {
        **iso.env,
        "CRM_INGRESS_PORT": str(port),
        # Tight limits so the test can hit them; loopback is not exempt here (clients use 127.0.0.x).
        # 127.0.0.10 plays the SMS provider's gateway: one IP for every sender, so exempt from the IP
        # limit (CRM_RATE_LIMIT_IP_EXEMPT) and limited per sender only.
        "CRM_RATE_LIMIT_IP_EXEMPT": "127.0.0.10/32",
        "CRM_RATE_LIMIT_IP_PER_MIN": "60",
        "CRM_RATE_LIMIT_IP_BURST": "12",
        "CRM_RATE_LIMIT_SENDER_PER_MIN": "2",
        "CRM_RATE_LIMIT_SENDER_BURST": "3",
        "CRM_INGRESS_TRUSTED_PROXIES": "127.0.0.9/32",
        "CRM_MAX_BODY_BYTES": "65536",
    }
    for step in (["topics", "create"], ["store", "migrate"]):
        subprocess.run(
            [sys.executable, "-m", "pipeline", *step],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
    ingress = Process("sec-ingress", ["ingress"], env)
    worker = Process("sec-worker", ["worker", "--loglevel", "info"], env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/readyz", ingress)
        yield {"url": url, "iso": iso, "env": env, "procs": [ingress, worker]}
    finally:
        for p in (ingress, worker):
            p.stop()
        iso.drop_database()


async def call(
    url: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    source_ip: str = "127.0.0.1",
    method: str = "POST",
) -> tuple[int, dict[str, Any], dict[str, str]]:
    connector = aiohttp.TCPConnector(local_addr=(source_ip, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.request(method, url + path, data=body, headers=headers or {}) as resp:
            raw = await resp.read()
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                data = {"text": raw.decode(errors="replace")}
            return resp.status, data if isinstance(data, dict) else {"value": data}, dict(resp.headers)


async def metric(url: str, name: str, **labels: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def web_report(n: int, **extra: Any) -> bytes:
    return orjson.dumps({"text": f"Lampu jalan mati di Jl. Pramuka nomor {n}, mohon segera", **extra})


def settings_of(secure: dict[str, Any]):
    return secure["iso"].settings(**{k.removeprefix("CRM_").lower(): v for k, v in secure["env"].items()})


# ------------------------------------------------------------------------------------ authentication
async def test_forged_and_replayed_meta_webhooks_are_refused_and_counted(secure):
    url = secure["url"]
    secret = settings_of(secure).facebook_app_secret.get_secret_value()
    route = "/v1/channels/facebook/webhook"
    fresh = {"object": "page", "entry": [{"id": "1", "time": int(time.time()), "changes": []}]}
    body = orjson.dumps(fresh)
    before = await metric(url, "crm_ingress_rejected_total", channel="facebook", code="bad_signature")

    status, data, _ = await call(url, route, body, {**JSON})
    assert (status, data["code"]) == (401, "unauthenticated")
    forged = meta_sign("not-the-app-secret", body)
    status, data, _ = await call(url, route, body, {**JSON, "X-Hub-Signature-256": forged})
    assert (status, data["code"]) == (403, "bad_signature")
    # A valid signature over another body (the signature replayed onto a tampered body).
    tampered = body.replace(b'"page"', b'"PAGE"')
    status, data, _ = await call(
        url, route, tampered, {**JSON, "X-Hub-Signature-256": meta_sign(secret, body)}
    )
    assert (status, data["code"]) == (403, "bad_signature")
    # A genuinely signed body, replayed long after Meta's retry window.
    old = {"object": "page", "entry": [{"id": "1", "time": int(time.time()) - 40 * 3600, "changes": []}]}
    old_body = orjson.dumps(old)
    status, data, _ = await call(
        url, route, old_body, {**JSON, "X-Hub-Signature-256": meta_sign(secret, old_body)}
    )
    assert (status, data["code"]) == (403, "replayed")
    # Header injection in the subscription handshake: a challenge with CR/LF is not echoed.
    q = urlencode(
        {
            "hub.mode": "subscribe",
            "hub.verify_token": settings_of(secure).facebook_verify_token.get_secret_value(),
            "hub.challenge": "123\r\nSet-Cookie: x=1",
        }
    )
    status, _, headers = await call(url, f"{route}?{q}", method="GET")
    assert status == 400 and "Set-Cookie" not in headers

    after = await metric(url, "crm_ingress_rejected_total", channel="facebook", code="bad_signature")
    assert after - before == 2
    assert await metric(url, "crm_ingress_rejected_total", channel="facebook", code="replayed") >= 1
    assert await metric(url, "crm_ingress_rejected_total", channel="facebook", code="unauthenticated") >= 1


async def test_sms_gateway_signatures_replay_window_and_idempotent_replays(secure):
    url = secure["url"]
    s = settings_of(secure)
    route = "/v1/channels/sms/inbound"
    body = orjson.dumps(
        {"id": "gw-replay-1", "from": "0812 5555 0001", "text": "Sampah menumpuk di Jl. Tebet"}
    )
    stamp = str(int(time.time()))
    good = {
        **JSON,
        "X-Gateway-Timestamp": stamp,
        "X-Gateway-Signature": gateway_signature(s.sms_gateway_secret.get_secret_value(), stamp, body),
    }
    first = await call(url, route, body, good, source_ip="127.0.0.5")
    again = await call(url, route, body, good, source_ip="127.0.0.5")  # a replay inside the window
    assert first[0] == again[0] == 200
    assert first[1]["report_id"] == again[1]["report_id"]  # same provider id: the same report, stored once

    old = str(int(time.time()) - 3600)
    replayed = {
        **JSON,
        "X-Gateway-Timestamp": old,
        "X-Gateway-Signature": gateway_signature(s.sms_gateway_secret.get_secret_value(), old, body),
    }
    status, data, _ = await call(url, route, body, replayed, source_ip="127.0.0.5")
    assert (status, data["code"]) == (403, "replayed")
    forged = {**good, "X-Gateway-Signature": "sha256=" + "0" * 64}
    status, data, _ = await call(url, route, body, forged, source_ip="127.0.0.5")
    assert (status, data["code"]) == (403, "bad_signature")
    # Twilio-style: the signature covers URL + parameters; one changed parameter breaks it.
    params = {"MessageSid": "SMforged1", "From": "+6281255550002", "Body": "Jalan rusak di Cilandak"}
    sig = twilio_signature(s.sms_twilio_auth_token.get_secret_value(), url + route, params.items())
    params["Body"] = "Jalan rusak di Cilandak -- ubah"
    status, data, _ = await call(
        url, route, urlencode(params).encode(), {**FORM, "X-Twilio-Signature": sig}, source_ip="127.0.0.5"
    )
    assert (status, data["code"]) == (403, "bad_signature")
    assert await metric(url, "crm_ingress_rejected_total", channel="sms", code="replayed") >= 1
    assert await metric(url, "crm_ingress_rejected_total", channel="sms", code="bad_signature") >= 2


async def test_wrong_desk_credentials_and_a_credential_used_for_another_office(secure):
    url = secure["url"]
    entry = {"entry_id": "E-1", "officer": "Petugas A", "text": "Saluran air tersumbat di RT 05"}
    body = orjson.dumps(entry)
    kel = {**JSON, "Authorization": "Bearer dev-only-desk-kelurahan"}
    cases = [
        ("/v1/channels/desk_kelurahan/entries", body, {**JSON}, 401, "unauthenticated"),
        (
            "/v1/channels/desk_kelurahan/entries",
            body,
            {**JSON, "Authorization": "Bearer guessed"},
            403,
            "forbidden",
        ),
        # A kelurahan desk's token on the kecamatan desk's route.
        ("/v1/channels/desk_kecamatan/entries", body, kel, 403, "wrong_office"),
        # The right level, but an entry for another kelurahan's office.
        (
            "/v1/channels/desk_kelurahan/entries",
            orjson.dumps({**entry, "office_code": "31.71.01.1002"}),
            kel,
            403,
            "wrong_office",
        ),
    ]
    for route, payload, headers, want_status, want_code in cases:
        status, data, _ = await call(url, route, payload, headers, source_ip="127.0.0.6")
        assert (status, data["code"]) == (want_status, want_code), route
    status, data, _ = await call(
        url, "/v1/channels/jaki/reports", body, {**JSON, "Authorization": "Bearer x"}
    )
    assert (status, data["code"]) == (403, "forbidden")
    assert await metric(url, "crm_ingress_rejected_total", channel="desk_kecamatan", code="wrong_office") >= 1
    assert await metric(url, "crm_ingress_rejected_total", channel="desk_kelurahan", code="wrong_office") >= 1
    assert await metric(url, "crm_ingress_rejected_total", channel="desk_kelurahan", code="forbidden") >= 1


# ------------------------------------------------------------------------------------- broken bodies
async def test_oversized_nested_and_invalid_utf8_bodies(secure):
    url = secure["url"]
    route = "/v1/channels/web/reports"
    ip = "127.0.0.7"
    status, data, _ = await call(url, route, b'{"text": "' + b"a" * 200_000 + b'"}', JSON, source_ip=ip)
    assert (status, data["code"]) == (413, "too_large")
    nested = b'{"text": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    status, data, _ = await call(url, route, nested, JSON, source_ip=ip)
    assert (status, data["code"]) == (400, "malformed_json")
    deep_ok_size = b'{"text": "Pohon tumbang di jalan", "x": ' + b"[" * 500 + b"]" * 500 + b"}"
    status, data, _ = await call(url, route, deep_ok_size, JSON, source_ip=ip)
    assert status in (202, 400)  # accepted (unknown field ignored) or refused with a reason, never a crash
    status, data, _ = await call(url, route, b"laporan=Jalan%20rusak%20\xff\xfe\xfd", FORM, source_ip=ip)
    assert (status, data["code"]) == (400, "bad_encoding")
    status, data, _ = await call(url, route, b'{"text": "Jalan rusak \xff\xfe parah"}', JSON, source_ip=ip)
    assert (status, data["code"]) == (400, "malformed_json")
    # The ingress is still up and answering.
    status, _, _ = await call(url, "/healthz", method="GET", source_ip=ip)
    assert status == 200
    for code in ("too_large", "malformed_json", "bad_encoding"):
        assert await metric(url, "crm_ingress_rejected_total", channel="web", code=code) >= 1, code
    # Refused citizen input is on the dead-letter topic with its reason (raw kept, capped).
    s = settings_of(secure)
    letters = [DeadLetter.loads(r.value) for r in await read_to_end(s, Topics(s.topic_namespace).deadletter)]
    codes = {d.code for d in letters if d.channel == "web"}
    assert {"too_large", "malformed_json", "bad_encoding"} <= codes
    assert all(d.reason for d in letters)


async def test_sql_text_is_stored_verbatim_and_harmless(secure):
    url, iso = secure["url"], secure["iso"]
    text = "Robert'); DROP TABLE reports; -- lampu mati di Jl. Salemba' OR '1'='1; SELECT pg_sleep(10);"
    name = "x'); DELETE FROM reporter_contacts; --"
    status, data, _ = await call(
        url,
        "/v1/channels/web/reports",
        orjson.dumps({"text": text, "nama": name}),
        JSON,
        source_ip="127.0.0.8",
    )
    assert status == 202
    rid = data["report_id"]
    row = wait_until(
        lambda: iso.query("SELECT text_original FROM reports WHERE report_id = %s", (rid,)),
        what="the report with SQL text in the store",
    )
    assert row == [(text,)]
    assert iso.query(
        "SELECT to_regclass('reports') IS NOT NULL, to_regclass('reporter_contacts') IS NOT NULL"
    ) == [(True, True)]
    [(stored_name,)] = iso.query("SELECT name FROM reporter_contacts WHERE report_id = %s", (rid,))
    assert ContactCipher.from_settings(settings_of(secure)).decrypt(stored_name, rid, "name") == name


# -------------------------------------------------------------------------------------- rate limits
def sms_gateway(s, msg_id: str, sender: str, text: str) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps({"id": msg_id, "from": sender, "text": text})
    stamp = str(int(time.time()))
    sig = gateway_signature(s.sms_gateway_secret.get_secret_value(), stamp, body)
    return body, {**JSON, "X-Gateway-Timestamp": stamp, "X-Gateway-Signature": sig}


async def test_a_flooding_number_is_throttled_flagged_and_does_not_starve_others(secure):
    url = secure["url"]
    s = settings_of(secure)
    route = "/v1/channels/sms/inbound"
    ip = "127.0.0.10"
    flood_status, other_status, retry_after, flood_bodies = [], [], [], []
    for i in range(8):
        body, headers = sms_gateway(
            s, f"flood-{i}", "0812 9999 0000", f"Spam laporan berulang nomor {i} di Jl. X"
        )
        flood_bodies.append(body)
        status, data, h = await call(url, route, body, headers, source_ip=ip)
        flood_status.append(status)
        if status == 429:
            assert data["code"] == "rate_limited"
            retry_after.append(int(h["Retry-After"]))
        # Interleaved: a different citizen on the same gateway, one report each.
        body, headers = sms_gateway(
            s, f"other-{i}", f"0813 1000 00{i:02d}", f"Banjir di gang {i} Kampung Melayu"
        )
        status, _, _ = await call(url, route, body, headers, source_ip=ip)
        other_status.append(status)
    assert flood_status[:3] == [200, 200, 200]  # the burst
    assert flood_status.count(429) >= 4
    assert all(r >= 1 for r in retry_after)
    assert other_status == [200] * 8  # nobody else was starved
    assert await metric(url, "crm_ingress_rate_limited_total", channel="sms", scope="sender") >= 4
    assert await metric(url, "crm_ingress_rejected_total", channel="sms", code="rate_limited") >= 4
    # Flagged, not dropped: every throttled request is a dead letter with its raw payload.
    letters = [DeadLetter.loads(r.value) for r in await read_to_end(s, Topics(s.topic_namespace).deadletter)]
    flagged = [d for d in letters if d.code == "rate_limited" and d.channel == "sms"]
    throttled = {flood_bodies[i] for i, st in enumerate(flood_status) if st == 429}
    assert throttled <= {d.raw() for d in flagged}
    assert all(d.meta.get("scope") == "sender" and d.report_id for d in flagged)
    # The dead letter never names the number in clear text outside the raw payload it must keep.
    assert all("9999" not in d.reason for d in flagged)


async def test_per_ip_limit_throttles_one_client_not_another_and_ignores_spoofed_forwarding(secure):
    url = secure["url"]
    route = "/v1/channels/web/reports"
    seen = []
    for i in range(16):  # anonymous reports: only the IP limit applies (burst 12)
        spoof = {**JSON, "X-Forwarded-For": f"10.0.0.{i}"}  # not from a trusted proxy: ignored
        status, _, headers = await call(url, route, web_report(1000 + i), spoof, source_ip="127.0.0.11")
        seen.append(status)
        if status == 429:
            assert int(headers["Retry-After"]) >= 1
    assert seen[:12] == [202] * 12 and 429 in seen[12:]
    status, _, _ = await call(url, route, web_report(2000), JSON, source_ip="127.0.0.12")
    assert status == 202  # another client is unaffected
    # Behind the trusted proxy (127.0.0.9) the forwarded client address is the bucket.
    via_proxy = []
    for i in range(3):
        status, _, _ = await call(
            url,
            route,
            web_report(3000 + i),
            {**JSON, "X-Forwarded-For": "203.0.113.7"},
            source_ip="127.0.0.9",
        )
        via_proxy.append(status)
    assert via_proxy == [202, 202, 202]
    assert await metric(url, "crm_ingress_rate_limited_total", channel="web", scope="ip") >= 1


# ------------------------------------------------------------------------- header and CSV injection
def test_crlf_in_email_subjects_and_names_never_becomes_a_header():
    from pipeline.crm.notify.outbox import Notification
    from pipeline.crm.notify.senders import EmailSender
    from pipeline.settings import Settings
    from pipeline.sources.email import EmailGatewaySource

    settings = Settings(env="test")
    import base64

    from pipeline.sources.base import Rejected

    evil_subject = base64.b64encode(b"Jalan rusak\r\nBcc: victim@example.com")
    raw = (
        b"From: Warga <warga@example.com>\r\nTo: dki@jakarta.go.id\r\n"
        b"Subject: =?utf-8?b?" + evil_subject + b"?=\r\n"
        b"Message-ID: <abc@example.com>\r\n\r\nJalan berlubang di Jl. Sudirman.\r\n"
    )
    # A display name that decodes to CR/LF is refused with a reason (it would be a header injection).
    evil_from = raw.replace(b"Warga <", b"=?utf-8?q?Evil=0D=0ABcc=3A_victim=40example=2Ecom?= <")
    with pytest.raises(Rejected) as refused:
        EmailGatewaySource(settings).parse(evil_from, "warga@example.com")
    assert refused.value.code == "bad_sender" and refused.value.reason
    parsed = EmailGatewaySource(settings).parse(raw, "warga@example.com")
    ack = EmailGatewaySource(settings).acknowledgement(parsed).as_bytes()
    headers = ack.split(b"\n\n", 1)[0]
    assert b"\nBcc:" not in headers and b"\r\nBcc:" not in headers
    assert ack.count(b"Subject:") == 1

    def note(**kw: Any) -> Notification:
        base = dict(
            outbox_id=1,
            report_id="00000000-0000-0000-0000-000000000001",
            event_key="ack",
            channel="web",
            destination="email",
            kind="ack",
            to_status=None,
            body="Terima kasih",
            attempts=0,
            provider_id="sha256:x",
            in_reply_to=None,
            private=False,
            tracking_number="JKT-00000001",
            status="Menunggu",
        )
        return Notification(**{**base, **kw})

    sender = EmailSender(settings)
    msg = sender.build(note(email="warga@example.com", name="Ani\r\nBcc: victim@example.com"))
    assert b"Bcc" not in msg.as_bytes()
    with pytest.raises(ValueError):  # an address with CR/LF is refused, never written as a header
        sender.build(note(email="warga@example.com\r\nBcc: victim@example.com")).as_bytes()
    with pytest.raises(ValueError):
        sender.build(
            note(email="warga@example.com", tracking_number="JKT-1\r\nBcc: v@example.com")
        ).as_bytes()


def test_desk_import_error_export_neutralises_formula_injection(secure, tmp_path: Path):
    src = tmp_path / "desk.csv"
    payloads = [
        "=cmd|' /C calc'!A0",
        '+HYPERLINK("http://evil")',
        "-2+3+cmd|' /C calc'!A0",
        "@SUM(1+1)*cmd|'/C calc'!A0",
    ]
    rows = [["text", "phone", "name"]]
    rows += [[p, "", "Warga"] for p in payloads]  # text too short/formula: refused (missing_text) or kept
    rows += [["Jalan rusak parah di gang kelinci", "=1+2", '=HYPERLINK("x")']]  # bad phone: refused
    with src.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    out = tmp_path / "errors.csv"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "desk-import",
            str(src),
            "--channel",
            "desk_kelurahan",
            "--office",
            "31.71.01.1001",
            "--officer",
            "=cmd|' /C calc'!A0",
            "--errors-out",
            str(out),
            "--quiet",
        ],
        env={**os.environ, **secure["env"]},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    with out.open(newline="", encoding="utf-8") as fh:
        cells = [c for row in csv.reader(fh) for c in row]
    assert len(cells) > 5
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")], cells


# ------------------------------------------------------------------------------ contact protection
async def test_contacts_are_encrypted_at_rest_and_never_on_routed_topics_or_in_logs(secure):
    url, iso = secure["url"], secure["iso"]
    s = settings_of(secure)
    status, data, _ = await call(
        url,
        "/v1/channels/web/reports",
        orjson.dumps(
            {
                "text": "Pohon tumbang menutup Jl. Matraman Raya",
                "email": EMAIL,
                "no_hp": PHONE_RAW,
                "nama": NAME,
            }
        ),
        JSON,
        source_ip="127.0.0.13",
    )
    assert status == 202
    rid = data["report_id"]
    body, headers = sms_gateway(s, "pii-1", PHONE_RAW, "Lampu PJU mati di Jl. Matraman, hubungi " + EMAIL)
    status, sms_data, _ = await call(url, "/v1/channels/sms/inbound", body, headers, source_ip="127.0.0.13")
    assert status == 200
    wait_until(
        lambda: (
            iso.query(
                "SELECT count(*) FROM reports WHERE report_id = ANY(%s::uuid[])",
                ([rid, sms_data["report_id"]],),
            )[0][0]
            == 2
        ),
        what="both reports stored",
    )
    rows = iso.query(
        "SELECT report_id::text, name, email, phone, key_id FROM reporter_contacts "
        "WHERE report_id = ANY(%s::uuid[])",
        ([rid, sms_data["report_id"]],),
    )
    cipher = ContactCipher.from_settings(s)
    for report_id, name, email, phone, key_id in rows:
        for _column, value in (("name", name), ("email", email), ("phone", phone)):
            assert value is None or value.startswith(f"enc:v1:{key_id}:")
            assert EMAIL not in (value or "") and PHONE not in (value or "")
        assert cipher.decrypt(phone, report_id, "phone") == PHONE
    web_row = next(r for r in rows if r[0] == rid)
    assert cipher.decrypt(web_row[2], rid, "email") == EMAIL

    # Routed topics (what agencies and dashboards read): no contact detail, not even inside the text.
    from aiokafka.admin import AIOKafkaAdminClient

    from pipeline.security import kafka_client_kwargs

    admin = AIOKafkaAdminClient(**kafka_client_kwargs(s))
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(f"{s.topic_namespace}.")]
    finally:
        await admin.close()
    public = [t for t in names if ".routed." in t or t.endswith(".triage.v1")]
    assert public
    blob = b""
    for topic in public:
        blob += b"".join(r.value for r in await read_to_end(s, topic))
    assert rid.encode() in blob or sms_data["report_id"].encode() in blob  # the reports did arrive
    for secret in (EMAIL, PHONE, PHONE_RAW, PHONE.removeprefix("+"), NAME):
        assert secret.encode() not in blob, f"{secret!r} on a routed topic"

    # Logs of the ingress and the worker (JSON lines and tracebacks alike).
    await asyncio.sleep(1)
    for proc in secure["procs"]:
        text = proc.output()
        for secret in (EMAIL, PHONE, PHONE_RAW, NAME, "rahasia.warga77"):
            assert secret not in text, f"{secret!r} in the {proc.name} log"


def test_rate_limit_keys_hold_no_contact_details(secure):
    """Rate-limit buckets are keyed by the reporter pseudonym: no phone number in Redis keys."""
    import redis

    client = redis.Redis.from_url(secure["env"]["CRM_REDIS_URL"])
    keys = [k.decode() for k in client.scan_iter(match=f"{secure['iso'].tag}:rl:*", count=1000)]
    assert keys
    assert not [k for k in keys if "0812" in k or "+62" in k or "@" in k]
