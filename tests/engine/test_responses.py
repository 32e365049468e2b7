"""The response queue on its own: one response.create at a time, coalescing, one re-queue after a refusal."""

from __future__ import annotations

import asyncio
from typing import Any

from shared.responses import ResponseQueue


def _queue() -> tuple[ResponseQueue, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    def send(event: dict[str, Any]) -> str:
        event.setdefault("event_id", f"evt_{len(sent) + 1}")
        sent.append(dict(event))
        return event["event_id"]

    return ResponseQueue(send, lambda: None), sent


async def test_lines_wait_for_the_active_response_and_plain_creates_coalesce() -> None:
    q, sent = _queue()
    q.request("Say exactly: \"hello\"")
    assert len(sent) == 1 and q.busy
    q.request(coalesce=True)
    q.request(coalesce=True)  # a plain create already waits: it covers this one
    assert len(sent) == 1 and q.waiting
    q.created("resp_1")
    q.done("resp_1")
    assert [e.get("response") for e in sent] == [{"instructions": "Say exactly: \"hello\""}, None]
    assert not q.waiting


async def test_a_refused_line_is_requeued_once_and_the_flag_is_never_sent() -> None:
    q, sent = _queue()
    q.request("line")
    for _ in range(2):
        q.error({"code": "conversation_already_has_active_response", "event_id": sent[-1]["event_id"]})
    assert len(sent) == 2  # the original and one retry, not a third
    assert all("_requeued" not in e for e in sent)


async def test_overdue_lines_are_forced_out() -> None:
    q, sent = _queue()
    q.request("first")
    q.request("second")
    assert len(sent) == 1 and not q.overdue(0.05)
    await asyncio.sleep(0.06)
    assert q.overdue(0.05)
    q.force()
    assert len(sent) == 2 and not q.waiting
