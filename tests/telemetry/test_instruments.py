"""shared.telemetry's pieces on their own: call id context and log filter, parent from an invocation's trace
context, the tool decorator's dimensions, the local timing line, and start-up configuration."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from types import SimpleNamespace
from typing import ClassVar

from localrun.telemetry import TimingSummary, memory, timing_line
from shared import telemetry
from tests.telemetry.conftest import ROOT


def _record(msg: str = "hello") -> logging.LogRecord:
    record = logging.LogRecord("switchboard.test", logging.INFO, __file__, 1, msg, None, None)
    telemetry.CallIdFilter().filter(record)
    return record


def test_the_call_id_is_a_log_field_inside_an_invocation_and_restored_after() -> None:
    assert _record().call_id == ""
    with telemetry.invocation("activity.x", None, call_id="rtc_abc"):
        assert _record().call_id == "rtc_abc"
        with telemetry.invocation("activity.y", None, call_id="rtc_other"):
            assert _record().call_id == "rtc_other"
        assert _record().call_id == "rtc_abc"
    assert _record().call_id == ""
    # A value that is not an opaque id is made safe before it becomes a field (no newlines, no spaces).
    with telemetry.invocation("activity.x", None, call_id="rtc_1\nforged line"):
        assert _record().call_id == "rtc_1_forged_line"


def test_an_invocation_span_is_the_child_of_its_trace_context() -> None:
    mem = memory()
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    # The Python worker's object spells them Traceparent/Tracestate; the azure.functions ABC trace_parent/...
    worker = SimpleNamespace(Traceparent=parent, Tracestate="congo=t61rcWkgMzE", Attributes={})
    abc = SimpleNamespace(trace_parent=parent, trace_state="")
    for ctx in (worker, abc):
        mem.exporter.clear()
        with telemetry.invocation("activity.unit", ctx, call_id="rtc_unit"), telemetry.span("child.unit"):
            pass
        spans = {s.name: s for s in mem.spans() if s.name in ("activity.unit", "child.unit")}
        outer, inner = spans["activity.unit"], spans["child.unit"]
        assert f"{outer.context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert f"{outer.parent.span_id:016x}" == "00f067aa0ba902b7"
        assert inner.parent.span_id == outer.context.span_id
        assert inner.attributes[telemetry.CALL_ID] == "rtc_unit"


def test_a_failing_span_records_the_type_not_the_message() -> None:
    mem = memory()
    try:
        with telemetry.span("fails.unit"):
            raise RuntimeError("secret=hunter2 +14255551212")
    except RuntimeError:
        pass
    span = next(s for s in mem.spans() if s.name == "fails.unit")
    assert span.status.description == "RuntimeError" and span.attributes["error.type"] == "RuntimeError"
    assert span.events == ()  # no exception event with the message


async def test_a_tool_the_model_made_up_is_one_unknown_dimension_and_its_latency_lands_in_the_log() -> None:
    mem = memory()

    class Engine:
        user_tools: ClassVar[dict[str, object]] = {"lookup_order": object()}

        def __init__(self) -> None:
            self.tool_log: list[dict] = []

        @telemetry.traced_tool
        async def _run_tool(self, fc_call_id: str, name: str, raw_arguments: str) -> None:
            self.tool_log.append({"name": name, "ok": name == "lookup_order"})

    engine = Engine()
    await engine._run_tool("fc_1", "call_+14255551212_now", "{}")
    await engine._run_tool("fc_2", "lookup_order", "{}")
    assert [e["name"] for e in engine.tool_log] == ["call_+14255551212_now", "lookup_order"]
    assert all(isinstance(e["latency_ms"], float) for e in engine.tool_log)
    dims = [a for n, a, _ in mem.metric_points() if n == "switchboard.tool.latency"]
    assert {"tool": "unknown", "ok": False} in dims and {"tool": "lookup_order", "ok": True} in dims
    assert all("+1425" not in str(a) for a in dims)


def test_the_timing_line_of_a_call_and_of_a_reject() -> None:
    attrs = {telemetry.CALL_ID: "rtc_1", "record.outcome": "agent_ended", "record.ended_by": "call_ended",
             "record.accepted_at": "2026-11-30T06:12:01.123456Z", "record.greeting_ms": 812.4,
             "record.tools": "lookup_order:120.5:ok,end_call:3.1:ok", "record.duration_s": 42.06}
    assert timing_line(attrs) == ("call rtc_1: accept 06:12:01.123Z, greeting 812 ms, tools lookup_order 120.5 ms "
                                  "ok, end_call 3.1 ms ok, end agent_ended (call_ended) after 42.1 s")
    assert timing_line({telemetry.CALL_ID: "rtc_2", "record.outcome": "rejected", "record.reason": "after_hours",
                        "record.sip_status": 480}) == "call rtc_2: rejected (after_hours, SIP 480)"
    out = io.StringIO()
    memory()  # a provider is installed: spans record
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    provider.add_span_processor(TimingSummary(out))
    with provider.get_tracer("t").start_as_current_span("record.publish", attributes=attrs):
        pass
    with provider.get_tracer("t").start_as_current_span("turns.append"):
        pass
    assert out.getvalue().splitlines() == [timing_line(attrs)]


def _run(code: str, env: dict[str, str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


_SETUP = """
import json, sys
from call_workflow import telemetry_setup
from opentelemetry import trace
mode = telemetry_setup.configure()
print(json.dumps({"mode": mode, "monitor": "azure.monitor.opentelemetry" in sys.modules,
                  "sdk": "opentelemetry.sdk.trace" in sys.modules,
                  "provider": type(trace.get_tracer_provider()).__name__}))
