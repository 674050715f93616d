"""Demo traffic for ``make demo``: realistic web-form reports, one resubmission and one broken form.

Waits until every accepted report is in the CRM store and prints them as stored.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from urllib.parse import urlencode

import aiohttp
import orjson
import psycopg

from .settings import get_settings

ROUTE = "/v1/channels/web/reports"

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


async def submit(session: aiohttp.ClientSession, url: str, body: bytes, ctype: str) -> tuple[int, dict]:
    async with session.post(url + ROUTE, data=body, headers={"Content-Type": ctype}) as resp:
        return resp.status, await resp.json(content_type=None)


async def run(url: str, wait_s: float) -> int:
    ids: list[str] = []
    async with aiohttp.ClientSession() as session:
        for _attempt in range(60):  # the ingress may still be starting
            try:
                async with session.get(url + "/readyz") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
        else:
            print("[demo] ingress did not become ready", file=sys.stderr)
            return 1
        for i, report in enumerate(REPORTS):
            if i % 2:  # half as the no-script form would send them
                status, body = await submit(
                    session, url, urlencode(report).encode(), "application/x-www-form-urlencoded"
                )
            else:
                status, body = await submit(session, url, orjson.dumps(report), "application/json")
            print(f"[demo] POST {ROUTE} -> {status} {body.get('report_id') or body}")
            if status == 202:
                ids.append(body["report_id"])
        status, body = await submit(session, url, orjson.dumps(REPORTS[0]), "application/json")
        print(f"[demo] same form again       -> {status} {body.get('report_id')} (same id: one report)")
        status, body = await submit(session, url, b'{"text": "Saluran air mampet di', "application/json")
        print(f"[demo] broken JSON           -> {status} {body.get('error')} (sent to the dead-letter topic)")

    dsn = get_settings().database_url.get_secret_value()
    deadline = time.monotonic() + wait_s
    rows: list[tuple] = []
    while time.monotonic() < deadline:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            rows = await (
                await conn.execute(
                    "SELECT report_id, channel, status, coalesce(kelurahan_code, '-'), "
                    "coalesce(category, '-'), "
                    "coalesce(agency, routed_to), left(text_original, 60) FROM reports "
                    "WHERE report_id = ANY(%s::uuid[]) ORDER BY received_at",
                    (ids,),
                )
            ).fetchall()
        if len(rows) == len(ids):
            break
        await asyncio.sleep(0.5)
    print(f"\n[demo] {len(rows)} of {len(ids)} accepted reports are in the CRM store:\n")
    print(f"{'report_id':36}  {'channel':7} {'status':9} {'kelurahan':13} {'category':16} {'route':26} text")
    for rid, channel, status, kel, cat, route, text in rows:
        print(f"{rid!s:36}  {channel:7} {status:9} {kel:13} {cat[:16]:16} {str(route)[:26]:26} {text}")
    return 0 if len(rows) == len(ids) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--timeout", type=float, default=90)
    args = parser.parse_args()
    return asyncio.run(run(args.url, args.timeout))


if __name__ == "__main__":
    raise SystemExit(main())
