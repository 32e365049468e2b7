"""Trace context across Durable, as the host's distributed tracing V2 carries it in Azure.

In Azure the Durable client sends the caller's ``traceparent`` with ``start_new`` (azure-functions-durable
``DurableOrchestrationClient._get_current_activity_context``), the extension starts an ``orchestration:<name>``
span under it and an ``activity:<name>`` span per activity, and the worker hands each activity invocation its
span's context as ``func.Context.trace_context``. The local runner does the same here, with the OpenTelemetry
API (a no-op until a tracer provider is installed), so the app reads its parent exactly as it would in Azure.
See docs/observability.md.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_tracer = trace.get_tracer("localrun.durable")
_propagator = TraceContextTextMapPropagator()


class InvocationTraceContext:
    """``func.Context.trace_context`` as the Python worker builds it: its properties are ``Traceparent``,
    ``Tracestate`` and ``Attributes`` (azure-functions-python-worker ``bindings/tracecontext.py``), so the app
    reads them here exactly as it must in Azure."""

    def __init__(self, trace_parent: str, trace_state: str = "") -> None:
        self._parent = trace_parent
        self._state = trace_state or ""

    @property
    def Traceparent(self) -> str:
        return self._parent

    @property
    def Tracestate(self) -> str:
        return self._state

    @property
    def Attributes(self) -> dict[str, str]:
        return {}


@dataclasses.dataclass
class ActivityContext:
    """The bits of ``func.Context`` an activity may read (the worker passes it to a ``context`` parameter)."""

    function_name: str
    invocation_id: str
    trace_context: InvocationTraceContext | None
    retry_context: Any = None
    thread_local_storage: Any = None


def _parent(trace_parent: str | None, trace_state: str | None) -> Any:
    if not trace_parent:
        return None
    carrier = {"traceparent": trace_parent}
    if trace_state:
        carrier["tracestate"] = trace_state
    return _propagator.extract(carrier)


def start_orchestration_span(name: str, instance_id: str, trace_parent: str | None,
                             trace_state: str | None) -> Span:
    """``orchestration:<name>``, a child of the ``start_new`` caller's context (a new trace when there is none)."""
    return _tracer.start_span(f"orchestration:{name}", context=_parent(trace_parent, trace_state),
                              kind=SpanKind.SERVER, attributes={"durable.instance_id": instance_id})


def span_trace_context(span: Span | None, fallback: str | None = None,
                       state: str | None = None) -> InvocationTraceContext | None:
    """The W3C context of ``span``; the stored ``fallback`` traceparent when the span is not recording
    (no SDK installed, or an instance resumed after a restart)."""
    if span is not None and span.get_span_context().is_valid:
        carrier: dict[str, str] = {}
        _propagator.inject(carrier, context=trace.set_span_in_context(span))
        return InvocationTraceContext(carrier["traceparent"], carrier.get("tracestate", ""))
    return InvocationTraceContext(fallback, state or "") if fallback else None


def start_activity_span(name: str, instance_id: str, parent: InvocationTraceContext | None) -> Span:
    context = _parent(parent.Traceparent, parent.Tracestate) if parent is not None else None
    return _tracer.start_span(f"activity:{name}", context=context, kind=SpanKind.SERVER,
                              attributes={"durable.instance_id": instance_id})


def start_request_span(method: str, route: str, trace_parent: str | None, trace_state: str | None) -> Span:
    """The host's span for one HTTP invocation (``<METHOD> /<route>``), a child of the request's traceparent."""
    return _tracer.start_span(f"{method} /{route}", context=_parent(trace_parent, trace_state),
                              kind=SpanKind.SERVER, attributes={"http.request.method": method,
                                                                "http.route": route})
