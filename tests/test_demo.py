"""``make demo``: the provider simulators against the real poll adapters, and deploy/demo.sh end to end.

The end-to-end test runs ``deploy/demo.sh`` on an isolated namespace and database of the shared local
stack (every port its own) and checks what the demo claims against the store: reports of every channel
family, the e-mail report's history through Selesai with a mail sent at each step.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import aiohttp
import pytest

from demo.providers import MailSink, Providers, start_http
from demo.run import CHANNEL_ORDER, Run, seed_providers
from pipeline.settings import Settings
from pipeline.sources.lapor import LaporSource
from pipeline.sources.twitter import TwitterSource
from tests.harness import ROOT, Isolated, free_port


def test_the_simulated_x_and_lapor_apis_feed_the_real_poll_adapters():
    """tweepy (twitter adapter) and aiohttp (LAPOR! adapter) against demo.providers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = Settings(
        env="test",
        twitter_api_base=base + "/x",
        twitter_bearer_token="demo-x-token",
        lapor_api_base=base + "/lapor",
        lapor_token="demo-lapor-token",
    )
    providers = Providers(x_token="demo-x-token", lapor_token="demo-lapor-token")
    run = Run(settings, "http://unused", "http://unused", f"{int(time.time()) % 10**7:07d}")
    seed_providers(run, providers)

    async def go():
        http = await start_http(providers.app(), port)
        twitter, lapor = TwitterSource(settings), LaporSource(settings)
        try:
            x_batch = await twitter.fetch(None)
            x_again = await twitter.fetch(x_batch.next_cursor)
            l_batch = await lapor.fetch(None)
            l_again = await lapor.fetch(l_batch.next_cursor)
            bad = Settings(**{**settings.model_dump(), "lapor_token": "wrong"})
            with pytest.raises(Exception, match="refused"):
                await LaporSource(bad).fetch(None)
            async with aiohttp.ClientSession() as session:  # the notifier's destinations
                async with session.post(
                    base + "/sms/v1/send", json={"to": "+6281200000000", "text": "x"}, headers={}
                ) as resp:
                    unauthenticated = resp.status
        finally:
            await twitter.aclose()
            await lapor.aclose()
            await http.cleanup()
        return x_batch, x_again, l_batch, l_again, unauthenticated

    x_batch, x_again, l_batch, l_again, unauthenticated = asyncio.run(go())
    assert sorted(r.report_id for r in x_batch.reports) == sorted(run.submitted["twitter"])
    assert not x_batch.rejects and x_again.reports == []  # the since_id cursor holds
    assert sorted(r.report_id for r in l_batch.reports) == sorted(run.submitted["lapor1708"])
    assert not l_batch.rejects and l_again.reports == []
    assert any(r.reporter.private for r in l_batch.reports)  # is_confidential carried over
    assert unauthenticated == 401


def test_the_mail_sink_keeps_what_the_relay_would_deliver():
    from email.message import EmailMessage

    import aiosmtplib

    seen = []
    sink = MailSink(free_port(), seen.append).start()
    try:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "dki@jakarta.go.id", "warga@example.com", "[JKT-1] Laporan"
        msg.set_content("Status: Proses.\nbaris dua")
        asyncio.run(aiosmtplib.send(msg, hostname="127.0.0.1", port=sink.port))
    finally:
        sink.stop()
    assert [m["Subject"] for m in sink.messages] == ["[JKT-1] Laporan"] and len(seen) == 1


@pytest.mark.stack
@pytest.mark.slow
def test_make_demo_end_to_end_on_an_isolated_namespace(iso: Isolated):
    env = {
        **os.environ,
        **iso.env,
        "CRM_STATUS_GROUP_ID": f"crm-status-{iso.tag}",
        "DEMO_PAUSE_S": "0",
        "DEMO_HOLD_S": "0",
        "DEMO_LOGS": str(ROOT / "test-artifacts" / f"demo-{iso.tag}"),
        "PYTHONUNBUFFERED": "1",
    }
    for name in (
        "CRM_INGRESS_PORT",
        "CRM_API_PORT",
        "CRM_DASHBOARD_PORT",
        "CRM_DEMO_PROVIDERS_PORT",
        "CRM_EMAIL_SMTP_PORT",
        "CRM_EMAIL_RELAY_PORT",
        "CRM_WORKER_METRICS_PORT",
    ):
        env[name] = str(free_port())
    proc = subprocess.run(
        [str(ROOT / "deploy" / "demo.sh")], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "all checks passed" in out

    per_channel = dict(iso.query("SELECT channel, count(*) FROM reports GROUP BY channel"))
    for channel in CHANNEL_ORDER:
        assert per_channel.get(channel, 0) >= 1, (channel, per_channel)
    assert per_channel["desk_kecamatan"] == 3  # the CSV import
    assert per_channel["twitter"] == 3 and per_channel["lapor1708"] == 2  # the poll channels

    [(rid, status)] = iso.query(
        "SELECT report_id::text, status FROM reports WHERE channel = 'email' AND text_original LIKE "
        "'Jalan berlubang di Jl. Cempaka Putih Raya%%'"
    )
    assert status == "Selesai"
    trail = [
        r[0]
        for r in iso.query(
            "SELECT to_status FROM status_history WHERE report_id = %s ORDER BY changed_at, history_id",
            (rid,),
        )
    ]
    assert trail[-4:] == ["Koordinasi", "Proses", "Menunggu Validasi", "Selesai"], trail
    sent = iso.query(
        "SELECT kind, to_status FROM notify.outbox WHERE report_id = %s AND state = 'sent' "
        "ORDER BY outbox_id",
        (rid,),
    )
    assert [s for _k, s in sent if s] == ["Koordinasi", "Proses", "Menunggu Validasi", "Selesai"], sent
    assert ("ack", None) in sent

    # step 5 (issue #17): the flood in Jatinegara opened a surge that closed again; DSDA and BPBD mailed
    demo_surge = (
        "SELECT s.surge_id FROM surges s JOIN reports r ON r.report_id::text = s.record->>'first_report_id' "
        "WHERE r.provider_id LIKE 'JAKI-%%-banjir-%%'"
    )
    [(state, report_count, kecamatan)] = iso.query(
        f"SELECT state, report_count, kecamatan_code FROM surges WHERE surge_id IN ({demo_surge})"  # noqa: S608
    )
    assert (state, report_count, kecamatan) == ("closed", 12, "31.75.03")
    told = iso.query(
        "SELECT DISTINCT agency FROM notify.outbox WHERE state = 'sent' AND to_status = 'opened' "  # noqa: S608
        f"AND surge_id IN ({demo_surge})"
    )
    assert sorted(t[0] for t in told) == ["Badan Penanggulangan Bencana Daerah", "Dinas Sumber Daya Air"]
    assert "OPENED" in out and "CLOSED" in out
