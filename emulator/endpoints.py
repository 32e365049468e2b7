"""Webhook endpoint management (docs/platform.md §3.4).

Azure:  /openai/v1/dashboard/webhook_endpoints   object "webhook.endpoint"   (create, list, get, update, delete)
OpenAI: /v1/webhook_endpoints                     object "webhook_endpoint"   (+ rotate_secret, test)
The signing secret is returned only on create (and on OpenAI rotate). Registered endpoints subscribed to
realtime.call.incoming receive incoming-call webhooks signed with their own secret.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlparse

from aiohttp import web

from .errors import EMULATOR, check_auth, error_response, read_json_object
from .util import hex_id
from .webhooks import new_secret

EVENT_TYPES = [
    "realtime.call.incoming",
    "response.completed", "response.failed", "response.cancelled", "response.incomplete",
    "batch.completed", "batch.failed", "batch.cancelled", "batch.expired",
    "fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled",
    "eval.run.succeeded", "eval.run.failed", "eval.run.canceled",
]


class EndpointStore:
    def __init__(self) -> None:
        self._items: dict[str, dict[str, Any]] = {}

    def subscribed(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self._items.values() if event_type in e["event_types"]]

    def all(self) -> list[dict[str, Any]]:
        return sorted(self._items.values(), key=lambda e: e["created_at"], reverse=True)

    def get(self, ep_id: str) -> dict[str, Any] | None:
        return self._items.get(ep_id)

    def add(self, ep: dict[str, Any]) -> None:
        self._items[ep["id"]] = ep

    def delete(self, ep_id: str) -> bool:
        return self._items.pop(ep_id, None) is not None


def _azure(request: web.Request) -> bool:
    return "/dashboard/" in request.path


def _public(ep: dict[str, Any], azure: bool, with_secret: bool = False) -> dict[str, Any]:
    out = {
        "id": ep["id"], "object": "webhook.endpoint" if azure else "webhook_endpoint",
        "created_at": ep["created_at"], "updated_at": ep["updated_at"], "event_types": list(ep["event_types"]),
        "name": ep["name"], "url": ep["url"],
        "signing_secret_hint": "whsec_..." + ep["signing_secret"][-4:],
    }
    if with_secret:
        out["signing_secret"] = ep["signing_secret"]
    return out


def _validate(body: dict[str, Any], partial: bool) -> web.Response | None:
    if "signing_secret" in body:
        return error_response(400, "The signing secret can't be updated through this operation.", code="invalid_value",
                              param="signing_secret")
    if not partial or "url" in body:
        url = body.get("url")
        if not isinstance(url, str) or not url:
            return error_response(
                400, "Missing required parameter: 'url'.", code="missing_required_parameter", param="url"
            )
        parsed = urlparse(url)
        local = parsed.hostname in ("localhost", "127.0.0.1", "::1")
        if parsed.scheme != "https" and not (parsed.scheme == "http" and local):
            return error_response(
                400, f"Invalid 'url': {url!r}. Webhook URLs must use HTTPS.", code="invalid_url", param="url"
            )
    if not partial or "event_types" in body:
        types = body.get("event_types")
        if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
            return error_response(400, "Missing required parameter: 'event_types'.", code="missing_required_parameter",
                                  param="event_types")
        unknown = [t for t in types if t not in EVENT_TYPES]
        if unknown:
            return error_response(400, f"Invalid event type(s): {', '.join(unknown)}.", code="invalid_value",
                                  param="event_types")
    if "name" in body and not isinstance(body["name"], (str, type(None))):
        return error_response(400, "Invalid type for 'name': expected a string.", code="invalid_type", param="name")
    return None


def _store(request: web.Request) -> EndpointStore:
    return request.app[EMULATOR].endpoints


def _endpoint(request: web.Request) -> dict[str, Any] | web.Response:
    """The endpoint named in the path, or the response to give (401, or 404 for an unknown id)."""
    if (denied := check_auth(request)) is not None:
        return denied
    ep_id = request.match_info["ep_id"]
    ep = _store(request).get(ep_id)
    if ep is None:
        return error_response(404, f"No webhook endpoint found with id '{ep_id}'.", code="not_found")
    return ep


async def create(request: web.Request) -> web.Response:
    if (denied := check_auth(request)) is not None:
        return denied
    body = await read_json_object(request)
    if isinstance(body, web.Response):
        return body
    if (invalid := _validate(body, partial=False)) is not None:
        return invalid
    t = int(time.time())
    ep = {"id": hex_id("we_", 12), "created_at": t, "updated_at": t, "name": body.get("name"), "url": body["url"],
          "event_types": list(body["event_types"]), "signing_secret": new_secret()}
    _store(request).add(ep)
    return web.json_response(_public(ep, _azure(request), with_secret=True))


async def list_(request: web.Request) -> web.Response:
    if (denied := check_auth(request)) is not None:
        return denied
    items = [_public(e, _azure(request)) for e in _store(request).all()]
    if _azure(request):
        return web.json_response({"object": "list", "data": items})
    after = request.query.get("after")
    if after:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    limit = int(request.query.get("limit", "20"))
    page = items[:limit]
    return web.json_response({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                              "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit})


async def retrieve(request: web.Request) -> web.Response:
    ep = _endpoint(request)
    if isinstance(ep, web.Response):
        return ep
    return web.json_response(_public(ep, _azure(request)))


async def update(request: web.Request) -> web.Response:
    ep = _endpoint(request)
    if isinstance(ep, web.Response):
        return ep
    body = await read_json_object(request)
    if isinstance(body, web.Response):
        return body
    if (invalid := _validate(body, partial=True)) is not None:
        return invalid
    for key in ("name", "url", "event_types"):
        if key in body:
            ep[key] = body[key]
    ep["updated_at"] = int(time.time())
    return web.json_response(_public(ep, _azure(request)))


async def delete(request: web.Request) -> web.Response:
    ep = _endpoint(request)
    if isinstance(ep, web.Response):
        return ep
    ep_id = ep["id"]
    _store(request).delete(ep_id)
    obj = "webhook.endpoint.deleted" if _azure(request) else "webhook_endpoint.deleted"
    return web.json_response({"id": ep_id, "object": obj, "deleted": True})


async def rotate_secret(request: web.Request) -> web.Response:
    ep = _endpoint(request)
    if isinstance(ep, web.Response):
        return ep
    ep["signing_secret"] = new_secret()
    ep["updated_at"] = int(time.time())
    return web.json_response(_public(ep, False, with_secret=True))


async def test_delivery(request: web.Request) -> web.Response:
    ep = _endpoint(request)
    if isinstance(ep, web.Response):
        return ep
    body = await read_json_object(request)
    if isinstance(body, web.Response):
        return body
    event_type = body.get("event_type", "realtime.call.incoming")
    status = await request.app[EMULATOR].send_test_webhook(ep, event_type)
    return web.json_response({"object": "webhook_endpoint.test", "event_type": event_type, "status_code": status,
                              "success": status is not None and 200 <= status < 300, "webhook_endpoint_id": ep["id"]})


async def event_types(request: web.Request) -> web.Response:
    if (denied := check_auth(request)) is not None:
        return denied
    return web.json_response(
        {"object": "list", "data": [{"object": "webhook_event_type", "id": t, "name": t} for t in EVENT_TYPES]}
    )


def add_routes(app: web.Application) -> None:
    for base in ("/openai/v1/dashboard/webhook_endpoints", "/v1/webhook_endpoints", "/openai/v1/webhook_endpoints"):
        app.router.add_post(base, create)
        app.router.add_get(base, list_)
        app.router.add_get(base + "/{ep_id}", retrieve)
        app.router.add_post(base + "/{ep_id}", update)
        app.router.add_delete(base + "/{ep_id}", delete)
    for base in ("/v1/webhook_endpoints", "/openai/v1/webhook_endpoints"):
        app.router.add_post(base + "/{ep_id}/rotate_secret", rotate_secret)
        app.router.add_post(base + "/{ep_id}/test", test_delivery)
    app.router.add_get("/v1/webhook_event_types", event_types)
