"""Host-shaped history events (DTFx ``HistoryEvent`` as Newtonsoft serialises it).

Every event carries ``EventType`` (int), ``EventId`` (int, -1 when not applicable),
``IsPlayed`` and ``Timestamp`` (``%Y-%m-%dT%H:%M:%S.%fZ``, UTC). Payloads (``Input``,
``Result``) are JSON *strings*, exactly as the host stores them.

Events are plain dicts so the engine can hand them to the SDK unchanged
(``HistoryEvent(**event)``) and tests can compare them literally.
"""
from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from .clock import UTC

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class EventType(enum.IntEnum):
    ExecutionStarted = 0
    ExecutionCompleted = 1
    ExecutionFailed = 2
    ExecutionTerminated = 3
    TaskScheduled = 4
    TaskCompleted = 5
    TaskFailed = 6
    SubOrchestrationInstanceCreated = 7
    SubOrchestrationInstanceCompleted = 8
    SubOrchestrationInstanceFailed = 9
    TimerCreated = 10
    TimerFired = 11
    OrchestratorStarted = 12
    OrchestratorCompleted = 13
    EventSent = 14
    EventRaised = 15
    ContinueAsNew = 16
    GenericEvent = 17
    HistoryState = 18
    ExecutionSuspended = 19
    ExecutionResumed = 20


def format_ts(when: dt.datetime) -> str:
    if when.tzinfo is None:
        raise ValueError("naive datetime in history; use tz-aware UTC")
    return when.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def parse_ts(text: str) -> dt.datetime:
    """Parse a DTFx/SDK timestamp (``...Z``, with or without fraction) to aware UTC."""
    s = text.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    # Python 3.11 fromisoformat accepts 1-6 fraction digits; DTFx may emit 7.
    if "." in s:
        head, rest = s.split(".", 1)
        frac = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            frac += rest[i]
            i += 1
        s = f"{head}.{(frac + '000000')[:6]}{rest[i:]}"
    value = dt.datetime.fromisoformat(s)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _event(kind: EventType, when: dt.datetime, event_id: int = -1, **fields: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"EventType": int(kind), "EventId": event_id, "IsPlayed": False,
                          "Timestamp": format_ts(when)}
    ev.update(fields)
    return ev


def orchestrator_started(when: dt.datetime) -> dict:
    return _event(EventType.OrchestratorStarted, when)


def orchestrator_completed(when: dt.datetime) -> dict:
    return _event(EventType.OrchestratorCompleted, when)


def execution_started(when: dt.datetime, name: str, input_json: str | None, instance_id: str,
                      execution_id: str, version: str = "") -> dict:
    # ``Version`` is required by azure-functions-durable 1.7.0 (AttributeError otherwise).
    return _event(EventType.ExecutionStarted, when, Name=name, Version=version, Input=input_json,
                  OrchestrationInstance={"InstanceId": instance_id, "ExecutionId": execution_id},
                  ParentInstance=None)


def execution_completed(when: dt.datetime, status: str, result_json: str | None) -> dict:
    kind = EventType.ExecutionCompleted
    return _event(kind, when, OrchestrationStatus=status, Result=result_json)


def execution_terminated(when: dt.datetime, reason_json: str | None) -> dict:
    return _event(EventType.ExecutionTerminated, when, Input=reason_json)


def task_scheduled(when: dt.datetime, task_id: int, name: str, input_json: str | None) -> dict:
    return _event(EventType.TaskScheduled, when, task_id, Name=name, Version="", Input=input_json)


def task_completed(when: dt.datetime, scheduled_id: int, result_json: str | None) -> dict:
    return _event(EventType.TaskCompleted, when, TaskScheduledId=scheduled_id, Result=result_json)


def task_failed(when: dt.datetime, scheduled_id: int, reason: str, details: str | None) -> dict:
    return _event(EventType.TaskFailed, when, TaskScheduledId=scheduled_id, Reason=reason,
                  Details=details)


def timer_created(when: dt.datetime, timer_id: int, fire_at: dt.datetime) -> dict:
    return _event(EventType.TimerCreated, when, timer_id, FireAt=format_ts(fire_at))


def timer_fired(when: dt.datetime, timer_id: int, fire_at: dt.datetime) -> dict:
    return _event(EventType.TimerFired, when, TimerId=timer_id, FireAt=format_ts(fire_at))


def event_raised(when: dt.datetime, name: str, input_json: str | None) -> dict:
    return _event(EventType.EventRaised, when, Name=name, Input=input_json)


def type_name(event: dict) -> str:
    try:
        return EventType(event["EventType"]).name
    except ValueError:
        return str(event["EventType"])


def describe(event: dict) -> str:
    """One-line human-readable form (used in determinism messages and debugging)."""
    keys = ("EventId", "Name", "TaskScheduledId", "TimerId", "FireAt", "Reason")
    extra = ", ".join(f"{k}={event[k]!r}" for k in keys if event.get(k) not in (None, -1))
    return f"{type_name(event)}({extra})"
