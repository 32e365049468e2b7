"""Call-control REST: POST /realtime/calls/{call_id}/{accept|reject|refer|hangup} (docs/platform.md §2).

Success is 200 with an empty body; unknown, expired or finished calls get 404 call_id_not_found.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from .calls import ACCEPTED, RINGING, Call
from .errors import EMULATOR, call_not_found, check_auth, error_response, read_json_object
from .util import now

log = logging.getLogger("emulator.rest")


def _ok() -> web.Response:
    # Production answers 200 with content-length 0 (docs/platform.md §2.1).
    return web.Response(status=200, body=b"")


def _call(request: web.Request, state: str | None) -> Call | web.Response:
    """The authenticated request's call, or the response to give: 401, or 404 for an unknown call or (when
    `state` is given) a call in any other state."""
    if (denied := check_auth(request)) is not None:
        return denied
    call = request.app[EMULATOR].calls.get(request.match_info["call_id"])
    if call is None or (state is not None and call.state != state):
        return call_not_found()
    return call


async def accept(request: web.Request) -> web.Response:
    call = _call(request, None)
    if isinstance(call, web.Response):
        return call
    call.mark("accept_received")
    # Faults apply before the state check: a slow or failing accept happens whatever became of the call.
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
    body = await read_json_object(request)
    if isinstance(body, web.Response):
        return body
    if "type" not in body:
        return error_response(400, "Missing required parameter: 'type'.", code="missing_required_parameter",
                              param="type")
    if body["type"] != "realtime":
        return error_response(400, f"Invalid value: '{body['type']}'. Supported values are: 'realtime'.",
                              code="invalid_value", param="type")
    if not isinstance(body.get("model"), str) or not body["model"]:
        return error_response(
            400, "Missing required parameter: 'model'.", code="missing_required_parameter", param="model"
        )
    await request.app[EMULATOR].accept_call(call, body)
    return _ok()


async def reject(request: web.Request) -> web.Response:
    call = _call(request, RINGING)
    if isinstance(call, web.Response):
        return call
    body = await read_json_object(request)
    if isinstance(body, web.Response):
        return body
    status = body.get("status_code", 603)
    if isinstance(status, bool) or not isinstance(status, int) or not 300 <= status <= 699:
        return error_response(
            400,
            f"Invalid 'status_code': {status!r}. Expected an integer SIP status between 300 and 699.",
            code="invalid_value",
            param="status_code",
        )
    await request.app[EMULATOR].reject_call(call, status)
    return _ok()


async def refer(request: web.Request) -> web.Response:
    call = _call(request, ACCEPTED)
    if isinstance(call, web.Response):
        return call
    body = await read_json_object(request)
    if isinstance(body, web.Response):
        return body
    target = body.get("target_uri")
    if not isinstance(target, str) or not target:
        return error_response(400, "Missing required parameter: 'target_uri'.", code="missing_required_parameter",
                              param="target_uri")
    if not target.lower().startswith(("tel:", "sip:", "sips:")) or len(target) < 5:
        return error_response(400, f"Invalid 'target_uri': {target!r}. Expected a tel: or sip: URI.",
                              code="invalid_value", param="target_uri")
    await request.app[EMULATOR].refer_call(call, target)
    return _ok()


async def hangup(request: web.Request) -> web.Response:
    call = _call(request, None)
    if isinstance(call, web.Response):
        return call
    # As for accept, the fault applies whatever became of the call: a platform that fails, fails.
    fault = call.scenario.faults.hangup
    if fault is not None:
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if call.hangup_fault_count < fault.times:
            call.hangup_fault_count += 1
            call.hangup_requests.append((now(), fault.status))
            log.info("call %s fault: hangup answered %d", call.call_id, fault.status)
            return error_response(fault.status, "The server had an error while processing your request.",
                                  type_="server_error" if fault.status >= 500 else "invalid_request_error")
    if call.state != ACCEPTED:
        call.hangup_requests.append((now(), 404))
        return call_not_found()
    call.hangup_requests.append((now(), 200))
    emu = request.app[EMULATOR]
    await emu.platform_hangup(call, "hangup", emu.config.hangup_close_code)
    return _ok()


def add_routes(app: web.Application, prefixes: list[str]) -> None:
    for p in prefixes:
        app.router.add_post(f"{p}/realtime/calls/{{call_id}}/accept", accept)
        app.router.add_post(f"{p}/realtime/calls/{{call_id}}/reject", reject)
        app.router.add_post(f"{p}/realtime/calls/{{call_id}}/refer", refer)
        app.router.add_post(f"{p}/realtime/calls/{{call_id}}/hangup", hangup)
