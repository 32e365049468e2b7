"""Control API under /_emulator (local only, no auth): place calls, inspect them, hang up as the caller."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .errors import EMULATOR
from .scenario import ScenarioError


def _err(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message}}, status=status)


async def place(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    try:
        body: Any = await request.json() if (await request.read()).strip() else {}
    except (ValueError, json.JSONDecodeError):
        return _err(400, "body must be JSON")
    if not isinstance(body, dict):
        return _err(400, "body must be a JSON object")
    try:
        call_id = await emu.place_call(body.get("scenario"), caller=body.get("caller"), dialed=body.get("dialed"),
                                       headers=body.get("headers"))
    except ScenarioError as exc:
        return _err(400, str(exc))
    return web.json_response({"call_id": call_id}, status=201)


async def list_calls(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    return web.json_response({"data": [
        {"call_id": c.call_id, "state": c.state, "ended_reason": c.ended_reason, "scenario": c.scenario.name,
         "source": c.source, "created_at": c.created_at} for c in emu.calls.values()]})


async def get_call(request: web.Request) -> web.Response:
    call = request.app[EMULATOR].calls.get(request.match_info["call_id"])
    if call is None:
        return _err(404, "unknown call_id")
    return web.json_response(call.to_json())


async def hangup(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    call = emu.calls.get(request.match_info["call_id"])
    if call is None:
        return _err(404, "unknown call_id")
    if call.is_final:
        return _err(409, f"call is already {call.state}")
    await emu.caller_hangup(call.call_id, "caller_hangup")
    return web.json_response({"call_id": call.call_id, "state": call.state})


async def health(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    return web.json_response(
        {
            "status": "ok",
            "mode": emu.config.mode,
            "http_url": emu.http_url,
            "sip_port": emu.sip_port,
            "calls": len(emu.calls),
        }
    )


async def config(request: web.Request) -> web.Response:
    """Change webhook_url / webhook_secret at runtime (the app under test often starts after the emulator)."""
    emu = request.app[EMULATOR]
    body = await request.json()
    for key in ("webhook_url", "webhook_secret"):
        if key in body:
            setattr(emu.config, key, body[key])
    return web.json_response(
        {"webhook_url": emu.config.webhook_url, "webhook_secret_set": bool(emu.config.webhook_secret)}
    )


async def chat_requests(request: web.Request) -> web.Response:
    """The chat completions requests received so far (post-call analysis), oldest first."""
    return web.json_response({"requests": request.app[EMULATOR].chat.requests})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/_emulator/calls", place)
    app.router.add_get("/_emulator/calls", list_calls)
    app.router.add_get("/_emulator/calls/{call_id}", get_call)
    app.router.add_post("/_emulator/calls/{call_id}/hangup", hangup)
    app.router.add_get("/_emulator/health", health)
    app.router.add_post("/_emulator/config", config)
    app.router.add_get("/_emulator/chat", chat_requests)
