"""The ``call`` orchestrator: one instance per answered call (instance id = call_id).

It races the ``converse`` activity (the live call, retried so a worker crash reattaches
to the same call) against a durable max-duration timer and the operator events
``hangup`` / ``transfer``, ends the call when needed (``hangup_call`` / ``refer_call``)
and always publishes the call record (``publish_call_record``).

The orchestrator owns the guarantee that the call is hung up: unless converse's summary proves
the platform already ended it (``shared.outcomes.platform_ended``), it runs ``hangup_call``
until the platform confirms (2xx, or 404 for a call already gone), retrying with back-off for
as long as the call could still be up (the platform's session cap, docs/architecture.md
"Ending a call"). Only then is the record published, with ``hangup_confirmed``.

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
from shared import telemetry
from shared.outcomes import call_outcome, platform_ended
from shared.payloads import CallInput
from shared.transcript import iso, parse_iso

# The replay runs in this worker on every episode: make its two hot spots cheap (call_workflow/sdk_speedups.py).
sdk_speedups.install()

bp = df.Blueprint()

# The orchestrator's name, and the states of a call that is still live; the webhook and the operator API use both.
ORCHESTRATOR = "call"
LIVE_STATUSES = [df.OrchestrationRuntimeStatus.Running, df.OrchestrationRuntimeStatus.Pending]
# The custom status `state` once the call itself is over (the record may still be on its way).
STATE_ENDED = "ended"
# The custom status `state` while the orchestrator retries a hangup the platform has not confirmed: the caller
# may still be on the line, so the call still counts as live (capacity, operator API; call_status.is_live).
STATE_ENDING = "ending"

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
# A hangup the platform does not confirm is tried again as long as the call could still be up. Azure ends every
# Realtime session 30 minutes after it started (docs/architecture.md "Ending a call"), so that is the bound,
# counted from accepted_at; a profile allowed longer (an OpenAI-mode deployment, 60 minutes) is bounded by its
# own maximum duration. The margin covers the platform starting its clock a little after our accept returned.
PLATFORM_SESSION_CAP = dt.timedelta(minutes=30)
HANGUP_PATIENCE_MARGIN = dt.timedelta(minutes=1)
# Each round is a short burst (the call-control client already retries a 5xx within the request); between rounds
# the pause grows, then stays at the last value: about 35 rounds at most over half an hour.
HANGUP_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=2)
HANGUP_PAUSES = tuple(dt.timedelta(seconds=s) for s in (2, 5, 10, 20, 30, 60))
# Post-call analysis (docs/analysis.md) runs between the hangup and the publish, for profiles that ask for it.
# The activity retries within its own 60 s budget (shared/analysis.py); a second attempt covers a lost worker.
# The timer is the backstop that keeps a stuck attempt from holding the record: past it the record is published
# with analysis_error. No analysis failure ever stops the publish.
ANALYSIS_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2000, max_number_of_attempts=2)
ANALYSIS_BUDGET = dt.timedelta(seconds=150)
ANALYSIS_ERROR_CHARS = 300

ENDED_BY_CALL = "call_ended"            # converse returned: the call ended on its own
ENDED_BY_MAX_DURATION = "max_duration"  # the durable timer won
ENDED_BY_HANGUP = "operator_hangup"
ENDED_BY_TRANSFER = "operator_transfer"
ENDED_BY_FAILED = "failed"              # converse failed on every attempt


def call_deadline(call: CallInput) -> dt.datetime:
    seconds = int(call.get("max_duration_seconds") or DEFAULT_MAX_DURATION_SECONDS)
    return parse_iso(call["accepted_at"]) + dt.timedelta(seconds=seconds + DEADLINE_GRACE_SECONDS)


def hangup_give_up_at(call: CallInput) -> dt.datetime:
    """The moment after which the call cannot be up any more: the platform's session cap (or the call's own
    longer maximum duration) from accepted_at, plus a margin."""
    seconds = int(call.get("max_duration_seconds") or DEFAULT_MAX_DURATION_SECONDS)
    longest = max(PLATFORM_SESSION_CAP, dt.timedelta(seconds=seconds + DEADLINE_GRACE_SECONDS))
    return parse_iso(call["accepted_at"]) + longest + HANGUP_PATIENCE_MARGIN


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
    call: CallInput = context.get_input()
    call_id = call["call_id"]
    telemetry.set_call(call_id)  # the call id field of its log lines (no I/O, replay-safe)
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
    # Whether the platform confirmed that the call is over (None: the orchestrator has not hung up yet).
    hangup_confirmed: bool | None = None

    while ended_by is None:
        # task_any resolves with the first finished child, a failed one included, and
        # never raises: a failed converse is an Exception in winner.result.
        winner = yield context.task_any([converse, deadline, hangup_event, transfer_event])

        if winner is converse:
            if isinstance(winner.result, Exception):
                ended_by = ENDED_BY_FAILED
                if not context.is_replaying:
                    log.error("call %s: converse failed on every attempt: %s", call_id, winner.result)
                # Nobody is talking to the caller any more: make sure the line is dropped.
                hangup_confirmed = yield from _hang_up(context, call, ENDED_BY_FAILED, status, None)
            else:
                summary = winner.result
                ended_by = ENDED_BY_CALL

        elif winner is deadline:
            ended_by = ENDED_BY_MAX_DURATION
            hangup_confirmed = yield from _hang_up(context, call, ENDED_BY_MAX_DURATION, status, converse)

        elif winner is hangup_event:
            ended_by = ENDED_BY_HANGUP
            hangup_confirmed = yield from _hang_up(context, call, ENDED_BY_HANGUP, status, converse)

        else:  # transfer_event
            name = _transfer_target(transfer_event.result)
            if name is not None and isinstance(targets.get(name), str):
                error = yield from _control(context, "refer_call",
                                            {"call_id": call_id, "target_uri": targets[name]})
                if error is None:
                    # The platform accepted the REFER: the call leaves it, no hangup needed (docs/architecture.md
                    # "Ending a call").
                    transfer_target = name
                    ended_by = ENDED_BY_TRANSFER
                    hangup_confirmed = True
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

    # converse returned by itself. It may have ended the call (closing line, end_call, silence goodbye) with a
    # /hangup that failed, or seen only its socket close: unless its summary proves the platform ended the call,
    # hang up now, before the record says the call is over.
    hung_up_at: str | None = None
    if ended_by == ENDED_BY_CALL:
        if platform_ended(summary):
            hangup_confirmed = True
        else:
            if not context.is_replaying:
                log.warning("call %s: converse returned without proof that the call is over; hanging up", call_id)
            hangup_confirmed = yield from _hang_up(context, call, ENDED_BY_CALL, status, None)
            if hangup_confirmed:
                hung_up_at = iso(context.current_utc_datetime)

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
    if not hangup_confirmed:
        control_error = "hangup_call failed"

    status.pop("note", None)
    status.update({
        "state": STATE_ENDED,
        "ended_by": ended_by,
        "last_turn": _last_turn(summary),
        "outcome": call_outcome(summary if isinstance(summary, dict) else None, ended_by),
        "transfer_target": transfer_target,
        "hangup_confirmed": bool(hangup_confirmed),
    })
    context.set_custom_status(dict(status))

    # When the call ended, fixed now: the record may be published minutes later (or, after failures, hours).
    ended_at = iso(context.current_utc_datetime)
    analysis: dict[str, Any] = {}
    if (call.get("profile") or {}).get("analysis"):
        analysis = yield from _analyze(context, call, summary)
    published = yield from _publish(
        context, {"call": call, "summary": summary, "ended_by": ended_by, "transfer_target": transfer_target,
                  "ended_at": ended_at, "hangup_confirmed": bool(hangup_confirmed),
                  "hung_up_at": hung_up_at, **analysis},
        status)

    return {
        "call_id": call_id,
        "ended_by": ended_by,
        "outcome": status["outcome"],
        "record_id": published.get("record_id") if isinstance(published, dict) else published,
        "control_error": control_error,
        "hangup_confirmed": bool(hangup_confirmed),
    }


def _converse_proved_the_end(converse: Any) -> bool:
    return (converse is not None and converse.is_completed and not isinstance(converse.result, Exception)
            and platform_ended(converse.result))


def _hang_up(context: df.DurableOrchestrationContext, call: CallInput, reason: str, status: dict, converse: Any):
    """hangup_call until the platform confirms (2xx, or 404: the call is already gone); True then. A refusal or
    an outage is tried again with growing pauses (HANGUP_PAUSES) while the call could still be up
    (:func:`hangup_give_up_at`); False once it cannot. Meanwhile the custom status says ``ending``, so the call
    still counts as live and an operator's hangup is accepted, and nothing is published. ``converse``, when it
    is still running, races each pause: a summary that proves the call is over (the caller hung up meanwhile)
    confirms it just as well."""
    payload = {"call_id": call["call_id"], "reason": reason}
    give_up_at = hangup_give_up_at(call)
    rounds = 0
    while True:
        try:
            yield context.call_activity_with_retry("hangup_call", HANGUP_RETRY, payload)
        except Exception as exc:  # a burst exhausted
            if _converse_proved_the_end(converse):
                return True
            pause = HANGUP_PAUSES[min(rounds, len(HANGUP_PAUSES) - 1)]
            rounds += 1
            if context.current_utc_datetime + pause > give_up_at:
                if not context.is_replaying:
                    log.error("call %s: hangup not confirmed after %d rounds; the call cannot be up past %s, "
                              "giving up: %r", call["call_id"], rounds, iso(give_up_at), _first_line(exc))
                return False
            if not context.is_replaying:
                log.warning("call %s: hangup not confirmed (%r); trying again in %s", call["call_id"],
                            _first_line(exc), pause)
            status.update({"state": STATE_ENDING, "note": "hangup not confirmed yet; retrying"})
            context.set_custom_status(dict(status))
            timer = context.create_timer(context.current_utc_datetime + pause)
            if converse is not None and not converse.is_completed:
                yield context.task_any([timer, converse])
                if _converse_proved_the_end(converse):
                    timer.cancel()
                    status.pop("note", None)
                    return True
            yield timer
            continue
        if status.get("state") == STATE_ENDING:
            status.pop("note", None)
        return True


def _analyze(context: df.DurableOrchestrationContext, call: CallInput, summary: dict | None):
    """analyze_call raced against ANALYSIS_BUDGET: ``{"analysis": {...}}``, ``{"analysis_error": why}``, or
    ``{}`` when analysis is off (no deployment configured)."""
    task = context.call_activity_with_retry("analyze_call", ANALYSIS_RETRY, {"call": call, "summary": summary})
    timer = context.create_timer(context.current_utc_datetime + ANALYSIS_BUDGET)
    winner = yield context.task_any([task, timer])
    if winner is timer:
        if not context.is_replaying:
            log.warning("call %s: analysis not done within %s; publishing without it", call["call_id"],
                        ANALYSIS_BUDGET)
        return {"analysis_error": f"analysis not done within {int(ANALYSIS_BUDGET.total_seconds())} s"}
    timer.cancel()
    if isinstance(task.result, Exception):
        if not context.is_replaying:
            log.warning("call %s: analysis failed: %r", call["call_id"], _first_line(task.result))
        return {"analysis_error": _first_line(task.result)[:ANALYSIS_ERROR_CHARS]}
    result = task.result if isinstance(task.result, dict) else {}
    return {"analysis": result["analysis"]} if result.get("analysis") else {}


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


def _first_line(exc: Exception) -> str:
    # A failed activity's message carries the worker's traceback after the first line; the platform's error
    # text in it comes from outside, so callers log it with %r.
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _control(context: df.DurableOrchestrationContext, activity: str, payload: dict):
    """Run refer_call with retry; return None or the error text.

    A 404 from the provider (the call is already gone) is a success of the activity.
    """
    try:
        yield context.call_activity_with_retry(activity, CONTROL_RETRY, payload)
    except Exception as exc:  # retries exhausted
        if not context.is_replaying:
            log.error("call %s: %s failed: %s", payload.get("call_id"), activity, exc)
        return f"{activity} failed"
    return None
