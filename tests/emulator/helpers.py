"""Shared helpers for the emulator tests: a webhook receiver, strict validators, a sideband client."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, get_args

import aiohttp
import websockets
from aiohttp import web
from openai.types.realtime import RealtimeServerEvent
from openai.types.webhooks import RealtimeCallIncomingWebhookEvent
from pydantic import Field, TypeAdapter

from emulator import Emulator

KEY = "test-key"
AUTH = {"api-key": KEY}

# Reference §5.4: make pydantic use the `type` discriminator so beta names and missing fields fail precisely.
STRICT_SERVER = TypeAdapter(Annotated[get_args(RealtimeServerEvent)[0], Field(discriminator="type")])
WEBHOOK = TypeAdapter(RealtimeCallIncomingWebhookEvent)

ACCEPT_BODY: dict[str, Any] = {
    "type": "realtime",
    "model": "gpt-realtime",
    "instructions": "You are a test agent.",
    "audio": {
        "input": {
            "transcription": {"model": "gpt-4o-mini-transcribe"},
            "turn_detection": {"type": "server_vad", "idle_timeout_ms": 8000},
        },
        "output": {"voice": "marin"},
    },
    "tools": [
        {
            "type": "function",
            "name": "lookup_order",
            "description": "Look up an order",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
        },
        {
            "type": "function",
            "name": "end_call",
            "description": "End the call",
            "parameters": {"type": "object", "properties": {}},
        },
    ],
}


class Receiver:
    """A local webhook endpoint that records every delivery; `statuses` scripts its answers."""

    def __init__(self, statuses: list[int] | None = None, delay_s: float = 0.0) -> None:
        self.statuses = list(statuses or [])
        self.delay_s = delay_s
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.got = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(({k.lower(): v for k, v in request.headers.items()}, body))
        self.got.set()
        delay = self.delay_s if len(self.requests) == 1 else 0
        if delay:
            await asyncio.sleep(delay)
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def wait_count(self, n: int, timeout: float = 5.0) -> None:
        async def _w() -> None:
            while len(self.requests) < n:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(_w(), timeout)


async def post(emu: Emulator, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.post(emu.http_url + path, json=body,
                                                   headers=AUTH if headers is None else headers) as r:
        return r.status, await r.read()


async def accept(emu: Emulator, call_id: str, body: dict[str, Any] | None = None) -> None:
    status, raw = await post(emu, f"/openai/v1/realtime/calls/{call_id}/accept", body or ACCEPT_BODY)
    assert (status, raw) == (200, b""), raw


async def connect(emu: Emulator, call_id: str, **kw: Any) -> websockets.ClientConnection:
    return await websockets.connect(f"ws://127.0.0.1:{emu.http_port}/openai/v1/realtime?call_id={call_id}",
                                    additional_headers=kw.pop("headers", AUTH), **kw)


async def recv_until(
    ws: websockets.ClientConnection, etype: str, timeout: float = 5.0, into: list | None = None
) -> dict[str, Any]:
    async def _r() -> dict[str, Any]:
        while True:
            ev = json.loads(await ws.recv())
            if into is not None:
                into.append(ev)
            if ev["type"] == etype:
                return ev
    return await asyncio.wait_for(_r(), timeout)


async def drain(ws: websockets.ClientConnection, into: list, timeout: float = 5.0) -> Exception | None:
    """Collect events until the socket closes; return the closing exception (or None for a clean close)."""
    try:
        async with asyncio.timeout(timeout):
            async for m in ws:
                into.append(json.loads(m))
    except websockets.ConnectionClosed as exc:
        return exc
    return None
