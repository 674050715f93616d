"""A full broker disk (issue #22): the Kafka log dir on a small filesystem of its own runs out of space
under load. The ingress answers 503 with Retry-After, nothing it acknowledged is missing from the store,
a real Prometheus (with node_exporter on that filesystem) fires CrmBrokerDiskLow and
CrmIngressUnavailable, and once space is freed and the broker restarted every report flows again.

The small filesystem is a tmpfs with ``size=`` mounted over the broker's log dir (root only); where
tmpfs cannot be mounted, a loop-mounted ext4 image; where neither can (no root, no loop devices), the
scenario is skipped with the reason, since filling the machine's real disk is not an option.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from tests import prom
from tests.chaos import chaoslib as c
from tests.harness import free_port

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(900)]

DIR = c.ROOT / ".stack" / "diskfull"
DATA = DIR / "kafka" / "data"
SIZE_MB = 64
SPEEDUP = 60


def _port(offset: int) -> int:
    base = os.environ.get("SLOT_PORT_BASE")
    return int(base) + offset if base else free_port()


def mount_small(path: Path, size_mb: int) -> str:
    """Mount a ``size_mb`` filesystem at ``path``: tmpfs, else a loop-mounted ext4 image."""
    path.mkdir(parents=True, exist_ok=True)
    errors = []
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if res.returncode == 0:
        return "tmpfs"
    errors.append(f"tmpfs: {res.stderr.strip()}")
    image = path.parent / "kafka-data.img"
    with contextlib.suppress(OSError):
        with image.open("wb") as f:
            f.truncate(size_mb * 2**20)
        mk = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True, text=True)
        res = subprocess.run(["mount", "-o", "loop", str(image), str(path)], capture_output=True, text=True)
        if mk.returncode == 0 and res.returncode == 0:
            return "ext4 loop image"
        errors.append(f"loop ext4: {mk.stderr.strip()} {res.stderr.strip()}")
    pytest.skip("no small filesystem could be mounted for the broker's log dir: " + "; ".join(errors))


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)
    image = path.parent / "kafka-data.img"
    image.unlink(missing_ok=True)


def fill(path: Path, leave_bytes: int) -> Path:
    """A ballast file taking all but ``leave_bytes`` of the filesystem's free space."""
    st = os.statvfs(path)
    ballast = path / "ballast.bin"
    size = st.f_bavail * st.f_frsize - leave_bytes
    with ballast.open("wb") as f:
        chunk = b"\0" * 2**20
        while size > 0:
            n = min(size, len(chunk))
            f.write(chunk[:n])
            size -= n
    return ballast


def post_once(url: str) -> tuple[int, dict[str, str]]:
    body = orjson.dumps(
        {"text": "Trotoar rusak di Jl. Pramuka dekat halte, probe", "email": "probe@example.com"}
    )
    req = urllib.request.Request(
        url + "/v1/channels/web/reports",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers)


