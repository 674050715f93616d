"""Demo traffic for ``make demo``: every channel family into the CRM store, one report through Selesai.

``deploy/demo.sh`` starts the stack and the pipeline processes (ingress, worker, dashboard, Open311/officer
API, status consumer, notifier, SMTP gateway); this module then, in order:

1. starts the simulated providers of ``demo.providers`` on 127.0.0.1 (X API v2, LAPOR! 1708, the
   SMS send API, the Graph API) and a local SMTP sink standing in for the city's mail relay, which
   prints every mail the pipeline sends as it arrives;
2. submits reports on every channel family, authenticated the way each provider does it: the web form,
   JAKI (bearer), Facebook and the Governor's Instagram (``X-Hub-Signature-256``), SMS
   (``X-Twilio-Signature``), a desk API entry (office-bound bearer), a desk CSV file
   (``crm-pipeline desk-import``), e-mail over SMTP into ``crm-pipeline smtp`` (aiosmtplib), and the poll
   channels X and LAPOR! (``crm-pipeline poll --once`` against the simulators);
3. waits until every accepted report is in the CRM store;
4. follows the e-mail report from intake through Selesai: Koordinasi on the status topic, then Proses,
   Menunggu Validasi and Selesai through the officer API; ``crm-pipeline notify`` mails each step to the
   reporter (the sink prints them);
5. reads Dinas Bina Marga's queue through the routed topic (``examples/agency_consumer.py --once``) and
   through the Open311 API with the agency's key;
6. floods Jatinegara with JAKI reports: a surge opens and closes on the dashboard (``demo/surge.py``);
7. prints a summary table. Exit 0 only if every check held.

Provider ids and senders carry a per-run tag, so running the demo again makes new reports instead of
being (correctly) deduplicated against the previous run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import hashlib
import hmac
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import aiosmtplib
import orjson
import psycopg

from pipeline.crm.notify.channel_replies import JakiReplySettings
from pipeline.envelope import report_id_for, utcnow
from pipeline.settings import Settings, get_settings

from .providers import ME, MailSink, Outbound, Providers, first_line, snowflake, start_http

ROOT = Path(__file__).resolve().parents[1]
ROUTE = "/v1/channels/web/reports"
AGENCY = "Dinas Bina Marga"
AGENCY_KEY = "dev-only-open311-bina-marga"
OFFICER_KEY = "dev-only-officer"
DESK_TOKEN = "dev-only-desk-kelurahan"  # noqa: S105 - the development credential of the stack
DESK_OFFICE = "31.71.01.1001"  # Kel. Gambir
CSV_DESK_TOKEN_OFFICE = ("desk_kecamatan", "31.71.01")  # Kec. Gambir works offline and sends a CSV

# Written for the demo in the style of real CRM reports (informal Indonesian, abbreviations).
REPORTS: list[dict[str, object]] = [
    {
        "text": "Lampu PJU di Jl. Pramuka depan halte mati sdh 1 minggu, mhn segera diperbaiki krn gelap bgt",
        "alamat": "Jl. Pramuka, Kel. Utan Kayu Utara, Kec. Matraman",
        "email": "rina.w@example.com",
    },
    {
        "text": "Sampah menumpuk di pinggir kali gg. Masjid, bau sekali dan sudah 4 hari tidak diangkut",
        "alamat": "Gg. Masjid RT 04/RW 02, Kel. Kalibaru, Kec. Cilincing",
        "no_hp": "081298765432",
    },
    {
        "text": "Banyak parkir liar di trotoar depan ITC Cempaka Mas, pejalan kaki terpaksa jalan di aspal",
        "lat": -6.1672,
        "lon": 106.8750,
    },
    {
        "text": "Jalan berlubang besar di Jl. Raya Bogor km 20 arah Cililitan, sudah ada motor yang jatuh",
        "alamat": "Jl. Raya Bogor, Kel. Kramat Jati",
        "nama": "Pak Darmo",
        "rahasia": "ya",
    },
    {
        "text": "Pohon besar miring hampir tumbang ke kabel listrik di Jl. Kemang Raya, mohon tl segera",
        "lat": -6.2615,
        "lon": 106.8132,
        "email": "kemang.warga@example.com",
    },
    {
        "text": "PKL berjualan di atas JPO Stasiun Tanah Abang, jalan jadi sempit dan rawan copet",
        "alamat": "JPO Stasiun Tanah Abang, Kec. Tanah Abang",
    },
]

LIFECYCLE = [  # (status, via, actor, note)
    ("Koordinasi", "status topic", "Operator CRM Kel. Cempaka Putih Timur", None),
    (
        "Proses",
        "officer API",
        "Sudin Bina Marga Jakarta Pusat",
        "Tim pemeliharaan jalan dijadwalkan menambal lubang besok pagi.",
    ),
    (
        "Menunggu Validasi",
        "officer API",
        "Sudin Bina Marga Jakarta Pusat",
        "Lubang sudah ditambal dengan aspal hotmix, menunggu pengecekan lapangan.",
    ),
    (
        "Selesai",
        "officer API",
        "Inspeksi Kel. Cempaka Putih Timur",
        "Sudah dicek di lokasi, jalan rata kembali.",
    ),
]

CHANNEL_ORDER = [
    "web",
    "jaki",
    "facebook",
    "governor_social",
    "sms",
    "desk_kelurahan",
    "desk_kecamatan",
    "email",
    "twitter",
    "lapor1708",
]
FAMILY = {
    "web": "web form",
    "jaki": "JAKI app (bearer)",
    "facebook": "Facebook page (signed webhook)",
    "governor_social": "Governor IG (signed webhook)",
    "sms": "SMS (Twilio signature)",
    "desk_kelurahan": "desk API (office token)",
    "desk_kecamatan": "desk CSV (desk-import)",
    "email": "e-mail (SMTP gateway)",
    "twitter": "X/Twitter (poll)",
    "lapor1708": "LAPOR! 1708 (poll)",
}


def say(msg: str = "") -> None:
    print(msg, flush=True)


@dataclass
class Run:
    settings: Settings
    ingress: str
    api: str
    tag: str
    providers: str = ""  # the simulated providers' base URL (the JAKI photo host among them)
    submitted: dict[str, list[str]] = field(default_factory=dict)  # channel -> report ids
    problems: list[str] = field(default_factory=list)

    def add(self, channel: str, *ids: str) -> None:
        self.submitted.setdefault(channel, []).extend(ids)

    def phone(self, prefix: str) -> str:
        return prefix + self.tag[-4:]


# ------------------------------------------------------------------------------------------ media (#21)
async def photo(run: Run, session: aiohttp.ClientSession, within: float = 60) -> None:
    """The JAKI photo: fetched once by the media stage, an officer's signed URL serves the EXIF-free copy."""
    import io

    from PIL import Image

    rid = report_id_for("jaki", f"JAKI-{run.tag}-0001")
    headers = {"X-API-Key": "dev-only-officer"}
    deadline, item = time.monotonic() + within, None
    while time.monotonic() < deadline:
        async with session.get(f"{run.api}/v1/reports/{rid}/media", headers=headers) as resp:
            media = (await resp.json(content_type=None)).get("media", []) if resp.status == 200 else []
        item = media[0] if media else None
        if item and item["state"] != "pending":
            break
        await asyncio.sleep(0.5)
    if not item or item["state"] != "stored":
        run.problems.append(f"the JAKI photo was not kept: {item}")
        say(f"[media]    not kept: {item}")
        return
    async with session.get(item["url"]) as resp:
        data = await resp.read()
    with Image.open(io.BytesIO(data)) as img:
        exif = bool(img.getexif())
    say(
        f"[media]    stored once as sha256 {item['sha256'][:16]}… ({item['width']}x{item['height']}); "
        f"officer's signed URL valid {item['expires_in']} s -> {resp.status}, EXIF in the copy: {exif}"
    )
    say(f"[media]    Open311 media_url: {item['public_url']}")
    if "location_candidate" in item:
        say(f"[media]    the photo's GPS, offered as a location candidate: {item['location_candidate']}")
    if resp.status != 200 or exif:
        run.problems.append(f"the photo's signed URL answered {resp.status}, EXIF left: {exif}")


