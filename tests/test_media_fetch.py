"""The fetchers never reach the city's internal network from a citizen's URL (SSRF guard), real HTTP."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from pipeline.envelope import Attachment
from pipeline.media.fetch import (
    FetchFailed,
    HttpFetcher,
    MediaItem,
    PrivateAddress,
    check_public_url,
    connector,
)
from pipeline.settings import Settings
from tests.harness import free_port
from tests.media_helpers import jpeg_with_exif

GUARDED = Settings()
OPEN = Settings(media_fetch_allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/foto.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5:8080/x",
        "http://192.168.1.1/",
        "http://[::1]/x",
        "http://[fd00::1]/x",
    ],
)
def test_internal_ip_literals_are_refused(url: str) -> None:
    with pytest.raises(PrivateAddress) as err:
        check_public_url(url, GUARDED)
    assert err.value.permanent and "internal address" in err.value.reason
    check_public_url(url, OPEN)  # the local test stack's switch


def test_public_addresses_and_names_pass_the_literal_check() -> None:
    check_public_url("https://93.184.216.34/a.jpg", GUARDED)
    check_public_url("https://scontent.xx.fbcdn.net/v/t1/a.jpg", GUARDED)  # names: the resolver decides


async def test_a_name_resolving_to_loopback_is_never_contacted() -> None:
    hits: list[str] = []

    async def photo(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=jpeg_with_exif(), content_type="image/jpeg")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.1:{port}/{request.match_info['name']}")

    app = web.Application()
    app.router.add_get("/{name}", photo)
    app.router.add_get("/go/{name}", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    item = lambda url: MediaItem("r", "web", "p", 0, Attachment(url=url), None, 0)  # noqa: E731
    try:
        for settings in (GUARDED, OPEN):
            async with aiohttp.ClientSession(connector=connector(settings)) as http:
                fetcher = HttpFetcher(settings, http)
                if settings is GUARDED:
                    with pytest.raises(FetchFailed) as err:
                        await fetcher.fetch(item(f"http://localhost:{port}/a.jpg"))
                    assert err.value.permanent and "internal address" in err.value.reason
                    assert hits == []
                else:
                    got = await fetcher.fetch(item(f"http://localhost:{port}/go/b.jpg"))  # one redirect
                    assert got.data[:3] == b"\xff\xd8\xff" and hits == ["/b.jpg"]
    finally:
        await runner.cleanup()


def test_graph_api_answers_give_the_current_media_url() -> None:
    from pipeline.media.fetchers import _media_url

    comment = {"id": "1_2", "attachment": {"type": "photo", "media": {"image": {"src": "https://c/1.jpg"}}}}
    post = {"id": "1_3", "full_picture": "https://c/post.jpg"}
    messenger = {
        "attachments": {
            "data": [
                {"mime_type": "image/jpeg", "image_data": {"url": "https://c/m0.jpg"}},
                {"mime_type": "image/png", "file_url": "https://c/m1.png"},
            ]
        }
    }
    assert _media_url(comment, 0) == "https://c/1.jpg"
    assert _media_url(post, 0) == "https://c/post.jpg"
    assert [_media_url(messenger, i) for i in (0, 1, 2)] == ["https://c/m0.jpg", "https://c/m1.png", None]
    assert _media_url({"error": {"message": "expired"}}, 0) is None
