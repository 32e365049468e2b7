"""Operator endpoint for drain mode (function-key auth): turn the webhook's drain flag on or off without a restart.

| route | answers |
|---|---|
| `GET /api/drain` | 200 `<drain view>`: the flag as stored now (not the webhook's cached copy) |
| `POST /api/drain` `{"expires_in_minutes": n, "reason": "..."}` (body optional) | 200 `<drain view>`: drained |
| `DELETE /api/drain` | 200 `<drain view>`; 409 while the `DRAIN_MODE=on` setting drains regardless |

A drain view is `{"drained", "source", "since", "expires_at", "reason", "cache_seconds", "effective_by"}`:
every instance's webhook follows a change within `cache_seconds`, so a change is in force everywhere at
`effective_by` (scripts/drain.py waits for it before it trusts an empty call list). Bad bodies answer 400 and change
nothing; an unreachable flag table answers 503. What drain mode does: shared/drain.py.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func

from call_workflow import runtime
from shared.drain import MAX_REASON_CHARS, DrainState

bp = func.Blueprint()
log = logging.getLogger("switchboard.drain_api")

MAX_EXPIRY_MINUTES = 24 * 60


class BadDrainRequest(ValueError):
    pass


def _json(body: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


def _view(state: DrainState, cache_seconds: float) -> dict[str, Any]:
    effective = datetime.now(UTC) + timedelta(seconds=cache_seconds)
    return {**state.to_json(), "cache_seconds": cache_seconds,
            "effective_by": effective.strftime("%Y-%m-%dT%H:%M:%SZ")}


def parse_drain_request(body: bytes) -> tuple[timedelta | None, str | None]:
    """(expiry, reason) from a POST body; an empty body means no expiry and no reason. Raises BadDrainRequest."""
    if not body.strip():
        return None, None
    try:
        data = json.loads(body)
    except ValueError:
        raise BadDrainRequest('body must be JSON: {"expires_in_minutes": <1-1440>, "reason": "<text>"}') from None
    if not isinstance(data, dict):
        raise BadDrainRequest("body must be a JSON object")
    unknown = sorted(set(data) - {"expires_in_minutes", "reason"})
    if unknown:
        raise BadDrainRequest(f"unknown field(s): {', '.join(repr(u[:32]) for u in unknown[:5])}")
    minutes = data.get("expires_in_minutes")
    if minutes is not None and (not isinstance(minutes, int) or isinstance(minutes, bool)
                                or not 1 <= minutes <= MAX_EXPIRY_MINUTES):
        raise BadDrainRequest(f"'expires_in_minutes' must be an integer from 1 to {MAX_EXPIRY_MINUTES}")
    reason = data.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS):
        raise BadDrainRequest(f"'reason' must be a string of at most {MAX_REASON_CHARS} characters")
    return (timedelta(minutes=minutes) if minutes else None), reason


@bp.route(route="api/drain", methods=["GET", "POST", "DELETE"], auth_level=func.AuthLevel.FUNCTION)
async def operator_drain(req: func.HttpRequest) -> func.HttpResponse:
    rt = await runtime.get()
    switch = rt.drain
    assert switch.store is not None  # the runtime always gives the switch its flag table
    try:
        if req.method == "GET":
            state = await switch.state() if switch.settings.always else await switch.store.read()
            return _json(_view(state, switch.ttl))
        if req.method == "POST":
            expires_in, reason = parse_drain_request(req.get_body())
            state = await switch.store.write(True, reason=reason, expires_in=expires_in)
            log.warning("drain flag ON (expires %s)", state.expires_at or "never")
        else:
            if switch.settings.always:
                return _json({"error": "the DRAIN_MODE=on app setting drains regardless of the flag; set it to off"},
                             409)
            state = await switch.store.write(False)
            log.warning("drain flag OFF")
    except BadDrainRequest as exc:
        return _json({"error": str(exc)}, 400)
    except Exception as exc:  # noqa: BLE001 - storage unreachable, missing role, ...
        log.error("drain flag table unreachable: %s", type(exc).__name__)
        return _json({"error": f"the drain flag table is unreachable ({type(exc).__name__})"}, 503)
    switch.remember(state)
    return _json(_view(await switch.state(), switch.ttl))