# ------------------------------------------------------------------------------------------ push channels
async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, Any]:
    async with session.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def web_form(run: Run, session: aiohttp.ClientSession) -> None:
    url = run.ingress + ROUTE
    for i, report in enumerate(REPORTS):
        if i % 2:  # half as the no-script form would send them
            status, body = await _post(
                session,
                url,
                urlencode(report).encode(),
                {"Content-Type": "application/x-www-form-urlencoded"},
            )
        else:
            status, body = await _post(
                session, url, orjson.dumps(report), {"Content-Type": "application/json"}
            )
        say(f"[web]      POST {ROUTE} -> {status} {body.get('report_id') or body}")
        if status == 202:
            run.add("web", body["report_id"])
    status, body = await _post(session, url, orjson.dumps(REPORTS[0]), {"Content-Type": "application/json"})
    say(f"[web]      the same form again  -> {status} {body.get('report_id')} (same id: one report)")
    status, body = await _post(
        session, url, b'{"text": "Saluran air mampet di', {"Content-Type": "application/json"}
    )
    say(f"[web]      broken JSON          -> {status} {body.get('error')} (sent to the dead-letter topic)")


async def jaki(run: Run, session: aiohttp.ClientSession) -> None:
    token = run.settings.jaki_token.get_secret_value()
    reports = [
        {
            "report_id": f"JAKI-{run.tag}-0001",
            "text": "Pohon angsana tumbang menutup separuh Jl. Ampera Raya dekat pertigaan Kemang, "
            "kendaraan antre panjang",
            "category": "Pohon Tumbang",
            "lat": -6.2887,
            "lon": 106.8170,
            "photo_urls": [f"{run.providers or 'https://jaki.jakarta.go.id'}/photos/{run.tag}-1.jpg"],
            "account_id": f"u-{run.tag}a",
            "created_at": utcnow().isoformat(),
        },
        {
            "report_id": f"JAKI-{run.tag}-0002",
            "text": "Genangan air kurang lebih 40 cm di underpass Kemayoran tiap hujan deras, "
            "banyak motor mogok",
            "category": "Banjir",
            "lat": -6.1585,
            "lon": 106.8466,
            "account_id": f"u-{run.tag}b",
            "private": False,
        },
    ]
    for body in reports:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        status, answer = await _post(
            session, run.ingress + "/v1/channels/jaki/reports", orjson.dumps(body), headers
        )
        say(f"[jaki]     POST bearer token -> {status} {answer.get('report_ids') or answer}")
        if status == 202:
            run.add("jaki", report_id_for("jaki", body["report_id"]))
    status, answer = await _post(
        session,
        run.ingress + "/v1/channels/jaki/reports",
        orjson.dumps(reports[0]),
        {"Content-Type": "application/json", "Authorization": "Bearer not-the-jaki-token"},
    )
    say(f"[jaki]     wrong token       -> {status} (refused, nothing stored)")


