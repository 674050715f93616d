"""A local stand-in for the WhatsApp Cloud API's send endpoint, for this channel's tests.

``POST /<version>/<phone_number_id>/messages`` with ``Authorization: Bearer <token>``: 401 without the
token, 503 while ``down`` is set (a provider that is down), 400 for a body the real API refuses, else
``{"messages": [{"id": "wamid.…"}]}``. What it accepted is in ``sent`` as ``(to, text)``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class CloudApi:
    token: str
    phone_number_id: str = "109876543210"
    down: bool = False
    sent: list[tuple[str, str]] = field(default_factory=list)
    calls: int = 0
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{version}/{number}/messages", self.messages)
        return app

    async def messages(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.down:
            return web.json_response({"error": {"message": "service unavailable", "code": 2}}, status=503)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": {"message": "invalid token", "code": 190}}, status=401)
        if request.match_info["number"] != self.phone_number_id:
            return web.json_response({"error": {"message": "unknown number id", "code": 100}}, status=400)
        body = await request.json()
        text = (body.get("text") or {}).get("body") if body.get("type") == "text" else None
        if body.get("messaging_product") != "whatsapp" or not str(body.get("to", "")).isdigit() or not text:
            return web.json_response({"error": {"message": "invalid message", "code": 100}}, status=400)
        self.sent.append((body["to"], text))
        return web.json_response({"messages": [{"id": f"wamid.crm{next(self._ids)}"}]})
