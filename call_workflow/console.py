"""The operator console: a page the app serves itself, and the JSON endpoints it reads (docs/console.md).

| route | answers |
|---|---|
| `GET /console` | the page (no data in it; anonymous, like its two assets) |
| `GET /console/assets/{name}` | `console.js`, `console.css` |
| `GET /console/config` | `{"auth"}`, and for Entra the tenant, client id and scope the page signs in with |
| `GET /console/me` | `{"auth", "user", "can_act"}` |
| `GET /console/live` | `{"calls": [...], "profiles": {name: [target...]}}`: live calls with their last turns |
| `GET /console/calls/{call_id}/transcript` | `{"call_id", "turns": [...]}` from the turns table |
| `POST /console/calls/{call_id}/hangup`, `.../transfer` | the operator API's actions, for operators only (403) |
| `GET /console/history?from&to&outcome&profile&dialed&limit&cursor` | `{"calls": [...], "next": cursor}` |
| `GET /console/history/{day}/{call_id}` | the call's record (timeline, transcript, analysis) |
| `GET /console/stats?from&to&outcome&profile&dialed` | the charts' figures |

Auth (``CONSOLE_AUTH``): ``key`` (default, and locally): the data endpoints take the function key like the operator
API; the Functions host answers 401 without one, before any code runs, and a key holder may act. ``entra`` (in
Azure): the endpoints are anonymous to the host and the app validates a Microsoft Entra ID access token
(shared/console_auth.py; why not Easy Auth: docs/console.md): no valid token is 401 and nothing else; only a user
with the app role ``CONSOLE_OPERATOR_ROLE`` may hang up or transfer (403 otherwise). ``GET /console/config``
(anonymous, no data) tells the page which sign-in to offer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from call_workflow import call_status, operator
from call_workflow.call_status import input_of
from call_workflow.orchestrator import turn_view
from shared.console_auth import ConsoleAuthError, EntraTokenValidator
from shared.settings import SettingsError
from shared.webhook import CALL_ID

bp = df.Blueprint()
log = logging.getLogger("switchboard.console")

STATIC = Path(__file__).resolve().parent / "console_static"
_ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}
LAST_TURNS = 3
MAX_LIMIT = 100
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _auth_mode() -> str:
    mode = (os.environ.get("CONSOLE_AUTH") or "key").strip().lower()
    if mode not in ("key", "entra"):
        raise SettingsError(f"CONSOLE_AUTH is {mode!r}; expected 'key' or 'entra'")
    return mode


AUTH_MODE = _auth_mode()  # fixed at start-up: it decides the routes' auth level
OPERATOR_ROLE = os.environ.get("CONSOLE_OPERATOR_ROLE") or "Switchboard.Operator"
_LEVEL = func.AuthLevel.ANONYMOUS if AUTH_MODE == "entra" else func.AuthLevel.FUNCTION
_validator: EntraTokenValidator | None = None


def validator() -> EntraTokenValidator:
    """The Entra token validator (entra mode), made once: it caches the tenant's signing keys."""
    global _validator
    if _validator is None:
        try:
            _validator = EntraTokenValidator(os.environ.get("CONSOLE_ENTRA_TENANT_ID") or "",
                                             os.environ.get("CONSOLE_ENTRA_CLIENT_ID") or "", OPERATOR_ROLE)
        except ValueError as exc:
            raise SettingsError(f"CONSOLE_ENTRA_TENANT_ID / CONSOLE_ENTRA_CLIENT_ID: {exc}") from None
    return _validator


if AUTH_MODE == "entra":
    validator()  # a missing or malformed id stops the app at start-up, naming the setting
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_PAGE_HEADERS = {
    **_SECURITY_HEADERS,
    # Everything the page runs comes from this app; no inline script, no third party.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self' https://login.microsoftonline.com; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
    "X-Frame-Options": "DENY",
}