def meta_sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def meta(run: Run, session: aiohttp.ClientSession) -> None:
    now = int(time.time())
    page = "104857600000001"
    comment_id, mid = f"{page}_77_{run.tag}1", f"m_{run.tag}-messenger-1"
    fb = {
        "object": "page",
        "entry": [
            {
                "id": page,
                "time": now,
                "changes": [
                    {
                        "field": "feed",
                        "value": {
                            "item": "comment",
                            "verb": "add",
                            "comment_id": comment_id,
                            "post_id": f"{page}_77",
                            "parent_id": f"{page}_77",
                            "message": "Min, Jl. Daan Mogot arah Kalideres banyak lubang besar, "
                            "tolong ditambal sebelum ada korban",
                            "from": {"id": f"20{run.tag}", "name": "Agus Salim"},
                            "created_time": now,
                        },
                    },
                    {"field": "feed", "value": {"item": "reaction", "verb": "add", "post_id": f"{page}_77"}},
                ],
                "messaging": [
                    {
                        "sender": {"id": f"55{run.tag}"},
                        "recipient": {"id": page},
                        "timestamp": now * 1000,
                        "message": {
                            "mid": mid,
                            "text": "Selamat siang, mau lapor lampu jalan di Jl. Kyai Tapa depan kampus "
                            "Trisakti mati semua sejak 3 hari",
                        },
                    }
                ],
            }
        ],
    }
    ig_id = f"1786{run.tag}9039"
    gov = {
        "object": "instagram",
        "entry": [
            {
                "id": "17841400000000",
                "time": now,
                "changes": [
                    {
                        "field": "comments",
                        "value": {
                            "id": ig_id,
                            "text": "Pak Gub, trotoar Jl. Jend. Sudirman dekat halte Karet dipakai PKL "
                            "jualan, pejalan kaki terpaksa turun ke jalan",
                            "from": {"id": f"90{run.tag}", "username": "warga_setiabudi"},
                            "media": {"id": "1799", "media_product_type": "FEED"},
                        },
                    }
                ],
            }
        ],
    }
    for channel, payload, secret, ids in (
        ("facebook", fb, run.settings.facebook_app_secret, [comment_id, mid]),
        ("governor_social", gov, run.settings.governor_social_app_secret, [ig_id]),
    ):
        body = orjson.dumps(payload)
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": meta_sign(secret.get_secret_value(), body),
        }
        status, answer = await _post(session, f"{run.ingress}/v1/channels/{channel}/webhook", body, headers)
        say(f"[{channel[:8]:8}] POST X-Hub-Signature-256 -> {status} {answer}")
        if status == 200:
            run.add(channel, *(report_id_for(channel, i) for i in ids))
    body = orjson.dumps(fb)
    status, _ = await _post(
        session,
        f"{run.ingress}/v1/channels/facebook/webhook",
        body,
        {"Content-Type": "application/json", "X-Hub-Signature-256": meta_sign("forged", body)},
    )
    say(f"[facebook] forged signature -> {status} (refused, nothing stored)")


def twilio_signature(token: str, url: str, params: dict[str, str]) -> str:
    """As Twilio computes it: HMAC-SHA1 over the URL plus the sorted form parameters, base64."""
    payload = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()).decode()


