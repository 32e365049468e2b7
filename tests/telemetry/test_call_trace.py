"""One trace per call, call metrics, a record for every decision and nothing private in telemetry: a whole call
through the real app under the local runner (real Durable replay engine, emulator over sockets, Azurite), with
the OpenTelemetry SDK exporting to memory."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import yaml

from shared import telemetry
from tests.telemetry.conftest import CALLER, DENIED, DIALED, ROOT, LocalCall

SCENARIO = yaml.safe_load((ROOT / "tests/e2e/scenarios/e2e_agent_ends.yaml").read_text())


def _by_name(spans: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


def _one(spans: dict[str, list], name: str):
    assert len(spans.get(name, [])) == 1, f"{name}: {len(spans.get(name, []))} spans"
    return spans[name][0]


def _parent_of(span, spans: list):
    pid = span.parent.span_id if span.parent is not None else None
    return next((s for s in spans if s.context.span_id == pid), None)


def _points(call: LocalCall, name: str) -> list[tuple[dict, Any]]:
    return [(attrs, p) for n, attrs, p in call.memory.metric_points() if n == name]


def _sum(call: LocalCall, name: str, **dims: Any) -> float:
    return sum(getattr(p, "value", None) if hasattr(p, "value") else p.count
               for attrs, p in _points(call, name) if all(attrs.get(k) == v for k, v in dims.items()))


def _count(call: LocalCall, name: str, **dims: Any) -> int:
    return sum(p.count for attrs, p in _points(call, name) if all(attrs.get(k) == v for k, v in dims.items()))


async def _run_call(call: LocalCall) -> tuple[str, dict, list]:
    call_id = await call.emulator.place_call(SCENARIO, caller=CALLER, dialed=DIALED)
    record = await call.record(call_id)
    spans = await call.spans_until(call_id, "activity.publish_call_record")
    return call_id, record, spans


async def test_one_call_is_one_trace_with_its_spans_metrics_and_timings(local_call: LocalCall) -> None:
    decided_before = _sum(local_call, "switchboard.calls.decided", action="accept", reason="accepted",
                          profile="reception")
    greetings_before = _count(local_call, "switchboard.greeting.latency", profile="reception")
    tools_before = _count(local_call, "switchboard.tool.latency", tool="lookup_order", ok=True)
    ended_before = _sum(local_call, "switchboard.calls.ended", outcome="agent_ended", ended_by="call_ended",
                        profile="reception")
    live_before = _sum(local_call, "switchboard.calls.live", profile="reception")

    call_id, record, spans = await _run_call(local_call)
    assert record["outcome"] == "agent_ended"
    named = _by_name(spans)

    # One trace: the runner's request span is the only root; everything else hangs below it.
    assert len({s.context.trace_id for s in spans}) == 1
    roots = [s for s in spans if _parent_of(s, spans) is None]
    assert [r.name for r in roots] == ["POST /api/calls/incoming"]

    def parent(name: str) -> str:
        p = _parent_of(_one(named, name), spans)
        return p.name if p is not None else "-"

    webhook = _one(named, "webhook")
    assert parent("webhook") == "POST /api/calls/incoming"
    assert webhook.attributes[telemetry.CALL_ID] == call_id
    assert parent("webhook.verify") == "webhook"
    route = _one(named, "call.route")
    assert parent("call.route") == "webhook"
    assert {k: route.attributes[k] for k in ("route.action", "route.reason", "route.profile")} == {
        "route.action": "accept", "route.reason": "accepted", "route.profile": "reception"}
    accept = _one(named, "call_control.accept")
    assert parent("call_control.accept") == "webhook"
    assert accept.attributes["http.response.status_code"] == 200 and accept.attributes[telemetry.CALL_ID] == call_id

    # start_new carried the webhook's context: the orchestration, then each activity, are its descendants.
    assert parent("orchestration:call") == "webhook"
    assert parent("activity:converse") == "orchestration:call"
    assert parent("activity.converse") == "activity:converse"
    assert parent("activity:publish_call_record") == "orchestration:call"
    assert parent("activity.publish_call_record") == "activity:publish_call_record"
    assert parent("record.publish") == "activity.publish_call_record"

    converse = _one(named, "activity.converse")
    assert parent("sideband.connect") == "activity.converse"
    assert _one(named, "sideband.connect").attributes["attempt"] == 1
    tools = {s.attributes["tool.name"]: s for s in named["tool.call"]}
    assert set(tools) == {"lookup_order", "end_call"}
    assert all(_parent_of(s, spans) is converse for s in tools.values())
    assert tools["lookup_order"].attributes["tool.ok"] is True
    assert tools["lookup_order"].attributes["tool.latency_ms"] >= 0
    # Turn storage: the call's turns ride on its lease row's writes (the take, the renewals, the end; the renewal
    # task inherits the activity's context), and a call this short writes no turn row of its own.
    assert len(named["lease.write"]) >= 3 and all(_parent_of(s, spans) is converse for s in named["lease.write"])
    assert "turns.append" not in named
    # The call's first attempt created its lease row, so nothing is stored yet: it greets without reading the
    # turns table (a retried converse reads them: tests/engine/test_lease.py).
    assert "turns.load" not in named
    hangup = _one(named, "call_control.hangup")
    # end_call spawned the hangup: it is that tool call's child.
    assert _parent_of(hangup, spans) is tools["end_call"] and hangup.attributes["http.response.status_code"] == 200
    assert converse.attributes["call.greeting_ms"] == record["greeting_ms"]
    # Every span of ours names the call, except the signature check (the body is not trusted, nor parsed, yet).
    ours = [s for s in spans if s.instrumentation_scope.name == "switchboard" and s.name != "webhook.verify"]
    assert [s.name for s in ours if s.attributes.get(telemetry.CALL_ID) != call_id] == []
    assert telemetry.CALL_ID not in _one(named, "webhook.verify").attributes

    # The record carries the greeting latency and each tool's latency.
    assert 0 < record["greeting_ms"] < 10_000
    assert [t["name"] for t in record["tools"]] == ["lookup_order", "end_call"]
    assert all(isinstance(t["latency_ms"], float) for t in record["tools"])
    published = _one(named, "record.publish").attributes
    assert published["record.greeting_ms"] == record["greeting_ms"]
    assert published["record.tools"].startswith(f"lookup_order:{record['tools'][0]['latency_ms']}:ok")

    # Metrics moved by exactly this call; the live count is back to where it was.
    assert _sum(local_call, "switchboard.calls.decided", action="accept", reason="accepted",
                profile="reception") == decided_before + 1
    assert _count(local_call, "switchboard.greeting.latency", profile="reception") == greetings_before + 1
    assert _count(local_call, "switchboard.tool.latency", tool="lookup_order", ok=True) == tools_before + 1
    assert _sum(local_call, "switchboard.calls.ended", outcome="agent_ended", ended_by="call_ended",
                profile="reception") == ended_before + 1
    assert _sum(local_call, "switchboard.calls.live", profile="reception") == live_before
    assert _count(local_call, "switchboard.call.duration", outcome="agent_ended") >= 1

    # The call id is a field of every log line written while the webhook or an activity ran for this call.
    lines = [r for r in local_call.logs.records if call_id in r.getMessage() and r.name.startswith("switchboard")]
    assert lines and all(getattr(r, "call_id", None) == call_id for r in lines), \
        [(r.name, r.getMessage()) for r in lines if getattr(r, "call_id", None) != call_id]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    return [str(value)]


_LOG_BUILTINS = set(vars(logging.LogRecord("n", 0, "p", 0, "m", None, None))) | {"message", "asctime"}


async def test_nothing_exported_carries_a_number_transcript_text_or_secret(local_call: LocalCall) -> None:
    _, record, spans = await _run_call(local_call)
    transcript = [t["text"] for t in record["transcript"]]
    assert len(transcript) >= 4  # greeting, two caller lines, replies: something to look for
    forbidden = [CALLER, CALLER[1:], DIALED, DIALED[1:], *transcript, *local_call.secrets]

    exported: list[tuple[str, str]] = []
    for s in spans:
        exported += [(f"span {s.name} name", s.name)]
        exported += [(f"span {s.name} {k}", v) for k, val in (s.attributes or {}).items() for v in _strings(val)]
        exported += [(f"event {e.name}", v) for e in s.events for v in _strings(dict(e.attributes or {}))]
        exported += [(f"span {s.name} status", s.status.description or "")]
    for name, attrs, _ in local_call.memory.metric_points():
        exported += [(f"metric {name}", v) for v in _strings(attrs)]
    for r in local_call.logs.records:
        fields = {k: v for k, v in vars(r).items() if k not in _LOG_BUILTINS}
        exported += [(f"log {r.name} message", r.getMessage())]
        exported += [(f"log {r.name} field {k}", v) for k, v in fields.items() for v in _strings(v)]
    assert len(exported) > 100
    leaks = [(where, text) for where, text in exported for bad in forbidden if bad and bad in text]
    assert leaks == []
    # And the numbers appear only masked in what the logs do say about the caller.
    assert any(re.search(r"\+1425\*+1212", text) for _, text in exported)


async def test_a_rejected_call_publishes_a_record_with_its_reason_and_sip_code(local_call: LocalCall) -> None:
    before = _sum(local_call, "switchboard.calls.decided", action="reject", reason="caller_denied", profile="")
    call_id = await local_call.emulator.place_call(SCENARIO, caller=DENIED, dialed=DIALED)
    record = await local_call.record(call_id)

    assert record["schema"] == "switchboard.call-record/1" and record["id"] == call_id
    assert record["outcome"] == "rejected" and record["reason"] == "caller_denied"
    assert record["ended_by"] == "routing" and isinstance(record["sip_status"], int)
    assert record["caller"] != DENIED and "*" in record["caller"]
    assert record["transcript"] == [] and record["accepted_at"] is None and record["ended_at"]
    # Same schema as an answered call's record.
    answered_keys = set(json.loads(json.dumps(_answered_keys())))
    assert set(record) == answered_keys

    spans = await local_call.spans_until(call_id, "record.publish")
    named = _by_name(spans)
    assert "orchestration:call" not in named  # never accepted: no workflow
    assert _one(named, "call_control.reject").attributes["http.response.status_code"] == 200
    published = _one(named, "record.publish").attributes
    assert published["record.outcome"] == "rejected" and published["record.sip_status"] == record["sip_status"]
    assert _sum(local_call, "switchboard.calls.decided", action="reject", reason="caller_denied",
                profile="") == before + 1
    assert _sum(local_call, "switchboard.calls.ended", outcome="rejected", ended_by="routing") >= 1


def _answered_keys() -> list[str]:
    from shared.records import build_record

    call = {"call_id": "rtc_x", "accepted_at": "2026-01-01T00:00:00Z", "caller": "+1425***1212"}
    return list(build_record(call, {"outcome": "completed"}, "call_ended", []))
