"""Traces, metrics and the call id on log lines: the instruments, framework-free.

Everything here uses the OpenTelemetry *API* only. Until a start-up module installs an SDK provider
(``call_workflow/telemetry_setup.py`` in Azure, the local runner's own set-up locally) every tracer, span and
instrument is a no-op proxy, so the core pays tens of microseconds per call and nothing is exported. The trace
API is already imported on the webhook path by ``azure-functions-durable`` (its client injects ``traceparent``
into ``start_new``), so this module adds about 5 ms of imports (measured in docs/observability.md).

Privacy rule for everything below (docs/observability.md): span attributes, metric dimensions and log fields
carry ids, names from configuration (profile, tool, outcome, reason) and measurements, never a phone number,
transcript text, tool arguments, exception messages or a secret. Exceptions are recorded by type name only.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

tracer = trace.get_tracer("switchboard")
meter = metrics.get_meter("switchboard")

CALL_ID = "call.id"  # the span attribute and (as ``call_id``) the log field an operator filters on

# --------------------------------------------------------------------------------------------- call context

_call_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("switchboard_call_id", default=None)
# Platform call ids are opaque ``rtc_...`` tokens; anything else is cut to this shape before it becomes a field.
_SAFE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def _safe(call_id: str | None) -> str | None:
    if not call_id:
        return None
    return call_id if _SAFE_ID.fullmatch(call_id) else re.sub(r"[^A-Za-z0-9_.:-]", "_", call_id[:128])


def current_call() -> str | None:
    """The call id of the running invocation (webhook or activity), or None."""
    return _call_id.get()


def bind_call(call_id: str) -> None:
    """This invocation is about ``call_id`` (known once the webhook is parsed): log lines and the current span
    carry it from now on. The invocation that set the context restores it when it ends."""
    safe = _safe(call_id)
    _call_id.set(safe)
    trace.get_current_span().set_attribute(CALL_ID, safe or "")


def set_call(call_id: str) -> None:
    """Only the log field, for code that has no span and no I/O (the deterministic orchestrator: it sets it at
    the start of every replay, before it can log)."""
    _call_id.set(_safe(call_id))


class CallIdFilter(logging.Filter):
    """Adds ``call_id`` to every log record (empty outside a call), so App Insights can filter by call: the
    Azure Monitor log handler exports a record's extra attributes as custom dimensions. The messages stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "call_id"):
            record.call_id = _call_id.get() or ""
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Put a :class:`CallIdFilter` on every handler of ``logger`` (default: root). Handler filters, not logger
    filters: a logger's filters do not see records propagated from its children (``switchboard.intake``).
    Each invocation calls it again (a look at one or two handlers), so a handler added after start-up, such as
    the Python worker's own Azure Monitor handler, gets the filter too."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, CallIdFilter) for f in handler.filters):
            handler.addFilter(CallIdFilter())


# ------------------------------------------------------------------------------------------------ spans


def _attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in attrs.items() if v is not None}
    if CALL_ID not in out and (call_id := _call_id.get()):
        out[CALL_ID] = call_id
    return out


def _failed(sp: Span, exc: BaseException) -> None:
    # The type name only: exception texts can carry platform messages, URLs or a tool's internals.
    sp.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    sp.set_attribute("error.type", type(exc).__name__)


@contextmanager
def span(name: str, *, kind: SpanKind = SpanKind.INTERNAL, **attrs: Any) -> Iterator[Span]:
    """A child span of the current one, with the call id; an exception marks it failed (by type) and goes on."""
    with tracer.start_as_current_span(name, kind=kind, attributes=_attributes(attrs), record_exception=False,
                                      set_status_on_exception=False) as sp:
        try:
            yield sp
        except BaseException as exc:
            _failed(sp, exc)
            raise


def annotate(**attrs: Any) -> None:
    """Set attributes on the current span (a no-op span when there is none)."""
    current = trace.get_current_span()
    for key, value in attrs.items():
        if value is not None:
            current.set_attribute(key, value)


class TraceContext(Protocol):
    """``func.Context.trace_context``: the W3C trace context of the invocation. The Python worker's object has
    ``Traceparent``/``Tracestate``/``Attributes`` (azure-functions-python-worker
    ``azure_functions_worker/bindings/tracecontext.py``); the ``azure.functions`` ABC names them
    ``trace_parent``/``trace_state``. :func:`parent_context` reads either (docs/observability.md)."""


def _first(obj: Any, *names: str) -> str | None:
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, str) and value:
            return value
    return None


def parent_context(trace_context: TraceContext | Any | None) -> otel_context.Context | None:
    """The OpenTelemetry context of an invocation's W3C ``traceparent``/``tracestate``, extracted the way the
    Azure Monitor docs show for Python functions (docs/observability.md); None when there is none."""
    if trace_context is None:
        return None
    parent = _first(trace_context, "Traceparent", "trace_parent")
    if not parent:
        return None
    carrier = {"traceparent": parent}
    state = _first(trace_context, "Tracestate", "trace_state")
    if state:
        carrier["tracestate"] = state
    return TraceContextTextMapPropagator().extract(carrier)