async def sms(run: Run, session: aiohttp.ClientSession) -> None:
    token = run.settings.sms_twilio_auth_token.get_secret_value()
    url = run.ingress + "/v1/channels/sms/inbound"
    messages = [
        (
            run.phone("+62812777"),
            "Lapor, sampah di TPS Jl. Kebon Kacang 2 sdh 5 hari gak diangkut, bau bgt & banyak lalat",
        ),
        (
            run.phone("+62857111"),
            "Saluran air di Gg. H. Naim RT 06/RW 03 Cipete Utara mampet, air meluap ke jalan tiap hujan",
        ),
    ]
    for n, (sender, text) in enumerate(messages):
        sid = f"SM{uuid.uuid5(uuid.NAMESPACE_URL, run.tag + str(n)).hex}"
        params = {
            "MessageSid": sid,
            "SmsSid": sid,
            "AccountSid": "AC" + "0" * 32,
            "From": sender,
            "To": "+628111272206",
            "Body": text,
            "NumMedia": "0",
            "NumSegments": "1",
        }
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": twilio_signature(token, url, params),
        }
        status, answer = await _post(session, url, urlencode(params).encode(), headers)
        say(f"[sms]      POST X-Twilio-Signature -> {status} {answer}")
        if status == 200:
            run.add("sms", report_id_for("sms", sid))


async def desk_api(run: Run, session: aiohttp.ClientSession) -> None:
    entry = {
        "entry_id": f"KEL-GMB-{run.tag}-001",
        "officer": "Siti Aminah",
        "text": "Warga melaporkan kabel listrik menjuntai rendah di Jl. Tanah Abang II, "
        "membahayakan pejalan kaki",
        "name": "Pak Darto",
        "phone": run.phone("0813999"),
        "address": "Jl. Tanah Abang II RT 03/RW 01, Kel. Gambir",
        "taken_at": utcnow().isoformat(),
    }
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {DESK_TOKEN}"}
    status, answer = await _post(
        session, run.ingress + "/v1/channels/desk_kelurahan/entries", orjson.dumps(entry), headers
    )
    ids = answer.get("report_ids") or answer
    say(f"[desk]     POST desk_kelurahan entry (office {DESK_OFFICE}) -> {status} {ids}")
    if status == 202:
        run.add("desk_kelurahan", report_id_for("desk_kelurahan", f"{DESK_OFFICE}:{entry['entry_id']}"))


async def desk_csv(run: Run, workdir: Path) -> None:
    channel, office = CSV_DESK_TOKEN_OFFICE
    rows = [
        (
            "001",
            "Paving di Gg. Kebon Sirih Barat amblas sepanjang 5 meter setelah galian pipa PAM",
            "Ibu Ratna",
        ),
        ("002", "Parkir liar bus pariwisata di Jl. Medan Merdeka Selatan sisi Monas setiap akhir pekan", ""),
        (
            "003",
            "Pedagang kaki lima berjualan di atas saluran Jl. Cideng Timur sehingga saluran tersumbat",
            "Pak Udin",
        ),
    ]
    path = workdir / f"desk_gambir_{run.tag}.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["no_entri", "laporan", "nama", "telepon", "alamat", "petugas"])
        for (
            entry_id,
            text,
            name,
        ) in rows:
            writer.writerow([f"KEC-GMB-{run.tag}-{entry_id}", text, name, "", "Kec. Gambir", "Rudi Hartono"])
    code, out = await _run_cli(
        "desk-import",
        str(path),
        "--channel",
        channel,
        "--office",
        office,
        "--officer",
        "Rudi Hartono",
        "--quiet",
    )
    say(f"[desk-csv] crm-pipeline desk-import {path.name} -> exit {code}: {out.strip().splitlines()[-1:]}")
    if code == 0:
        run.add(channel, *(report_id_for(channel, f"{office}:KEC-GMB-{run.tag}-{e}") for e, _t, _n in rows))


def email_messages(run: Run) -> list[EmailMessage]:
    plain = EmailMessage()
    plain["From"] = f"Dewi Lestari <dewi.lestari+{run.tag}@example.com>"
    plain["To"] = "dki@jakarta.go.id"
    plain["Subject"] = "Jalan berlubang di Jl. Cempaka Putih Raya"
    plain["Date"] = format_datetime(utcnow())
    plain["Message-ID"] = f"<laporan-{run.tag}-1@mail.example.com>"
    plain.set_content(
        "Selamat pagi,\n\n"
        "Saya ingin melaporkan jalan berlubang cukup dalam di Jl. Cempaka Putih Raya depan RS Islam, "
        "arah ke Pulo Mas. Lubangnya sudah sekitar dua minggu dan kemarin malam ada pengendara motor "
        "yang terjatuh. Mohon segera diperbaiki.\n\n"
        "Terima kasih,\nDewi Lestari\nKel. Cempaka Putih Timur\n"
    )
    html = EmailMessage()
    html["From"] = f"Hendra Gunawan <hendra.g+{run.tag}@example.com>"
    html["To"] = "dki@jakarta.go.id"
    html["Subject"] = "Lampu taman mati"
    html["Date"] = format_datetime(utcnow())
    html["Message-ID"] = f"<laporan-{run.tag}-2@mail.example.com>"
    html.set_content("Lampu taman di Taman Suropati mati semua, malam hari jadi gelap dan rawan.")
    html.add_alternative(
        "<html><body><p>Lampu taman di <b>Taman Suropati</b> mati semua, malam hari jadi gelap dan "
        "rawan.</p><p>Salam,<br>Hendra</p></body></html>",
        subtype="html",
    )
    return [plain, html]


