"""The OpenAI error envelope (docs/platform.md §2.3), authentication and JSON bodies shared by the REST handlers."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

# Typed application key under which the Emulator instance is stored.
EMULATOR: web.AppKey = web.AppKey("emulator")


def error_response(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                   param: str | None = None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}, status=status
    )


def call_not_found() -> web.Response:
    return error_response(404, "No session found for the provided call_id", code="call_id_not_found")


def check_auth(request: web.Request, allow_query: bool = False) -> web.Response | None:
    """None if the request carries the configured api-key or token, else a 401 envelope.

    Accepted: `api-key: <key>`, `Authorization: Bearer <key or token>` and, on WebSockets, `?api-key=<key>`.
    """
    cfg = request.app[EMULATOR].config
    valid = {v for v in (cfg.api_key, cfg.bearer_token) if v}
    if not valid:
        return None
    presented = []
    if request.headers.get("api-key"):
        presented.append(request.headers["api-key"])
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        presented.append(auth[7:].strip())
    if allow_query and request.query.get("api-key"):
        presented.append(request.query["api-key"])
    if any(p in valid for p in presented):
        return None
    if not presented:
        return error_response(401, "You didn't provide an API key. "
                                   "Provide it in the api-key header or as a Bearer token.",
                              code="missing_api_key")
    return error_response(401, "Incorrect API key provided.", code="invalid_api_key")


async def read_json_object(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's JSON object body ({} when empty), or the 400 envelope to answer with."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        return error_response(400, "We could not parse the JSON body of your request.", code="invalid_json")
    if not isinstance(body, dict):
        return error_response(400, "The request body must be a JSON object.", code="invalid_type")
    return body
