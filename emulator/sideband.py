"""Sideband WebSocket: GET /realtime?call_id=... (docs/platform.md §4)."""

from __future__ import annotations

import logging

from aiohttp import WSMsgType, web

from .calls import ACCEPTED
from .errors import EMULATOR, check_auth, error_response

log = logging.getLogger("emulator.sideband")


async def realtime_ws(request: web.Request) -> web.StreamResponse:
    emu = request.app[EMULATOR]
    if (denied := check_auth(request, allow_query=True)) is not None:
        return denied
    beta = request.headers.get("OpenAI-Beta", "")
    if "realtime=v1" in beta and emu.config.reject_beta_header:
        # The beta header selects the beta event schema; SIP sidebands are GA only (docs/platform.md §4.1).
        return error_response(
            400,
            "The emulator speaks the GA Realtime protocol only; do not send 'OpenAI-Beta: realtime=v1'.",
            code="beta_not_supported",
        )
    call_id = request.query.get("call_id")
    call = emu.calls.get(call_id or "")
    if call is None or call.state != ACCEPTED or call.session is None or call.session.closed:
        # Production answers the upgrade with a plain 404 (docs/platform.md §4.1).
        return web.Response(status=404, body=b"")
    ws = web.WebSocketResponse(autoping=True, max_msg_size=16 * 1024 * 1024)
    await ws.prepare(request)
    session = call.session
    sb = await session.attach(ws, request)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await session.handle(sb, msg.data)
            elif msg.type == WSMsgType.BINARY:
                await session.error(sb, "Binary frames are not supported; send JSON text events.", code="invalid_value")
            elif msg.type == WSMsgType.ERROR:
                log.info("call %s sideband #%d error: %s", call.call_id, sb.n, ws.exception())
                break
    except Exception:
        log.exception("call %s sideband handler failed", call.call_id)
        raise
    finally:
        log.debug(
            "call %s sideband #%d loop ended close_code=%s exc=%r", call.call_id, sb.n, ws.close_code, ws.exception()
        )
        session.detach(sb)
    return ws


def add_routes(app: web.Application, prefixes: list[str]) -> None:
    for p in prefixes:
        app.router.add_get(f"{p}/realtime", realtime_ws)