"""


def test_without_a_connection_string_azure_monitor_is_never_imported() -> None:
    assert _run(_SETUP, {}) == {"mode": "none", "monitor": False, "sdk": False, "provider": "ProxyTracerProvider"}


def test_the_worker_s_own_azure_monitor_is_not_configured_twice() -> None:
    env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000",
           "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true"}
    assert _run(_SETUP, env)["mode"] == "worker"


def test_with_a_connection_string_azure_monitor_exports_keyless() -> None:
    # Nothing is sent (the endpoint is a closed local port); the providers are the SDK's, the credential is the
    # managed identity the authentication string names.
    env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
                                                    "IngestionEndpoint=http://127.0.0.1:9/",
           "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "ClientId=11111111-1111-1111-1111-111111111111;"
                                                       "Authorization=AAD",
           "OTEL_METRIC_EXPORT_INTERVAL": "600000"}
    code = _SETUP.replace("print(", "from azure.monitor.opentelemetry.exporter.export._base import "
                                    "_get_authentication_credential as c\ncred = c()\nimport logging\n"
                                    "levels = [h.level for h in logging.getLogger().handlers "
                                    "if type(h).__module__.startswith('opentelemetry')]\nprint(") \
                 .replace('"provider":', '"credential": type(cred).__name__, "levels": levels, "provider":')
    got = _run(code, env)
    assert got["mode"] == "azure-monitor" and got["monitor"] and got["provider"] == "TracerProvider"
    assert got["credential"] == "ManagedIdentityCredential"
    assert got["levels"] == [
        logging.INFO
    ]  # the exporting handler drops DEBUG (transcript words) whatever the loggers say


def test_a_malformed_connection_string_leaves_the_app_running_without_export() -> None:
    # Azure Monitor refuses a malformed connection string at configure time, i.e. while the worker imports
    # function_app: left to raise, it would take every function down with it (as an unresolved secret did).
    env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=k-7c1e;IngestionEndpoint=not-a-url"}
    code = "import logging\nlogging.basicConfig(level=logging.INFO)\n" + _SETUP
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["mode"] == "failed"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "APPLICATIONINSIGHTS_CONNECTION_STRING is unusable" in errors[0]
    assert "k-7c1e" not in proc.stderr and "not-a-url" not in proc.stderr  # the value itself is never logged


def test_a_handler_added_after_start_up_gets_the_call_id_at_the_next_invocation() -> None:
    seen: list[logging.LogRecord] = []

    class Late(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    late = Late(logging.INFO)
    root = logging.getLogger()
    root.addHandler(late)
    log = logging.getLogger("switchboard.test.late")
    log.setLevel(logging.INFO)
    try:
        with telemetry.invocation("activity.late", None, call_id="rtc_late"):
            log.info("inside")
    finally:
        root.removeHandler(late)
    assert [(r.getMessage(), r.call_id) for r in seen] == [("inside", "rtc_late")]
