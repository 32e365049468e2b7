"""Local exporters for the runner: what Azure Monitor does in Azure, on this machine.

Modes (``python -m localrun --telemetry MODE`` or ``LOCALRUN_TELEMETRY``):
- ``off``: no SDK; the OpenTelemetry API stays a no-op (the default for the bare runner);
- ``summary``: an SDK with no exporter but one processor that prints a one-line timing summary per call
  (accept, greeting, tools, end) when its record is published; what ``make up`` uses;
- ``console``: the summary, plus every span and, once a minute, every metric as JSON on stdout.

``memory()`` installs in-memory exporters for tests (span tree, privacy scan). Providers can be set once per
process (an OpenTelemetry rule), so each of these is meant to run once, before the app is loaded.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    InMemoryMetricReader,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import telemetry

MODES = ("off", "summary", "console")
RESOURCE = Resource.create({"service.name": "switchboard", "deployment.environment": "local"})


def timing_line(attrs: Any) -> str:
    """``call rtc_..: accept 12:00:01.123Z, greeting 812 ms, tools lookup_order 120 ms ok, end completed
    (call_ended) after 42.1 s`` from a ``record.publish`` span's attributes (see shared.telemetry)."""
    call_id = attrs.get(telemetry.CALL_ID, "?")
    outcome = attrs.get("record.outcome", "?")
    if outcome in ("rejected", "referred"):
        sip = attrs.get("record.sip_status")
        return f"call {call_id}: {outcome} ({attrs.get('record.reason', '?')}{f', SIP {sip}' if sip else ''})"
    accepted = str(attrs.get("record.accepted_at") or "?")
    accepted = accepted[11:23] + "Z" if len(accepted) >= 23 else accepted
    greeting = attrs.get("record.greeting_ms")
    tools = []
    for item in str(attrs.get("record.tools") or "").split(","):
        if item:
            name, ms, ok = (item.split(":") + ["", ""])[:3]
            tools.append(f"{name} {ms} ms {ok}" if ms else f"{name} {ok}")
    duration = attrs.get("record.duration_s")
    return (f"call {call_id}: accept {accepted}, greeting {f'{greeting:.0f} ms' if greeting is not None else '-'}, "
            f"tools {', '.join(tools) or 'none'}, end {outcome} ({attrs.get('record.ended_by', '?')})"
            f"{f' after {duration:.1f} s' if isinstance(duration, (int, float)) else ''}")


class TimingSummary(SpanProcessor):
    """Prints :func:`timing_line` when a call's record is published."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self._out = out

    def on_end(self, span: ReadableSpan) -> None:
        if span.name == "record.publish" and span.status.is_ok:
            print(timing_line(span.attributes or {}), file=self._out or sys.stdout, flush=True)


def configure(mode: str, out: IO[str] | None = None) -> None:
    """Install the providers for ``mode`` (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"telemetry mode must be one of {', '.join(MODES)}, got {mode!r}")
    telemetry.install_log_filter()
    if mode == "off":
        return
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(TimingSummary(out))
    readers: list[MetricReader] = []
    if mode == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=out or sys.stdout)))
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(out=out or sys.stdout), 60_000))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(resource=RESOURCE, metric_readers=readers))


class Memory:
    """In-memory exporters: ``spans`` (finished spans) and ``metrics()`` (current metric points)."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def metric_points(self) -> list[tuple[str, dict[str, Any], Any]]:
        """(metric name, attributes, point) of every data point collected now."""
        data = self.reader.get_metrics_data()
        out = []
        for rm in (data.resource_metrics if data else []):
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for point in metric.data.data_points:
                        out.append((metric.name, dict(point.attributes or {}), point))
        return out


_memory: Memory | None = None


def memory() -> Memory:
    """Install (once per process) and return in-memory exporters."""
    global _memory
    if _memory is None:
        _memory = Memory()
        provider = TracerProvider(resource=RESOURCE)
        provider.add_span_processor(SimpleSpanProcessor(_memory.exporter))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(resource=RESOURCE, metric_readers=[_memory.reader]))
        telemetry.install_log_filter()
    return _memory
