"""Call-control REST: POST /realtime/calls/{call_id}/{accept|reject|refer|hangup} (reference §2).

Success is 200 with an empty body; unknown, expired or finished calls get 404 call_id_not_found.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Optional

from aiohttp import web

from .calls import ACCEPTED, RINGING
from .errors import EMULATOR, call_not_found, check_auth, error_response

log = logging.getLogger("emulator.rest")


async def _json_body(request: web.Request) -> tuple[Optional[dict[str, Any]], Optional[web.Response]]:
    raw = await request.read()
    if not raw.strip():
        return {}, None
    try:
        body = json.loads(raw)
    except ValueError:
        return None, error_response(400, "We could not parse the JSON body of your request.", code="invalid_json")
    if not isinstance(body, dict):
        return None, error_response(400, "The request body must be a JSON object.", code="invalid_type")
    return body, None


def _ok() -> web.Response:
    # Production answers 200 with content-length 0 (reference §2.1).
    return web.Response(status=200, body=b"")


async def accept(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    if (denied := check_auth(request)) is not None:
        return denied
    call = emu.calls.get(request.match_info["call_id"])
    if call is None:
        return call_not_found()
    call.mark("accept_received")
    fault = call.scenario.faults.accept
    if fault is not None:
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault.status is not None and call.accept_fault_count < fault.times:
            call.accept_fault_count += 1
            log.info("call %s fault: accept answered %d", call.call_id, fault.status)
            return error_response(fault.status, "The server had an error while processing your request.",
                                  type_="server_error" if fault.status >= 500 else "invalid_request_error")
    if call.state != RINGING:
        return call_not_found()
    body, err = await _json_body(request)
    if err is not None:
        return err
    assert body is not None
    if body.get("type") != "realtime":
        return error_response(400, "Missing required parameter: 'type'." if "type" not in body
                              else f"Invalid value: '{body.get('type')}'. Supported values are: 'realtime'.",
                              code="missing_required_parameter" if "type" not in body else "invalid_value", param="type")
    if not isinstance(body.get("model"), str) or not body["model"]:
        return error_response(400, "Missing required parameter: 'model'.", code="missing_required_parameter", param="model")
    await emu.accept_call(call, body)
    return _ok()


async def reject(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    if (denied := check_auth(request)) is not None:
        return denied
    call = emu.calls.get(request.match_info["call_id"])
    if call is None or call.state != RINGING:
        return call_not_found()
    body, err = await _json_body(request)
    if err is not None:
        return err
    assert body is not None
    status = body.get("status_code", 603)
    if isinstance(status, bool) or not isinstance(status, int) or not 300 <= status <= 699:
        return error_response(400, f"Invalid 'status_code': {status!r}. Expected an integer SIP status between 300 and 699.",
                              code="invalid_value", param="status_code")
    await emu.reject_call(call, status)
    return _ok()


async def refer(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    if (denied := check_auth(request)) is not None:
        return denied
    call = emu.calls.get(request.match_info["call_id"])
    if call is None or call.state != ACCEPTED:
        return call_not_found()
    body, err = await _json_body(request)
    if err is not None:
        return err
    assert body is not None
    target = body.get("target_uri")
    if not isinstance(target, str) or not target:
        return error_response(400, "Missing required parameter: 'target_uri'.", code="missing_required_parameter",
                              param="target_uri")
    if not target.lower().startswith(("tel:", "sip:", "sips:")) or len(target) < 5:
        return error_response(400, f"Invalid 'target_uri': {target!r}. Expected a tel: or sip: URI.",
                              code="invalid_value", param="target_uri")
    await emu.refer_call(call, target)
    return _ok()


async def hangup(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    if (denied := check_auth(request)) is not None:
        return denied
    call = emu.calls.get(request.match_info["call_id"])
    if call is None or call.state != ACCEPTED:
        return call_not_found()
    await emu.platform_hangup(call, "hangup", emu.config.hangup_close_code)
    return _ok()


def add_routes(app: web.Application, prefixes: list[str]) -> None:
    for p in prefixes:
        app.router.add_post(f"{p}/realtime/calls/{{call_id}}/accept", accept)
        app.router.add_post(f"{p}/realtime/calls/{{call_id}}/reject", reject)
        app.router.add_post(f"{p}/realtime/calls/{{call_id}}/refer", refer)
        app.router.add_post(f"{p}/realtime/calls/{{call_id}}/hangup", hangup)