async def email_channel(run: Run) -> str:
    s = run.settings
    port = s.email_smtp_port
    for _ in range(50):  # the gateway may still be starting
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            break
        except OSError:
            await asyncio.sleep(0.2)
    lifecycle_id = ""
    for msg in email_messages(run):
        answer = await aiosmtplib.send(msg, hostname="127.0.0.1", port=port, recipients=["dki@jakarta.go.id"])
        code = answer[1].split()[0] if answer[1] else "?"
        say(f"[email]    SMTP to :{port} '{msg['Subject']}' -> 250 {code}")
        rid = report_id_for("email", str(msg["Message-ID"]).strip("<>"))
        run.add("email", rid)
        lifecycle_id = lifecycle_id or rid
    return lifecycle_id


# ------------------------------------------------------------------------------------------ poll channels
def seed_providers(run: Run, providers: Providers) -> None:
    users = {
        f"7{run.tag}1": {"id": f"7{run.tag}1", "username": "warga_rawamangun", "name": "Rizky"},
        f"7{run.tag}2": {"id": f"7{run.tag}2", "username": "kemang_info", "name": "Info Kemang"},
        f"7{run.tag}3": {"id": f"7{run.tag}3", "username": "nadia_p", "name": "Nadia"},
    }
    providers.users.update(users)
    u1, u2, u3 = list(users)
    base = snowflake()
    providers.mentions += [
        {
            "id": str(base + 1),
            "text": "@DKIJakarta jalan di Jl. Pemuda Rawamangun depan UNJ berlubang parah, sdh bbrp motor "
            "jatuh. Mohon segera ditambal 🙏",
            "author_id": u1,
            "created_at": utcnow().strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "conversation_id": str(base + 1),
            "lang": "in",
            "edit_history_tweet_ids": [str(base + 1)],
        },
        {
            "id": str(base + 2),
            "text": "@DKIJakarta banjir lagi di Jl. Kemang Raya, air selutut, mobil gak bisa lewat. Pompa "
            "air di sini jalan gak sih?",
            "author_id": u2,
            "created_at": utcnow().strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "conversation_id": str(base + 2),
            "lang": "in",
            "edit_history_tweet_ids": [str(base + 2)],
        },
    ]
    providers.dms.append(
        {
            "id": str(base + 3),
            "event_type": "MessageCreate",
            "text": "Min, mau lapor parkir liar di bahu Jl. Gunung Sahari depan Mangga Dua Square, "
            "bikin macet tiap sore",
            "sender_id": u3,
            "dm_conversation_id": f"{ME}-{u3}",
            "created_at": utcnow().strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        }
    )
    run.add("twitter", *(report_id_for("twitter", f"tweet:{base + i}") for i in (1, 2)))
    run.add("twitter", report_id_for("twitter", f"dm:{base + 3}"))

    lapor_base = int(run.tag) * 10
    now = utcnow().astimezone()
    providers.lapor_items += [
        {
            "id": lapor_base + 1,
            "tracking_id": f"LPR-{lapor_base + 1}",
            "title": "Jalan rusak",
            "content": "Jalan di Jl. Raya Bogor km 24 Kel. Ciracas rusak dan berlubang sepanjang 100 meter, "
            "sangat membahayakan pengendara roda dua terutama malam hari.",
            "category": "Infrastruktur",
            "location": "Jl. Raya Bogor, Kel. Ciracas, Kec. Ciracas, Jakarta Timur",
            "created_at": now.isoformat(timespec="seconds"),
            "updated_at": now.isoformat(timespec="seconds"),
            "status": "Diteruskan",
            "is_anonymous": False,
            "is_confidential": False,
            "reporter": {
                "id": f"u-{lapor_base + 1}",
                "name": "Bambang",
                "email": f"bambang+{run.tag}@example.com",
            },
            "attachments": [
                {
                    "url": f"https://lapor.example/f/{lapor_base + 1}.jpg",
                    "file_name": "jalan.jpg",
                    "mime_type": "image/jpeg",
                }
            ],
        },
        {
            "id": lapor_base + 2,
            "tracking_id": f"LPR-{lapor_base + 2}",
            "title": "Sampah liar",
            "content": "Pembuangan sampah liar di lahan kosong Jl. Inspeksi Kalimalang Kel. Cipinang "
            "Melayu sudah menggunung dan sering dibakar, asapnya masuk ke rumah warga.",
            "category": "Lingkungan",
            "location": "Jl. Inspeksi Kalimalang, Kel. Cipinang Melayu, Kec. Makasar",
            "created_at": now.isoformat(timespec="seconds"),
            "updated_at": now.isoformat(timespec="seconds"),
            "status": "Diteruskan",
            "is_anonymous": False,
            "is_confidential": True,
            "reporter": {"id": f"u-{lapor_base + 2}", "name": "Sri", "phone": run.phone("0821555")},
            "attachments": [],
        },
    ]
    run.add("lapor1708", *(report_id_for("lapor1708", str(lapor_base + i)) for i in (1, 2)))


