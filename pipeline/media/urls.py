"""Where the public, EXIF-free copy of a photo is served (Open311 ``media_url``). No imports from the
API modules, so Open311 and the media routes can both use it."""

from __future__ import annotations

from aiohttp import web

from ..settings import Settings


def public_path(public_key: str) -> str:
    return "/open311/v2/media/" + public_key.rsplit("/", 1)[-1]


def public_base(settings: Settings, request: web.Request) -> str:
    return (settings.media_public_base_url or f"{request.scheme}://{request.host}").rstrip("/")


def public_url(settings: Settings, request: web.Request, public_key: str) -> str:
    return public_base(settings, request) + public_path(public_key)
