"""One replay through the real azure-functions-durable engine.

``run_replay`` builds the context JSON the Functions host sends to an orchestrator
(extension ``OrchestrationContextToString``), with the V3 replay-schema settings, calls
the orchestrator function's ``handle`` (``Orchestrator.create(fn)`` - i.e.
``TaskOrchestrationExecutor.execute``), and parses the reply: normal JSON, or the
``$OutOfProcData$`` state embedded in the exception the SDK raises when the
orchestrator itself raised.

``flatten_actions`` turns the V3 action list (with nested ``WhenAny``/``WhenAll``
compound actions) into leaf actions in the order the SDK assigned their ids;
``check_determinism`` compares the replayed prefix with the committed actions.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import azure.functions as func

OUT_OF_PROC_MARKER = "\n\n$OutOfProcData$:"


class ActionType:
    CallActivity = 0
    CallActivityWithRetry = 1
    CallSubOrchestrator = 2
    CallSubOrchestratorWithRetry = 3
    ContinueAsNew = 4
    CreateTimer = 5
    WaitForExternalEvent = 6
    CallEntity = 7
    CallHttp = 8
    SignalEntity = 9
    WhenAny = 11
    WhenAll = 12

    NAMES = {0: "CallActivity", 1: "CallActivityWithRetry", 2: "CallSubOrchestrator",
             3: "CallSubOrchestratorWithRetry", 4: "ContinueAsNew", 5: "CreateTimer",
             6: "WaitForExternalEvent", 7: "CallEntity", 8: "CallHttp", 9: "SignalEntity",
             11: "WhenAny", 12: "WhenAll"}


@dataclasses.dataclass(frozen=True)
class ReplaySettings:
    """What the host adds to the context JSON. Defaults = Azure Storage provider, V3 schema."""

    upper_schema_version: int = 1
    upper_schema_version_new: int = 2
    long_running_timer_interval: str = "3.00:00:00"
    maximum_short_timer_duration: str = "6.00:00:00"
    default_http_async_request_sleep_ms: int = 30000


@dataclasses.dataclass(frozen=True)
class FlatAction:
    """A leaf action of the V3 reply."""

    kind: int
    name: str | None = None            # activity name / external event name
    input: str | None = None           # JSON string, as the SDK sends it
    fire_at: str | None = None         # CreateTimer
    is_canceled: bool = False          # CreateTimer (may flip between replays)
    retry_options: dict | None = None  # CallActivityWithRetry

    @property
    def kind_name(self) -> str:
        return ActionType.NAMES.get(self.kind, str(self.kind))

    def describe(self) -> str:
        parts = [self.kind_name]
        if self.name is not None:
            parts.append(repr(self.name))
        if self.fire_at is not None:
            parts.append(f"fireAt={self.fire_at}")
        return " ".join(parts)

    @classmethod
    def from_json(cls, action: dict) -> FlatAction:
        kind = action["actionType"]
        if kind in (ActionType.CallActivity, ActionType.CallActivityWithRetry,
                    ActionType.CallSubOrchestrator, ActionType.CallSubOrchestratorWithRetry):
            return cls(kind, action.get("functionName"), action.get("input"),
                       retry_options=action.get("retryOptions"))
        if kind == ActionType.CreateTimer:
            return cls(kind, fire_at=action.get("fireAt"), is_canceled=bool(action.get("isCanceled")))
        if kind == ActionType.WaitForExternalEvent:
            return cls(kind, action.get("externalEventName"))
        return cls(kind, action.get("functionName") or action.get("operation"),
                   json.dumps(action, sort_keys=True))


@dataclasses.dataclass
class ReplayResult:
    is_done: bool
    output: Any
    error: str | None          # orchestrator exception message (status Failed)
    custom_status: Any
    actions: list              # V3: one flat list (compound actions nested)
    flat: list[FlatAction]
    raw: dict

    @property
    def failed(self) -> bool:
        return self.error is not None


class NonDeterminismError(Exception):
    """The replay produced actions that don't match the committed history."""


