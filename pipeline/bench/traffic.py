"""Realistic report traffic for the benchmark: what the CRM really receives, in envelope form.

* **Channel mix** of the real CRM. Jakarta 2023: JAKI 158,375, X 5,323 and Balai Kota 1,294 reports
  (published); the other channels' yearly volumes are not published per channel and are estimates of the
  same order as X and Balai Kota (``CHANNEL_MIX``): JAKI is ~92 % of the traffic.
* **Texts** from hand-written Indonesian templates in the style of real reports (lower case, ``yg``,
  ``tdk``, ``mhn``, street names, RT/RW, "mohon segera ditindaklanjuti"); no row of any real data set.
* **Locations** spread over the kelurahan of the packaged gazetteer (centroid + ~300 m jitter): JAKI
  carries GPS, the others free text ("Jl. … Kel. …"), desks their office code.
* **5 % provider redeliveries** (the same message again: same provider id, hence same report id) and
  **10 % repeat reports** (another citizen reporting the same problem at the same place).
* **Flood day**: :meth:`Traffic.envelope` with ``flood=True`` concentrates reports in a few flood-prone
  kelurahan along a few streets, mostly flood/drainage texts.

Envelopes are built as plain dicts (fast: the generator shares the 2 cores with what it measures) and
are valid ``report.v1`` envelopes (checked by the bench smoke test). ``received_at`` is stamped at send
time by :func:`stamp`.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import random
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from typing import Any

import orjson

from ..envelope import SCHEMA_VERSION, report_id_for

# Reports per year. Published (2023): jaki, twitter, desk_balaikota. The rest: estimates (see above).
CHANNEL_MIX: dict[str, int] = {
    "jaki": 158_375,
    "twitter": 5_323,
    "desk_balaikota": 1_294,
    "facebook": 1_500,
    "desk_kelurahan": 1_200,
    "email": 1_000,
    "sms": 900,
    "lapor1708": 800,
    "web": 700,
    "governor_social": 600,
    "desk_kecamatan": 400,
    "desk_walikota": 300,
    "desk_inspektorat": 60,
}
#: historical rows (``csv_row``): dated from here at the real yearly volume of all channels
HISTORY_FROM = datetime(2018, 1, 1, 8, 0, tzinfo=timezone(timedelta(hours=7)))
HISTORY_PER_DAY = sum(CHANNEL_MIX.values()) / 365
REDELIVERY_RATE = 0.05
REPEAT_RATE = 0.10
FLOOD_KELURAHAN = (
    "Kampung Melayu",
    "Bidara Cina",
    "Cawang",
    "Rawajati",
    "Pejaten Timur",
    "Cipinang Melayu",
)
FLOOD_STREETS = ("Jl. Jatinegara Barat", "Jl. Otista III", "Jl. Kalibata", "Jl. Inspeksi Kali Ciliwung")

STREETS = (
    "Jl. Pramuka",
    "Jl. Matraman Raya",
    "Jl. Daan Mogot",
    "Jl. Kyai Tapa",
    "Jl. Raya Bogor",
    "Jl. Dewi Sartika",
    "Jl. Otto Iskandardinata",
    "Jl. DI Panjaitan",
    "Jl. Gunung Sahari",
    "Jl. Kemang Raya",
    "Jl. RS Fatmawati",
    "Jl. Ciledug Raya",
    "Jl. Kramat Raya",
    "Jl. Salemba Raya",
    "Jl. Bekasi Raya",
    "Jl. Pemuda",
    "Jl. Kalimalang",
    "Jl. Tanjung Duren Raya",
    "Jl. Panjang",
    "Jl. Hayam Wuruk",
    "Jl. Pluit Karang",
    "Jl. Warung Buncit Raya",
    "Jl. Cempaka Putih Raya",
    "Jl. Pos Pengumben",
    "Jl. Kebon Jeruk Raya",
    "Jl. Condet Raya",
    "Jl. Raya Kalimalang",
    "Jl. Bangka Raya",
    "Jl. Tebet Barat Dalam",
    "Jl. Cipinang Jaya",
    "Jl. Sunter Agung",
)
LANDMARKS = (
    "depan indomaret",
    "dekat masjid",
    "samping sekolah",
    "depan pasar",
    "dekat halte transjakarta",
    "seberang puskesmas",
    "pertigaan",
    "dekat pos ronda",
    "depan gang",
    "sebelah bengkel",
)

# {s} street, {l} landmark, {k} kelurahan, {rt}/{rw}, {n} a number. Written for this benchmark.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "road_damage": (
        "jalan berlubang di {s} {l}, sudah {n} minggu tdk diperbaiki. mohon segera ditambal krn bahaya",
        "Lapor, aspal {s} rusak parah dan bergelombang, kemarin ada motor jatuh. mohon ditindaklanjuti",
        "ada lubang besar di tengah jalan {s} kel {k}, kalau hujan tergenang jd tdk kelihatan",
        "jalan rusak di RT {rt}/RW {rw} {k}, banyak batu lepas. mohon diaspal ulang pak",
    ),
    "street_lights": (
        "lampu PJU mati di {s} {l} sudah {n} hari, malam gelap sekali rawan begal",
        "Mohon perbaikan lampu jalan di RT {rt} RW {rw} kel. {k}, sudah lama padam",
        "lampu penerangan jalan umum di {s} kedip2 lalu mati, tolong dicek petugas",
    ),
    "illegal_parking": (
        "parkir liar di bahu {s} {l} bikin macet, mohon ditertibkan dishub",
        "banyak mobil parkir sembarangan di trotoar {s}, pejalan kaki terpaksa turun ke jalan",
        "juru parkir liar minta uang {n} ribu di {s} kel {k}, tolong ditindak",
    ),
    "fallen_tree_parks": (
        "pohon tumbang menutupi jalan di {s} {l}, mohon segera dievakuasi",
        "dahan pohon besar di {s} sudah rapuh dan miring ke kabel listrik, mohon dipangkas sebelum tumbang",
        "taman di RW {rw} kel {k} tidak terawat, rumput tinggi dan lampunya mati",
    ),
    "flood_drainage": (
        "banjir setinggi {n}0 cm di {s} {l}, air masuk rumah warga RT {rt}/RW {rw}. mohon bantuan pompa",
        "saluran air di {s} mampet penuh sampah, tiap hujan jalan tergenang. mohon dikeruk",
        "got depan rumah di RT {rt} RW {rw} {k} meluap, bau dan jadi sarang nyamuk",
        "air kali naik, {s} kel {k} tergenang, motor tdk bisa lewat. tolong segera ditangani",
    ),
    "garbage": (
        "tumpukan sampah di {s} {l} sudah {n} hari tdk diangkut, bau menyengat",
        "warga buang sampah sembarangan di pinggir kali kel {k}, mohon dipasang larangan dan diangkut",
        "TPS di RW {rw} {k} penuh meluber ke jalan, truk sampah jarang datang",
    ),
    "street_vendors": (
        "PKL berjualan di trotoar {s} {l} sampai menutup jalan, mohon ditertibkan satpol pp",
        "pedagang kaki lima makin banyak di depan stasiun, pejalan kaki susah lewat. tolong ditindak",
    ),
    "public_order_noise": (
        "ada yg nyetel musik keras sampai jam 2 pagi di RT {rt}/RW {rw} {k}, warga terganggu",
        "balap liar tiap malam minggu di {s}, sangat berisik dan membahayakan",
    ),
    "illegal_billboards": (
        "spanduk dan baliho liar dipasang di pohon sepanjang {s}, mohon diturunkan",
        "banyak reklame tanpa izin di tiang listrik {s} {l}, merusak keindahan kota",
    ),
    "pollution": (
        "asap pembakaran sampah di {k} tiap sore, warga sesak napas. mohon ditindak",
        "pabrik di dekat {s} buang limbah ke kali, airnya hitam dan bau",
    ),
    "public_transport": (
        "halte transjakarta {s} rusak, atap bocor dan kursi patah",
        "angkot ngetem sembarangan di {s} {l}, bikin macet tiap pagi",
    ),
    "clean_water": (
        "air PAM mati sudah {n} hari di RT {rt} RW {rw} kel {k}, mohon segera diperbaiki",
        "pipa air bocor di {s} {l}, air terbuang percuma",
    ),
    "kelurahan_services": (
        "pelayanan di kantor kelurahan {k} lambat sekali, antre dari pagi blm dipanggil",
        "mohon info pengurusan surat pindah di kelurahan {k}, petugas tdk ada di tempat",
    ),
}
CATEGORY_WEIGHTS = {
    "road_damage": 14,
    "street_lights": 9,
    "illegal_parking": 10,
    "fallen_tree_parks": 10,
    "flood_drainage": 9,
    "garbage": 9,
    "street_vendors": 6,
    "public_order_noise": 5,
    "illegal_billboards": 4,
    "pollution": 3,
    "public_transport": 3,
    "clean_water": 3,
    "kelurahan_services": 4,
}
TAILS = ("", "", " terima kasih", " tks", " mohon segera ditindaklanjuti", " @DKIJakarta", " 🙏", "!!")
DESK_OFFICES = {  # desk channel → an office code of its level (the development credentials' offices)
    "desk_kelurahan": "31.71.01.1001",
    "desk_kecamatan": "31.71.01",
    "desk_walikota": "31.71",
    "desk_balaikota": "31",
    "desk_inspektorat": "31",
}


@dataclass(frozen=True, slots=True)
class Kelurahan:
    code: str
    name: str
    kecamatan: str
    kota: str
    lat: float
    lon: float


def load_kelurahan() -> list[Kelurahan]:
    path = resources.files("pipeline") / "data" / "jakarta_wilayah_gazetteer.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["level"] == "kelurahan" and r["centroid_lat"]]
    return [
        Kelurahan(
            r["kode_kemendagri"],
            r["kelurahan"],
            r["kecamatan"],
            r["kota_kabupaten"],
            float(r["centroid_lat"]),
            float(r["centroid_lng"]),
        )
        for r in rows
    ]


def _iso(dt: datetime) -> str:
    return dt.isoformat()


@dataclass
class Problem:
    """A problem on the ground, so that repeat reports describe the same thing at the same place."""

    category: str
    kel: Kelurahan
    street: str
    lat: float
    lon: float
    rt: int
    rw: int


class Traffic:
    """Deterministic (seeded) stream of report envelopes; one instance per producer."""

    def __init__(self, seed: int = 5, run_tag: str = "", reporter_key: bytes = b"bench-reporter-key") -> None:
        self.rng = random.Random(seed)
        self.tag = run_tag or f"s{seed}"
        self.key = reporter_key
        self.kelurahan = load_kelurahan()
        # Kepulauan Seribu: islands, few reports.
        self.kel_weights = [0.1 if k.code.startswith("31.01") else 1.0 for k in self.kelurahan]
        self.flood_kel = [k for k in self.kelurahan if k.name in FLOOD_KELURAHAN] or self.kelurahan[:4]
        self.channels = list(CHANNEL_MIX)
        self.channel_weights = list(CHANNEL_MIX.values())
        self.categories = list(CATEGORY_WEIGHTS)
        self.category_weights = list(CATEGORY_WEIGHTS.values())
        self.recent: deque[dict[str, Any]] = deque(maxlen=2000)
        self.recent_http: deque[dict[str, Any]] = deque(maxlen=2000)
        self.problems: deque[Problem] = deque(maxlen=500)
        self.n = 0
        self.counts = {"fresh": 0, "redelivery": 0, "repeat": 0}

    # ------------------------------------------------------------------ pieces
    def _problem(self, flood: bool) -> Problem:
        r = self.rng
        if flood and r.random() < 0.85:
            kel = r.choice(self.flood_kel)
            category = "flood_drainage" if r.random() < 0.8 else r.choice(("fallen_tree_parks", "garbage"))
            street = r.choice(FLOOD_STREETS)
            spread = 0.002
        else:
            kel = r.choices(self.kelurahan, self.kel_weights)[0]
            category = r.choices(self.categories, self.category_weights)[0]
            street = r.choice(STREETS)
            spread = 0.003
        return Problem(
            category,
            kel,
            street,
            round(kel.lat + r.gauss(0, spread), 6),
            round(kel.lon + r.gauss(0, spread), 6),
            r.randint(1, 15),
            r.randint(1, 12),
        )

    def _text(self, p: Problem) -> str:
        r = self.rng
        text = r.choice(TEMPLATES[p.category]).format(
            s=p.street,
            l=r.choice(LANDMARKS),
            k=p.kel.name,
            rt=f"{p.rt:02d}",
            rw=f"{p.rw:02d}",
            n=r.randint(2, 9),
        )
        if r.random() < 0.4:
            text = text.lower()
        return text + r.choice(TAILS)

    def _pseudonym(self, kind: str, value: str) -> str:
        digest = hmac.new(self.key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
        return f"rp-{digest[:32]}"

    def _envelope(self, channel: str, p: Problem, text: str) -> dict[str, Any]:
        r = self.rng
        self.n += 1
        serial = f"{self.tag}-{self.n}"
        citizen = r.randrange(40_000)  # 2023: 158,375 JAKI reports from 32,424 reporters
        env: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "channel": channel,
            "text": text,
            "location": {},
            "attachments": [],
        }
        loc = env["location"]
        address = f"{p.street} RT {p.rt:02d}/RW {p.rw:02d}, Kel. {p.kel.name}, Kec. {p.kel.kecamatan}"
        if channel == "jaki":
            pid = f"JAKI-{serial}"
            account = f"u-{citizen:05d}"
            env["reporter"] = {"id": self._pseudonym("jaki", account), "private": True}
            env["contact"] = {"handle": account}
            loc.update(lat=p.lat, lon=p.lon)
            env["category_hint"] = p.category.replace("_", " ")
            if r.random() < 0.7:
                env["attachments"] = [
                    {"url": f"https://jaki.jakarta.go.id/media/{serial}.jpg", "media_type": "image/*"}
                ]
        elif channel in ("twitter", "facebook", "governor_social"):
            pid = f"{'tweet' if channel == 'twitter' else 'comment'}:{serial}"
            handle = f"@warga{citizen}"
            env["reporter"] = {"id": self._pseudonym(channel, handle), "private": False}
            env["contact"] = {"handle": handle}
            env["text"] = f"{text} lokasi {p.street} {p.kel.name}"
        elif channel == "sms":
            pid = f"SM{hashlib.md5(serial.encode(), usedforsecurity=False).hexdigest()}"
            phone = f"+62812{citizen:07d}"
            env["reporter"] = {"id": self._pseudonym("phone", phone), "private": False}
            env["contact"] = {"phone": phone}
            env["text"] = f"{text} di {address}"
        elif channel == "email":
            pid = f"<{serial}@mail.example.com>"
            email = f"warga{citizen}@example.com"
            env["reporter"] = {"id": self._pseudonym("email", email), "private": False}
            env["contact"] = {"name": f"Warga {citizen}", "email": email}
            env["text"] = f"Yth. Bapak/Ibu,\n\n{text}\nAlamat: {address}\n\nHormat saya"
        elif channel.startswith("desk_"):
            office = DESK_OFFICES[channel]
            pid = f"{office}:{serial}"
            env["reporter"] = {"id": "anonymous", "private": False}
            loc.update(address=address, desk_office=office)
        else:  # web, lapor1708
            pid = f"sub:{serial}"
            email = f"warga{citizen}@example.com"
            env["reporter"] = {"id": self._pseudonym("email", email), "private": channel == "lapor1708"}
            env["contact"] = {"email": email}
            loc["address"] = address
        env["provider_id"] = pid
        env["report_id"] = report_id_for(channel, pid)
        return env

    # ------------------------------------------------------------------ the stream
    def envelope(self, flood: bool = False) -> dict[str, Any]:
        """The next envelope (a dict without ``received_at``: see :func:`stamp`)."""
        r = self.rng
        x = r.random()
        if x < REDELIVERY_RATE and self.recent:
            self.counts["redelivery"] += 1
            return r.choice(self.recent)
        channel = r.choices(self.channels, self.channel_weights)[0]
        if x < REDELIVERY_RATE + REPEAT_RATE and self.problems:
            self.counts["repeat"] += 1
            p = r.choice(self.problems)
            p = Problem(
                p.category,
                p.kel,
                p.street,
                p.lat + r.gauss(0, 0.0003),
                p.lon + r.gauss(0, 0.0003),
                p.rt,
                p.rw,
            )
        else:
            self.counts["fresh"] += 1
            p = self._problem(flood)
            self.problems.append(p)
        env = self._envelope(channel, p, self._text(p))
        self.recent.append(env)
        return env

    def jaki_request(self, flood: bool = False) -> dict[str, Any]:
        """A JAKI backend POST body (for the ingress phase), 5 % of them redeliveries."""
        r = self.rng
        if r.random() < REDELIVERY_RATE and self.recent_http:
            return r.choice(self.recent_http)
        p = self._problem(flood)
        self.n += 1
        body = {
            "report_id": f"JAKI-http-{self.tag}-{self.n}",
            "text": self._text(p),
            "category": p.category.replace("_", " "),
            "lat": p.lat,
            "lon": p.lon,
            "account_id": f"u-{r.randrange(40_000):05d}",
            "created_at": _iso(datetime.now(UTC)),
        }
        self.recent_http.append(body)
        return body

    def csv_row(self, i: int) -> tuple[str, str, str, str]:
        """id, description, location, time: a row of a historical CRM export (for the offline replay).

        Rows are dated at the real CRM's 2023 volume (all channels, ~470 a day) from 2018 on, so a
        million rows span six years and grouping sees the open cases a real replay would, not every
        report of six years open at once."""
        p = self._problem(False)
        where = f"KELURAHAN {p.kel.name.upper()}" if self.rng.random() < 0.8 else f"{p.lat},{p.lon}"
        at = HISTORY_FROM + timedelta(days=i / HISTORY_PER_DAY)
        return f"JK{i:010d}", self._text(p), where, at.isoformat(timespec="seconds")


def stamp(env: dict[str, Any], now: datetime | None = None) -> bytes:
    """The envelope as sent: ``received_at`` is when it entered the ingest topic."""
    env["received_at"] = _iso(now or datetime.now(UTC))
    return orjson.dumps(env)
