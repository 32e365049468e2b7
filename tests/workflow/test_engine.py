"""The durable engine itself: ids, retries, timers, JSON round-trips, determinism,
buffering, concurrency, instance management. Orchestrators here are test-only."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

import azure.durable_functions as df
import pytest

from localrun.durable import (
    DurableEngine,
    EventType,
    FunctionIndex,
    InstanceExistsError,
    InstanceNotFound,
    InstanceNotRunningError,
    RealClock,
    UnknownFunctionError,
    VirtualClock,
    iter_events,
)
from localrun.durable.history import parse_ts
from localrun.durable.ids import RetryPolicy
from localrun.durable.replay import ReplaySettings

UTC = dt.UTC
T0 = dt.datetime(2025, 1, 1, tzinfo=UTC)
S = dt.timedelta(seconds=1)

app = df.DFApp()
log = logging.getLogger("tests.workflow.orchestrators")


@app.orchestration_trigger(context_name="context")
def call_orchestrator(context: df.DurableOrchestrationContext):
    """The reference's sample (durable-replay.md section 2.3)."""
    call = context.get_input()
    session = context.call_activity("run_call_session", call)
    timer = context.create_timer(context.current_utc_datetime + dt.timedelta(hours=1))
    hangup = context.wait_for_external_event("operator_hangup")
    winner = yield context.task_any([session, timer, hangup])
    if winner is hangup:
        yield context.call_activity_with_retry("hangup_call", df.RetryOptions(2000, 3),
                                               {"call_id": call["call_id"], "reason": "operator_hangup"})
    if not timer.is_completed:
        timer.cancel()
    record = yield context.call_activity("publish_call_record", {"call_id": call["call_id"]})
    return record


@app.orchestration_trigger(context_name="context")
def nondeterministic(context: df.DurableOrchestrationContext):
    # BAD: wall-clock time in an orchestrator; the timer's fireAt changes on every replay.
    fire_at = dt.datetime.now(UTC) + dt.timedelta(hours=1)
    yield context.task_any([context.call_activity("echo", 1), context.create_timer(fire_at)])
    yield context.call_activity("echo", 2)
    return "done"


_flip = {"n": 0}


@app.orchestration_trigger(context_name="context")
def branchy(context: df.DurableOrchestrationContext):
    # BAD: module state decides which activity runs.
    _flip["n"] += 1
    yield context.call_activity("echo" if _flip["n"] == 1 else "boom", 1)
    yield context.call_activity("echo", 2)


@app.orchestration_trigger(context_name="context")
def echo_twice(context: df.DurableOrchestrationContext):
    value = context.get_input()
    first = yield context.call_activity("echo", value)
    try:
        second = yield context.call_activity("echo", {"set": "x"})
    except Exception as exc:  # noqa: BLE001
        second = str(exc)
    return {"first": first, "second": second}


@app.orchestration_trigger(context_name="context")
def long_timer(context: df.DurableOrchestrationContext):
    yield context.create_timer(context.current_utc_datetime + dt.timedelta(days=10))
    return context.current_utc_datetime.strftime("%Y-%m-%dT%H:%M:%SZ")


@app.orchestration_trigger(context_name="context")
def activity_then_event(context: df.DurableOrchestrationContext):
    first = yield context.call_activity("echo", "first")
    approval = yield context.wait_for_external_event("approve")
    return {"first": first, "approval": approval}


@app.orchestration_trigger(context_name="context")
def logs_once(context: df.DurableOrchestrationContext):
    for i in range(3):
        if not context.is_replaying:
            log.info("step %d", i)
        yield context.call_activity("echo", i)
    return "ok"


@app.orchestration_trigger(context_name="context")
def raises(context: df.DurableOrchestrationContext):
    yield context.call_activity("echo", 1)
    raise ValueError("orchestrator bug")


@app.orchestration_trigger(context_name="context")
def session(context: df.DurableOrchestrationContext):
    result = yield context.call_activity_with_retry("slow", df.RetryOptions(1000, 2), context.get_input())
    return result


@app.activity_trigger(input_name="payload")
async def echo(payload):
    return payload


@app.activity_trigger(input_name="value")
def sync_double(value):  # the worker runs sync activities in a thread
    return value * 2


@app.orchestration_trigger(context_name="context")
def uses_real_activities(context: df.DurableOrchestrationContext):
    a = yield context.call_activity("echo", [1, 2])
    b = yield context.call_activity("sync_double", 21)
    return [a, b]


def index() -> FunctionIndex:
    return FunctionIndex.from_app(app)  # cached: get_functions() runs once per app


@pytest.fixture
def vclock():
    c = VirtualClock(T0)
    yield c
    c.close()


