"""The demo's flood (``make demo``, step 5): a surge opened and closed, on the dashboard and in the mail.

Twelve JAKI flood reports from Kampung Melayu, Bali Mester and Bidara Cina (Jatinegara) within a few
seconds. ``deploy/demo.sh`` runs the surge worker with its windows shrunk (``CRM_SURGE_WINDOWS``, by
default 20 s / 1 min / 5 min instead of 15 min / 1 h / 6 h), so the surge opens at once and closes about a
minute after the last report, while the dashboard shows it in its list and pulses its kelurahan on the
map. The agencies' mails (DSDA and BPBD) arrive in the demo's mail sink.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import psycopg

#: points inside each kelurahan's polygon (Kampung Melayu's centroid lies outside its own thin shape)
POINTS = {
    "Kampung Melayu": (-6.218146, 106.863075),
    "Bali Mester": (-6.219088, 106.866494),
    "Bidara Cina": (-6.234782, 106.86803),
}
TEXTS = (
    "Banjir setinggi {cm} cm di Jl. Jatinegara Barat, air Ciliwung masuk rumah warga RT {rt}. Mohon pompa",
    "air kali meluap, gang {rt} {kel} terendam {cm} cm, motor tdk bisa lewat. tolong segera ditangani",
    "banjir lagi di {kel} RW {rt}, sudah {cm} cm dan terus naik, warga mulai mengungsi",
)


async def _surge(dsn: str, since: float) -> tuple[Any, ...] | None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        return await (
            await conn.execute(
                "SELECT surge_id::text, state, place, count, expected, score, report_count, record "
                "FROM surges WHERE category = 'flood_drainage' AND kecamatan_code = '31.75.03' "
                "AND opened_at >= to_timestamp(%s) ORDER BY opened_at DESC LIMIT 1",
                (since - 5,),
            )
        ).fetchone()


async def flood_surge(run: Any, session: aiohttp.ClientSession, say: Any, dashboard: str) -> dict[str, Any]:
    """Post the flood, wait for the surge to open and to close; returns what happened (for the summary)."""
    token = run.settings.jaki_token.get_secret_value()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    dsn = run.settings.database_url.get_secret_value()
    started = time.time()
    accepted = 0
    for i in range(12):
        kel = list(POINTS)[i % 3]
        lat, lon = POINTS[kel]
        body = {
            "report_id": f"JAKI-{run.tag}-banjir-{i:02d}",
            "text": TEXTS[i % 3].format(cm=30 + 5 * i, rt=f"{i + 1:02d}", kel=kel),
            "category": "Banjir",
            "lat": lat + (i // 3) * 1e-5,
            "lon": lon,
            "account_id": f"u-{run.tag}-banjir-{i}",
        }
        async with session.post(
            run.ingress + "/v1/channels/jaki/reports", data=orjson.dumps(body), headers=headers
        ) as resp:
            accepted += resp.status == 202
    say(
        f"[surge]    12 JAKI flood reports from Kampung Melayu, Bali Mester and Bidara Cina -> "
        f"{accepted} accepted"
    )
    say(
        f"[surge]    watch {dashboard}: the surge appears in the Surges list and its kelurahan "
        "pulse on the map"
    )
    out: dict[str, Any] = {"accepted": accepted, "opened": None, "closed": None}
    deadline = time.monotonic() + 90
    row = None
    while time.monotonic() < deadline:
        row = await _surge(dsn, started)
        if row is not None:
            break
        await asyncio.sleep(0.5)
    if row is None:
        run.problems.append("the flood raised no surge within 90 s")
        return out
    sid, state, place, count, expected, score, _, record = row
    out["opened"] = time.time() - started
    who = ", ".join(record.get("notify", []))
    say(
        f"[surge]    OPENED {sid} after {out['opened']:.0f}s: flood_drainage at {place}, {count} reports in "
        f"{record['window']} where {expected:.3f} are usual (score {score:.1f}); told: {who}"
    )
    say("[surge]    (its windows are shrunk for the demo: it closes about a minute after the last report)")
    deadline = time.monotonic() + 180
    seen = {state}
    while time.monotonic() < deadline:
        row = await _surge(dsn, started)
        if row is not None and row[1] not in seen:
            seen.add(row[1])
            say(
                f"[surge]    {row[1].upper()} after {time.time() - started:.0f}s: "
                f"{row[3]} in {row[7]['window']}"
            )
        if row is not None and row[1] == "closed":
            out["closed"] = time.time() - started
            out["reports"] = row[6]
            break
        await asyncio.sleep(1)
    if out["closed"] is None:
        run.problems.append("the flood surge did not close within 180 s of its last report")
    return out