class ConsoleError(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _json(body: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json",
                             headers=_SECURITY_HEADERS)


def _error(status: int, reason: str) -> func.HttpResponse:
    return _json({"error": reason}, status)


# ------------------------------------------------------------------------------------------------ auth


async def principal(req: func.HttpRequest) -> dict[str, Any]:
    """Who is asking, or ConsoleError(401). ``{"user", "can_act"}``."""
    if AUTH_MODE == "key":
        return {"user": "function key", "can_act": True}  # the host checked the key before this code ran
    try:
        who = await validator().validate_async(req.headers.get("authorization"))
    except ConsoleAuthError as exc:
        raise ConsoleError(401, str(exc)) from None
    return {"user": who.user, "can_act": who.can_act}


async def _guard(req: func.HttpRequest, act: bool = False) -> dict[str, Any]:
    who = await principal(req)
    if act and not who["can_act"]:
        raise ConsoleError(403, f"only members of the app role {OPERATOR_ROLE!r} may hang up or transfer calls")
    return who


# ------------------------------------------------------------------------------------------------ page


@bp.route(route="console", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def console_page(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse((STATIC / "index.html").read_bytes(), mimetype="text/html", charset="utf-8",
                             headers=_PAGE_HEADERS)


@bp.route(route="console/assets/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def console_asset(req: func.HttpRequest) -> func.HttpResponse:
    name = req.route_params.get("name") or ""
    if name not in _ASSETS:  # a fixed list: no path from the request reaches the file system
        return _error(404, "no such asset")
    return func.HttpResponse((STATIC / name).read_bytes(), mimetype=_ASSETS[name], charset="utf-8",
                             headers=_PAGE_HEADERS)


@bp.route(route="console/config", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def console_config(req: func.HttpRequest) -> func.HttpResponse:
    """How the page signs in (no data: the tenant and client id are public in every sign-in URL anyway)."""
    if AUTH_MODE == "key":
        return _json({"auth": "key"})
    v = validator()
    return _json({"auth": "entra", "tenant_id": v.tenant_id, "client_id": v.client_id,
                  "authority": "https://login.microsoftonline.com",
                  "scope": os.environ.get("CONSOLE_ENTRA_SCOPE") or f"{v.client_id}/.default"})


@bp.route(route="console/me", methods=["GET"], auth_level=_LEVEL)
async def console_me(req: func.HttpRequest) -> func.HttpResponse:
    try:
        who = await _guard(req)
    except ConsoleError as exc:
        return _error(exc.status, exc.reason)
    return _json({"auth": AUTH_MODE, **who, "operator_role": OPERATOR_ROLE})


# ------------------------------------------------------------------------------------------------ live


async def _runtime() -> Any:
    from call_workflow import runtime

    return await runtime.get()


async def _last_turns(rt: Any, call_id: str) -> list[dict]:
    try:
        turns = await rt.turns.load(call_id)
    except Exception as exc:  # noqa: BLE001 - the listing must not fail because storage is slow
        log.warning("call %s: cannot read its turns: %s", call_id, type(exc).__name__)
        return []
    return [turn_view(t) for t in turns[-LAST_TURNS:]]


def _targets(rt: Any) -> dict[str, list[str]]:
    """Each profile's transfer target names (never the URIs: they may be phone numbers)."""
    return {name: sorted(getattr(p, "transfer_targets", None) or {}) for name, p in rt.rules.profiles.items()}


@bp.route(route="console/live", methods=["GET"], auth_level=_LEVEL)
@bp.durable_client_input(client_name="client")
async def console_live(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    try:
        await _guard(req)
    except ConsoleError as exc:
        return _error(exc.status, exc.reason)
    rt = await _runtime()
    live = await call_status.live_calls(client)
    views = [operator.call_view(s) for s in live]
    turns = await asyncio.gather(*(_last_turns(rt, v["call_id"]) for v in views))
    for view, last in zip(views, turns, strict=True):
        view["last_turns"] = last
        view.pop("last_turn", None)
    views.sort(key=lambda c: c.get("started_at") or c.get("created_at") or "")
    return _json({"calls": views, "profiles": _targets(rt), "now": datetime.now(UTC).isoformat()})


def _call_id(req: func.HttpRequest) -> str:
    call_id = req.route_params.get("call_id") or ""
    if not CALL_ID.fullmatch(call_id):
        raise ConsoleError(400, "not a call id")
    return call_id


@bp.route(route="console/calls/{call_id}/transcript", methods=["GET"], auth_level=_LEVEL)
async def console_transcript(req: func.HttpRequest) -> func.HttpResponse:
    try:
        await _guard(req)
        call_id = _call_id(req)
    except ConsoleError as exc:
        return _error(exc.status, exc.reason)
    rt = await _runtime()
    turns = await rt.turns.load(call_id)
    return _json({"call_id": call_id,
                  "turns": [{"role": t.get("role"), "text": t.get("text"), "at": t.get("at")} for t in turns]})


@bp.route(route="console/calls/{call_id}/hangup", methods=["POST"], auth_level=_LEVEL)
@bp.durable_client_input(client_name="client")
async def console_hangup(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    try:
        await _guard(req, act=True)
        call_id = _call_id(req)
        operator._require_live(await operator._call_status(client, call_id))
        await operator._raise(client, call_id, "hangup", {"by": "operator"})
    except (ConsoleError, operator.OperatorError) as exc:
        return _error(exc.status, exc.reason)
    log.info("call %s: hangup requested from the console", call_id)
    return _json({"call_id": call_id, "requested": "hangup"}, 202)


@bp.route(route="console/calls/{call_id}/transfer", methods=["POST"], auth_level=_LEVEL)
@bp.durable_client_input(client_name="client")
async def console_transfer(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    try:
        await _guard(req, act=True)
        call_id = _call_id(req)
        status = await operator._call_status(client, call_id, show_input=True)
        target = operator.parse_transfer_target(req.get_body(), input_of(status).get("profile"))
        operator._require_live(status)
        await operator._raise(client, call_id, "transfer", {"target": target})
    except (ConsoleError, operator.OperatorError) as exc:
        return _error(exc.status, exc.reason)
    log.info("call %s: transfer requested from the console", call_id)
    return _json({"call_id": call_id, "requested": "transfer", "target": target}, 202)


# ------------------------------------------------------------------------------------------------ history


def _day(value: str | None, name: str, default: date) -> date:
    if value is None or value == "":
        return default
    try:
        if not _DATE.fullmatch(value):  # date.fromisoformat also takes 20261129 and the week date 2026-W48-1
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise ConsoleError(400, f"'{name}' must be a date YYYY-MM-DD") from None


def history_query(params: Any, today: date | None = None) -> Any:
    """The HistoryQuery of the request's parameters (defaults: the last 7 days, UTC); ConsoleError(400)."""
    from shared.history import HistoryQuery, HistoryQueryError

    today = today or datetime.now(UTC).date()
    end = _day(params.get("to"), "to", today)
    start = _day(params.get("from"), "from", end - timedelta(days=6))
    try:
        return HistoryQuery(start, end, outcome=params.get("outcome") or None, profile=params.get("profile") or None,
                            dialed=params.get("dialed") or None)
    except HistoryQueryError as exc:
        raise ConsoleError(400, str(exc)) from None


def _limit(value: str | None) -> int:
    if value is None or value == "":
        return 25
    # ASCII digits only: str.isdigit() also holds for '²', which int() refuses (a 500, not a 400).
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_LIMIT:
        raise ConsoleError(400, f"'limit' must be an integer from 1 to {MAX_LIMIT}")
    return int(value)


@bp.route(route="console/history", methods=["GET"], auth_level=_LEVEL)
async def console_history(req: func.HttpRequest) -> func.HttpResponse:
    from shared.history import HistoryQueryError

    try:
        await _guard(req)
        query = history_query(req.params)
        limit = _limit(req.params.get("limit"))
        rt = await _runtime()
        rows, cursor = await rt.history.search(query, limit=limit, cursor=req.params.get("cursor") or None)
    except ConsoleError as exc:
        return _error(exc.status, exc.reason)
    except HistoryQueryError as exc:
        return _error(400, str(exc))
    return _json({"from": query.start.isoformat(), "to": query.end.isoformat(), "calls": rows, "next": cursor})


@bp.route(route="console/history/{day}/{call_id}", methods=["GET"], auth_level=_LEVEL)
async def console_record(req: func.HttpRequest) -> func.HttpResponse:
    try:
        await _guard(req)
        day = _day(req.route_params.get("day") or "-", "day", date.min)
        call_id = _call_id(req)
    except ConsoleError as exc:
        return _error(exc.status, exc.reason)
    record = await (await _runtime()).history.get(day, call_id)
    if record is None:
        return _error(404, f"no record of call {call_id!r} on {day.isoformat()}")
    return _json(record)


@bp.route(route="console/stats", methods=["GET"], auth_level=_LEVEL)
async def console_stats(req: func.HttpRequest) -> func.HttpResponse:
    try:
        await _guard(req)
        query = history_query(req.params)
    except ConsoleError as exc:
        return _error(exc.status, exc.reason)
    stats = await (await _runtime()).history.stats(query)
    return _json({"from": query.start.isoformat(), "to": query.end.isoformat(), **stats})