@pytest.fixture
async def make(vclock):
    engines = []
    clocks = []

    def _make(overrides=None, clock=None, **kw):
        if clock is not None:
            clocks.append(clock)
        eng = DurableEngine(index(), clock=clock or vclock, activity_overrides=overrides or {}, **kw)
        engines.append(eng)
        return eng

    yield _make
    for eng in engines:
        await eng.aclose()
    for clock in clocks:
        getattr(clock, "close", lambda: None)()


def shape(history: list[dict]) -> list[tuple]:
    out = []
    for e in history:
        kind = EventType(e["EventType"]).name
        fields = [kind, e["EventId"], e["Timestamp"][11:19]]
        if kind in ("TaskScheduled", "EventRaised"):
            fields.append(e["Name"])
        if kind in ("TaskCompleted", "TaskFailed"):
            fields.append(e["TaskScheduledId"])
        if kind == "TimerCreated":
            fields.append(e["FireAt"][11:19])
        if kind == "TimerFired":
            fields.append(e["TimerId"])
        out.append(tuple(fields))
    return out


async def test_sample_history_ids_match_reference(make, vclock):
    vclock.auto_advance = False
    attempts = {"n": 0}

    async def hangup_call(payload):
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise ConnectionError("provider 503")
        return None

    session_done = asyncio.Event()

    async def run_call_session(call):
        await session_done.wait()
        return {"ok": True}

    eng = make({"run_call_session": run_call_session, "hangup_call": hangup_call,
                "publish_call_record": lambda p: "rec-1"})
    await eng.start_new("call_orchestrator", "call-1", {"call_id": "call-1"})
    await vclock.advance(600)
    await eng.raise_event("call-1", "operator_hangup", {"operator": "alice"})
    await vclock.advance(2)
    await vclock.advance(0)
    status = eng.get_status("call-1")
    assert status["runtimeStatus"] == "Completed" and status["output"] == "rec-1"
    assert shape(eng.history("call-1")) == [
        ("OrchestratorStarted", -1, "00:00:00"),
        ("ExecutionStarted", -1, "00:00:00"),
        ("TaskScheduled", 0, "00:00:00", "run_call_session"),
        ("TimerCreated", 1, "00:00:00", "01:00:00"),
        ("OrchestratorCompleted", -1, "00:00:00"),
        ("OrchestratorStarted", -1, "00:10:00"),
        ("EventRaised", -1, "00:10:00", "operator_hangup"),
        ("TaskScheduled", 2, "00:10:00", "hangup_call"),
        ("OrchestratorCompleted", -1, "00:10:00"),
        ("OrchestratorStarted", -1, "00:10:00"),
        ("TaskFailed", -1, "00:10:00", 2),
        ("TimerCreated", 3, "00:10:00", "00:10:02"),          # retry timer (DTFx side)
        ("OrchestratorCompleted", -1, "00:10:00"),
        ("OrchestratorStarted", -1, "00:10:02"),
        ("TimerFired", -1, "00:10:02", 3),
        ("TaskScheduled", 4, "00:10:02", "hangup_call"),      # attempt 2
        ("OrchestratorCompleted", -1, "00:10:02"),
        ("OrchestratorStarted", -1, "00:10:02"),
        ("TaskCompleted", -1, "00:10:02", 4),
        ("TaskScheduled", 5, "00:10:02", "publish_call_record"),
        ("OrchestratorCompleted", -1, "00:10:02"),
        ("OrchestratorStarted", -1, "00:10:02"),
        ("TaskCompleted", -1, "00:10:02", 5),
        ("ExecutionCompleted", -1, "00:10:02"),
        ("OrchestratorCompleted", -1, "00:10:02"),
    ]
    failed = iter_events(eng.history("call-1"), EventType.TaskFailed)[0]
    assert failed["Reason"] == "Activity function 'hangup_call' failed: ConnectionError: provider 503"
    assert all(e["IsPlayed"] for e in eng.history("call-1"))


async def test_determinism_check_catches_wall_clock_timer(make):
    # Start the virtual clock at wall-clock time so the bad timer is a plain 1-hour timer
    # (one more than 6 days ahead of the virtual time would become a LongTimerTask whose first
    # chunk is computed from current_utc_datetime - deterministic by accident).
    clock = VirtualClock(dt.datetime.now(UTC))
    eng = make({}, clock=clock)
    await eng.start_new("nondeterministic", "bad", None)
    status = await eng.wait_for_completion("bad", 5)
    assert status["runtimeStatus"] == "Failed"
    assert "Non-Deterministic workflow detected" in status["output"]
    assert "action #1 CreateTimer" in status["output"]


async def test_determinism_relaxed_mode_compares_kind_and_name_only(make):
    eng = make({}, clock=VirtualClock(dt.datetime.now(UTC)), strict_determinism=False)
    await eng.start_new("nondeterministic", "bad", None)
    status = await eng.wait_for_completion("bad", 5)
    assert status["runtimeStatus"] == "Completed"