class NodeExporter:
    """Debian's prometheus-node-exporter, filesystem collector only."""

    def __init__(self, port: int) -> None:
        binary = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
        assert binary, "prometheus-node-exporter not found: `make install` installs it"
        self.proc = subprocess.Popen(
            [
                binary,
                f"--web.listen-address=127.0.0.1:{port}",
                "--collector.disable-defaults",
                "--collector.filesystem",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


def test_broker_disk_full(private_stack, tmp_path):
    kafka_port, ctrl_port = _port(40), _port(41)
    worker_metrics, node_port, prom_port = _port(42), _port(43), _port(44)
    kenv = {"STACK_DIR": str(DIR), "KAFKA_PORT": str(kafka_port), "KAFKA_CONTROLLER_PORT": str(ctrl_port)}
    c._run([str(c.STACK), "stop", "kafka"], kenv)  # a broker left over by an interrupted run
    umount(DATA)
    shutil.rmtree(DIR, ignore_errors=True)
    kind = mount_small(DATA, SIZE_MB)
    c.log(f"disk-full: broker log dir on a {SIZE_MB} MB {kind} at {DATA}")
    space = None
    node = p = None
    try:
        c._run([str(c.STACK), "start", "kafka"], kenv)
        base = {**private_stack.env(), "CRM_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}"}
        space = c.Space(
            "8-disk-full", base, CRM_LAG_SAMPLE_S="1", CRM_WORKER_METRICS_PORT=str(worker_metrics)
        )
        space.prepare()
        url = space.start_ingress()
        space.start_worker("w0")
        node = NodeExporter(node_port)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "scrape_configs": [
                {"job_name": "crm-ingress", "static_configs": [{"targets": [url.removeprefix("http://")]}]},
                {"job_name": "crm-worker", "static_configs": [{"targets": [f"127.0.0.1:{worker_metrics}"]}]},
                {
                    "job_name": "crm-kafka-node",
                    "static_configs": [{"targets": [f"127.0.0.1:{node_port}"]}],
                    "metric_relabel_configs": [
                        {
                            "source_labels": ["__name__", "mountpoint"],
                            "regex": f"node_filesystem_.+;{DATA}",
                            "action": "keep",
                        }
                    ],
                },
            ],
        }
        p = prom.Prometheus(
            tmp_path / "prometheus",
            prom_port,
            config,
            prom.compress_durations(prom.RULES.read_text(), SPEEDUP),
        )
        outcome = asyncio.run(_scenario(space, url, kenv, p))
        c.record(outcome)
        assert outcome.lost == 0, outcome.table()
        assert outcome.duplicated == 0, outcome.table()
    finally:
        if p is not None:
            p.stop()
        if node is not None:
            node.stop()
        if space is not None:
            space.close()
        with contextlib.suppress(RuntimeError):
            c._run([str(c.STACK), "stop", "kafka"], kenv)
        umount(DATA)
        shutil.rmtree(DIR, ignore_errors=True)


def _firing(p: prom.Prometheus) -> set[str]:
    try:
        return {a["labels"]["alertname"] for a in p.alerts("firing")}
    except OSError:
        return set()


async def _scenario(space: c.Space, url: str, kenv: dict[str, str], p: prom.Prometheus) -> c.Outcome:
    http = c.HttpStats()
    space.http = http
    timeline = c.Timeline(space)
    timeline.start()
    try:
        # Web posts for 90 s (a provider retries what is not answered 202, for up to 5 min after).
        posting = asyncio.create_task(c.post_http(url, space.tag, 900, 90.0, http, settle=300))
        await timeline.wait_count(100, within=120)
        assert timeline.latest() >= 100, "reports did not flow before the fault"

        timeline.mark("filling the broker's disk")
        ballast = await asyncio.to_thread(fill, DATA, 256 * 1024)
        full_at = time.monotonic()

        async def seen_503() -> bool:
            return any(s == 503 for start, _, s in http.answers if start >= full_at)

        deadline = time.monotonic() + 120
        while not await seen_503() and time.monotonic() < deadline:  # noqa: ASYNC110 - polls answers
            await asyncio.sleep(0.5)
        assert await seen_503(), "the ingress never answered 503 once the broker's disk was full"
        timeline.mark("ingress answers 503")
        status, headers = await asyncio.to_thread(post_once, url)
        assert status == 503, status
        assert int(headers.get("Retry-After", "0")) > 0, headers

        wanted = {"CrmBrokerDiskLow", "CrmIngressUnavailable"}
        deadline = time.monotonic() + 120
        while not wanted <= (fired := await asyncio.to_thread(_firing, p)) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(1)
        assert wanted <= fired, f"firing: {fired}"
        timeline.mark(f"alerts firing: {sorted(fired)}")
        await asyncio.sleep(5)  # a little longer full, while the posts keep coming

        # Free the space, restart the broker (it stops when its only log dir fails), let it all flow.
        ballast.unlink()
        timeline.mark("space freed; restarting the broker")
        with contextlib.suppress(RuntimeError):
            await asyncio.to_thread(c._run, [str(c.STACK), "stop", "kafka"], kenv)
        await asyncio.to_thread(c._run, [str(c.STACK), "start", "kafka"], kenv)
        await c.wait_brokers(space.env["CRM_KAFKA_BOOTSTRAP"], 1)
        freed_at = time.monotonic()
        timeline.mark("broker back")
        await posting
        drained = await c.wait_drained(space, timeline, len(http.accepted), within=300)
        deadline = time.monotonic() + 60
        while "CrmBrokerDiskLow" in await asyncio.to_thread(_firing, p) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(1)
        assert "CrmBrokerDiskLow" not in await asyncio.to_thread(_firing, p)
    finally:
        await timeline.stop()
    during = [s for start, end, s in http.answers if full_at <= start and end <= freed_at - 15]
    notes = [
        f"broker log dir: {SIZE_MB} MB filesystem, filled to 256 KB free",
        f"answers while full: {sorted(set(during))} x{len(during)}; 503s {http.unavailable}",
    ]
    return await c.reconcile(
        space,
        c.Load(),
        http,
        resumed_s=timeline.resumed_after(freed_at),
        caught_up_s=drained - freed_at,
        notes=notes,
    )
