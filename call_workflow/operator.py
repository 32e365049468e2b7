"""Operator endpoints (function-key auth): list live calls, inspect one, hang it up, transfer it.

| route | answers |
|---|---|
| `GET /api/calls` | 200 `{"calls": [<call view>...]}`: the live `call` orchestrations (Running/Pending) |
| `GET /api/calls/{call_id}` | 200 `<call view>`; 404 unknown call |
| `POST /api/calls/{call_id}/hangup` | 202; 404 unknown; 409 the call is over |
| `POST /api/calls/{call_id}/transfer` `{"target": name}` | 202; 400 bad body or unknown target; 404; 409 |

A call view is the orchestration's custom status (state, masked caller, profile, started_at, last_turn) plus
`call_id` and `runtime_status`. Turns never pass through the orchestrator (it would replay its history per
turn), so for a live call `last_turn` is read from the turns table that the `converse` activity writes. Phone
numbers are never returned in full: the custom status and the orchestration input already hold masked numbers only.
A transfer target must be one of the profile's `transfer_targets`. The orchestrator does the work on the events
`hangup` `{"by": "operator"}` and `transfer` `{"target": name}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from call_workflow import call_status
from call_workflow.call_status import custom_status, input_of, is_live, runtime_status
from call_workflow.orchestrator import ORCHESTRATOR, STATE_ENDED, turn_view
from shared.webhook import CALL_ID

bp = df.Blueprint()

log = logging.getLogger("switchboard.operator")
_VIEW_FIELDS = ("state", "caller", "dialed", "profile", "started_at", "last_turn", "outcome", "transfer_target")


class OperatorError(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _json(body: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


def _error(status: int, reason: str) -> func.HttpResponse:
    return _json({"error": reason}, status)


def route_call_id(req: func.HttpRequest) -> str:
    """The `{call_id}` route parameter, if it is a platform call id; raises OperatorError(400) otherwise.

    Every route taking a `{call_id}` calls this first, so a malformed id is 400 on every route and never reaches the
    Durable client: the SDK pastes instance ids into the Durable HTTP API's URL unescaped, so `?`, `#` or `.` in
    one would address another resource (`rtc_x%3Fy` used to read the call `rtc_x`; `%2e`, `%23`, `%3F` were 500).
    The pattern (`shared.webhook.CALL_ID`) is the one the webhook accepts, and holds only URL-safe characters."""
    call_id = req.route_params.get("call_id") or ""
    if not CALL_ID.fullmatch(call_id):
        raise OperatorError(400, "not a call id: a call id is 1-128 letters, digits, '_', '-' or '.', "
                                 "starting with a letter or digit")
    return call_id


def call_view(status: Any) -> dict:
    """What the operator API shows of one `call` orchestration (never the input, never full numbers)."""
    custom = custom_status(status)
    view: dict[str, Any] = {"call_id": status.instance_id, "runtime_status": runtime_status(status)}
    for key in _VIEW_FIELDS:
        if key in custom:
            view[key] = custom[key]
    view.setdefault("state", "starting" if is_live(status) else STATE_ENDED)
    created = getattr(status, "created_time", None)
    if created is not None:
        view["created_at"] = created.isoformat()
    return view


async def view_with_live_turn(status: Any) -> dict:
    """`call_view`, with a live call's `last_turn` from the turns table; an unreadable table leaves it out."""
    view = call_view(status)
    if view.get("last_turn") is not None or not is_live(status):
        return view
    from call_workflow import runtime

    try:
        turns = await (await runtime.get()).turns.load(view["call_id"])
    except Exception as exc:  # the listing must not fail because storage is slow or down
        log.warning("call %s: cannot read its turns: %s", view["call_id"], type(exc).__name__)
        return view
    if turns:
        view["last_turn"] = turn_view(turns[-1])
    return view


def parse_transfer_target(body: bytes, profile: Any) -> str:
    """The transfer target named in `body`, checked against the call profile; raises OperatorError(400)."""
    try:
        data = json.loads(body or b"")
    except ValueError:
        raise OperatorError(400, 'body must be JSON: {"target": "<name>"}') from None
    if not isinstance(data, dict):
        raise OperatorError(400, 'body must be a JSON object: {"target": "<name>"}')
    target = data.get("target")
    if not isinstance(target, str) or not target.strip():
        raise OperatorError(400, "'target' must be a non-empty string naming one of the profile's transfer targets")
    targets = (profile or {}).get("transfer_targets") or {} if isinstance(profile, dict) else {}
    if target not in targets:
        allowed = ", ".join(sorted(targets)) or "none"
        raise OperatorError(400, f"unknown transfer target {target!r} for this call's profile; allowed: {allowed}")
    return target


async def _call_status(client: df.DurableOrchestrationClient, call_id: str, show_input: bool = False) -> Any:
    status = await client.get_status(call_id, show_input=show_input)
    if not status or status.runtime_status is None or (status.name and status.name != ORCHESTRATOR):
        raise OperatorError(404, f"no call {call_id!r}")
    return status


def _require_live(status: Any) -> None:
    if not is_live(status):
        raise OperatorError(409, f"call {status.instance_id!r} is over ({runtime_status(status)})")


async def _raise(client: df.DurableOrchestrationClient, call_id: str, event: str, data: dict) -> None:
    try:
        await client.raise_event(call_id, event, data)
    except Exception as exc:  # the SDK raises plain Exceptions with the Durable API's reason
        text = str(exc)
        if "is gone" in text:
            raise OperatorError(409, f"call {call_id!r} is over") from None
        if "No instance" in text:
            raise OperatorError(404, f"no call {call_id!r}") from None
        raise


@bp.route(route="api/calls", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def operator_list_calls(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    live = await call_status.live_calls(client)
    calls = list(await asyncio.gather(*(view_with_live_turn(s) for s in live)))
    calls.sort(key=lambda c: c.get("created_at") or "")
    return _json({"calls": calls})


@bp.route(route="api/calls/{call_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def operator_get_call(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    try:
        status = await _call_status(client, route_call_id(req))
    except OperatorError as exc:
        return _error(exc.status, exc.reason)
    return _json(await view_with_live_turn(status))


@bp.route(route="api/calls/{call_id}/hangup", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def operator_hangup(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    try:
        call_id = route_call_id(req)
        _require_live(await _call_status(client, call_id))
        await _raise(client, call_id, "hangup", {"by": "operator"})
    except OperatorError as exc:
        return _error(exc.status, exc.reason)
    return _json({"call_id": call_id, "requested": "hangup"}, 202)


@bp.route(route="api/calls/{call_id}/transfer", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def operator_transfer(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    try:
        call_id = route_call_id(req)
        status = await _call_status(client, call_id, show_input=True)
        target = parse_transfer_target(req.get_body(), input_of(status).get("profile"))
        _require_live(status)
        await _raise(client, call_id, "transfer", {"target": target})
    except OperatorError as exc:
        return _error(exc.status, exc.reason)
    return _json({"call_id": call_id, "requested": "transfer", "target": target}, 202)
