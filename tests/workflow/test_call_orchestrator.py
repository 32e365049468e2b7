"""The ``call`` orchestrator through the real SDK replay engine (localrun.durable) on a
virtual clock, with fake activities. Every replay is determinism-checked (strict)."""
from __future__ import annotations

import datetime as dt

import pytest

from call_workflow import orchestrator
from call_workflow.orchestrator import DEADLINE_GRACE_SECONDS, PUBLISH_PAUSE, SUMMARY_WAIT_SECONDS, call_deadline
from localrun.durable import DurableEngine, EventType, FunctionIndex, iter_events
from localrun.durable.history import parse_ts
from localrun.durable.replay import ActionType

from .conftest import T0, call_app, call_input

S = dt.timedelta(seconds=1)


def scheduled(engine: DurableEngine, iid: str) -> list[tuple[int, str]]:
    return [(e["EventId"], e["Name"]) for e in iter_events(engine.history(iid), EventType.TaskScheduled)]


def timers(engine: DurableEngine, iid: str) -> list[tuple[int, dt.datetime]]:
    return [(e["EventId"], parse_ts(e["FireAt"])) for e in iter_events(engine.history(iid), EventType.TimerCreated)]


async def run_call(engine: DurableEngine, call: dict | None = None, timeout: float = 10) -> dict:
    call = call or call_input()
    await engine.start_new("call", call["call_id"], call)
    return await engine.wait_for_completion(call["call_id"], timeout)


def deadline_timer_canceled(engine: DurableEngine, iid: str) -> bool:
    first_timer = next(a for a in engine.actions(iid) if a.kind == ActionType.CreateTimer)
    return first_timer.is_canceled


async def test_converse_completes_first(engine, fake):
    fake.converse_duration = 60
    status = await run_call(engine)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"]["ended_by"] == "call_ended"
    assert fake.names() == ["converse", "publish_call_record"]
    (published,) = fake.inputs("publish_call_record")
    assert published["ended_by"] == "call_ended"
    assert published["summary"]["transcript"][-1]["text"] == "Goodbye!"
    assert published["call"] == call_input()
    assert fake.times("publish_call_record") == [T0 + 60 * S]
    assert deadline_timer_canceled(engine, "rtc_1")
    custom = status["customStatus"]
    assert custom["state"] == "ended" and custom["last_turn"]["text"] == "Goodbye!"
    assert custom["caller"] == "+1425***1212" and custom["profile"] == "reception"
    # ids as the SDK numbers them: converse 0, deadline timer 1, publish 2
    assert scheduled(engine, "rtc_1") == [(0, "converse"), (2, "publish_call_record")]
    assert timers(engine, "rtc_1") == [(1, T0 + (600 + DEADLINE_GRACE_SECONDS) * S)]


async def test_live_custom_status_while_converse_runs(clock, fake):
    clock.auto_advance = False
    engine = DurableEngine(FunctionIndex.from_app(call_app()), clock=clock, activity_overrides=fake.overrides())
    try:
        await engine.start_new("call", "rtc_1", call_input())
        await clock.advance(30)
        status = engine.get_status("rtc_1")
        assert status["runtimeStatus"] == "Running"
        assert status["customStatus"] == {"state": "live", "caller": "+1425***1212", "dialed": "+1800***1212",
                                          "profile": "reception", "started_at": "2026-11-25T12:00:00.000000Z",
                                          "last_turn": None}
        assert [s["instanceId"] for s in engine.list_instances(runtime_status=["Running"])] == ["rtc_1"]
        assert engine.running_activities("rtc_1") == ["converse"]
    finally:
        await engine.aclose()


async def test_max_duration_timer_wins(engine, fake):
    status = await run_call(engine)
    deadline = T0 + (600 + DEADLINE_GRACE_SECONDS) * S
    assert call_deadline(call_input()) == deadline
    assert status["runtimeStatus"] == "Completed"
    assert fake.names() == ["converse", "hangup_call", "publish_call_record"]
    assert fake.inputs("hangup_call") == [{"call_id": "rtc_1", "reason": "max_duration"}]
    assert fake.times("hangup_call") == [deadline]          # exactly accepted_at + max + grace
    (published,) = fake.inputs("publish_call_record")
    assert published["ended_by"] == "max_duration"
    assert published["summary"] is not None                  # converse returned within the window
    assert status["output"]["ended_by"] == "max_duration"
    hangup = iter_events(engine.history("rtc_1"), EventType.TaskScheduled, "hangup_call")[0]
    assert parse_ts(hangup["Timestamp"]) == deadline


