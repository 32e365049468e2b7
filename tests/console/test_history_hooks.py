"""The record publishers write the history table too (Azurite): answered calls through publish_record, declined
calls through the declined-call publisher, which still reaches the queue when the history table fails."""

from __future__ import annotations

import json
from base64 import b64decode
from datetime import date
from types import SimpleNamespace

import pytest
from azure.storage.queue.aio import QueueClient

from call_workflow import runtime
from shared.history import HistoryQuery, HistoryTable
from shared.records import RecordPublisher


@pytest.fixture
async def parts(azurite_connection_string: str, unique_name: str, monkeypatch):
    history = HistoryTable.from_connection_string(azurite_connection_string, "h" + unique_name[1:])
    publisher = RecordPublisher.from_connection_string(azurite_connection_string, "q" + unique_name[1:])
    rt = SimpleNamespace(history=history, publisher=publisher, turns=None)

    async def get():
        return rt

    monkeypatch.setattr(runtime, "get", get)
    yield rt
    await history.aclose()
    await publisher.aclose()


async def _queued(connection_string: str, name: str) -> list[dict]:
    async with QueueClient.from_connection_string(connection_string, name) as queue:
        return [json.loads(b64decode(m.content)) async for m in queue.receive_messages()]


async def test_an_answered_call_is_published_and_stored_once_even_when_retried(parts, azurite_connection_string):
    call = {"call_id": "rtc_hook1", "accepted_at": "2026-11-29T10:00:00Z", "caller": "+14255551212",
            "dialed": "+18005551212", "profile_name": "reception", "profile": {}}
    summary = {"outcome": "completed", "ended_at": "2026-11-29T10:01:00Z", "transcript": [], "greeting_ms": 300}
    for _ in range(2):  # an activity retry
        await runtime.publish_record(call, summary, "caller")
    rows, _ = await parts.history.search(HistoryQuery(date(2026, 11, 29), date(2026, 11, 29)))
    assert [(r["call_id"], r["outcome"], r["greeting_ms"]) for r in rows] == [("rtc_hook1", "completed", 300)]
    assert len(await _queued(azurite_connection_string, parts.publisher._queue.queue_name)) == 2  # at-least-once


async def test_a_declined_call_reaches_the_queue_when_the_history_table_fails(parts, azurite_connection_string,
                                                                              caplog):
    parts.history = HistoryTable.from_connection_string(azurite_connection_string, "bad-name!")  # storage says 400
    declined = {"call_id": "rtc_hook2", "outcome": "rejected", "reason": "after_hours", "sip_status": 480,
                "caller": "+1425***1212", "dialed": "+1800***0100", "profile_name": "closed",
                "decided_at": "2026-11-29T11:00:00Z"}
    await runtime._publish_declined(declined)
    queued = await _queued(azurite_connection_string, parts.publisher._queue.queue_name)
    assert [m["id"] for m in queued] == ["rtc_hook2"]
    assert "not in the history table" in caplog.text
    await parts.history.aclose()