async def _run_cli(*args: str, limit_s: float = 120) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), limit_s)
    return proc.returncode or 0, out.decode(errors="replace")


async def poll_channels(run: Run) -> None:
    code, out = await _run_cli("poll", "--once")
    lines = [line for line in out.splitlines() if line.startswith(("twitter", "lapor1708"))]
    say(f"[poll]     crm-pipeline poll --once -> exit {code}")
    for line in lines:
        say(f"           {line}")
    if code != 0:
        run.problems.append(f"crm-pipeline poll --once exited {code}: {out[-500:]}")


# ------------------------------------------------------------------------------------------ store, lifecycle
async def stored_by_channel(run: Run) -> dict[str, list[tuple]]:
    ids = [i for ids in run.submitted.values() for i in ids]
    dsn = run.settings.database_url.get_secret_value()
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        rows = await (
            await conn.execute(
                "SELECT report_id::text, channel, status, coalesce(kelurahan_code, '-'), "
                "coalesce(category, '-'), coalesce(agency, routed_to), "
                "left(regexp_replace(text_original, '\\s+', ' ', 'g'), 60), tracking_number FROM reports "
                "WHERE report_id = ANY(%s::uuid[]) ORDER BY received_at",
                (ids,),
            )
        ).fetchall()
    out: dict[str, list[tuple]] = {}
    for row in rows:
        out.setdefault(row[1], []).append(row)
    return out


async def wait_stored(run: Run, wait_s: float) -> dict[str, list[tuple]]:
    want = sum(len(v) for v in run.submitted.values())
    deadline = time.monotonic() + wait_s
    stored: dict[str, list[tuple]] = {}
    while time.monotonic() < deadline:
        stored = await stored_by_channel(run)
        if sum(len(v) for v in stored.values()) >= want:
            break
        await asyncio.sleep(0.5)
    return stored


async def wait_mail(sink: MailSink, to_part: str, subject_part: str, wait_s: float = 45) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if any(to_part in str(m["To"]) and subject_part in str(m["Subject"]) for m in sink.messages):
            return True
        await asyncio.sleep(0.2)
    return False


async def publish_status_event(settings: Settings, event: dict[str, Any]) -> None:
    """An officer action on ``<ns>.status.v1``, as an officer's desk system would send it."""
    from pipeline.publish import Publisher, make_producer
    from pipeline.topics import Topics

    producer = make_producer(settings, client_id="crm-demo-officer")
    await producer.start()
    try:
        await Publisher(settings, producer).send_many(
            [(Topics(settings.topic_namespace).status, event["report_id"].encode(), orjson.dumps(event))]
        )
    finally:
        await producer.stop()


async def lifecycle(
    run: Run, session: aiohttp.ClientSession, sink: MailSink, rid: str, reporter: str
) -> list[tuple]:
    """Intake → Koordinasi (status topic) → Proses → Menunggu Validasi → Selesai (officer API)."""
    trail: list[tuple] = []
    ok = await wait_mail(sink, reporter, "Menunggu")
    trail.append(("Menunggu", "intake", "-", "ack mail" if ok else "NO MAIL"))
    if not ok:
        run.problems.append("no acknowledgement mail for the e-mail report")
    for status, via, actor, note in LIFECYCLE:
        event = {"event_id": f"demo-{run.tag}-{status}", "status": status, "actor": actor}
        if note:
            event["note"] = note
        if via == "status topic":
            await publish_status_event(run.settings, {**event, "report_id": rid})
            say(f"[officer]  {status:18} published on {run.settings.topic_namespace}.status.v1 by {actor}")
        else:
            async with session.post(
                f"{run.api}/v1/reports/{rid}/status", json=event, headers={"X-API-Key": OFFICER_KEY}
            ) as resp:
                answer = await resp.json(content_type=None)
                say(f"[officer]  {status:18} POST /v1/reports/…/status -> {resp.status}")
                if resp.status not in (200, 201):
                    run.problems.append(f"status {status} refused: {resp.status} {answer}")
        ok = await wait_mail(sink, reporter, f": {status}")
        trail.append((status, via, actor, "mail" if ok else "NO MAIL"))
        if not ok:
            run.problems.append(f"no mail to the reporter for {status}")
    async with session.get(f"{run.api}/v1/reports/{rid}/history", headers={"X-API-Key": OFFICER_KEY}) as resp:
        history = await resp.json(content_type=None)
    steps = history.get("history", history) if isinstance(history, dict) else history
    count = len(steps) if isinstance(steps, list) else "?"
    say(f"[officer]  GET /v1/reports/…/history -> {resp.status}, {count} steps")
    return trail


