"""Call records: one JSON document per finished call, published to a storage queue for downstream systems.

Schema ``switchboard.call-record/1`` (documented in docs/engine.md). Delivery is at-least-once: the publishing
activity may be retried, so consumers deduplicate by ``id`` (= call_id).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

from .outcomes import call_outcome
from .payloads import CallInput, CallRecord, CallSummary, EndedEarly, TokenUsage
from .phone import mask as phone_mask
from .storage import storage_client_options
from .telemetry import traced_publish
from .transcript import iso, parse_iso, utc_now

log = logging.getLogger("switchboard.records")

SCHEMA = "switchboard.call-record/1"
# Queue messages hold at most 64 KiB; base64 (what Functions queue triggers expect) makes 4 bytes of 3, so the
# JSON may use 48 KiB. Leave some room.
MAX_RECORD_BYTES = 46 * 1024


def mask_number(value: str | None) -> str | None:
    """Defensive re-masking: numbers arrive masked (``+1425***1212``); a full number never leaves here."""
    if not value or "*" in value:
        return value
    return phone_mask(value)


def build_record(
    call: CallInput,
    summary: CallSummary | EndedEarly | None,
    ended_by: str,
    turns: list[dict[str, Any]],
    *,
    transfer_target: str | None = None,
    now: datetime | None = None,
    hangup_confirmed: bool | None = None,
    hung_up_at: str | None = None,
    analysis: dict[str, Any] | None = None,
    analysis_error: str | None = None,
) -> CallRecord:
    """The record of one call. ``summary`` is converse's result, or None when converse failed entirely; then the
    transcript comes from the turns table and the outcome is ``failed``. The outcome follows
    :func:`shared.outcomes.call_outcome`. ``now`` is when the call ended, for a summary without ``ended_at``
    (default: the moment of building, which a delayed publish makes late). ``hangup_confirmed`` is whether the
    platform confirmed the call is over (None: not known, e.g. the webhook's own hangup of an unstarted call);
    ``hung_up_at`` is when the orchestrator's hangup of a call that converse had already left was confirmed:
    the line was up until then, so the record ends there. ``analysis`` / ``analysis_error``: the post-call
    analysis (docs/analysis.md), or why it is missing; the keys appear only for a profile with analysis."""
    accepted_at = call.get("accepted_at")
    fallback_end = iso(now or utc_now())
    told: Mapping[str, Any] = summary or {}  # what converse reported (possibly only outcome and reason), if anything
    if summary is not None:
        detail = told.get("reason") or ""
        ended_at = told.get("ended_at") or fallback_end
        if hung_up_at and parse_iso(hung_up_at) > parse_iso(ended_at):
            ended_at = hung_up_at
        transcript = told.get("transcript") or []
    else:
        detail = "the conversation engine did not return a summary; transcript from the turns table"
        ended_at = fallback_end
        transcript = turns
    outcome = call_outcome(summary, ended_by)
    duration = None
    if accepted_at:
        duration = round(max(0.0, (parse_iso(ended_at) - parse_iso(accepted_at)).total_seconds()), 3)
    profile = call.get("profile") or {}
    record: CallRecord = {
        "schema": SCHEMA,
        "id": call["call_id"],
        "call_id": call["call_id"],
        "outcome": outcome,
        "ended_by": ended_by,
        "reason": detail,
        "accepted_at": accepted_at,
        "ended_at": ended_at,
        "duration_seconds": duration,
        "caller": mask_number(call.get("caller")),
        "dialed": mask_number(call.get("dialed")),
        "profile_name": call.get("profile_name"),
        "transfer_target": transfer_target or told.get("transfer_target"),
        "transcript": [{"role": t.get("role"), "text": t.get("text"), "at": t.get("at")} for t in transcript],
        "tools": told.get("tools") or [],
        "digits": told.get("digits") or "",
        "usage": told.get("usage") or TokenUsage(input_tokens=0, output_tokens=0, total_tokens=0),
        "voice": profile.get("voice"),
        "hangup_confirmed": hangup_confirmed,
        "greeting_ms": told.get("greeting_ms"),
        "sip_status": None,
    }
    if analysis is not None or analysis_error is not None:
        record["analysis"] = analysis
        if analysis_error is not None:
            record["analysis_error"] = analysis_error
    return record


def decision_record(
    call_id: str,
    outcome: str,
    reason: str,
    *,
    sip_status: int | None,
    caller: str | None,
    dialed: str | None,
    profile_name: str | None,
    decided_at: str,
) -> CallRecord:
    """The record of a call that was never accepted (``outcome`` ``rejected`` or ``referred``), with the same
    schema as an answered call's: ``reason`` is the routing reason (after_hours, caller_denied, at_capacity...),
    ``sip_status`` the SIP code of a reject, ``ended_by`` ``routing``, no transcript."""
    return {
        "schema": SCHEMA,
        "id": call_id,
        "call_id": call_id,
        "outcome": outcome,
        "ended_by": "routing",
        "reason": reason,
        "accepted_at": None,
        "ended_at": decided_at,
        "duration_seconds": None,
        "caller": mask_number(caller),
        "dialed": mask_number(dialed),
        "profile_name": profile_name,
        "transfer_target": None,
        "transcript": [],
        "tools": [],
        "digits": "",
        "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
        "voice": None,
        "greeting_ms": None,
        "sip_status": sip_status,
        "hangup_confirmed": None,
    }


def encode_record(record: dict[str, Any], limit: int = MAX_RECORD_BYTES) -> str:
    """JSON text of the record, shortened to fit a queue message: the middle of a very long transcript goes
    (the turns table still holds all of it) and ``transcript_truncated`` says how many turns were left out."""
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode()) <= limit:
        return text
    turns = list(record.get("transcript") or [])
    dropped = 0
    while turns and len(text.encode()) > limit:
        del turns[len(turns) // 2]
        dropped += 1
        text = json.dumps({**record, "transcript": turns, "transcript_truncated": dropped},
                          separators=(",", ":"), ensure_ascii=False)
    if len(text.encode()) > limit:
        raise ValueError(f"call record {record.get('id')} does not fit in a queue message")
    return text


class RecordPublisher:
    """Sends records to the call-records queue, base64-encoded: Functions queue triggers decode base64 by
    default (``host.json`` ``messageEncoding``), so a consumer function gets the JSON text as is."""

    def __init__(self, queue: QueueClient) -> None:
        self._queue = queue
        self._created = False
        self._lock = asyncio.Lock()

    @classmethod
    def from_connection_string(cls, connection_string: str, queue_name: str = "call-records") -> RecordPublisher:
        return cls(QueueClient.from_connection_string(
            connection_string, queue_name, message_encode_policy=TextBase64EncodePolicy(), **storage_client_options()))

    @classmethod
    def from_settings(cls, storage: Any, credential: Any = None) -> RecordPublisher:
        """From ``shared.settings.StorageSettings``: connection string, or ``queue_uri`` + an async credential."""
        if storage.connection_string:
            return cls.from_connection_string(storage.connection_string, storage.records_queue)
        if credential is None:
            raise ValueError("an async credential is required when storage uses identity (queue_uri)")
        return cls(QueueClient(storage.queue_uri, storage.records_queue, credential=credential,
                               message_encode_policy=TextBase64EncodePolicy(), **storage_client_options()))

    async def _ensure_queue(self) -> None:
        if self._created:
            return
        async with self._lock:
            if not self._created:
                with contextlib.suppress(ResourceExistsError):
                    await self._queue.create_queue()
                self._created = True

    @traced_publish
    async def publish(self, record: dict[str, Any]) -> str:
        """Enqueue the record; returns its id (the call_id)."""
        await self._ensure_queue()
        await self._queue.send_message(encode_record(record))
        log.info("call %s: record published (%s)", record["id"], record.get("outcome"))
        return record["id"]

    async def aclose(self) -> None:
        await self._queue.close()
