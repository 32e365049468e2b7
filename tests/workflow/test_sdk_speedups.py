"""The Durable SDK speed-ups give exactly what the SDK's own parsing gives, and are installed in the worker."""

from __future__ import annotations

import importlib

import pytest
from dateutil.parser import parse as dateutil_parse

from call_workflow import orchestrator  # noqa: F401  (installs the speed-ups, as the worker does)
from call_workflow.sdk_speedups import install, parse_timestamp


@pytest.mark.parametrize("text", [
    "2026-11-25T12:00:00.1234567Z",   # the Durable Task Framework's seven digits
    "2026-11-25T12:00:00.123456Z",    # the local runner's six
    "2026-11-25T12:00:00.9999999Z",   # truncated, never rounded up into the next second
    "2026-11-25T12:00:00Z",
    "2026-11-25T12:00:00.5+01:00",
    "2026-11-25T12:00:00.1234567-08:00",
    "2026-11-25T12:00:00",            # no zone: dateutil's naive result, unchanged
    "2026-11-25 12:00:00Z",           # not the ISO 'T' form: dateutil
    "Nov 25 2026 12:00",
])
def test_timestamps_parse_to_the_same_instant_as_dateutil(text: str) -> None:
    ours, theirs = parse_timestamp(text), dateutil_parse(text)
    assert ours == theirs and (ours.tzinfo is None) == (theirs.tzinfo is None)
    assert ours.utcoffset() == theirs.utcoffset()


def test_garbage_fails_like_dateutil() -> None:
    with pytest.raises(ValueError):
        parse_timestamp("2026-11-25Tnot a time")


def test_the_sdk_is_patched_once_and_builds_its_executor_the_same_way() -> None:
    history = importlib.import_module("azure.durable_functions.models.history.HistoryEvent")
    executor = importlib.import_module("azure.durable_functions.models.TaskOrchestrationExecutor")
    assert history.dt_parse is parse_timestamp
    assert install() and install()  # idempotent
    a, b = executor.TaskOrchestrationExecutor(), executor.TaskOrchestrationExecutor()
    assert type(next(iter(a.event_to_SetTaskValuePayload.values()))) is type(
        next(iter(b.event_to_SetTaskValuePayload.values())))
    event = history.HistoryEvent(EventType=0, EventId=-1, IsPlayed=False, Timestamp="2026-11-25T12:00:00.1234567Z")
    assert event.timestamp == dateutil_parse("2026-11-25T12:00:00.1234567Z")