async def test_operator_hangup_wins(clock, fake):
    clock.auto_advance = False
    engine = DurableEngine(FunctionIndex.from_app(call_app()), clock=clock, activity_overrides=fake.overrides())
    try:
        await engine.start_new("call", "rtc_1", call_input())
        await clock.advance(120)
        await engine.raise_event("rtc_1", "hangup", {"by": "operator"})
        await clock.advance(1)
        status = engine.get_status("rtc_1")
        assert status["runtimeStatus"] == "Completed"
        assert fake.inputs("hangup_call") == [{"call_id": "rtc_1", "reason": "operator_hangup"}]
        assert fake.times("hangup_call") == [T0 + 120 * S]
        (published,) = fake.inputs("publish_call_record")
        assert published["ended_by"] == "operator_hangup" and published["summary"]["outcome"] == "completed"
        assert deadline_timer_canceled(engine, "rtc_1")
    finally:
        await engine.aclose()


async def test_operator_hangup_summary_window_expires(engine, fake):
    """converse does not return after the hangup: publish without summary after the window."""
    fake.end_on_control = False
    await engine.start_new("call", "rtc_1", call_input())
    await engine.raise_event("rtc_1", "hangup", {"by": "operator"})
    status = await engine.wait_for_completion("rtc_1", 10)
    assert status["runtimeStatus"] == "Completed"
    (published,) = fake.inputs("publish_call_record")
    assert published["summary"] is None and published["ended_by"] == "operator_hangup"
    assert fake.times("publish_call_record") == [T0 + SUMMARY_WAIT_SECONDS * S]
    assert status["customStatus"]["last_turn"] is None


async def test_operator_transfer_allowed(engine, fake):
    await engine.start_new("call", "rtc_1", call_input())
    await engine.raise_event("rtc_1", "transfer", {"target": "sales"})
    status = await engine.wait_for_completion("rtc_1", 10)
    assert status["runtimeStatus"] == "Completed"
    assert fake.inputs("refer_call") == [{"call_id": "rtc_1", "target_uri": "tel:+14155550123"}]
    assert "hangup_call" not in fake.names()
    (published,) = fake.inputs("publish_call_record")
    assert published["ended_by"] == "operator_transfer"
    assert published["transfer_target"] == "sales"
    assert status["customStatus"]["transfer_target"] == "sales"
    # The engine saw only the socket close ("completed"); the operator API says what the record says.
    assert published["summary"]["outcome"] == "completed"
    assert status["customStatus"]["outcome"] == status["output"]["outcome"] == "transferred"


async def test_transfer_to_unknown_target_refused_then_call_continues(clock, fake):
    clock.auto_advance = False
    engine = DurableEngine(FunctionIndex.from_app(call_app()), clock=clock, activity_overrides=fake.overrides())
    try:
        fake.converse_duration = 300
        await engine.start_new("call", "rtc_1", call_input())
        await clock.advance(10)
        await engine.raise_event("rtc_1", "transfer", {"target": "+15551234567"})
        await clock.advance(1)
        status = engine.get_status("rtc_1")
        assert status["runtimeStatus"] == "Running"
        assert status["customStatus"]["note"] == "transfer refused: unknown target"
        await engine.raise_event("rtc_1", "transfer", None)       # malformed body: refused too
        await clock.advance(400)
        status = engine.get_status("rtc_1")
        assert status["runtimeStatus"] == "Completed"
        assert "refer_call" not in fake.names()
        assert status["output"]["ended_by"] == "call_ended"
        assert "note" not in status["customStatus"]
    finally:
        await engine.aclose()


