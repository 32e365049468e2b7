"""The Durable Functions HTTP API that the SDK's `DurableOrchestrationClient` calls, on the local engine.

Paths are relative to `rpcBaseUrl` (`http://127.0.0.1:<port>/runtime/webhooks/durabletask/`), status codes
as the Durable extension answers them:

- `POST orchestrators/{name}[/{instanceId}]` (body: JSON input): 202 + management payload;
  400 `{"ExceptionMessage"}` unknown orchestrator or bad input; 409 instance already running
- `GET instances/{id}?showInput&showHistory`: 200 completed/failed/terminated, 202 running/pending,
  404 (empty body) unknown
- `GET instances/?runtimeStatus=a,b&createdTimeFrom&createdTimeTo&instanceIdPrefix&top`: 200 list;
  `x-ms-continuation-token` header when `top` cut the list
- `POST instances/{id}/raiseEvent/{event}` (body: JSON data): 202; 404 unknown; 410 no longer running
- `POST instances/{id}/terminate?reason=`: 202; 404 unknown; 410 no longer running
- `DELETE instances/{id}`: purge one finished instance: 200 `{"instancesDeleted": 1}`; 404 unknown or still running
- `DELETE instances/?createdTimeFrom&createdTimeTo&runtimeStatus=a,b`: purge the finished instances that match:
  200 `{"instancesDeleted": n}`, 404 when none did

It is served twice (server.py): keyless on a private loopback-only port, whose address the client binding gives the
SDK as `rpcBaseUrl` (as the Functions host serves it on its local RPC port), and under the app's own port for people
and tools, where it needs a key. The management URLs handed out (`create_check_status_response`) point at the app's
port and carry that key as `code=`, as the host's do (`requiredQueryStringParameters`).

The SDK posts its payloads with `json=<already-serialised JSON string>`, so bodies arrive JSON-encoded twice;
a body that decodes to a string holding JSON is decoded again (a plain JSON body from curl works too).
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web

from localrun.durable import InstanceExistsError, InstanceNotFound, InstanceNotRunningError

log = logging.getLogger("localrun.durable_api")

PREFIX = "/runtime/webhooks/durabletask"
_TERMINAL = {"Completed", "Failed", "Terminated", "Canceled"}
_CONTINUATION = "x-ms-continuation-token"


def decode_body(raw: bytes) -> Any:
    """A Durable API JSON body; raises ValueError when it is not JSON."""
    if not raw.strip():
        return None
    value = json.loads(raw)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    v = value.strip().replace("Z", "+00:00").replace(" ", "+")
    dt = datetime.fromisoformat(v)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _not_found(instance_id: str) -> web.Response:
    return web.json_response({"Message": f"No instance with ID '{instance_id}' found."}, status=404)


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


class DurableApi:
    """aiohttp handlers for the Durable HTTP API, backed by a `localrun.durable.DurableEngine`."""

    def __init__(self, engine: Any, orchestrators: set[str], base_url: Callable[[], str], task_hub: str,
                 rpc_base_url: Callable[[], str] | None = None, key: str | None = None):
        self.engine = engine
        self.orchestrators = orchestrators
        self._base_url = base_url  # the public one, on the app's port
        self._rpc_base_url = rpc_base_url or base_url  # the SDK's, on the private loopback port
        self.task_hub = task_hub
        self.key = key  # the extension's key: `code=` in the public management URLs
        # Test hook (POST /admin/durable/fail-starts): this many next starts answer 500, as when the task hub's
        # storage is unreachable.
        self.failing_starts = 0

    # -- the client binding ----------------------------------------------------------------------------------
    def management_urls(self, instance_id: str, base: str | None = None, query: str = "") -> dict[str, str]:
        # Escaped: an id holding `?`, `#` or `/` would otherwise point the URL at another resource.
        base = (base or self._base_url()) + "instances/" + quote(instance_id, safe="")
        q = query or self.required_query(self.task_hub, "Storage")
        return {
            "id": instance_id,
            "purgeHistoryDeleteUri": f"{base}?{q}",
            "restartPostUri": f"{base}/restart?{q}",
            "resumePostUri": f"{base}/resume?reason={{text}}&{q}",
            "rewindPostUri": f"{base}/rewind?reason={{text}}&{q}",
            "sendEventPostUri": f"{base}/raiseEvent/{{eventName}}?{q}",
            "statusQueryGetUri": f"{base}?{q}",
            "suspendPostUri": f"{base}/suspend?reason={{text}}&{q}",
            "terminatePostUri": f"{base}/terminate?reason={{text}}&{q}",
        }

    def required_query(self, task_hub: str, connection: str) -> str:
        q = f"taskHub={quote(task_hub)}&connection={quote(connection)}"
        return f"{q}&code={quote(self.key, safe='')}" if self.key else q

    def client_binding(self, task_hub: str | None = None, connection: str | None = None) -> str:
        """The JSON string the host hands to a `durable_client_input` parameter."""
        base = self._base_url()
        hub = task_hub or self.task_hub
        q = self.required_query(hub, connection or "Storage")
        return json.dumps({
            "taskHubName": hub,
            "creationUrls": {
                "createNewInstancePostUri": f"{base}orchestrators/{{functionName}}[/{{instanceId}}]?{q}",
                "createAndWaitOnNewInstancePostUri":
                    f"{base}orchestrators/{{functionName}}[/{{instanceId}}]?timeout={{timeoutInSeconds}}"
                    f"&pollingInterval={{intervalInSeconds}}&{q}",
            },
            "managementUrls": self.management_urls("INSTANCEID", base, q),
            "baseUrl": base,
            "requiredQueryStringParameters": q,
            "rpcBaseUrl": self._rpc_base_url(),
            "httpBaseUrl": base,
        })

    # -- routes ----------------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post(PREFIX + "/orchestrators/{name}", self.start_new)
        r.add_post(PREFIX + "/orchestrators/{name}/{instance_id}", self.start_new)
        r.add_get(PREFIX + "/instances", self.list_instances)
        r.add_get(PREFIX + "/instances/", self.list_instances)
        r.add_get(PREFIX + "/instances/{instance_id}", self.get_status)
        r.add_post(PREFIX + "/instances/{instance_id}/raiseEvent/{event}", self.raise_event)
        r.add_post(PREFIX + "/instances/{instance_id}/terminate", self.terminate)
        r.add_delete(PREFIX + "/instances", self.purge_by)
        r.add_delete(PREFIX + "/instances/", self.purge_by)
        r.add_delete(PREFIX + "/instances/{instance_id}", self.purge_one)

    def _request_base(self, request: web.Request) -> str:
        return f"{request.scheme}://{request.host}{PREFIX}/"

    async def start_new(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.orchestrators:
            return web.json_response(
                {
                    "Message": "One or more of the arguments submitted is incorrect",
                    "ExceptionMessage": f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator "
                    f"function. Additional info: Known orchestrators: "
                    f"{', '.join(sorted(self.orchestrators)) or 'none'}.",
                },
                status=400,
            )
        try:
            data = decode_body(await request.read())
        except ValueError as exc:
            return web.json_response({"Message": "Invalid input", "ExceptionMessage": f"The input is not JSON: {exc}"},
                                     status=400)
        instance_id = request.match_info.get("instance_id") or uuid.uuid4().hex
        if self.failing_starts > 0:
            self.failing_starts -= 1
            return web.json_response({"Message": "An error has occurred.",
                                      "ExceptionMessage": "The task hub is unavailable (fail-starts test hook)."},
                                     status=500)
        try:
            # The Durable client sends the caller's trace context as traceparent/tracestate headers.
            instance_id = await self.engine.start_new(name, instance_id, data,
                                                      trace_parent=request.headers.get("traceparent"),
                                                      trace_state=request.headers.get("tracestate"))
        except InstanceExistsError:
            return web.json_response(
                {"Message": "Conflict", "ExceptionMessage":
                    f"An orchestration instance with the ID '{instance_id}' already exists and is running."},
                status=409)
        payload = self.management_urls(instance_id, self._request_base(request))
        return web.json_response(payload, status=202, headers={"Location": payload["statusQueryGetUri"],
                                                               "Retry-After": "10"})

    async def get_status(self, request: web.Request) -> web.Response:
        instance_id = request.match_info["instance_id"]
        q = request.query
        status = self.engine.get_status(instance_id, show_history=_truthy(q.get("showHistory")),
                                        show_input=q.get("showInput", "true").lower() != "false")
        if status is None:
            return web.Response(status=404)
        code = 202 if status.get("runtimeStatus") in ("Running", "Pending", "ContinuedAsNew", "Suspended") else 200
        headers = {"Location": str(request.url), "Retry-After": "10"} if code == 202 else None
        return web.json_response(status, status=code, headers=headers)

    async def list_instances(self, request: web.Request) -> web.Response:
        q = request.query
        statuses = [s for s in (q.get("runtimeStatus") or "").split(",") if s] or None
        try:
            created_from = _parse_time(q.get("createdTimeFrom"))
            created_to = _parse_time(q.get("createdTimeTo"))
            top = int(q["top"]) if q.get("top") else None
            token = request.headers.get(_CONTINUATION) or q.get("continuationToken")
            offset = int(base64.b64decode(token).decode()) if token else 0
        except ValueError as exc:
            return web.json_response({"Message": "Bad request", "ExceptionMessage": str(exc)}, status=400)
        items = self.engine.list_instances(runtime_status=statuses, created_from=created_from, created_to=created_to)
        prefix = q.get("instanceIdPrefix")
        if prefix:
            items = [s for s in items if str(s.get("instanceId", "")).startswith(prefix)]
        show_input = q.get("showInput", "true").lower() != "false"
        if not show_input:
            items = [{k: v for k, v in s.items() if k != "input"} for s in items]
        headers = {}
        if top is not None:
            page = items[offset:offset + top]
            if offset + top < len(items):
                headers[_CONTINUATION] = base64.b64encode(str(offset + top).encode()).decode()
            items = page
        return web.json_response(items, status=200, headers=headers)

    def _gone_or_missing(self, instance_id: str) -> web.Response | None:
        status = self.engine.get_status(instance_id, show_history=False, show_input=False)
        if status is None:
            return _not_found(instance_id)
        if status.get("runtimeStatus") in _TERMINAL:
            return web.json_response({"Message": f"Instance '{instance_id}' is {status.get('runtimeStatus')}."},
                                     status=410)
        return None

    async def _on_running_instance(self, instance_id: str,
                                   operation: Callable[[], Awaitable[None]]) -> web.Response:
        """202 once `operation` has run; 404 / 410 when the engine says the instance is unknown / no longer
        running (it may finish between the handler's `_gone_or_missing` check and the operation)."""
        try:
            await operation()
        except InstanceNotFound:
            return _not_found(instance_id)
        except InstanceNotRunningError:
            return web.json_response({"Message": f"Instance '{instance_id}' is not running."}, status=410)
        return web.Response(status=202, content_type="application/json", text="null")

    async def raise_event(self, request: web.Request) -> web.Response:
        instance_id = request.match_info["instance_id"]
        if (resp := self._gone_or_missing(instance_id)) is not None:
            return resp
        try:
            data = decode_body(await request.read())
        except ValueError:
            return web.json_response({"Message": "Only application/json request content is supported"}, status=400)
        return await self._on_running_instance(
            instance_id, lambda: self.engine.raise_event(instance_id, request.match_info["event"], data))

    async def terminate(self, request: web.Request) -> web.Response:
        instance_id = request.match_info["instance_id"]
        if (resp := self._gone_or_missing(instance_id)) is not None:
            return resp
        return await self._on_running_instance(
            instance_id, lambda: self.engine.terminate(instance_id, request.query.get("reason", "")))

    # -- purge history ------------------------------------------------------------------------------------------
    # As the extension's HTTP API documents it (azure-docs
    # articles/azure-functions/durable/durable-functions-http-api.md, "Purge single instance history" / "Purge
    # multiple instance histories"): 200 with the count, 404 when nothing matched (the SDK turns that into
    # instancesDeleted=0).
    @staticmethod
    def _purged(count: int) -> web.Response:
        if count == 0:
            return web.json_response({"Message": "No instances were purged."}, status=404)
        return web.json_response({"instancesDeleted": count}, status=200)

    async def purge_one(self, request: web.Request) -> web.Response:
        return self._purged(self.engine.purge(instance_id=request.match_info["instance_id"]))

    async def purge_by(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            created_from = _parse_time(q.get("createdTimeFrom"))
            created_to = _parse_time(q.get("createdTimeTo"))
        except ValueError as exc:
            return web.json_response({"Message": "Bad request", "ExceptionMessage": str(exc)}, status=400)
        if created_from is None:  # the extension requires it: a purge without any bound is refused
            return web.json_response({"Message": "Bad request",
                                      "ExceptionMessage": "createdTimeFrom is required"}, status=400)
        statuses = [s for s in (q.get("runtimeStatus") or "").split(",") if s] or None
        active = {"running", "pending"} & {s.lower() for s in statuses or ()}
        if active:
            return web.json_response({"Message": "Bad request", "ExceptionMessage":
                                      f"cannot purge {', '.join(sorted(active))} instances"}, status=400)
        return self._purged(self.engine.purge(runtime_status=statuses, created_from=created_from,
                                              created_to=created_to))
