"""The engine's task hub on disk: a process that dies mid-orchestration is carried on by the next one.

A crash is simulated by copying the store folder at the moment of death and starting a second engine on the
copy; the first engine is then closed (whatever it does after the copy can't reach the second one)."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import shutil
import stat
from pathlib import Path

import pytest

from localrun.durable import DurableEngine, EventType, TaskHubStore, VirtualClock
from localrun.durable.history import parse_ts

from .test_engine import index, shape

UTC = dt.UTC
T0 = dt.datetime(2025, 1, 1, tzinfo=UTC)


class Hub:
    """Engines over one task-hub folder, and crashes between them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0
        self.engines: list[DurableEngine] = []
        self.clocks: list[VirtualClock] = []

    @property
    def folder(self) -> Path:
        return self.root / f"hub{self.generation}"

    def engine(self, overrides: dict | None = None, clock: VirtualClock | None = None) -> DurableEngine:
        clock = clock or VirtualClock(T0, auto_advance=False)
        self.clocks.append(clock)
        eng = DurableEngine(index(), clock=clock, activity_overrides=overrides or {},
                            store=TaskHubStore(self.folder))
        self.engines.append(eng)
        return eng

    def crash(self) -> None:
        """The process dies now: the next engine sees the folder exactly as it is at this instant."""
        shutil.copytree(self.folder, self.root / f"hub{self.generation + 1}")
        self.generation += 1

    async def close(self) -> None:
        for eng in self.engines:
            await eng.aclose()
        for clock in self.clocks:
            clock.close()


@pytest.fixture
async def hub(tmp_path):
    h = Hub(tmp_path)
    yield h
    await h.close()


def full_disk(*_args, **_kw):
    raise OSError(28, "No space left on device")


def blocked():
    """An activity that never finishes (the worker running it is about to die)."""
    runs = []

    async def run(value):
        runs.append(value)
        await asyncio.Event().wait()

    return run, runs


async def test_activity_in_flight_at_the_crash_runs_again_and_the_orchestration_completes(hub):
    session, first_runs = blocked()
    first = hub.engine({"run_call_session": session, "publish_call_record": lambda v: {"published": v}})
    await first.start_new("call_orchestrator", "c1", {"call_id": "c1"})
    await hub.clocks[0].advance(0)
    assert first_runs == [{"call_id": "c1"}]
    hub.crash()
    await first.aclose()

    second_runs = []

    def session_done(value):
        second_runs.append(value)
        return "caller hung up"

    second = hub.engine({"run_call_session": session_done, "publish_call_record": lambda v: {"published": v}})
    assert await second.resume() == ["c1"]
    status = await second.wait_for_completion("c1", 5)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == {"published": {"call_id": "c1"}}
    assert second_runs == [{"call_id": "c1"}]  # at-least-once: the lost attempt ran again
    history = second.history("c1")
    # One schedule, one answer: the re-run answered the original TaskScheduled (id 0), the timer kept id 1.
    scheduled = [(e["EventId"], e["Name"]) for e in history if e["EventType"] == EventType.TaskScheduled]
    assert scheduled == [(0, "run_call_session"), (2, "publish_call_record")]
    assert [e["TaskScheduledId"] for e in history if e["EventType"] == EventType.TaskCompleted] == [0, 2]
    [created] = [e for e in history if e["EventType"] == EventType.TimerCreated]
    assert parse_ts(created["FireAt"]) == T0 + dt.timedelta(hours=1)


async def test_a_deadline_that_passed_while_the_host_was_down_fires_at_once(hub):
    session, _ = blocked()
    published = []
    first = hub.engine({"run_call_session": session, "publish_call_record": published.append})
    await first.start_new("call_orchestrator", "c2", {"call_id": "c2"})
    await hub.clocks[0].advance(0)
    hub.crash()
    await first.aclose()
    assert published == []

    # The host comes back two hours later: the one-hour timer is overdue.
    still_blocked, reruns = blocked()
    later = VirtualClock(T0 + dt.timedelta(hours=2), auto_advance=False)
    second = hub.engine({"run_call_session": still_blocked, "publish_call_record": published.append}, clock=later)
    await second.resume()
    await later.advance(0)
    status = await second.wait_for_completion("c2", 5)
    assert status["runtimeStatus"] == "Completed"
    assert published == [{"call_id": "c2"}]  # the timer won the race; the record went out once
    assert reruns == [{"call_id": "c2"}]
    fired = [e for e in second.history("c2") if e["EventType"] == EventType.TimerFired]
    assert [e["TimerId"] for e in fired] == [1]


async def test_an_event_raised_just_before_the_crash_is_not_lost(hub):
    first = hub.engine({"echo": lambda v: v})
    await first.start_new("activity_then_event", "e1")
    await hub.clocks[0].advance(0)
    assert first.get_status("e1")["runtimeStatus"] == "Running"
    await first.raise_event("e1", "approve", {"by": "operator"})
    hub.crash()  # before the worker processed the event
    await first.aclose()

    second = hub.engine({"echo": lambda v: v})
    assert await second.resume() == ["e1"]
    status = await second.wait_for_completion("e1", 5)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == {"first": "first", "approval": {"by": "operator"}}


