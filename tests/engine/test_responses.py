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
    without_tags = [{k: v for k, v in e.get("response", {}).items() if k != "metadata"} for e in sent]
    assert without_tags == [{"instructions": "Say exactly: \"hello\""}, {}]
    tags = [e["response"]["metadata"]["switchboard_request"] for e in sent]
    assert len(set(tags)) == 2  # every line of ours is tagged so its response can be told from the service's own
    assert not q.waiting


async def test_a_refused_line_is_requeued_once_and_the_flag_is_never_sent() -> None:
    q, sent = _queue()
    q.request("line")
    for n in range(2):
        q.error({"code": "conversation_already_has_active_response", "event_id": sent[-1]["event_id"]})
        q.done(f"resp_vad{n}")  # the response that got in first ends
    assert len(sent) == 2  # the original and one retry, not a third
    assert all("_requeued" not in e for e in sent)


async def test_a_refusal_holds_the_line_until_a_response_we_never_saw_start_is_done() -> None:
    q, sent = _queue()
    q.request("first")
    q.force()  # the watchdog: we no longer know what is active
    q.error({"code": "conversation_already_has_active_response", "event_id": sent[-1]["event_id"]})
    assert len(sent) == 1 and q.busy and q.waiting  # not sent straight back into the same refusal
    q.done("resp_unseen")
    assert len(sent) == 2 and sent[-1]["response"]["instructions"] == "first"


async def test_overdue_lines_are_forced_out() -> None:
    q, sent = _queue()
    q.request("first")
    q.request("second")
    assert len(sent) == 1 and not q.overdue(0.05)
    await asyncio.sleep(0.06)
    assert q.overdue(0.05)
    q.force()
    assert len(sent) == 2 and not q.waiting


async def test_a_response_without_our_tag_is_not_taken_for_ours_once_the_service_echoes_tags() -> None:
    q, sent = _queue()
    q.request("first")
    q.created("resp_1", sent[0]["response"]["metadata"])  # the service echoes our tag
    q.done("resp_1")
    q.request("second")
    q.created("resp_auto", None)  # server VAD's own response: our line is still unanswered
    assert q.unanswered
    q.done("resp_auto")
    q.created("resp_2", sent[1]["response"]["metadata"])
    assert not q.unanswered


async def test_without_an_echo_the_oldest_pending_line_is_taken_as_answered() -> None:
    q, sent = _queue()
    q.request("first")
    q.created("resp_1", None)
    assert not q.unanswered
