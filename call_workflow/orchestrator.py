"""The ``call`` orchestrator: one instance per answered call (instance id = call_id).

It races the ``converse`` activity (the live call, retried so a worker crash reattaches
to the same call) against a durable max-duration timer and the operator events
``hangup`` / ``transfer``, ends the call when needed (``hangup_call`` / ``refer_call``)
and always publishes the call record (``publish_call_record``).

Orchestrator rules: deterministic code only - time from ``context.current_utc_datetime``
or the input, no I/O, JSON dicts in and out. Live transcript turns never pass through
here (they stay in the activity and the turns table); the custom status is kept small
and its ``last_turn`` is only filled from the summary when the call ends. The operator
API reads live turn text from the turns table.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import azure.durable_functions as df

from call_workflow import sdk_speedups
from shared.outcomes import call_outcome
from shared.transcript import iso, parse_iso

# The replay runs in this worker on every episode: make its two hot spots cheap (call_workflow/sdk_speedups.py).
sdk_speedups.install()

bp = df.Blueprint()

# The orchestrator's name, and the states of a call that is still live; the webhook and the operator API use both.
ORCHESTRATOR = "call"
LIVE_STATUSES = [df.OrchestrationRuntimeStatus.Running, df.OrchestrationRuntimeStatus.Pending]
# The custom status `state` once the call itself is over (the record may still be on its way).
STATE_ENDED = "ended"

log = logging.getLogger(__name__)

# The converse activity enforces max_duration itself (closing line, then it hangs up),
# so the durable timer is only the backstop for a stuck or lost session. The grace keeps
# the timer from cutting off the activity's own, polite ending.
DEADLINE_GRACE_SECONDS = 15
# After the orchestrator hung up or transferred the call, converse normally returns its
# summary within a second or two (the WebSocket closes). Wait at most this long so the
# record carries the transcript; after that, publish_call_record rebuilds it from the
# turns table.
SUMMARY_WAIT_SECONDS = 20
DEFAULT_MAX_DURATION_SECONDS = 900
LAST_TURN_CHARS = 160

# A worker crash mid-call fails the attempt; the retry reattaches to the same call
# (converse reloads finished turns from the turns table).
CONVERSE_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=3)
CONTROL_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=3)
# A record that will not publish (the queue's role assignment still propagating after a deploy, a storage
# outage) is not given up after one burst of retries: the orchestration pauses and tries again for a day.
PUBLISH_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2000, max_number_of_attempts=5)
PUBLISH_PAUSE = dt.timedelta(minutes=5)
PUBLISH_PATIENCE = dt.timedelta(hours=24)

ENDED_BY_CALL = "call_ended"            # converse returned: the call ended on its own
ENDED_BY_MAX_DURATION = "max_duration"  # the durable timer won
ENDED_BY_HANGUP = "operator_hangup"
ENDED_BY_TRANSFER = "operator_transfer"
ENDED_BY_FAILED = "failed"              # converse failed on every attempt


def call_deadline(call: dict) -> dt.datetime:
    seconds = int(call.get("max_duration_seconds") or DEFAULT_MAX_DURATION_SECONDS)
    return parse_iso(call["accepted_at"]) + dt.timedelta(seconds=seconds + DEADLINE_GRACE_SECONDS)


def turn_view(turn: dict) -> dict:
    """A transcript turn as the custom status and the operator API show it: the text cut short."""
    return {"role": turn.get("role"), "text": str(turn.get("text") or "")[:LAST_TURN_CHARS], "at": turn.get("at")}


def _last_turn(summary: Any) -> dict | None:
    if not isinstance(summary, dict):
        return None
    transcript = summary.get("transcript") or []
    if not transcript or not isinstance(transcript[-1], dict):
        return None
    return turn_view(transcript[-1])


def _transfer_target(payload: Any) -> str | None:
    if isinstance(payload, dict) and isinstance(payload.get("target"), str):
        return payload["target"]
    return None


@bp.function_name(ORCHESTRATOR)
@bp.orchestration_trigger(context_name="context")
def call_orchestrator(context: df.DurableOrchestrationContext):
    call: dict = context.get_input()
    call_id = call["call_id"]
    targets: dict = (call.get("profile") or {}).get("transfer_targets") or {}

    status: dict[str, Any] = {
        "state": "live",
        "caller": call.get("caller"),
        "dialed": call.get("dialed"),
        "profile": call.get("profile_name"),
        "started_at": call.get("accepted_at"),
        "last_turn": None,
    }
    context.set_custom_status(dict(status))

    converse = context.call_activity_with_retry("converse", CONVERSE_RETRY, call)
    deadline = context.create_timer(call_deadline(call))
    hangup_event = context.wait_for_external_event("hangup")
    transfer_event = context.wait_for_external_event("transfer")

    summary: dict | None = None
    ended_by: str | None = None
    control_error: str | None = None
    transfer_target: str | None = None

    while ended_by is None:
        # task_any resolves with the first finished child, a failed one included, and
        # never raises: a failed converse is an Exception in winner.result.
        winner = yield context.task_any([converse, deadline, hangup_event, transfer_event])

        if winner is converse:
            if isinstance(winner.result, Exception):
                ended_by = ENDED_BY_FAILED
                if not context.is_replaying:
                    log.error("call %s: converse failed on every attempt: %s", call_id, winner.result)
                # Nobody is talking to the caller any more: make sure the line is dropped
                # (404 = already gone counts as success).
                control_error = yield from _control(context, "hangup_call",
                                                    {"call_id": call_id, "reason": ENDED_BY_FAILED})
            else:
                summary = winner.result
                ended_by = ENDED_BY_CALL

        elif winner is deadline:
            control_error = yield from _control(context, "hangup_call",
                                                {"call_id": call_id, "reason": ENDED_BY_MAX_DURATION})
            ended_by = ENDED_BY_MAX_DURATION

        elif winner is hangup_event:
            control_error = yield from _control(context, "hangup_call",
                                                {"call_id": call_id, "reason": ENDED_BY_HANGUP})
            ended_by = ENDED_BY_HANGUP

        else:  # transfer_event
            name = _transfer_target(transfer_event.result)
            if name is not None and isinstance(targets.get(name), str):
                error = yield from _control(context, "refer_call",
                                            {"call_id": call_id, "target_uri": targets[name]})
                if error is None:
                    transfer_target = name
                    ended_by = ENDED_BY_TRANSFER
                else:
                    status["note"] = f"transfer to {name} failed"
            else:
                status["note"] = "transfer refused: unknown target"
                if not context.is_replaying:
                    log.warning("call %s: transfer to unknown target %r refused", call_id, name)
            if ended_by is None:
                # The finished event task would win every later task_any again: wait anew.
                context.set_custom_status(dict(status))
                transfer_event = context.wait_for_external_event("transfer")

    if ended_by in (ENDED_BY_MAX_DURATION, ENDED_BY_HANGUP, ENDED_BY_TRANSFER):
        if not converse.is_completed:
            # The call is being torn down; give converse a bounded window to return its summary.
            window = context.create_timer(context.current_utc_datetime
                                          + dt.timedelta(seconds=SUMMARY_WAIT_SECONDS))
            yield context.task_any([converse, window])
            if not window.is_completed:
                window.cancel()
        # converse often returns while hangup_call / refer_call is still answering (the socket closes
        # first): its summary counts just the same. A failed converse holds an Exception.
        if converse.is_completed and not isinstance(converse.result, Exception):
            summary = converse.result
    if not deadline.is_completed:
        deadline.cancel()

    status.pop("note", None)
    status.update({
        "state": STATE_ENDED,
        "ended_by": ended_by,
        "last_turn": _last_turn(summary),
        "outcome": call_outcome(summary if isinstance(summary, dict) else None, ended_by),
        "transfer_target": transfer_target,
    })
    context.set_custom_status(dict(status))

    # When the call ended, fixed now: the record may be published minutes later (or, after failures, hours).
    published = yield from _publish(
        context, {"call": call, "summary": summary, "ended_by": ended_by, "transfer_target": transfer_target,
                  "ended_at": iso(context.current_utc_datetime)},
        status)

    return {
        "call_id": call_id,
        "ended_by": ended_by,
        "outcome": status["outcome"],
        "record_id": published.get("record_id") if isinstance(published, dict) else published,
        "control_error": control_error,
    }


def _publish(context: df.DurableOrchestrationContext, payload: dict, status: dict):
    """publish_call_record until it lands: bursts of retries with PUBLISH_PAUSE between them, for at most
    PUBLISH_PATIENCE. Then the orchestration fails with ``error: publish_failed`` in its custom status."""
    give_up_at = context.current_utc_datetime + PUBLISH_PATIENCE
    while True:
        try:
            published = yield context.call_activity_with_retry("publish_call_record", PUBLISH_RETRY, payload)
        except Exception as exc:  # a burst of retries exhausted
            if context.current_utc_datetime + PUBLISH_PAUSE > give_up_at:
                status["error"] = "publish_failed"
                context.set_custom_status(dict(status))
                raise
            if not context.is_replaying:
                log.warning("call %s: record not published (%s); trying again in %s",
                            payload["call"]["call_id"], exc, PUBLISH_PAUSE)
            status["note"] = "record not published yet; retrying"
            context.set_custom_status(dict(status))
            yield context.create_timer(context.current_utc_datetime + PUBLISH_PAUSE)
            continue
        if status.pop("note", None) is not None:
            context.set_custom_status(dict(status))
        return published


def _control(context: df.DurableOrchestrationContext, activity: str, payload: dict):
    """Run hangup_call / refer_call with retry; return None or the error text.

    A 404 from the provider (the call is already gone) is a success of the activity.
    """
    try:
        yield context.call_activity_with_retry(activity, CONTROL_RETRY, payload)
    except Exception as exc:  # retries exhausted
        if not context.is_replaying:
            log.error("call %s: %s failed: %s", payload.get("call_id"), activity, exc)
        return f"{activity} failed"
    return None