def build_context(instance_id: str, history: list[dict], input_value: Any,
                  settings: ReplaySettings = ReplaySettings(), *,
                  parent_instance_id: str | None = None) -> dict:
    return {
        "history": history,
        "input": input_value,
        "instanceId": instance_id,
        "isReplaying": any(e.get("IsPlayed") for e in history),
        "parentInstanceId": parent_instance_id,
        "upperSchemaVersion": settings.upper_schema_version,
        "upperSchemaVersionNew": settings.upper_schema_version_new,
        "longRunningTimerIntervalDuration": settings.long_running_timer_interval,
        "maximumShortTimerDuration": settings.maximum_short_timer_duration,
        "defaultHttpAsyncRequestSleepTimeMillseconds": settings.default_http_async_request_sleep_ms,
    }


def flatten_actions(actions: list) -> list[FlatAction]:
    """Leaf actions of a reply, depth-first left to right (the SDK's id order)."""
    out: list[FlatAction] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for child in node:
                walk(child)
        elif node.get("actionType") in (ActionType.WhenAny, ActionType.WhenAll):
            for child in node.get("compoundActions", []):
                walk(child)
        else:
            out.append(FlatAction.from_json(node))

    walk(actions)
    return out


def run_replay(handle: Callable[[Any], str], context: dict) -> ReplayResult:
    """Call the orchestrator ``handle`` like the worker does and parse its reply.

    Only an exception carrying ``$OutOfProcData$`` is an orchestrator failure; any
    other exception is an SDK/engine problem and propagates.
    """
    body = json.dumps(context)
    try:
        reply_text = handle(func.OrchestrationContext(body))
        error = None
    except Exception as exc:  # noqa: BLE001 - classified below
        message = str(exc)
        if OUT_OF_PROC_MARKER not in message:
            raise
        error, _, state_text = message.partition(OUT_OF_PROC_MARKER)
        reply_text = state_text
        state = json.loads(state_text)
        error = state.get("error") or error
    state = json.loads(reply_text)
    actions = state.get("actions") or []
    if state.get("schemaVersion") is None:
        raise RuntimeError("orchestrator replied with the legacy V1 action schema; "
                           "the engine only supports the host's V3 settings")
    return ReplayResult(
        is_done=bool(state.get("isDone")) and error is None,
        output=state.get("output"),
        error=error,
        custom_status=state.get("customStatus"),
        actions=actions,
        flat=flatten_actions(actions),
        raw=state,
    )


def _same(committed: FlatAction, replayed: FlatAction, strict: bool) -> bool:
    if committed.kind != replayed.kind or committed.name != replayed.name:
        return False
    if not strict:
        return True
    return (committed.input == replayed.input and committed.fire_at == replayed.fire_at
            and committed.retry_options == replayed.retry_options)


def check_determinism(committed: list[FlatAction], replayed: list[FlatAction], *,
                      strict: bool = True) -> None:
    """Raise :class:`NonDeterminismError` unless ``replayed`` starts with ``committed``.

    DTFx itself compares the action kind and the activity name; ``strict`` also
    compares inputs, fire times and retry options (stricter than production).
    ``isCanceled`` is allowed to change.
    """
    for i, done in enumerate(committed):
        if i >= len(replayed):
            raise NonDeterminismError(
                f"Non-Deterministic workflow detected: action #{i} {done.describe()} is in history "
                f"but the replay produced only {len(replayed)} action(s)")
        got = replayed[i]
        if not _same(done, got, strict):
            detail = ""
            if done.kind == got.kind and done.name == got.name:
                detail = (f" (input {done.input!r} vs {got.input!r}; fireAt {done.fire_at} vs "
                          f"{got.fire_at})")
            raise NonDeterminismError(
                f"Non-Deterministic workflow detected: action #{i} {done.describe()} is in history "
                f"but the replay produced {got.describe()}{detail}")