# ------------------------------------------------------------------------------------------ consumers
async def agency_topic(run: Run) -> tuple[int, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "examples" / "agency_consumer.py"),
        AGENCY,
        "--bootstrap",
        run.settings.kafka_bootstrap,
        "--namespace",
        run.settings.topic_namespace,
        "--once",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(errors="replace").splitlines()


async def open311(run: Run, session: aiohttp.ClientSession) -> tuple[int, list[dict], int]:
    params = {"agency_responsible": AGENCY, "api_key": AGENCY_KEY, "page_size": "100"}
    async with session.get(f"{run.api}/open311/v2/requests.json", params=params) as resp:
        status, items = resp.status, await resp.json(content_type=None)
    other = {"agency_responsible": "Dinas Lingkungan Hidup", "api_key": AGENCY_KEY}
    async with session.get(f"{run.api}/open311/v2/requests.json", params=other) as resp:
        others = await resp.json(content_type=None)
    # Another agency's requests: public fields only (no private ones such as description_original).
    leaked = sum(1 for i in others if isinstance(i, dict) and "description_original" in i)
    return status, items if isinstance(items, list) else [], leaked


# ------------------------------------------------------------------------------------------ main
async def wait_ready(session: aiohttp.ClientSession, url: str, what: str, tries: int = 120) -> bool:
    for _ in range(tries):
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    return True
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.5)
    say(f"[demo] {what} did not become ready at {url}")
    return False


