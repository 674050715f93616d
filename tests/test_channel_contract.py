"""The fuller adapter contract (docs/channels.md), through a plug-in channel run by the real processes.

``tests/channel_probe.py`` is a Telegram-style bot channel registered as ``pip install`` would register
it. Against a real ingress (real HTTP, real Kafka) and the channel's local Bot API: declared settings
(validated at start, secrets masked in the log and in ``channels --config``, development secrets refused
in production), start/stop hooks run by the ingress and by the poller, an ``async def parse`` that looks
media up while parsing, the metrics handle on ``/metrics``, account-only reporters, media-only messages,
and a provider that must see 2xx for refused input (still dead-lettered). The conformance kit runs on
the channel too, offline and online.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.envelope import report_id_for, reporter_pseudonym
from pipeline.settings import Settings
from pipeline.sources.base import AdapterStartError, PollBatch, PollSource
from pipeline.sources.conformance import HttpCall, PushConformance, Target, read_to_end, wait_for
from pipeline.sources.poller import run_poller
from pipeline.sources.registry import discover
from tests import channel_probe as probe
from tests.harness import ROOT, Isolated, Process, free_port, wait_http
from tests.test_security_settings import STRONG

pytestmark = pytest.mark.stack

SECRET = probe.ProbeSettings().secret_token.get_secret_value()


def call(body: dict[str, Any], secret: str = SECRET) -> HttpCall:
    return HttpCall(
        probe.ROUTE,
        orjson.dumps(body),
        {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": secret},
    )


def nonce_id(nonce: str) -> int:
    return int(nonce, 16) % 10**12


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def bot() -> Iterator[probe.BotApi]:
    api = probe.BotApi()
    yield api
    api.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, bot: probe.BotApi) -> Iterator[Path]:
    """The probe channel installed for this module (and its processes), pointed at the local Bot API."""
    path = probe.plugin_site(tmp_path_factory.mktemp("probe"), "crm-probe-channel", "0.1", probe.ENTRY_POINTS)
    sys.path.insert(0, str(path))
    old = os.environ.get("CRM_PROBE_API_BASE")
    os.environ["CRM_PROBE_API_BASE"] = bot.api_base
    discover.cache_clear()
    try:
        yield path
    finally:
        sys.path.remove(str(path))
        if old is None:
            os.environ.pop("CRM_PROBE_API_BASE", None)
        else:
            os.environ["CRM_PROBE_API_BASE"] = old
        discover.cache_clear()


def plugin_env(iso: Isolated, site: Path, **extra: str) -> dict[str, str]:
    return {**iso.env, "PYTHONPATH": str(site), **extra}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ingress(env: dict[str, str], name: str = "ingress-probe") -> tuple[Process, str]:
    port = free_port()
    proc = Process(name, ["ingress"], {**env, "CRM_INGRESS_PORT": str(port)})
    return proc, f"http://127.0.0.1:{port}"


def exits(proc: Process, timeout: float = 60) -> int:
    try:
        return proc.proc.wait(timeout)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def probe_ingress(iso: Isolated, site: Path, bot: probe.BotApi) -> Iterator[str]:
    env = plugin_env(iso, site, CRM_PROBE_API_BASE=bot.api_base)
    assert cli(env, "topics", "create").returncode == 0  # after installing: the channel's ingest topic
    proc, url = ingress(env)
    try:
        wait_http(url + "/readyz", proc)
        yield url
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def conformance_target(iso: Isolated, probe_ingress: str) -> Target:
    return Target(probe_ingress, iso.env["CRM_KAFKA_BOOTSTRAP"], iso.tag, worker=False)


# ------------------------------------------------------------------------------------ the kit on it
@pytest.mark.usefixtures("site")
class TestProbeConformance(PushConformance):
    adapter = probe.ProbeSource
    check_downstream = False  # no worker behind this ingress: the plug-in's own promises only

    def valid(self, nonce: str, base_url: str) -> HttpCall:
        return call(probe.update(nonce_id(nonce), 5550001, f"Saluran air tersumbat di Jl. Kenari {nonce}"))

    def malformed(self, nonce: str, base_url: str) -> HttpCall:
        return call(probe.update(nonce_id(nonce), 5550001))  # neither text nor photo

    def forged(self, nonce: str, base_url: str) -> HttpCall:
        return call(orjson.loads(self.valid(nonce, base_url).body), secret="not-the-secret-token")


# ------------------------------------------------------------------------- through the real ingress
def test_async_parse_looks_media_up_and_a_photo_without_text_is_a_report(iso, probe_ingress, bot):
    """A photo without caption from a chat: the ingress awaits parse, which asks getFile; the envelope
    carries the reference, the placeholder text, and the chat as an account-only reporter."""
    n = uuid_int()
    status, answer = call(probe.update(n, 777001, photo=f"AgAD{n}")).send(probe_ingress)
    assert status == 200 and answer["accepted"] == 1, answer
    assert f"getFile:AgAD{n}" in bot.calls
    rid = report_id_for(probe.CHANNEL, str(n))
    topic = f"{iso.tag}.ingest.{probe.CHANNEL}.v1"
    [envelope] = wait_for(
        lambda: [v for k, v in read_to_end(iso.env["CRM_KAFKA_BOOTSTRAP"], topic) if k == rid.encode()],
        30,
        "the photo report on the ingest topic",
    )
    assert envelope["text"] == probe.MEDIA_ONLY_TEXT
    assert envelope["attachments"] == [{"url": f"probe-file:photos/AgAD{n}.jpg", "media_type": "image/jpeg"}]
    key = iso.settings().reporter_id_key.get_secret_value().encode()
    assert envelope["reporter"]["id"] == reporter_pseudonym(key, probe.CHANNEL, "777001")
    assert envelope["reporter"]["id"] != reporter_pseudonym(key, "phone", "777001")  # keyed by channel
    assert envelope["contact"]["handle"] == "777001"


def test_refused_input_is_answered_2xx_for_a_provider_that_retries_and_still_dead_lettered(
    iso, probe_ingress
):
    n = uuid_int()
    body = call(probe.update(n, 777002))  # authentic, but neither text nor photo
    status, answer = body.send(probe_ingress)
    assert status == 200 and answer["code"] == "empty_message", answer
    import hashlib

    sha = hashlib.sha256(body.body).hexdigest()
    letters = wait_for(
        lambda: [
            v
            for _, v in read_to_end(iso.env["CRM_KAFKA_BOOTSTRAP"], f"{iso.tag}.deadletter.v1")
            if v.get("raw_sha256") == sha
        ],
        30,
        "the dead letter",
    )
    assert letters[0]["code"] == "empty_message" and letters[0]["channel"] == probe.CHANNEL
    status, _ = call(probe.update(n, 777002, "teks"), secret="forged").send(probe_ingress)
    assert status == 403  # forged stays a refusal the provider sees


def test_the_metrics_handle_counts_ignored_updates_with_the_channel_label(probe_ingress):
    def ignored() -> float:
        with urllib.request.urlopen(probe_ingress + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        for line in text.splitlines():
            if line.startswith("crm_channel_ignored_total{") and 'channel="probe"' in line:
                if 'reason="update_type"' in line:
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = ignored()
    edited = {"update_id": uuid_int(), "edited_message": {"chat": {"id": 1}, "text": "ralat"}}
    for _ in range(2):
        status, answer = call(edited).send(probe_ingress)
        assert status == 200 and answer["ignored"] == 1
    assert ignored() == before + 2


def test_start_and_stop_hooks_run_around_the_ingress_and_secrets_stay_masked_in_its_log(
    iso, site, probe_ingress
):
    # probe_ingress: the topics exist (created with the channel installed)
    api = probe.BotApi(token="999:lifecycle")
    try:
        env = plugin_env(iso, site, CRM_PROBE_API_BASE=api.api_base)
        proc, url = ingress(env, "ingress-probe-lifecycle")
        try:
            wait_http(url + "/readyz", proc)
            assert api.calls == ["getMe"], "start() runs once, before the first request"
            n = uuid_int()
            status, _ = call(probe.update(n, 777003, "Pohon tumbang", photo=f"F{n}")).send(url)
            assert status == 200 and api.calls == ["getMe", f"getFile:F{n}"]
        finally:
            proc.stop()
        assert proc.proc.returncode == 0
        assert api.calls[-1] == "bye", "stop() runs when the ingress stops"
        log = proc.output()
        assert "channel probe settings: ProbeSettings(secret_token='********'" in log
        assert SECRET not in log
        assert "channel jaki settings: JakiSettings(token='********')" in log
        assert "dev-only-jaki-token" not in log
    finally:
        api.close()


def test_a_failing_start_stops_the_ingress_naming_the_channel(iso, site):
    api = probe.BotApi(token="111:right")
    try:
        wrong = api.api_base.replace("111:right", "111:wrong")
        proc, _ = ingress(plugin_env(iso, site, CRM_PROBE_API_BASE=wrong), "ingress-probe-badstart")
        assert exits(proc) == 1
        assert "channel probe: start() failed" in proc.output() and "getMe answered 401" in proc.output()
    finally:
        api.close()


def test_settings_are_validated_on_start_and_development_secrets_refused_in_production(iso, site):
    proc, _ = ingress(plugin_env(iso, site, CRM_PROBE_LOOKUP_TIMEOUT_S="soon"), "ingress-probe-badvalue")
    assert exits(proc) == 2
    assert "CRM_PROBE_LOOKUP_TIMEOUT_S" in proc.output()

    strong = {f"CRM_{k.upper()}": v for k, v in STRONG.items()}
    prod = plugin_env(iso, site, CRM_ENV="production", **strong)
    proc, _ = ingress(prod, "ingress-probe-production")
    assert exits(proc) == 2
    out = proc.output()
    assert "production refuses development or empty secrets: set CRM_PROBE_SECRET_TOKEN" in out
    proc, url = ingress(
        {**prod, "CRM_PROBE_SECRET_TOKEN": "a-real-token-from-the-vault"}, "ingress-probe-prod-ok"
    )
    try:
        wait_http(url + "/healthz", proc)  # the channel's own secret set: it starts (core secrets are strong)
    finally:
        proc.stop()


def test_channels_config_lists_declared_settings_masked(iso, site, bot):
    env = plugin_env(
        iso, site, CRM_PROBE_SECRET_TOKEN="tok-0123456789-visible?", CRM_PROBE_API_BASE=bot.api_base
    )
    done = cli(env, "channels", "--config")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tok-0123456789-visible?" not in done.stdout and "dev-only-" not in done.stdout
    section = done.stdout.split("\nprobe  (push, ")[1].split("\n\n")[0]
    assert "CRM_PROBE_SECRET_TOKEN" in section and "********" in section and bot.api_base in section
    rows = {r["id"]: r for r in orjson.loads(cli(env, "channels", "--config", "--json").stdout)}
    listed = {s["setting"]: s for s in rows["probe"]["config"]["settings"]}
    assert listed["CRM_PROBE_SECRET_TOKEN"] == {
        **listed["CRM_PROBE_SECRET_TOKEN"],
        "secret": True,
        "value": "********",
    }
    assert listed["CRM_PROBE_LOOKUP_TIMEOUT_S"]["type"] == "float"
    jaki = {s["setting"]: s for s in rows["jaki"]["config"]["settings"]}
    assert jaki["CRM_JAKI_TOKEN"]["value"] == "********" and rows["jaki"]["reply_sender"]
    assert {s["setting"] for s in rows["jaki"]["reply_config"]["settings"]} >= {"CRM_JAKI_REPLY_SECRET"}
    assert rows["web"]["config"]["model"] is None

    bad = cli({**env, "CRM_PROBE_LOOKUP_TIMEOUT_S": "soon"}, "channels", "--config")
    assert bad.returncode == 1 and "CRM_PROBE_LOOKUP_TIMEOUT_S" in bad.stdout


# -------------------------------------------------------------------------------------- the poller
class _Recording(PollSource):
    channel = "probe_poll"
    interval_s = 0.05

    def __init__(self, settings: Settings, events: list[str], fail: bool = False) -> None:
        super().__init__(settings)
        self.events, self.fail = events, fail

    async def start(self) -> None:
        self.events.append("start")
        if self.fail:
            raise ConnectionError("provider unreachable")

    async def stop(self) -> None:
        self.events.append("stop")

    async def fetch(self, cursor: str | None) -> PollBatch:
        self.events.append("fetch")
        return PollBatch([], None)


def test_the_poller_starts_adapters_before_polling_and_stops_them_after(iso: Isolated) -> None:
    settings = iso.settings()
    events: list[str] = []
    asyncio.run(run_poller(settings, [_Recording(settings, events)], once=True))
    assert events == ["start", "fetch", "stop"]
    failed: list[str] = []
    with pytest.raises(AdapterStartError, match="probe_poll"):
        asyncio.run(run_poller(settings, [_Recording(settings, failed, fail=True)], once=True))
    assert failed == ["start"], "a channel whose start() fails is never polled"


def uuid_int() -> int:
    return int(time.time() * 1000) % 10**9 * 1000 + int.from_bytes(os.urandom(2), "big") % 1000