async def test_a_pending_retry_carries_on_with_the_same_ids(hub):
    session, _ = blocked()
    first = hub.engine({"slow": session})
    await first.start_new("session", "r1", {"v": 1})
    await hub.clocks[0].advance(0)
    assert first.kill_activity("r1", "slow") == 1
    await hub.clocks[0].advance(0)  # the failure is recorded and the retry timer (1 s) created
    hub.crash()
    await first.aclose()

    second = hub.engine({"slow": lambda v: {"ok": v}})
    await second.resume()
    await hub.clocks[-1].advance(1)
    status = await second.wait_for_completion("r1", 5)
    assert status["runtimeStatus"] == "Completed" and status["output"] == {"ok": {"v": 1}}
    assert [s[:2] + s[3:] for s in shape(second.history("r1"))
            if s[0] not in ("OrchestratorStarted", "OrchestratorCompleted")] == [
        ("ExecutionStarted", -1),
        ("TaskScheduled", 0, "slow"),
        ("TaskFailed", -1, 0),
        ("TimerCreated", 1, "00:00:01"),
        ("TimerFired", -1, 1),
        ("TaskScheduled", 2, "slow"),
        ("TaskCompleted", -1, 2),
        ("ExecutionCompleted", -1),
    ]


async def test_finished_instances_stay_queryable_and_can_be_started_again(hub):
    first = hub.engine({"echo": lambda v: v})
    await first.start_new("echo_twice", "done", {"v": "a"})
    await hub.clocks[0].advance(0)
    assert (await first.wait_for_completion("done", 5))["runtimeStatus"] == "Completed"
    hub.crash()
    await first.aclose()

    second = hub.engine({"echo": lambda v: v})
    assert await second.resume() == []  # nothing to carry on
    status = second.get_status("done")
    assert status["runtimeStatus"] == "Completed" and status["output"]["first"] == {"v": "a"}
    assert [s["instanceId"] for s in second.list_instances(runtime_status=["Completed"])] == ["done"]
    await second.start_new("echo_twice", "done", {"v": "b"})  # Durable's default: a finished id may be reused
    assert (await second.wait_for_completion("done", 5))["output"]["first"] == {"v": "b"}


async def test_snapshots_are_private_and_ids_cannot_escape_the_folder(hub):
    eng = hub.engine({"echo": lambda v: v})
    await eng.start_new("echo_twice", "../../etc/x y", 1)
    files = list(hub.folder.iterdir())
    assert [f.name for f in files] == ["..%2F..%2Fetc%2Fx%20y.json"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(hub.folder.stat().st_mode) == 0o700
    assert json.loads(files[0].read_text())["instance_id"] == "../../etc/x y"


async def test_an_unreadable_snapshot_is_skipped_and_the_rest_resume(hub, caplog):
    session, _ = blocked()
    first = hub.engine({"run_call_session": session})
    await first.start_new("call_orchestrator", "good", {"call_id": "good"})
    await hub.clocks[0].advance(0)
    hub.crash()
    await first.aclose()
    (hub.folder / "bad.json").write_text("{not json")
    (hub.folder / "old.json").write_text(json.dumps({"version": 0, "instance_id": "old"}))

    second = hub.engine({"run_call_session": lambda v: "ok", "publish_call_record": lambda v: "rec"})
    with caplog.at_level(logging.ERROR, logger="localrun.durable"):
        assert await second.resume() == ["good"]
    assert (await second.wait_for_completion("good", 5))["runtimeStatus"] == "Completed"
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) == 2 and any("bad.json" in m for m in skipped) and any("version 0" in m for m in skipped)


async def test_start_fails_and_registers_nothing_when_the_hub_cannot_be_written(hub, monkeypatch):
    eng = hub.engine({"echo": lambda v: v})
    monkeypatch.setattr(eng.store, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        await eng.start_new("echo_twice", "x", 1)
    assert eng.get_status("x") is None
    assert not os.listdir(hub.folder)


async def test_an_event_that_cannot_be_saved_is_refused_and_never_delivered(hub, monkeypatch):
    eng = hub.engine({"echo": lambda v: v})
    await eng.start_new("activity_then_event", "e2")
    await hub.clocks[0].advance(0)
    saved = eng.store.save
    monkeypatch.setattr(eng.store, "save", full_disk)
    with pytest.raises(OSError):
        await eng.raise_event("e2", "approve", "lost")
    with pytest.raises(OSError):
        await eng.terminate("e2", "stop")
    await hub.clocks[0].advance(1)
    assert eng.get_status("e2")["runtimeStatus"] == "Running"  # neither reached the orchestration
    monkeypatch.setattr(eng.store, "save", saved)
    await eng.raise_event("e2", "approve", "kept")
    assert (await eng.wait_for_completion("e2", 5))["output"]["approval"] == "kept"


async def test_instances_finished_longer_ago_than_the_retention_are_purged_at_start(hub):
    session, _ = blocked()
    first = hub.engine({"echo": lambda v: v, "run_call_session": session})
    await first.start_new("echo_twice", "old", {"v": 1})
    await hub.clocks[0].advance(0)
    await first.start_new("call_orchestrator", "live", {"call_id": "live"})  # running, however old
    await hub.clocks[0].advance(0)
    hub.crash()
    await first.aclose()

    eight_days_later = VirtualClock(T0 + dt.timedelta(days=8), auto_advance=False)
    second = hub.engine({"run_call_session": session}, clock=eight_days_later)
    assert await second.resume() == ["live"]
    assert second.get_status("old") is None
    assert sorted(f.name for f in hub.folder.iterdir()) == ["live.json"]