async def test_determinism_check_catches_changed_activity_name(make):
    _flip["n"] = 0
    eng = make({}, strict_determinism=False)
    await eng.start_new("branchy", "bad", None)
    status = await eng.wait_for_completion("bad", 5)
    assert status["runtimeStatus"] == "Failed"
    assert "action #0 CallActivity 'echo' is in history but the replay produced CallActivity 'boom'" \
        in status["output"]


async def test_activity_io_json_round_trip(make):
    seen = []

    def echo_override(value):
        seen.append(value)
        if isinstance(value, dict) and "set" in value:
            return {1, 2}             # not JSON: the worker's converter fails the activity
        return tuple(value["items"])  # a tuple comes back as a list

    eng = make({"echo": echo_override})
    await eng.start_new("echo_twice", "io", {"items": [1, "a", None]})
    status = await eng.wait_for_completion("io", 5)
    assert status["runtimeStatus"] == "Completed"
    assert seen == [{"items": [1, "a", None]}, {"set": "x"}]
    assert status["output"]["first"] == [1, "a", None]
    assert "Activity function 'echo' failed: ValueError: activity trigger output must be json serializable" \
        in status["output"]["second"]


async def test_registered_activities_called_like_the_worker(make):
    eng = make({})  # no overrides: the DFApp's own async and sync activity functions
    await eng.start_new("uses_real_activities", "real", None)
    status = await eng.wait_for_completion("real", 5)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == [[1, 2], 42]


async def test_unknown_activity_fails_the_task(make):
    eng = make({})
    eng.functions = index()
    await eng.start_new("session", "x", {"a": 1})   # "slow" is not registered anywhere
    status = await eng.wait_for_completion("x", 5)
    assert status["runtimeStatus"] == "Failed"
    assert "The function 'slow' doesn't exist" in status["output"]


async def test_long_timer_is_split_into_chunks(make, vclock):
    eng = make({})
    await eng.start_new("long_timer", "lt", None)
    status = await eng.wait_for_completion("lt", 5)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == "2025-01-11T00:00:00Z"
    created = iter_events(eng.history("lt"), EventType.TimerCreated)
    assert [(e["EventId"], parse_ts(e["FireAt"])) for e in created] == [
        (0, T0 + dt.timedelta(days=3)), (1, T0 + dt.timedelta(days=6)), (2, T0 + dt.timedelta(days=10))]


async def test_long_timer_settings_are_configurable(make):
    eng = make({}, settings=ReplaySettings(long_running_timer_interval="5.00:00:00",
                                           maximum_short_timer_duration="7.00:00:00"))
    await eng.start_new("long_timer", "lt", None)
    await eng.wait_for_completion("lt", 5)
    created = iter_events(eng.history("lt"), EventType.TimerCreated)
    assert [parse_ts(e["FireAt"]) - T0 for e in created] == [dt.timedelta(days=5), dt.timedelta(days=10)]


@pytest.mark.filterwarnings("ignore:Potential duplicate Task completion:UserWarning")
async def test_event_raised_before_wait_is_buffered_by_the_sdk(make, vclock):
    # The SDK parks an EventRaised nobody waits for in deferred_tasks (with that warning).
    vclock.auto_advance = False
    release = asyncio.Event()

    async def echo_override(value):
        await release.wait()
        return value

    eng = make({"echo": echo_override})
    await eng.start_new("activity_then_event", "buf", None)
    await vclock.advance(1)
    await eng.raise_event("buf", "approve", {"ok": True})   # nobody waits for it yet
    await vclock.advance(1)
    assert eng.get_status("buf")["runtimeStatus"] == "Running"
    release.set()
    status = await eng.wait_for_completion("buf", 5)
    assert status["output"] == {"first": "first", "approval": {"ok": True}}


async def test_is_replaying_logs_once_per_step(make, caplog):
    eng = make({})
    with caplog.at_level(logging.INFO, logger="tests.workflow.orchestrators"):
        await eng.start_new("logs_once", "logs", None)
        status = await eng.wait_for_completion("logs", 5)
    assert status["runtimeStatus"] == "Completed"
    assert [r.getMessage() for r in caplog.records if r.name == "tests.workflow.orchestrators"] == \
        ["step 0", "step 1", "step 2"]


async def test_orchestrator_exception_fails_instance(make):
    eng = make({})
    await eng.start_new("raises", "r", None)
    status = await eng.wait_for_completion("r", 5)
    assert status["runtimeStatus"] == "Failed"
    assert status["output"] == "orchestrator bug"
    assert iter_events(eng.history("r"), EventType.ExecutionCompleted)[0]["OrchestrationStatus"] == "Failed"


