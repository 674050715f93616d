"""Fault injection for report media (issue #21): the object store is down for 30 s while citizens send
photos. ``make chaos`` (``pytest -m chaos tests/chaos -k media``).

Reports with photos arrive during the outage; the reports themselves must reach the CRM store while the
object store is still down (media never hold up the report path), and once it is back every photo must
end in the object store, once, with no attachment marked failed: a store outage is not the photo's fault.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid

import aiohttp
import boto3
import orjson
import psycopg
import pytest
from aiohttp import web
from botocore.config import Config

from pipeline.envelope import report_id_for
from tests.chaos import chaoslib as c
from tests.harness import Process, free_port
from tests.media_helpers import jpeg_with_exif
from tests.test_media import drop_bucket

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(420)]

REPORTS = int(os.environ.get("CHAOS_MEDIA_REPORTS", "40"))
DOWN_S = 30.0


def _count(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        return conn.execute(sql).fetchone()[0]  # type: ignore[index]


def test_object_store_down_30s_no_photo_lost(private_stack):
    tag = uuid.uuid4().hex[:6]
    space = c.Space("6-media-store-down", private_stack.env())
    space.env.update(
        CRM_MEDIA_BUCKET=f"media-{space.tag}",
        CRM_MEDIA_RETRY_FIRST_S="0.5",
        CRM_MEDIA_FETCH_ALLOW_PRIVATE="true",  # the photo host listens on 127.0.0.1
        CRM_DEDUP_TEXT_WINDOW_S="0",
        CRM_RATE_LIMIT_ENABLED="false",
    )
    photos = {f"{tag}-{i}.jpg": jpeg_with_exif(seed=1000 + i) for i in range(REPORTS * 2)}
    space.prepare()

    async def go() -> None:
        async def serve(request: web.Request) -> web.Response:
            return web.Response(body=photos[request.match_info["name"]], content_type="image/jpeg")

        app = web.Application()
        app.router.add_get("/files/{name}", serve)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        url = await asyncio.to_thread(space.start_ingress)
        space.start_worker("w1")
        media = Process(f"chaos-{space.name}-media", ["media", "run"], space.env)
        space.procs.append(media)
        dsn = space.env["CRM_DATABASE_URL"]
        jaki = {"Authorization": "Bearer dev-only-jaki-token", "Content-Type": "application/json"}
        try:
            # Warm-up: the worker has joined its group and stores reports before the fault begins.
            warm = {
                "report_id": f"JAKI-{tag}-warm",
                "text": f"Lampu jalan mati, laporan {tag}",
                "account_id": tag,
            }
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    url + "/v1/channels/jaki/reports", data=orjson.dumps(warm), headers=jaki
                ) as r:
                    assert r.status == 202, await r.text()
            for _ in range(240):
                if _count(dsn, "SELECT count(*) FROM reports") >= 1:
                    break
                await asyncio.sleep(0.5)
            c.log("stopping the object store")
            await asyncio.to_thread(private_stack.sh, "stop", "s3")
            down_at = time.monotonic()
            async with aiohttp.ClientSession() as http:
                for i in range(REPORTS):
                    body = {
                        "report_id": f"JAKI-{tag}-{i}",
                        "text": f"Jalan berlubang di Jl. Pemuda nomor {i}, laporan {tag}",
                        "photo_urls": [
                            f"http://127.0.0.1:{port}/files/{tag}-{2 * i + k}.jpg" for k in (0, 1)
                        ],
                        "account_id": f"u-{tag}-{i}",
                    }
                    async with http.post(
                        url + "/v1/channels/jaki/reports",
                        data=orjson.dumps(body),
                        headers=jaki,
                    ) as resp:
                        assert resp.status == 202, await resp.text()
            # The report path does not wait for media: every report is stored while the store is down.
            while _count(dsn, "SELECT count(*) FROM reports") < REPORTS + 1:
                # The store stays down until they are in (at least DOWN_S): they cannot have waited for it.
                assert time.monotonic() - down_at < 120, "reports were held up by the media store outage"
                await asyncio.sleep(0.5)
            stored_during = _count(dsn, "SELECT count(*) FROM reports") - 1
            waited = _count(dsn, "SELECT count(*) FROM report_media WHERE code = 'store_unavailable'")
            c.log(f"{stored_during} reports stored during the outage; {waited} photos waiting for the store")
            await asyncio.sleep(max(0.0, DOWN_S - (time.monotonic() - down_at)))
            await asyncio.to_thread(private_stack.sh, "start", "s3")
            back_at = time.monotonic()
            c.log("object store back")
            while _count(dsn, "SELECT count(*) FROM report_media WHERE state = 'stored'") < 2 * REPORTS:
                assert time.monotonic() - back_at < 180, (
                    "photos not stored within 180 s of the store's return"
                )
                await asyncio.sleep(0.5)
            c.log(f"every photo stored {time.monotonic() - back_at:.1f} s after the store came back")
        finally:
            await runner.cleanup()

        assert _count(dsn, "SELECT count(*) FROM report_media WHERE state <> 'stored'") == 0
        assert (
            _count(dsn, "SELECT count(*) FROM report_media WHERE attempts > 1") == 0
        )  # outage ≠ failed fetch
        env = space.env
        s3 = boto3.client(
            "s3",
            endpoint_url=env["CRM_MEDIA_S3_ENDPOINT"],
            aws_access_key_id=env["CRM_MEDIA_S3_ACCESS_KEY"],
            aws_secret_access_key=env["CRM_MEDIA_S3_SECRET_KEY"],
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )
        keys = {
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=env["CRM_MEDIA_BUCKET"], Prefix="original/"
            )
            for o in page.get("Contents", [])
        }
        expected = {
            f"original/{h[:2]}/{h}.jpg" for h in (hashlib.sha256(p).hexdigest() for p in photos.values())
        }
        assert keys == expected, f"missing {len(expected - keys)}, unexpected {len(keys - expected)}"
        for i in range(REPORTS):
            rid = report_id_for("jaki", f"JAKI-{tag}-{i}")
            assert _count(dsn, f"SELECT count(*) FROM report_media WHERE report_id = '{rid}'") == 2  # noqa: S608

    try:
        asyncio.run(go())
    finally:
        space.close()
        private_stack.sh("start", "s3")
        drop_bucket(space.env)