async def run_demo(args: argparse.Namespace) -> int:
    settings = get_settings()
    tag = f"{int(time.time()) % 10**7:07d}"
    run = Run(settings, args.url.rstrip("/"), args.api_url.rstrip("/"), tag)
    reporter = f"dewi.lestari+{tag}@example.com"

    def on_mail(msg: EmailMessage) -> None:
        say(f"   [mail → {msg['To']}] {msg['Subject']} | {first_line(msg)[:110]}")

    def on_outbound(o: Outbound) -> None:
        say(f"   [{o.provider} → {o.to}] {o.text[:160]}")

    providers = Providers(
        x_token=settings.twitter_bearer_token.get_secret_value(),
        lapor_token=settings.lapor_token.get_secret_value(),
        lapor_header=settings.lapor_token_header,
        jaki_reply_secret=JakiReplySettings.load(settings).secret.get_secret_value(),
        on_outbound=on_outbound,
    )
    seed_providers(run, providers)
    run.providers = f"http://127.0.0.1:{args.providers_port}"
    sink = MailSink(settings.email_relay_port, on_mail).start()
    http = await start_http(providers.app(), args.providers_port)
    say(
        f"[demo] simulated providers on http://127.0.0.1:{args.providers_port} (X API /x, LAPOR! /lapor, "
        f"SMS send /sms, Graph /graph, JAKI callbacks /jaki); "
        f"mail relay sink on 127.0.0.1:{settings.email_relay_port}"
    )
    t0 = time.monotonic()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            if not await wait_ready(session, run.ingress + "/readyz", "ingress"):
                return 1
            say("\n== 1. reports on every channel family ==")
            await web_form(run, session)
            await jaki(run, session)
            await meta(run, session)
            await sms(run, session)
            await desk_api(run, session)
            with tempfile.TemporaryDirectory() as tmp:
                await desk_csv(run, Path(tmp))
            lifecycle_id = await email_channel(run)
            await poll_channels(run)

            stored = await wait_stored(run, args.timeout)
            total = sum(len(v) for v in stored.values())
            want = sum(len(v) for v in run.submitted.values())
            say(f"\n[demo] {total} of {want} accepted reports are in the CRM store:\n")
            head = ("channel", "status", "tracking", "kelurahan", "category", "route")
            say("{:16} {:9} {:14} {:13} {:16} {:24} text".format(*head))
            for channel in CHANNEL_ORDER:
                for _rid, ch, status, kel, cat, route, text, tracking in stored.get(channel, []):
                    row = (ch, status, tracking or "-", kel, cat[:16], str(route)[:24], text)
                    say("{:16} {:9} {:14} {:13} {:16} {:24} {}".format(*row))
            for channel in CHANNEL_ORDER:
                got, sub = len(stored.get(channel, [])), len(run.submitted.get(channel, []))
                if got < sub:
                    run.problems.append(f"{channel}: {got} of {sub} accepted reports stored")

            say("\n== 2. one report from intake through Selesai (the e-mail report) ==")
            trail: list[tuple] = []
            if not await wait_ready(session, run.api + "/healthz", "officer/Open311 API"):
                return 1
            if lifecycle_id in {r[0] for r in stored.get("email", [])}:
                trail = await lifecycle(run, session, sink, lifecycle_id, reporter)
            else:
                run.problems.append("the e-mail report was not stored: no lifecycle")
            await asyncio.sleep(1.5)  # the notifier's last round for the other channels' acks

            say(f"\n== 3. {AGENCY}'s queue ==")
            code, lines = await agency_topic(run)
            say(f"[agency]   examples/agency_consumer.py '{AGENCY}' --once (routed topic) -> exit {code}")
            queue_line = next((ln for ln in reversed(lines) if ln.startswith("== ")), "== no queue ==")
            rows = [ln for ln in lines if ln.strip() and ln != queue_line]
            for line in [queue_line, *(["  …"] if len(rows) > 11 else []), *rows[-11:]]:
                say(f"           {line}")
            if code != 0:
                run.problems.append(f"agency consumer exited {code}")
            status, items, refused = await open311(run, session)
            mine = {r[0] for rows in stored.values() for r in rows}
            items = [i for i in items if i.get("report_id") in mine]
            say(
                f"[open311]  GET /open311/v2/requests.json?agency_responsible={AGENCY} (agency key) -> "
                f"{status}, {len(items)} request(s) of this run:"
            )
            for item in items:
                row = [str(item.get(k, "")) for k in ("service_request_id", "status", "crm_status")]
                row += [
                    str(item.get("service_name"))[:20],
                    " ".join(str(item.get("description")).split())[:50],
                ]
                say("           {}  {:6} {:18} {:20} {}".format(*row))
            say(
                f"[open311]  the same key asking for Dinas Lingkungan Hidup -> public fields only "
                f"({refused} with private fields)"
            )
            if status != 200:
                run.problems.append(f"Open311 answered {status}")
            if refused:
                run.problems.append(f"Open311 showed another agency's private fields ({refused})")

            say("\n== 4. the JAKI report's photo, kept by the media stage ==")
            await photo(run, session)

            say("\n== 5. a flood in Jatinegara: a surge opened and closed (dashboard: list and map) ==")
            from .surge import flood_surge

            dashboard = f"http://127.0.0.1:{os.environ.get('CRM_DASHBOARD_PORT', '8090')}/"
            surge = await flood_surge(run, session, say, dashboard)
    finally:
        await http.cleanup()
        sink.stop()

    # ------------------------------------------------------------------------------ summary
    elapsed = time.monotonic() - t0
    say("\n" + "=" * 100)
    say(f"SUMMARY (run tag {tag}, {elapsed:.0f}s)")
    say(f"{'channel':17} {'family':32} {'submitted':>9} {'stored':>7}")
    for channel in CHANNEL_ORDER:
        sub, got = len(run.submitted.get(channel, [])), len(stored.get(channel, []))
        say(f"{channel:17} {FAMILY[channel]:32} {sub:9d} {got:7d}{'' if got >= sub else '  <-- missing'}")
    n_sub, n_got = sum(len(v) for v in run.submitted.values()), sum(len(v) for v in stored.values())
    say(f"{'total':50} {n_sub:9d} {n_got:7d}")
    tracking = next((r[7] for r in stored.get("email", []) if r[0] == lifecycle_id), "-")
    say(f"\nlifecycle of the e-mail report {tracking} ({lifecycle_id}); the reporter's mails from the sink:")
    for status, via, actor, mail in trail:
        say(f"  {status:18} via {via:13} by {actor:38} -> {mail}")
    out = providers.outbound
    say(
        f"\nsent back to citizens on their own channel: {len(sink.messages)} mail(s), "
        f"{sum(o.provider == 'sms' for o in out)} SMS, {sum(o.provider == 'meta' for o in out)} Meta, "
        f"{sum(o.provider.startswith('x-') for o in out)} X, {sum(o.provider == 'jaki' for o in out)} JAKI, "
        f"{sum(o.provider == 'lapor' for o in out)} LAPOR!"
    )
    say(
        f"agency queue ({AGENCY}): routed topic {queue_line.strip('= ')}; Open311 {len(items)} request(s), "
        f"{sum(i.get('status') == 'open' for i in items)} open"
    )
    if surge.get("closed") is not None:
        say(
            f"flood surge in Jatinegara: opened {surge['opened']:.0f}s after the first report, closed after "
            f"{surge['closed']:.0f}s, {surge.get('reports')} reports; DSDA and BPBD mailed"
        )
    if run.problems:
        say("\nPROBLEMS:")
        for p in run.problems:
            say(f"  - {p}")
        return 1
    say("all checks passed")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the ingress")
    parser.add_argument("--api-url", default=None, help="the Open311/officer API (default CRM_API_PORT)")
    parser.add_argument(
        "--providers-port", type=int, default=int(os.environ.get("CRM_DEMO_PROVIDERS_PORT", "18190"))
    )
    parser.add_argument("--timeout", type=float, default=90, help="seconds to wait for the store")
    args = parser.parse_args()
    if args.api_url is None:
        args.api_url = f"http://127.0.0.1:{get_settings().api_port}"
    return asyncio.run(run_demo(args))


if __name__ == "__main__":
    raise SystemExit(main())