async def test_valid_transfer_after_refused_one(engine, fake):
    await engine.start_new("call", "rtc_1", call_input())
    await engine.raise_event("rtc_1", "transfer", {"target": "nope"})
    await engine.raise_event("rtc_1", "transfer", {"target": "support"})
    status = await engine.wait_for_completion("rtc_1", 10)
    assert fake.inputs("refer_call") == [{"call_id": "rtc_1", "target_uri": "sip:support@example.com"}]
    assert status["output"]["ended_by"] == "operator_transfer"


async def test_converse_fails_once_then_reattaches(engine, fake):
    fake.converse_failures = 1
    fake.converse_duration = 30
    status = await run_call(engine)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"]["ended_by"] == "call_ended"
    assert fake.inputs("converse") == [call_input(), call_input()]      # same input: reattach
    assert fake.times("converse") == [T0, T0 + 1 * S]                    # 1 s retry interval
    # attempt 0, deadline timer 1, retry timer 2, attempt 3, publish 4
    assert scheduled(engine, "rtc_1") == [(0, "converse"), (3, "converse"), (4, "publish_call_record")]
    assert timers(engine, "rtc_1") == [(1, T0 + 615 * S), (2, T0 + 1 * S)]
    failed = iter_events(engine.history("rtc_1"), EventType.TaskFailed)
    assert [e["TaskScheduledId"] for e in failed] == [0]
    assert failed[0]["Reason"] == ("Activity function 'converse' failed: ConnectionError: "
                                   "sideband websocket dropped")


async def test_converse_retries_exhausted_still_publishes(engine, fake):
    fake.converse_failures = 3
    status = await run_call(engine)
    assert status["runtimeStatus"] == "Completed"
    assert len(fake.inputs("converse")) == 3
    # DTFx: one extra retry timer after the last failed attempt before the failure surfaces
    assert fake.times("hangup_call") == [T0 + 3 * S]
    assert fake.inputs("hangup_call") == [{"call_id": "rtc_1", "reason": "failed"}]
    (published,) = fake.inputs("publish_call_record")
    # ended_at is when the call ended (the hangup), not when the record happens to be published.
    assert published == {"call": call_input(), "summary": None, "ended_by": "failed", "transfer_target": None,
                         "ended_at": "2026-11-25T12:00:03.000000Z", "hangup_confirmed": True, "hung_up_at": None}
    assert status["customStatus"]["outcome"] == "failed"  # the record's rule, not None for want of a summary
    assert scheduled(engine, "rtc_1") == [(0, "converse"), (3, "converse"), (5, "converse"),
                                          (7, "hangup_call"), (8, "publish_call_record")]
    assert [t for t, _ in timers(engine, "rtc_1")] == [1, 2, 4, 6]
    assert status["output"]["ended_by"] == "failed"


async def test_hangup_404_gone_is_success(engine, fake):
    fake.hangup_gone = True
    fake.end_on_control = True
    await engine.start_new("call", "rtc_1", call_input())
    await engine.raise_event("rtc_1", "hangup", {"by": "operator"})
    status = await engine.wait_for_completion("rtc_1", 10)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"]["control_error"] is None
    result = iter_events(engine.history("rtc_1"), EventType.TaskCompleted)
    assert '{"call_id": "rtc_1", "gone": true}' in [e["Result"] for e in result]


async def test_a_record_that_will_not_publish_is_tried_again_after_a_pause(clock, fake):
    # A fresh deployment: the queue's role assignment is still propagating, so the first burst all fail.
    fake.converse_duration = 60
    fake.publish_failures = 7
    clock.auto_advance = False
    engine = DurableEngine(FunctionIndex.from_app(call_app()), clock=clock, activity_overrides=fake.overrides())
    try:
        await engine.start_new("call", "rtc_1", call_input())
        await clock.advance(60 + 20)  # the call ends; the first burst (5 attempts, 2 s apart) fails
        assert len(fake.inputs("publish_call_record")) == 5
        status = engine.get_status("rtc_1")
        assert status["runtimeStatus"] == "Running"
        assert status["customStatus"]["state"] == "ended"  # over for the caller: not live, not counted
        assert status["customStatus"]["note"] == "record not published yet; retrying"
        await clock.advance(PUBLISH_PAUSE.total_seconds())
        status = await engine.wait_for_completion("rtc_1", 5)
    finally:
        await engine.aclose()
    assert status["runtimeStatus"] == "Completed" and status["output"]["record_id"] == "rtc_1"
    assert "note" not in status["customStatus"] and "error" not in status["customStatus"]
    times = fake.times("publish_call_record")
    assert len(times) == 8
    assert times[5] - times[4] >= PUBLISH_PAUSE  # the second burst waited out the pause


