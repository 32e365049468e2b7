"""The local runner's HTTP host: serves a v2-model Functions app's HTTP triggers like `func start`.

* `/<prefix>/<route>` (prefix from host.json `extensions.http.routePrefix`; Switchboard sets it empty and names
  `api/...` in its routes): every HTTP trigger, with route parameters, method lists (405 otherwise) and auth
  levels (`anonymous`; `function`: the function key or the master key; `admin`: the master key), keys given as
  `x-functions-key` header or `?code=` (401 otherwise).
* `/runtime/webhooks/durabletask/...`: the Durable HTTP API (see durable_api.py), backed by
  `localrun.durable.DurableEngine` on the real clock, its state kept in `HostConfig.task_hub_dir` (or in memory
  without one) so a restarted host resumes live orchestrations. Served twice:
  - keyless on a second, private port that listens on 127.0.0.1 only (`HostConfig.rpc_port`, default any free
    port): the client binding gives the SDK this address as `rpcBaseUrl`, as the Functions host gives its local
    RPC endpoint. Only the Durable API is there. Never expose or tunnel it.
  - on the app's port, for people and tools, with the Durable extension's key (in the management URLs the SDK
    hands out as `code=`) or the master key, from loopback too: behind a local tunnel (ngrok, devtunnels) every
    request arrives from loopback, so "loopback" proves nothing about who is asking.
* Timer triggers run on their NCRONTAB schedules (timers.py); `POST /admin/functions/{name}` (master key, as on
  the real host) runs a non-HTTP function now: 202, 404 unknown, 409 still running from its last tick.
* `/admin/host/ping` (open), `/admin/host/status`, and two test hooks (master key):
  `/admin/durable/instances/{id}/kill-activity?name=` makes a running activity fail as if its worker died;
  `/admin/durable/fail-starts?count=N` makes the next N orchestration starts answer 500.

Request bodies are capped like the Functions host caps them (`FUNCTIONS_REQUEST_BODY_SIZE_LIMIT`, bytes; the host's
documented default when unset, see docs/local.md): a Content-Length above the cap is answered 413 before a byte
of the body is read, and a chunked body is read only up to the cap. Either way the connection is closed rather
than drained, so an oversized upload costs neither memory nor the time to swallow it.

Logs one line per request (method, path without query, status, milliseconds), never bodies or keys.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from localrun.durable.tracing import span_trace_context, start_request_span

from .app_index import (
    HttpFunction,
    apply_local_settings,
    functions_of,
    http_functions,
    load_app,
    read_host_json,
)
from .durable_api import PREFIX as DURABLE_PREFIX
from .durable_api import DurableApi
from .timers import TimerScheduler, timer_functions

log = logging.getLogger("localrun.host")
access_log = logging.getLogger("localrun.http")

FUNCTION_KEY_ENV = "LOCALRUN_FUNCTION_KEY"
MASTER_KEY_ENV = "LOCALRUN_MASTER_KEY"
BODY_LIMIT_ENV = "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"
DEFAULT_BODY_LIMIT = 100 * 1024 * 1024  # the Functions host's documented default (docs/local.md)


@dataclass
class HostConfig:
    app_spec: str = "function_app:app"
    app_dir: str = "."
    host: str = "127.0.0.1"
    port: int = 7071  # 0: pick a free port
    rpc_port: int = 0  # the private Durable API port (127.0.0.1 only); 0: pick a free port
    function_key: str | None = None  # default: $LOCALRUN_FUNCTION_KEY or generated
    master_key: str | None = None  # default: $LOCALRUN_MASTER_KEY or generated
    route_prefix: str | None = None  # default: host.json, else "api"
    task_hub: str | None = None  # default: host.json durableTask.hubName, else "localhub"
    task_hub_dir: str | None = None  # where orchestration state persists; None: in memory only
    load_local_settings: bool = True
    log_durable_rpc: bool = False  # log the SDK's own Durable API calls too (noisy)
    # Model the Azure Storage provider's queue polling back-off (localrun/durable/polling.py) from host.json.
    queue_polling: bool = False
    run_timers: bool = True  # run timer triggers on their schedules (POST /admin/functions/{name} works either way)
    max_request_body_bytes: int | None = None  # default: $FUNCTIONS_REQUEST_BODY_SIZE_LIMIT, else the host's default
    engine_options: dict = field(default_factory=dict)


class _Context:
    """The bits of `func.Context` an HTTP function may read."""

    def __init__(self, function_name: str, function_directory: str, trace_context: Any = None):
        self.invocation_id = str(uuid.uuid4())
        self.function_name = function_name
        self.function_directory = function_directory
        self.trace_context = trace_context  # the host request span's W3C context, as in Azure
        self.retry_context = None
        self.thread_local_storage = None


class HostConfigError(ValueError):
    """A setting the host itself reads is malformed; the message names it."""


def body_limit_from_env(environ: Any = os.environ) -> int:
    """The request body cap from `FUNCTIONS_REQUEST_BODY_SIZE_LIMIT`; raises HostConfigError on a bad value."""
    raw = (environ.get(BODY_LIMIT_ENV) or "").strip()
    if not raw:
        return DEFAULT_BODY_LIMIT
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise HostConfigError(f"{BODY_LIMIT_ENV} must be a positive number of bytes, got {raw!r}")
    return int(raw)


def _too_large(limit: int) -> web.Response:
    resp = web.json_response({"error": "payload_too_large", "limit_bytes": limit}, status=413)
    resp.force_close()  # do not linger reading (and discarding) the rest of an upload we refused
    return resp


def _unauthorized(request: web.Request, needs: str, what: str) -> web.Response:
    """401 with a body that says what is missing. The Functions host answers these with an empty body, which
    leaves a person with curl guessing whether the key, its header or the URL is wrong. The key itself is
    never echoed."""
    given = request.headers.get("x-functions-key") or request.query.get("code")
    problem = ("the key given is not valid for it" if given else
               "no key was given: send it in the x-functions-key header or as ?code=")
    return web.json_response({"error": "unauthorized", "needs": needs,
                              "message": f"{what} needs {needs}; {problem}"}, status=401)


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot parse (bad request line, header, chunk size...) as an ERROR with a
    traceback, although it answered 400 and nothing of ours ran: anyone who can reach the port could fill the log
    with tracebacks. Such a record becomes one WARNING line naming the peer and the parser's reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            reason = str(exc.message or "").split("\n", 1)[0].rstrip(": ") or type(exc).__name__
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "malformed HTTP request from %s: %d %s", (remote, exc.code, reason)
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_malformed_requests() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in server_log.filters):
        server_log.addFilter(MalformedRequestFilter())


def _to_response(result: Any) -> web.Response:
    if isinstance(result, func.HttpResponse):
        headers = {k: v for k, v in result.headers.items()}
        ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
        if ctype is None:
            ctype = result.mimetype or "text/plain"
            if result.charset and "charset" not in ctype:
                ctype += f"; charset={result.charset}"
            headers["Content-Type"] = ctype
        headers = {k: v for k, v in headers.items() if k.lower() not in ("content-length", "transfer-encoding")}
        return web.Response(status=result.status_code, body=result.get_body(), headers=headers)
    if result is None:
        return web.Response(status=204)
    if isinstance(result, (bytes, bytearray)):
        return web.Response(status=200, body=bytes(result), content_type="application/octet-stream")
    if isinstance(result, str):
        return web.Response(status=200, text=result)
    return web.json_response(result)


class LocalHost:
    """Serve a Functions app. `await start()`, `await stop()`; or `async with LocalHost(cfg) as host:`."""

    def __init__(self, config: HostConfig | None = None, app: Any = None):
        self.config = config or HostConfig()
        self._app_obj = app
        self.function_key = self.config.function_key or os.environ.get(FUNCTION_KEY_ENV) or secrets.token_urlsafe(32)
        self.master_key = self.config.master_key or os.environ.get(MASTER_KEY_ENV) or secrets.token_urlsafe(32)
        # The Durable extension's own key (the host calls it a system key): it opens the Durable API only.
        self.durable_key = secrets.token_urlsafe(32)
        self.port: int | None = None
        self.rpc_port: int | None = None
        self.engine: Any = None
        self.durable: DurableApi | None = None
        self.http: list[HttpFunction] = []
        self.orchestrators: list[str] = []
        self.activities: list[str] = []
        self._runner: web.AppRunner | None = None
        self.timers: TimerScheduler | None = None
        self._rpc_runner: web.AppRunner | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        host = self.config.host if self.config.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def rpc_base_url(self) -> str:
        """Where the SDK reaches the Durable API: keyless, loopback only."""
        return f"http://127.0.0.1:{self.rpc_port}{DURABLE_PREFIX}/"

    @property
    def route_prefix(self) -> str:
        return self._prefix

    def url_for(self, route: str) -> str:
        prefix = f"/{self._prefix}" if self._prefix else ""
        return f"{self.base_url}{prefix}/{route.lstrip('/')}"

    async def __aenter__(self) -> LocalHost:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _load(self) -> None:
        app_dir = Path(self.config.app_dir).resolve()
        if self.config.load_local_settings:
            applied = apply_local_settings(app_dir)
            if applied:
                log.info("local.settings.json: set %s", ", ".join(sorted(applied)))
        host_json = read_host_json(app_dir)
        self.host_json = host_json
        ext = host_json.get("extensions") or {}
        prefix = self.config.route_prefix
        if prefix is None:
            prefix = (ext.get("http") or {}).get("routePrefix", "api")
        self._prefix = prefix.strip("/")
        self.max_body = self.config.max_request_body_bytes or body_limit_from_env()
        self.task_hub = self.config.task_hub or (ext.get("durableTask") or {}).get("hubName") or "localhub"
        if self._app_obj is None:
            self._app_obj = load_app(self.config.app_spec, str(app_dir))
        functions = functions_of(self._app_obj)
        self.functions = functions
        self.http = http_functions(functions)
        self.orchestrators = [f.get_function_name() for f in functions
                              if getattr(f.get_trigger(), "type", None) == "orchestrationTrigger"]
        self.activities = [f.get_function_name() for f in functions
                           if getattr(f.get_trigger(), "type", None) == "activityTrigger"]
        self.timer_functions = timer_functions(functions)

    def _make_engine(self) -> Any:
        try:
            from localrun.durable import DurableEngine, FunctionIndex, RealClock
        except ImportError as exc:
            if self.orchestrators:
                raise RuntimeError(f"the app has orchestrators but the Durable engine is not available: {exc}") from exc
            return None
        index = FunctionIndex.from_functions(self.functions)
        options = dict(self.config.engine_options)
        if self.config.queue_polling:
            from localrun.durable.polling import from_host_json

            polling = from_host_json(self.host_json)
            options.setdefault("queue_polling", polling)
            log.info("queue polling model on: Azure Storage back-off up to %.2f s per hop, %d control partitions",
                     polling.max_interval_s, polling.partitions)
        if self.config.task_hub_dir:
            from localrun.durable import TaskHubStore

            options.setdefault("store", TaskHubStore(Path(self.config.task_hub_dir) / self.task_hub))
        return DurableEngine(index, clock=RealClock(), **options)

    async def start(self) -> None:
        _quiet_malformed_requests()
        self._load()
        self.engine = self._make_engine()
        self.durable = DurableApi(self.engine, set(self.orchestrators), lambda: f"{self.base_url}{DURABLE_PREFIX}/",
                                  self.task_hub, rpc_base_url=lambda: self.rpc_base_url, key=self.durable_key)
        # client_max_size makes request.read() stop (413) once a chunked body passes the cap.
        app = web.Application(middlewares=[self._access_log, self._body_limit, self._durable_guard],
                              client_max_size=self.max_body)
        app.router.add_get("/admin/host/ping", self._ping)
        app.router.add_get("/admin/host/status", self._host_status)
        app.router.add_post("/admin/durable/instances/{instance_id}/kill-activity", self._kill_activity)
        app.router.add_post("/admin/durable/fail-starts", self._fail_starts)
        app.router.add_post("/admin/functions/{name}", self._run_function)
        if self.engine is not None:
            self.durable.add_routes(app)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, reuse_address=True)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port
        if self.engine is not None:
            await self._start_rpc()
        if self.engine is not None:
            # After listening, as a restarted host would: resumed activities may call the app's routes.
            resumed = await self.engine.resume()
            if resumed:
                log.info("task hub: resumed %d orchestration(s) left running by the last process", len(resumed))
        self.timers = TimerScheduler(self.timer_functions, self._timer_client_binding)
        if self.config.run_timers:
            self.timers.start()

    async def _start_rpc(self) -> None:
        # Bound to 127.0.0.1 whatever `host` is: this port answers without a key.
        rpc = web.Application(middlewares=[self._access_log], client_max_size=16 * 1024 * 1024)
        assert self.durable is not None
        self.durable.add_routes(rpc)
        self._rpc_runner = web.AppRunner(rpc, access_log=None, handler_cancellation=True)
        await self._rpc_runner.setup()
        site = web.TCPSite(self._rpc_runner, "127.0.0.1", self.config.rpc_port, reuse_address=True)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.rpc_port = sockets[0].getsockname()[1] if sockets else self.config.rpc_port

    async def stop(self) -> None:
        if self.timers is not None:
            await self.timers.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._rpc_runner is not None:
            await self._rpc_runner.cleanup()
            self._rpc_runner = None
        if self.engine is not None:
            close = getattr(self.engine, "aclose", None)
            if close is not None:
                await close()
        # The SDK keeps one module-level aiohttp session for its Durable API calls; it belongs to this loop.
        try:
            from azure.durable_functions.models.utils import http_utils
            if http_utils._client_session is not None:
                await http_utils._client_session.close()
                http_utils._client_session = None
        except Exception:  # pragma: no cover - best effort
            pass

    def banner(self) -> str:
        lines = [f"Local runner: {self.config.app_spec} on {self.base_url}", "", "Functions:"]
        for hf in sorted(self.http, key=lambda h: h.route):
            methods = ",".join(sorted(hf.methods)) if hf.methods else "ALL"
            lines.append(f"    {hf.name}: [{methods}] {self.url_for(hf.route)}  (auth: {hf.auth_level})")
        for name in self.orchestrators:
            lines.append(f"    {name}: orchestrationTrigger")
        for name in self.activities:
            lines.append(f"    {name}: activityTrigger")
        for timer in self.timer_functions:
            lines.append(f"    {timer.name}: timerTrigger ({timer.schedule} UTC)")
        lines += ["", f"Function key (x-functions-key header or ?code=): {self.function_key}",
                  f"Master key: {self.master_key}",
                  (f"Durable HTTP API: {self.base_url}{DURABLE_PREFIX}/ (master key; task hub {self.task_hub}, "
                   f"{self._hub_where()})")]
        if self.rpc_port is not None:
            lines.append(f"Durable RPC for the SDK: {self.rpc_base_url} "
                         "(loopback only, no key: never tunnel this port)")
        return "\n".join(lines)

    def _hub_where(self) -> str:
        store = getattr(self.engine, "store", None)
        return f"state in {store.directory}" if store is not None else "in memory"

    # -- middleware ------------------------------------------------------------------------------------------
    @web.middleware
    async def _access_log(self, request: web.Request, handler: Any) -> web.StreamResponse:
        t0 = time.perf_counter()
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            ms = (time.perf_counter() - t0) * 1000
            internal = request.path.startswith(DURABLE_PREFIX) or request.path == "/admin/host/ping"
            level = logging.INFO if (not internal or self.config.log_durable_rpc) else logging.DEBUG
            access_log.log(level, "%s %s %d %.1fms", request.method, request.path, status, ms)

    @web.middleware
    async def _body_limit(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > self.max_body:
            return _too_large(self.max_body)
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:  # a chunked body went past the cap while being read
            return _too_large(self.max_body)

    @web.middleware
    async def _durable_guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        # No loopback exemption: through a local tunnel every request comes from loopback.
        if request.path.startswith(DURABLE_PREFIX) and not self._key_ok(request, admin=True, durable=True):
            return _unauthorized(request, "the master key (or the Durable extension's key of a management URL)",
                                 "the Durable HTTP API")
        return await handler(request)

    def _key_ok(self, request: web.Request, admin: bool, durable: bool = False) -> bool:
        given = request.headers.get("x-functions-key") or request.query.get("code") or ""
        if not given:
            return False
        keys = [self.master_key] if admin else [self.function_key, self.master_key]
        if durable:
            keys.append(self.durable_key)
        return any(hmac.compare_digest(given.encode(), k.encode()) for k in keys)

    # -- admin -----------------------------------------------------------------------------------------------
    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _host_status(self, request: web.Request) -> web.Response:
        if not self._key_ok(request, admin=True):
            return _unauthorized(request, "the master key", "the host's admin API")
        return web.json_response({"state": "Running", "functions": [h.name for h in self.http] + self.orchestrators
                                  + self.activities})

    async def _kill_activity(self, request: web.Request) -> web.Response:
        if not self._key_ok(request, admin=True):
            return _unauthorized(request, "the master key", "the host's admin API")
        if self.engine is None:
            return web.json_response({"error": "no Durable engine"}, status=404)
        name = request.query.get("name")
        if not name:
            return web.json_response({"error": "query parameter 'name' (the activity) is required"}, status=400)
        instance_id = request.match_info["instance_id"]
        if self.engine.get_status(instance_id, show_history=False, show_input=False) is None:
            return web.json_response({"error": f"no instance {instance_id!r}"}, status=404)
        result = self.engine.kill_activity(instance_id, name)
        if inspect.isawaitable(result):
            result = await result
        killed = (
            result if isinstance(result, int) and not isinstance(result, bool) else int(bool(result) or result is None)
        )
        if not killed:
            return web.json_response({"error": f"no running {name!r} activity in {instance_id!r}", "killed": 0},
                                     status=409)
        return web.json_response({"killed": killed}, status=202)

    async def _fail_starts(self, request: web.Request) -> web.Response:
        if not self._key_ok(request, admin=True):
            return _unauthorized(request, "the master key", "the host's admin API")
        try:
            count = int(request.query.get("count", "1"))
        except ValueError:
            count = -1
        if not 0 <= count <= 1000:
            return web.json_response({"error": "query parameter 'count' must be an integer from 0 to 1000"}, status=400)
        assert self.durable is not None
        self.durable.failing_starts = count
        return web.json_response({"failing_starts": count}, status=202)

    def _timer_client_binding(self) -> str:
        if self.durable is None or self.engine is None:
            raise RuntimeError("Durable engine not available for a durable client binding")
        return self.durable.client_binding()

    async def _run_function(self, request: web.Request) -> web.Response:
        if not self._key_ok(request, admin=True):
            return _unauthorized(request, "the master key", "the host's admin API")
        name = request.match_info["name"]
        if self.timers is None or name not in self.timers.timers:
            return web.json_response({"error": "no timer-triggered function by that name"}, status=404)
        if not await self.timers.invoke(name):
            return web.json_response({"error": "the function is still running from its last tick"}, status=409)
        return web.Response(status=202)

    # -- HTTP triggers ---------------------------------------------------------------------------------------
    def _resolve(self, method: str, path: str) -> tuple[HttpFunction | None, dict, web.Response | None]:
        prefix = f"/{self._prefix}" if self._prefix else ""
        if prefix:
            if path.lower() != prefix.lower() and not path.lower().startswith(prefix.lower() + "/"):
                return None, {}, web.Response(status=404)
            sub = path[len(prefix):]
        else:
            sub = path
        matches = [(hf, params) for hf in self.http if (params := hf.template.match(sub)) is not None]
        if not matches:
            return None, {}, web.Response(status=404)
        allowed = [m for m in matches if m[0].allows(method)]
        if not allowed:
            methods = sorted({m for hf, _ in matches for m in (hf.methods or ())})
            return None, {}, web.Response(status=405, headers={"Allow": ", ".join(methods)})
        hf, params = min(allowed, key=lambda m: m[0].template.precedence)
        return hf, params, None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        hf, route_params, error = self._resolve(request.method, request.path)
        if error is not None:
            return error
        assert hf is not None
        if hf.auth_level != "anonymous" and not self._key_ok(request, admin=hf.auth_level == "admin"):
            needs = "the master key" if hf.auth_level == "admin" else "a function key (or the master key)"
            return _unauthorized(request, needs, f"function {hf.name!r} (auth level {hf.auth_level})")
        headers: dict[str, str] = {}
        for k, v in request.headers.items():
            headers[k.lower()] = f"{headers[k.lower()]}, {v}" if k.lower() in headers else v
        params = {k: request.query[k] for k in request.query}  # the first value of a repeated key, as before
        req = func.HttpRequest(method=request.method, url=f"{request.scheme}://{request.host}{request.path_qs}",
                               headers=headers, params=params, route_params=route_params, body=await request.read())
        kwargs: dict[str, Any] = {hf.trigger_name: req}
        if hf.client is not None:
            if self.durable is None or self.engine is None:
                return web.Response(status=500, text="Durable engine not available")
            kwargs[hf.client.name] = self.durable.client_binding(hf.client.task_hub, hf.client.connection_name)
        # Like the host: a request span (child of an incoming traceparent), whose context the function gets.
        span = start_request_span(request.method, hf.route, request.headers.get("traceparent"),
                                  request.headers.get("tracestate"))
        if hf.accepts_context:
            # A few stat calls on a local directory, in the local runner only.
            kwargs["context"] = _Context(hf.name, str(Path(self.config.app_dir).resolve()),  # noqa: ASYNC240
                                         span_trace_context(span))
        user = hf.function.get_user_function()
        try:
            if inspect.iscoroutinefunction(user):
                result = await user(**kwargs)
            else:
                result = await asyncio.to_thread(user, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
            return _to_response(result)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("function %s failed", hf.name)
            return web.Response(status=500)
        finally:
            span.end()


async def close_open_sessions() -> int:
    """Close the aiohttp sessions still open on this loop; returns how many.

    The Functions host gives a Python app no shutdown hook (the worker process just ends), so an app keeps its
    long-lived clients (the storage SDKs' aiohttp transports, say) open to the end. When the process ends anyway
    the sockets go with it, but asyncio first reports every such session as "Unclosed client session" on the way
    out (Ctrl-C of `make up` printed five). The runner's process closes them once it has stopped serving, as the
    process end would have."""
    import gc

    from aiohttp import ClientSession

    loop = asyncio.get_running_loop()
    closed = 0
    for obj in gc.get_objects():
        if isinstance(obj, ClientSession) and not obj.closed and getattr(obj, "_loop", loop) is loop:
            try:
                await obj.close()
                closed += 1
            except Exception as exc:  # noqa: BLE001 - best effort at shutdown
                log.debug("closing an aiohttp session at shutdown failed: %s", type(exc).__name__)
    return closed


async def serve(config: HostConfig, ready: asyncio.Event | None = None) -> None:
    """Run until cancelled (SIGINT/SIGTERM in the CLI)."""
    host = LocalHost(config)
    await host.start()
    print(host.banner(), flush=True)
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await host.stop()
        # This process serves one app and ends here: what the app left open goes too (not in LocalHost.stop(),
        # which tests call with sessions of their own still in use on the same loop).
        await close_open_sessions()


__all__ = ["FUNCTION_KEY_ENV", "MASTER_KEY_ENV", "HostConfig", "HostConfigError", "LocalHost", "serve"]