async def test_instance_management(make, vclock):
    release = asyncio.Event()

    async def slow(value):
        await release.wait()
        return value

    eng = make({"slow": slow})
    with pytest.raises(UnknownFunctionError):
        await eng.start_new("nope", "x", None)
    await eng.start_new("session", "s1", {"n": 1})
    with pytest.raises(InstanceExistsError):
        await eng.start_new("session", "s1", {"n": 2})
    with pytest.raises(InstanceNotFound):
        await eng.raise_event("missing", "e", None)
    await vclock.wait_idle()
    status = eng.get_status("s1", show_history=True, show_input=False)
    assert set(status) == {"name", "instanceId", "runtimeStatus", "input", "customStatus", "output",
                           "createdTime", "lastUpdatedTime", "historyEvents"}
    assert status["input"] is None and status["runtimeStatus"] == "Running"
    assert status["createdTime"] == "2025-01-01T00:00:00Z"
    assert [e["EventType"] for e in status["historyEvents"]] == ["ExecutionStarted", "TaskScheduled"]
    await eng.terminate("s1", "operator said so")
    status = await eng.wait_for_completion("s1", 5)
    assert status["runtimeStatus"] == "Terminated" and status["output"] == "operator said so"
    with pytest.raises(InstanceNotRunningError):
        await eng.raise_event("s1", "e", None)
    # a terminated/completed instance may be started again with the same id
    release.set()
    await eng.start_new("session", "s1", {"n": 3})
    status = await eng.wait_for_completion("s1", 5)
    assert status["runtimeStatus"] == "Completed" and status["output"] == {"n": 3}
    assert eng.get_status("nope") is None
    assert [s["instanceId"] for s in eng.list_instances(runtime_status=["Completed"])] == ["s1"]
    assert eng.list_instances(created_from=T0 + S) == []


async def test_many_concurrent_instances_virtual_clock(make, vclock):
    async def slow(value):
        await vclock.sleep_until(vclock.now() + dt.timedelta(seconds=value["seconds"]))
        return value

    eng = make({"slow": slow})
    ids = [await eng.start_new("session", f"c{i}", {"seconds": 60 + i}) for i in range(50)]
    statuses = [await eng.wait_for_completion(i, 10) for i in ids]
    assert all(s["runtimeStatus"] == "Completed" for s in statuses)
    for i, s in enumerate(statuses):
        assert s["output"] == {"seconds": 60 + i}
        assert parse_ts(eng.history(s["instanceId"])[-1]["Timestamp"]) == T0 + (60 + i) * S


async def test_many_concurrent_instances_real_clock(make):
    async def slow(value):
        await asyncio.sleep(0.3)   # each "call" holds its activity; all at once
        return value

    eng = make({"slow": slow}, clock=RealClock())
    started = time.monotonic()
    ids = [await eng.start_new("session", f"r{i}", {"i": i}) for i in range(50)]
    statuses = await asyncio.gather(*(eng.wait_for_completion(i, 10) for i in ids))
    assert all(s["runtimeStatus"] == "Completed" for s in statuses)
    assert time.monotonic() - started < 3.0


async def test_kill_activity_exhausts_retries(make, vclock):
    vclock.auto_advance = False
    release = asyncio.Event()

    async def slow(value):
        await release.wait()
        return value

    eng = make({"slow": slow})
    await eng.start_new("session", "k", {"v": 1})
    await vclock.advance(0)
    assert eng.kill_activity("k", "slow") == 1
    await vclock.advance(1)          # retry timer (1 s), then attempt 2
    assert eng.running_activities("k") == ["slow"]
    assert eng.kill_activity("k", "slow") == 1
    await vclock.advance(1)          # the extra timer after the last attempt
    status = eng.get_status("k")
    assert status["runtimeStatus"] == "Failed"
    assert "worker died" in status["output"]
    assert eng.kill_activity("k", "slow") == 0


def test_retry_policy_delays_follow_dtfx():
    p = RetryPolicy.from_json({"firstRetryIntervalInMilliseconds": 1000, "maxNumberOfAttempts": 5,
                               "backoffCoefficient": 2, "maxRetryIntervalInMilliseconds": 5000})
    assert [p.delay_after(n).total_seconds() for n in range(5)] == [1, 2, 4, 5, 5]
    plain = RetryPolicy.from_json({"firstRetryIntervalInMilliseconds": 2000, "maxNumberOfAttempts": 3})
    assert [plain.delay_after(n).total_seconds() for n in range(3)] == [2, 2, 2]


def test_function_index_from_app_is_cached():
    assert index().orchestrators.keys() == index().orchestrators.keys()
    assert {"echo", "sync_double"} <= set(index().activities)