async def test_a_record_is_given_up_only_after_the_patience_runs_out(engine, fake, monkeypatch):
    monkeypatch.setattr(orchestrator, "PUBLISH_PATIENCE", dt.timedelta(minutes=12))
    fake.converse_duration = 60
    fake.publish_failures = 10**6
    status = await run_call(engine)
    assert status["runtimeStatus"] == "Failed"
    assert status["customStatus"]["error"] == "publish_failed"
    # Bursts start at 1:00, about 6:10 and 11:20; a fourth would start after the 12 minutes.
    assert len(fake.inputs("publish_call_record")) == 15


async def test_hangup_raised_before_first_episode_is_buffered(engine, fake):
    await engine.start_new("call", "rtc_1", call_input())
    await engine.raise_event("rtc_1", "hangup", {"by": "operator"})   # before the orchestrator ran
    status = await engine.wait_for_completion("rtc_1", 10)
    assert status["output"]["ended_by"] == "operator_hangup"
    history = engine.history("rtc_1")
    kinds = [e["EventType"] for e in history[:4]]
    assert kinds == [EventType.OrchestratorStarted, EventType.ExecutionStarted, EventType.EventRaised,
                     EventType.TaskScheduled]


async def test_kill_converse_mid_call_is_retried(clock, fake):
    clock.auto_advance = False
    engine = DurableEngine(FunctionIndex.from_app(call_app()), clock=clock, activity_overrides=fake.overrides())
    try:
        fake.converse_duration = 100
        await engine.start_new("call", "rtc_1", call_input())
        await clock.advance(20)
        assert engine.kill_activity("rtc_1", "converse") == 1
        await clock.advance(0)
        failed = iter_events(engine.history("rtc_1"), EventType.TaskFailed)
        assert [e["Reason"] for e in failed] == ["Activity function 'converse' failed: worker died"]
        await clock.advance(1)
        assert fake.times("converse") == [T0, T0 + 21 * S]
        await clock.advance(100)
        status = engine.get_status("rtc_1")
        assert status["runtimeStatus"] == "Completed" and status["output"]["ended_by"] == "call_ended"
    finally:
        await engine.aclose()


async def test_late_events_after_end_are_rejected(engine, fake):
    fake.converse_duration = 5
    await run_call(engine)
    from localrun.durable import InstanceNotRunningError
    with pytest.raises(InstanceNotRunningError):
        await engine.raise_event("rtc_1", "hangup", {"by": "operator"})


@pytest.mark.parametrize("event, data, control", [("hangup", {"by": "operator"}, "hangup_call"),
                                                  ("transfer", {"target": "sales"}, "refer_call")])
async def test_a_summary_that_arrives_before_the_control_activity_returns_is_kept(engine, fake, event, data,
                                                                                  control):
    """The hangup/refer makes converse return; when converse finishes first, its summary still goes in the record."""
    import asyncio

    slow_control = getattr(fake, control)

    async def control_that_returns_after_converse(payload: dict) -> dict:
        result = await slow_control(payload)   # ends the call: converse returns now
        await asyncio.sleep(0.05)               # the REST answer comes back a little later
        return result

    engine.activity_overrides[control] = control_that_returns_after_converse
    await engine.start_new("call", "rtc_1", call_input())
    await engine.raise_event("rtc_1", event, data)
    status = await engine.wait_for_completion("rtc_1", 10)
    assert status["runtimeStatus"] == "Completed"
    completed = [e["TaskScheduledId"] for e in iter_events(engine.history("rtc_1"), EventType.TaskCompleted)]
    assert completed[:2] == [0, 2]  # converse (0) finished before the control activity (2)
    (published,) = fake.inputs("publish_call_record")
    assert published["summary"] is not None and published["summary"]["transcript"][-1]["text"] == "Goodbye!"
    assert status["customStatus"]["last_turn"]["text"] == "Goodbye!"
