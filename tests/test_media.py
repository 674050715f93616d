"""Report media on the real stack (issue #21): Kafka, PostgreSQL, Redis and the S3 object store
(SeaweedFS, started by deploy/stack.sh), the pipeline, the media stage and the API as processes, and
local HTTP(S) peers for the photo hosts, the Meta Graph API and the WhatsApp media endpoint.

One pipeline for the module, with the WhatsApp example channel installed the way pip would (a
dist-info folder on the path), so its adapter and its media fetcher are found by entry point.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import io
import ipaddress
import os
import ssl
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import boto3
import orjson
import pytest
from aiohttp import web
from botocore.config import Config
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image

from pipeline.envelope import report_id_for
from pipeline.sources.meta import sign as meta_sign
from tests.harness import Isolated, Process, free_port, wait_http, wait_until
from tests.media_helpers import FAKE_JPEG, GPS_MONAS, has_exif, jpeg_with_exif

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "whatsapp_channel"
JAKI = {"Authorization": "Bearer dev-only-jaki-token", "Content-Type": "application/json"}
OFFICER, SUPERVISOR, PUBLIC = "dev-only-officer", "dev-only-crm-supervisor", "dev-only-open311-public"
TWILIO_TOKEN = "dev-only-twilio-auth-token"
PAGE_TOKEN, WA_TOKEN = "page-token-" + uuid.uuid4().hex[:8], "wa-token-" + uuid.uuid4().hex[:8]


# ------------------------------------------------------------------------------------------ peers
def _tls(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: the Meta CDN and Graph API stand-in speak HTTPS."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "peer.pem", tmp / "peer.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class Peers:
    """Photo hosts and provider APIs, in a thread with its own event loop. Counts every hit."""

    def __init__(self, tmp: Path) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.hits: dict[str, int] = {}
        self.cert, key = _tls(tmp)
        self.http_port, self.https_port = free_port(), free_port()
        self.http = f"http://127.0.0.1:{self.http_port}"
        self.https = f"https://127.0.0.1:{self.https_port}"
        self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ssl.load_cert_chain(self.cert, key)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/files/{name}", self.file)
        app.router.add_get("/broken/{name}", self.broken)
        app.router.add_get("/cdn/{name}", self.cdn)
        app.router.add_get("/v19.0/{obj}", self.graph)
        app.router.add_get("/wa/{media_id}", self.wa_media)
        app.router.add_get("/wa-download/{media_id}", self.wa_download)
        app.router.add_get("/2010-04-01/Accounts/{account}/Messages/{message}/Media/{media}", self.twilio)
        return app

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            for port, ctx in ((self.http_port, None), (self.https_port, self._ssl)):
                runner = web.AppRunner(self._app())
                await runner.setup()
                await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def _hit(self, request: web.Request) -> None:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1

    async def file(self, request: web.Request) -> web.StreamResponse:
        self._hit(request)
        found = self.files.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        data, ctype = found
        return web.Response(body=data, content_type=ctype)

    async def broken(self, request: web.Request) -> web.Response:
        self._hit(request)
        return web.Response(status=503, text="photo server overloaded")

    async def cdn(self, request: web.Request) -> web.Response:
        """fbcdn-like: a URL past its ``oe`` expiry answers 403, as Meta's CDN does."""
        self._hit(request)
        if int(request.query.get("oe", "0")) < time.time():
            return web.Response(status=403, text="URL signature expired")
        data, ctype = self.files[request.match_info["name"]]
        return web.Response(body=data, content_type=ctype)

    async def graph(self, request: web.Request) -> web.Response:
        self._hit(request)
        if request.headers.get("Authorization") != f"Bearer {PAGE_TOKEN}":
            return web.json_response({"error": {"message": "Invalid OAuth access token"}}, status=401)
        if request.query.get("fields") != "attachment":
            return web.json_response(
                {"error": {"message": "(#100) Tried accessing nonexisting field"}}, status=400
            )
        fresh = f"{self.https}/cdn/{request.match_info['obj']}.jpg?oe={int(time.time()) + 3600}"
        return web.json_response(
            {"id": request.match_info["obj"], "attachment": {"media": {"image": {"src": fresh}}}}
        )

    async def wa_media(self, request: web.Request) -> web.Response:
        self._hit(request)
        if request.headers.get("Authorization") != f"Bearer {WA_TOKEN}":
            return web.json_response({"error": {"message": "Invalid OAuth access token"}}, status=401)
        mid = request.match_info["media_id"]
        data, ctype = self.files[f"wa-{mid}"]
        return web.json_response(
            {
                "url": f"{self.http}/wa-download/{mid}?ext={int(time.time()) + 300}",
                "mime_type": ctype,
                "sha256": hashlib.sha256(data).hexdigest(),
                "file_size": len(data),
                "id": mid,
                "messaging_product": "whatsapp",
            }
        )

    async def wa_download(self, request: web.Request) -> web.Response:
        self._hit(request)
        if request.headers.get("Authorization") != f"Bearer {WA_TOKEN}":
            return web.Response(status=401)
        data, ctype = self.files[f"wa-{request.match_info['media_id']}"]
        return web.Response(body=data, content_type=ctype)

    async def twilio(self, request: web.Request) -> web.Response:
        """Twilio's media URL with HTTP basic auth enforced: account SID and auth token."""
        self._hit(request)
        expected = (
            "Basic " + base64.b64encode(f"{request.match_info['account']}:{TWILIO_TOKEN}".encode()).decode()
        )
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401, text="Authenticate")
        data, ctype = self.files[f"mms-{request.match_info['media']}"]
        return web.Response(body=data, content_type=ctype)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def plugin_path(tmp: Path) -> str:
    """The WhatsApp example as pip would install it: its entry points in a dist-info folder."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    info = tmp / f"crm_whatsapp_channel-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = []
    for group, eps in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in eps.items()]
        lines.append("")
    (info / "entry_points.txt").write_text("\n".join(lines))
    return os.pathsep.join([str(tmp), str(EXAMPLE)])


# ---------------------------------------------------------------------------------------- the stack
class Media:
    def __init__(self, iso: Isolated, env: dict[str, str], peers: Peers, ingress: str, api: str, smtp: int):
        self.iso, self.env, self.peers = iso, env, peers
        self.ingress, self.api, self.smtp = ingress, api, smtp
        self.bucket = env["CRM_MEDIA_BUCKET"]
        self.s3 = boto3.client(
            "s3",
            endpoint_url=env["CRM_MEDIA_S3_ENDPOINT"],
            aws_access_key_id=env["CRM_MEDIA_S3_ACCESS_KEY"],
            aws_secret_access_key=env["CRM_MEDIA_S3_SECRET_KEY"],
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
        )

    def objects(self, prefix: str = "") -> dict[str, int]:
        try:
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}
        except self.s3.exceptions.NoSuchBucket:
            return {}

    def object(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def rows(self, report_id: str) -> list[tuple[Any, ...]]:
        return self.iso.query(
            "SELECT idx, state, sha256, code, reason, attempts, gps_lat, gps_lon FROM report_media"
            " WHERE report_id = %s AND kind = 'citizen' ORDER BY idx",
            (report_id,),
        )

    def settled(self, report_id: str, n: int, timeout: float = 150) -> list[tuple[Any, ...]]:
        def done() -> list[tuple[Any, ...]] | None:
            rows = self.rows(report_id)
            return rows if len(rows) == n and all(r[1] != "pending" for r in rows) else None

        try:
            return wait_until(done, timeout=timeout, what=f"{n} media of {report_id} settled")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; rows now: {self.rows(report_id)}") from None

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        async def go() -> tuple[int, Any]:
            async with (
                aiohttp.ClientSession() as s,
                s.post(self.ingress + path, data=body, headers=headers) as r,
            ):
                return r.status, await r.json(content_type=None)

        return asyncio.run(go())

    def api_get(self, path: str, key: str | None = None) -> tuple[int, Any]:
        async def go() -> tuple[int, Any]:
            headers = {"X-API-Key": key} if key else {}
            async with aiohttp.ClientSession() as s, s.get(self.api + path, headers=headers) as r:
                return r.status, await r.json(content_type=None)

        return asyncio.run(go())


def get_bytes(url: str) -> tuple[int, bytes, str]:
    async def go() -> tuple[int, bytes, str]:
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            return r.status, await r.read(), r.headers.get("Content-Type", "")

    return asyncio.run(go())


@pytest.fixture(scope="module")
def media(stack: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Media]:
    tmp = tmp_path_factory.mktemp("media")
    peers = Peers(tmp)
    iso = Isolated()
    iso.create_database()
    env = {
        **iso.env,
        "CRM_MEDIA_BUCKET": f"media-{iso.tag}",
        "CRM_MEDIA_RETRY_FIRST_S": "0.3",
        "CRM_MEDIA_RETRY_FACTOR": "1",
        "CRM_MEDIA_FETCH_CA_FILE": str(peers.cert),
        "CRM_MEDIA_FETCH_ALLOW_PRIVATE": "true",  # the peers listen on 127.0.0.1
        "CRM_NOTIFY_META_GRAPH_BASE": peers.https,
        "CRM_NOTIFY_META_PAGE_TOKEN": PAGE_TOKEN,
        "CRM_WHATSAPP_ACCESS_TOKEN": WA_TOKEN,
        "CRM_WHATSAPP_GRAPH_BASE": f"{peers.http}/wa",
        "CRM_DEDUP_TEXT_WINDOW_S": "0",
    }
    (tmp / "site").mkdir(exist_ok=True)
    env["PYTHONPATH"] = plugin_path(tmp / "site")
    api_port, smtp_port, ingress_port = free_port(), free_port(), free_port()
    env["CRM_INGRESS_PORT"] = str(ingress_port)
    for step in (["topics", "create"], ["store", "migrate"]):
        subprocess.run([sys.executable, "-m", "pipeline", *step], env={**os.environ, **env}, check=True)
    procs = [
        Process("ingress", ["ingress"], env),
        Process("worker", ["worker", "--loglevel", "warning"], env),
        Process("media", ["media", "run"], env),
        Process("api", ["api", "--port", str(api_port)], env),
        Process("smtp", ["smtp", "--port", str(smtp_port)], env),
    ]
    try:
        wait_http(f"http://127.0.0.1:{ingress_port}/readyz", procs[0])
        wait_http(f"http://127.0.0.1:{api_port}/healthz", procs[3])
        yield Media(
            iso, env, peers, f"http://127.0.0.1:{ingress_port}", f"http://127.0.0.1:{api_port}", smtp_port
        )
    finally:
        for p in procs:
            p.stop()
        peers.close()
        iso.drop_database()
        drop_bucket(env)


def drop_bucket(env: dict[str, str]) -> None:
    """A test bucket is a SeaweedFS collection with volumes of its own: delete it, not only its objects."""
    s3 = boto3.client(
        "s3",
        endpoint_url=env["CRM_MEDIA_S3_ENDPOINT"],
        aws_access_key_id=env["CRM_MEDIA_S3_ACCESS_KEY"],
        aws_secret_access_key=env["CRM_MEDIA_S3_SECRET_KEY"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=env["CRM_MEDIA_BUCKET"]):
            for o in page.get("Contents", []):
                s3.delete_object(Bucket=env["CRM_MEDIA_BUCKET"], Key=o["Key"])
        s3.delete_bucket(Bucket=env["CRM_MEDIA_BUCKET"])
    except s3.exceptions.NoSuchBucket:
        pass


def jaki(media: Media, provider_id: str, urls: list[str], text: str | None = None) -> str:
    body = {
        "report_id": provider_id,
        "text": text or f"Saluran air tersumbat di Jl. Pemuda, laporan {provider_id}",
        "photo_urls": urls,
        "account_id": "u-" + provider_id,
    }
    status, answer = media.post("/v1/channels/jaki/reports", orjson.dumps(body), JAKI)
    assert status == 202, answer
    return report_id_for("jaki", provider_id)


# ------------------------------------------------------------------------------------------- tests
def test_jaki_report_with_two_photos_stored_once_exif_free_and_redelivery_adds_nothing(media: Media) -> None:
    n = uuid.uuid4().hex[:8]
    a, b = jpeg_with_exif(seed=11), jpeg_with_exif(seed=12, gps=False)
    media.peers.files[f"{n}-a.jpg"] = (a, "image/jpeg")
    media.peers.files[f"{n}-b.jpg"] = (b, "image/jpeg")
    urls = [f"{media.peers.http}/files/{n}-a.jpg", f"{media.peers.http}/files/{n}-b.jpg"]
    rid = jaki(media, f"JAKI-{n}", urls)
    rows = media.settled(rid, 2)
    assert [r[1] for r in rows] == ["stored", "stored"]
    sha_a, sha_b = hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest()
    assert [r[2] for r in rows] == [sha_a, sha_b]
    assert rows[0][6:8] == pytest.approx(GPS_MONAS)  # the GPS is kept as a location candidate
    objects = media.objects()
    for sha in (sha_a, sha_b):
        assert media.object(f"original/{sha[:2]}/{sha}.jpg") in (a, b)
        public = media.object(f"public/{sha[:2]}/{sha}.jpg")
        assert not has_exif(public) and b"SM-A515F" not in public
        assert f"thumb/{sha[:2]}/{sha}.jpg" in objects
    assert has_exif(media.object(f"original/{sha_a[:2]}/{sha_a}.jpg"))  # the original is as received

    before, hits = media.objects(), dict(media.peers.hits)
    jaki(media, f"JAKI-{n}", urls)  # the JAKI backend retries the same report
    jaki(media, f"JAKI-{n}-again", urls[:1])  # another report with the same photo
    rows2 = media.settled(report_id_for("jaki", f"JAKI-{n}-again"), 1)
    assert rows2[0][2] == sha_a
    time.sleep(1.5)
    assert media.objects() == before  # nothing new stored
    assert media.rows(rid) == rows
    assert media.peers.hits[f"/files/{n}-b.jpg"] == hits[f"/files/{n}-b.jpg"]  # the retry fetched nothing


def test_meta_comment_with_an_expired_media_url_is_renewed_through_the_graph_api(media: Media) -> None:
    n = uuid.uuid4().hex[:8]
    comment_id = f"104{n}_9{n}"
    photo = jpeg_with_exif(seed=21)
    media.peers.files[f"{comment_id}.jpg"] = (photo, "image/jpeg")
    expired = f"{media.peers.https}/cdn/{comment_id}.jpg?oe={int(time.time()) - 60}"
    payload = {
        "object": "page",
        "entry": [
            {
                "id": "104",
                "time": int(time.time()),
                "changes": [
                    {
                        "field": "feed",
                        "value": {
                            "item": "comment",
                            "verb": "add",
                            "comment_id": comment_id,
                            "post_id": "104_77",
                            "parent_id": "104_77",
                            "message": f"Lampu jalan mati di Jl. Kramat Raya, foto terlampir {n}",
                            "photo": expired,
                            "from": {"id": "2001" + n[:4], "name": "Budi"},
                            "created_time": int(time.time()),
                        },
                    }
                ],
            }
        ],
    }
    body = orjson.dumps(payload)
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": meta_sign("dev-only-facebook-app-secret", body),
    }
    status, answer = media.post("/v1/channels/facebook/webhook", body, headers)
    assert status == 200 and answer["accepted"] == 1, answer
    rows = media.settled(report_id_for("facebook", comment_id), 1)
    assert rows[0][1] == "stored" and rows[0][2] == hashlib.sha256(photo).hexdigest()
    assert media.peers.hits[f"/v19.0/{comment_id}"] >= 1  # the expired URL was renewed
    assert not has_exif(media.object(f"public/{rows[0][2][:2]}/{rows[0][2]}.jpg"))


def test_email_with_an_attached_jpeg(media: Media) -> None:
    photo = jpeg_with_exif(seed=31)
    msg = EmailMessage()
    msg["From"] = "Rina Wijaya <rina.wijaya@example.com>"
    msg["To"] = "dki@jakarta.go.id"
    msg["Subject"] = "Pohon tumbang di Jl. Cikini Raya"
    mid = f"<{uuid.uuid4().hex}@mail.example.com>"
    msg["Message-ID"] = mid
    msg.set_content(f"Pohon tumbang menutup jalan, foto terlampir. {mid}")
    msg.add_attachment(photo, maintype="image", subtype="jpeg", filename="pohon.jpg")
    asyncio.run(aiosmtplib.send(msg, hostname="127.0.0.1", port=media.smtp, sender="rina.wijaya@example.com"))
    got = wait_until(
        lambda: media.iso.query(
            "SELECT report_id::text FROM reports WHERE channel = 'email' AND text_original LIKE %s",
            (f"%{mid}%",),
        ),
        timeout=60,
        what="the e-mail report stored",
    )
    rid = got[0][0]
    rows = media.settled(rid, 1)
    assert rows[0][1] == "stored" and rows[0][2] == hashlib.sha256(photo).hexdigest(), rows
    assert not has_exif(media.object(f"public/{rows[0][2][:2]}/{rows[0][2]}.jpg"))


def test_whatsapp_photo_by_media_id_through_the_plugin_fetcher(media: Media) -> None:
    n = uuid.uuid4().hex[:10]
    media_id = "77" + "".join(c for c in n if c.isdigit()) + "1"
    photo = jpeg_with_exif(seed=41)
    media.peers.files[f"wa-{media_id}"] = (photo, "image/jpeg")
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "WABA1",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "628111272206", "phone_number_id": "1"},
                            "contacts": [{"profile": {"name": "Siti"}, "wa_id": "6281234567890"}],
                            "messages": [
                                {
                                    "from": "6281234567890",
                                    "id": f"wamid.{n}",
                                    "timestamp": str(int(time.time())),
                                    "type": "image",
                                    "image": {
                                        "id": media_id,
                                        "mime_type": "image/jpeg",
                                        "caption": f"Banjir di gang {n}",
                                    },
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    body = orjson.dumps(payload)
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": meta_sign("dev-only-whatsapp-app-secret", body),
    }
    status, answer = media.post("/v1/channels/whatsapp/webhook", body, headers)
    assert status == 200 and answer["accepted"] == 1, answer
    rows = media.settled(report_id_for("whatsapp", f"wamid.{n}"), 1)
    assert rows[0][1] == "stored" and rows[0][2] == hashlib.sha256(photo).hexdigest(), rows
    assert media.peers.hits[f"/wa/{media_id}"] >= 1 and media.peers.hits[f"/wa-download/{media_id}"] >= 1
    assert not has_exif(media.object(f"public/{rows[0][2][:2]}/{rows[0][2]}.jpg"))


def test_a_fetch_failing_three_times_is_failed_and_listed(media: Media) -> None:
    n = uuid.uuid4().hex[:8]
    rid = jaki(media, f"JAKI-F{n}", [f"{media.peers.http}/broken/{n}.jpg"])
    rows = media.settled(rid, 1)
    assert rows[0][1] == "failed" and rows[0][5] == 3, rows
    assert media.peers.hits[f"/broken/{n}.jpg"] == 3
    assert "503" in rows[0][4]
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "media", "failed", "--json"],
        env={**os.environ, **media.env},
        capture_output=True,
        check=True,
    ).stdout
    listed = [r for r in orjson.loads(out) if r["report_id"] == rid]
    assert listed and listed[0]["state"] == "failed" and "503" in listed[0]["reason"]


def test_non_image_renamed_jpg_and_a_50_mb_file_are_refused_with_a_reason(media: Media) -> None:
    n = uuid.uuid4().hex[:8]
    media.peers.files[f"{n}-fake.jpg"] = (FAKE_JPEG, "image/jpeg")
    media.peers.files[f"{n}-huge.jpg"] = (b"\xff\xd8\xff" + os.urandom(50_000_000 - 3), "image/jpeg")
    urls = [f"{media.peers.http}/files/{n}-fake.jpg", f"{media.peers.http}/files/{n}-huge.jpg"]
    rid = jaki(media, f"JAKI-R{n}", urls)
    rows = media.settled(rid, 2)
    assert rows[0][1] == "refused" and rows[0][3] == "not_an_image" and "PDF" in rows[0][4], rows
    assert rows[1][1] == "refused" and rows[1][3] == "too_large" and "limit" in rows[1][4], rows
    del media.peers.files[f"{n}-huge.jpg"]

    # An officer's upload of 50 MB is refused before it is read, and so is a PDF named .jpg.
    async def upload(data: bytes, name: str) -> tuple[int, Any]:
        url = f"{media.api}/v1/reports/{rid}/media?name={name}"
        async with (
            aiohttp.ClientSession() as s,
            s.post(url, data=data, headers={"X-API-Key": OFFICER, "Content-Type": "image/jpeg"}) as r,
        ):
            return r.status, await r.json(content_type=None)

    status, answer = asyncio.run(upload(b"\xff\xd8\xff" + b"\0" * (50_000_000 - 3), "besar.jpg"))
    assert status == 413 and "limit" in answer[0]["description"], answer
    status, answer = asyncio.run(upload(FAKE_JPEG, "after.jpg"))
    assert status == 415 and "PDF" in answer[0]["description"], answer


def test_officer_signed_urls_open311_public_copy_and_after_photos(media: Media) -> None:
    n = uuid.uuid4().hex[:8]
    photo = jpeg_with_exif(seed=51)
    media.peers.files[f"{n}.jpg"] = (photo, "image/jpeg")
    rid = jaki(media, f"JAKI-S{n}", [f"{media.peers.http}/files/{n}.jpg"])
    assert media.settled(rid, 1)[0][1] == "stored"

    status, listed = media.api_get(f"/v1/reports/{rid}/media", OFFICER)
    assert status == 200, listed
    item = listed["media"][0]
    assert "original_url" not in item  # officers without the contacts role never get the original
    code, public, ctype = get_bytes(item["url"])
    assert code == 200 and ctype == "image/jpeg" and not has_exif(public)
    with Image.open(io.BytesIO(public)) as img:
        assert img.size == (96, 64)
    assert get_bytes(item["url"].replace("Signature=", "Signature=0"))[0] == 403  # the signature is checked
    assert get_bytes(item["url"].split("?")[0])[0] == 403  # the store is not public
    assert media.api_get(f"/v1/reports/{rid}/media", PUBLIC)[0] == 403  # the public key has no media:read

    status, listed = media.api_get(f"/v1/reports/{rid}/media", SUPERVISOR)
    code, original, _ = get_bytes(listed["media"][0]["original_url"])
    assert code == 200 and original == photo and has_exif(original)

    # Open311: media_url is the public, EXIF-free copy, fetched as any Open311 client would.
    status, found = media.api_get(f"/open311/v2/requests/{rid}.json?api_key={PUBLIC}")
    assert status == 200 and found[0]["media_url"].startswith(media.api + "/open311/v2/media/"), found
    code, body, ctype = get_bytes(found[0]["media_url"])
    assert code == 200 and body == public and ctype == "image/jpeg"

    # An officer's "after" photo with a status change: stored the same way, listed as kind 'after'.
    after = jpeg_with_exif(seed=52)

    async def upload() -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{media.api}/v1/reports/{rid}/media?event_id=ev-{n}&actor=siti",
                data=after,
                headers={"X-API-Key": OFFICER, "Content-Type": "image/jpeg"},
            ) as r,
        ):
            return r.status, await r.json(content_type=None)

    status, stored = asyncio.run(upload())
    assert (
        status == 201 and stored["kind"] == "after" and stored["sha256"] == hashlib.sha256(after).hexdigest()
    )
    assert asyncio.run(upload())[1]["index"] == stored["index"]  # a retried upload is the same photo
    status, listed = media.api_get(f"/v1/reports/{rid}/media", OFFICER)
    kinds = [(m["kind"], m.get("event_id")) for m in listed["media"]]
    assert kinds == [("after", f"ev-{n}"), ("citizen", None)], kinds
    assert not has_exif(get_bytes(listed["media"][0]["url"])[1])


def test_dashboard_shows_thumbnails_and_what_was_not_kept(media: Media) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from pipeline.dashboard.app import build_app
    from pipeline.settings import Settings

    n = uuid.uuid4().hex[:8]
    media.peers.files[f"{n}.jpg"] = (jpeg_with_exif(seed=61), "image/jpeg")
    rid = jaki(
        media, f"JAKI-D{n}", [f"{media.peers.http}/files/{n}.jpg", f"{media.peers.http}/broken/{n}.jpg"]
    )
    media.settled(rid, 2)
    values = {k.removeprefix("CRM_").lower(): v for k, v in media.env.items() if k.startswith("CRM_")}
    settings = Settings(**values)

    async def go() -> tuple[Any, Any, tuple[int, bytes, str]]:
        client = TestClient(TestServer(build_app(settings)))
        await client.start_server()
        try:
            report = await (await client.get(f"/api/report/{rid}")).json()
            snap = await (await client.get("/api/snapshot")).json()
            thumb = await client.get(report["media"][0]["thumbnail"])
            return report, snap, (thumb.status, await thumb.read(), thumb.headers["Content-Type"])
        finally:
            await client.close()

    report, snap, (status, body, ctype) = asyncio.run(go())
    stored, failed = report["media"]
    assert stored["state"] == "stored" and failed["state"] == "failed" and "503" in failed["reason"]
    assert status == 200 and ctype == "image/jpeg" and not has_exif(body)
    with Image.open(io.BytesIO(body)) as img:
        assert max(img.size) <= 320
    assert snap["media"]["failed"] >= 1 and snap["media"]["stored"] >= 1
    assert any(m["report_id"] == rid for m in snap["media"]["not_kept"])


def test_twilio_mms_fetched_with_the_account_credentials(media: Media) -> None:
    from tests.test_source_sms import twilio_call, twilio_params

    n = uuid.uuid4().hex
    photo = jpeg_with_exif(seed=71)
    media.peers.files[f"mms-ME{n}"] = (photo, "image/jpeg")
    account = "AC" + "0" * 32
    url = f"{media.peers.http}/2010-04-01/Accounts/{account}/Messages/MM{n}/Media/ME{n}"
    params = twilio_params(
        sid=f"MM{n}",
        body=f"Sampah menumpuk, foto terlampir {n}",
        NumMedia="1",
        MediaUrl0=url,
        MediaContentType0="image/jpeg",
    )
    call = twilio_call(params, media.ingress)
    status, answer = media.post(call.path, call.body, dict(call.headers))
    assert status == 200, answer
    rows = media.settled(report_id_for("sms", f"MM{n}"), 1)
    assert rows[0][1] == "stored" and rows[0][2] == hashlib.sha256(photo).hexdigest(), rows
    assert media.peers.hits[f"/2010-04-01/Accounts/{account}/Messages/MM{n}/Media/ME{n}"] == 1


def test_media_are_deleted_with_their_report_by_gc_and_shared_photos_are_kept(media: Media) -> None:
    n = uuid.uuid4().hex[:8]
    shared, own = jpeg_with_exif(seed=81), jpeg_with_exif(seed=82)
    media.peers.files[f"{n}-shared.jpg"] = (shared, "image/jpeg")
    media.peers.files[f"{n}-own.jpg"] = (own, "image/jpeg")
    a = jaki(
        media,
        f"JAKI-G{n}-a",
        [f"{media.peers.http}/files/{n}-shared.jpg", f"{media.peers.http}/files/{n}-own.jpg"],
    )
    b = jaki(media, f"JAKI-G{n}-b", [f"{media.peers.http}/files/{n}-shared.jpg"])
    assert [r[1] for r in media.settled(a, 2) + media.settled(b, 1)] == ["stored"] * 3
    sha_shared, sha_own = hashlib.sha256(shared).hexdigest(), hashlib.sha256(own).hexdigest()

    def keys(sha: str) -> set[str]:
        return {k for k in media.objects() if sha in k}

    def gc() -> str:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", "media", "gc"],
            env={**os.environ, **media.env},
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    assert len(keys(sha_own)) == 3 and len(keys(sha_shared)) == 3  # original, public copy, thumbnail
    media.iso.query("DELETE FROM reports WHERE report_id = %s RETURNING 1", (a,))  # the retention job
    assert media.rows(a) == []  # the media rows went with the report
    assert "deleted 1 unreferenced" in gc()
    assert keys(sha_own) == set()  # only report a had it
    assert len(keys(sha_shared)) == 3  # report b still shows it
    media.iso.query("DELETE FROM reports WHERE report_id = %s RETURNING 1", (b,))
    gc()
    assert keys(sha_shared) == set()