@contextmanager
def invocation(name: str, trace_context: TraceContext | None, *, call_id: str | None = None,
               kind: SpanKind = SpanKind.INTERNAL, **attrs: Any) -> Iterator[Span]:
    """The span of one Functions invocation, a child of the invocation's trace context (so the webhook, the
    orchestration the Durable host traces, and each activity share one trace), with the call id bound for its
    log lines. Both are restored when it ends."""
    install_log_filter()
    parent = parent_context(trace_context)
    token = otel_context.attach(parent) if parent is not None else None
    call_token = _call_id.set(_safe(call_id))
    try:
        with span(name, kind=kind, **attrs) as sp:
            yield sp
    finally:
        _call_id.reset(call_token)
        if token is not None:
            otel_context.detach(token)


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def traced(name: str, **static: Any) -> Callable[[F], F]:
    """Decorator: the coroutine runs in a span ``name`` (one line on a hot module instead of an indent)."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        async def inner(*args: Any, **kwargs: Any) -> Any:
            with span(name, **static):
                return await fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


# -------------------------------------------------------------------------------------------------- metrics

_decided = meter.create_counter(
    "switchboard.calls.decided", unit="{call}", description="Incoming calls by routing decision")
_ended = meter.create_counter(
    "switchboard.calls.ended", unit="{call}", description="Calls whose record was published, by outcome")
_greeting = meter.create_histogram(
    "switchboard.greeting.latency", unit="ms", description="Accept to the first response audio starting")
_tool_latency = meter.create_histogram(
    "switchboard.tool.latency", unit="ms", description="Tool call latency, by tool and result")
_duration = meter.create_histogram(
    "switchboard.call.duration", unit="s", description="Accept to end of the call")
_live = meter.create_up_down_counter(
    "switchboard.calls.live", unit="{call}", description="Calls with a live conversation in this process")
_rules_rejected = meter.create_counter(
    "switchboard.rules.rejected", unit="{version}",
    description="Routing rules versions refused on reload (invalid or unreadable); the last good rules stay")
_rules_loaded = meter.create_counter(
    "switchboard.rules.loaded", unit="{version}", description="Routing rules versions swapped in on reload")


def rules_rejected(reason: str) -> None:
    """One routing rules version refused by the background reload (shared/rules_store.py)."""
    _rules_rejected.add(1, {"reason": reason})


def rules_loaded() -> None:
    _rules_loaded.add(1)


def call_decided(action: str, reason: str, profile: str | None) -> None:
    """The routing decision of one incoming call: a metric point and attributes of the current span."""
    dims = {"action": action, "reason": reason, "profile": profile or ""}
    _decided.add(1, dims)
    annotate(**{"route.action": action, "route.reason": reason, "route.profile": profile})


@contextmanager
def live_call(profile: str | None) -> Iterator[None]:
    """Counts a call as live while its conversation runs in this process."""
    dims = {"profile": profile or ""}
    _live.add(1, dims)
    try:
        yield
    finally:
        _live.add(-1, dims)


class CallTiming:
    """Greeting latency of one call: from the accept (the call's ``accepted_at``) to the first
    ``output_audio_buffer.started`` after the greeting was requested. Not measured on a resumed call (no greeting)."""

    def __init__(self, accepted_at: datetime, profile: str | None) -> None:
        self.accepted_at = accepted_at
        self.profile = profile or ""
        self.greeting_ms: float | None = None
        self._greeting_sent = False

    def greeting_sent(self) -> None:
        self._greeting_sent = True

    def audio_started(self, now: datetime) -> None:
        if not self._greeting_sent or self.greeting_ms is not None:
            return
        self.greeting_ms = round(max(0.0, (now - self.accepted_at).total_seconds()) * 1000, 1)
        _greeting.record(self.greeting_ms, {"profile": self.profile})
        annotate(**{"call.greeting_ms": self.greeting_ms})


class _ToolEngine(Protocol):
    tool_log: list[dict[str, Any]]
    user_tools: Mapping[str, Any]


# Tools every profile has (shared.tools END_CALL / TRANSFER_CALL); other names count only when registered, so a
# name the model made up never becomes a metric dimension.
_BUILTIN_TOOLS = frozenset({"end_call", "transfer_call"})


_mcp_latency = meter.create_histogram(
    "switchboard.mcp.latency", unit="ms", description="MCP tool call latency seen on the sideband, by server, tool "
                                                      "and result (the platform makes the call)")


def record_mcp_call(server: str, tool: str, ok: bool, ms: float) -> None:
    """One MCP call the platform made (shared/mcp_calls.py), into both latency histograms. ``server``
    is the profile's label; ``tool`` a name the profile lists, else 'other'."""
    _mcp_latency.record(ms, {"server": server, "tool": tool, "ok": ok})
    _tool_latency.record(ms, {"tool": f"{server}/{tool}", "ok": ok})


def traced_tool(fn: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Decorator for ``ConversationEngine._run_tool(self, fc_call_id, name, raw_arguments)``: a span per tool
    call, its latency into the call's tool log entry (``latency_ms``, which the record carries) and the
    ``switchboard.tool.latency`` histogram. The entry is the one ``_run_tool`` appends before its first await,
    so it sits at the index the log had when the call started (no other task runs in between)."""

    @functools.wraps(fn)
    async def inner(engine: _ToolEngine, fc_call_id: str, name: str, raw_arguments: str) -> None:
        tool = name if (name in _BUILTIN_TOOLS or name in engine.user_tools) else "unknown"
        index = len(engine.tool_log)
        started = time.perf_counter()
        attrs: dict[str, Any] = {"tool.name": tool}  # a dotted name, so not a keyword argument
        with span("tool.call", **attrs) as sp:
            try:
                await fn(engine, fc_call_id, name, raw_arguments)
            finally:
                ms = round((time.perf_counter() - started) * 1000, 1)
                entry = engine.tool_log[index] if len(engine.tool_log) > index else None
                ok = bool(entry and entry.get("ok"))
                if entry is not None:
                    entry["latency_ms"] = ms
                sp.set_attribute("tool.ok", ok)
                sp.set_attribute("tool.latency_ms", ms)
                _tool_latency.record(ms, {"tool": tool, "ok": ok})

    return inner


class _CallResult(Protocol):
    # Read-only members, so a frozen dataclass (``call_control.CallResult``) satisfies the protocol.
    @property
    def status(self) -> int: ...
    @property
    def gone(self) -> bool: ...


_R = TypeVar("_R", bound=_CallResult)


def traced_request(fn: Callable[..., Awaitable[_R]]) -> Callable[..., Awaitable[_R]]:
    """Decorator for ``CallControlClient._post(self, action, call_id, ...)``: a client span per call-control
    request with the action and the HTTP status (or the error code when no status came back)."""

    @functools.wraps(fn)
    async def inner(client: Any, action: str, call_id: str, *args: Any, **kwargs: Any) -> _R:
        with span(f"call_control.{action}", kind=SpanKind.CLIENT,
                  **{CALL_ID: _safe(call_id), "call_control.action": action}) as sp:
            try:
                result = await fn(client, action, call_id, *args, **kwargs)
            except Exception as exc:
                status, code = getattr(exc, "status", None), getattr(exc, "code", None)
                if isinstance(status, int):
                    sp.set_attribute("http.response.status_code", status)
                if isinstance(code, str):
                    sp.set_attribute("call_control.error", code[:64])
                raise
            sp.set_attribute("http.response.status_code", result.status)
            sp.set_attribute("call_control.gone", bool(result.gone))
            return result

    return inner


def record_attributes(record: Mapping[str, Any]) -> dict[str, Any]:
    """The span attributes of a published call record: ids, outcome and timings, no transcript or number."""
    tools = record.get("tools") or []
    return {
        CALL_ID: _safe(record.get("call_id")),
        "record.outcome": record.get("outcome"),
        "record.ended_by": record.get("ended_by"),
        "record.reason": record.get("reason") if record.get("outcome") in ("rejected", "referred") else None,
        "record.sip_status": record.get("sip_status"),
        "record.profile": record.get("profile_name"),
        "record.accepted_at": record.get("accepted_at"),
        "record.duration_s": record.get("duration_seconds"),
        "record.greeting_ms": record.get("greeting_ms"),
        "record.tools": ",".join(
            f"{_tool_name(t)}:{t.get('latency_ms', '')}:{'ok' if t.get('ok') else 'error'}"
            for t in tools if isinstance(t, dict)) or None,
        # Post-call analysis (docs/analysis.md): whether the record has one, or why not.
        "record.analysis": "error" if record.get("analysis_error") else "ok" if record.get("analysis") else None,
    }


def _tool_name(entry: Mapping[str, Any]) -> str:
    name = entry.get("name")
    name = name if isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name) else "unknown"
    if entry.get("kind") == "mcp":  # called by the platform on a profile's MCP server (shared/mcp_calls.py)
        server = entry.get("server")
        server = server if isinstance(server, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", server) else "unknown"
        return f"{server}/{name}"  # no ":" (the separator of record.tools entries)
    return name


def traced_publish(fn: Callable[..., Awaitable[str]]) -> Callable[..., Awaitable[str]]:
    """Decorator for ``RecordPublisher.publish(self, record)``: a span with the record's outcome and timings,
    and, once the record is on the queue, the ``calls.ended`` and ``call.duration`` metrics (at-least-once, as
    the record itself)."""

    @functools.wraps(fn)
    async def inner(publisher: Any, record: dict[str, Any]) -> str:
        with span("record.publish", kind=SpanKind.PRODUCER, **record_attributes(record)):
            result = await fn(publisher, record)
        dims = {"outcome": str(record.get("outcome") or ""), "ended_by": str(record.get("ended_by") or ""),
                "profile": str(record.get("profile_name") or "")}
        _ended.add(1, dims)
        if isinstance(record.get("duration_seconds"), (int, float)):
            _duration.record(float(record["duration_seconds"]), dims)
        return result

    return inner
