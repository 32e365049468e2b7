"""Local Durable engine: the host/DTFx side, around the real SDK replay engine.

What is real: every orchestrator step runs through the orchestrator function's
``handle`` (``azure.durable_functions`` ``TaskOrchestrationExecutor``), fed with
host-shaped history JSON and the host's V3 schema settings; activity inputs and
outputs go through the worker's own ``ActivityTriggerConverter``.

What is emulated (DTFx / the extension's out-of-proc shim): history bookkeeping,
id numbering, ``CallActivityWithRetry`` (``RetryInterceptor``), durable timers,
external-event delivery, instance status, and (with a :class:`TaskHubStore`) a task
hub that survives a restart. See docs/durable.md.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import inspect
import json
import logging
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from azure.durable_functions.models.utils.df_serialization import df_dumps
from azure.functions import meta
from azure.functions.durable_functions import ActivityTriggerConverter

from . import history as h
from .clock import UTC, Clock, RealClock
from .functions import FunctionIndex
from .ids import RetryPolicy, RetryState, Sequence
from .polling import QueuePolling
from .replay import (
    ActionType,
    FlatAction,
    NonDeterminismError,
    ReplaySettings,
    build_context,
    check_determinism,
    run_replay,
)
from .store import TaskHubStore
from .tracing import ActivityContext, span_trace_context, start_activity_span, start_orchestration_span

log = logging.getLogger("localrun.durable")

PENDING, RUNNING, COMPLETED, FAILED, TERMINATED = (
    "Pending", "Running", "Completed", "Failed", "Terminated")
ACTIVE_STATES = (PENDING, RUNNING)
WORKER_DIED = "worker died"

ActivityCallable = Callable[[Any], Any | Awaitable[Any]]
DEFAULT_SETTINGS = ReplaySettings()  # frozen: safe to share as a default


class EngineError(Exception):
    pass


class InstanceExistsError(EngineError):
    """An instance with this id is Pending or Running (HTTP 409 in the Durable API)."""


class InstanceNotFound(EngineError):
    """No instance with this id (HTTP 404)."""


class InstanceNotRunningError(EngineError):
    """The instance already completed, failed or was terminated (HTTP 410)."""


class UnknownFunctionError(EngineError):
    """No orchestrator function with this name."""


def _status_time(when: dt.datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_activity_output(value: Any) -> str:
    """The worker's activity-trigger output conversion (``df_dumps``; ValueError if not JSON)."""
    return ActivityTriggerConverter.encode(value, expected_type=None).value


def decode_activity_input(input_json: str | None) -> Any:
    """The worker's activity-trigger input conversion (JSON string -> Python value)."""
    if input_json is None:
        return None
    return ActivityTriggerConverter.decode(meta.Datum(type="json", value=input_json),
                                           trigger_metadata=None)


@dataclasses.dataclass
class _Running:
    name: str
    task: asyncio.Task | None = None
    killed: bool = False


@dataclasses.dataclass
class _Terminate:
    reason: str


@dataclasses.dataclass
class _Instance:
    instance_id: str
    name: str
    input_json: str | None
    execution_id: str
    created: dt.datetime
    last_updated: dt.datetime
    status: str = PENDING
    custom_status: Any = None
    output: Any = None
    history: list[dict] = dataclasses.field(default_factory=list)
    committed: list[FlatAction] = dataclasses.field(default_factory=list)
    seq: Sequence = dataclasses.field(default_factory=Sequence)
    inbox: collections.deque = dataclasses.field(default_factory=collections.deque)
    wakeup: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    worker: asyncio.Task | None = None
    retry_attempts: dict[int, RetryState] = dataclasses.field(default_factory=dict)
    retry_timers: dict[int, RetryState] = dataclasses.field(default_factory=dict)
    activities: dict[int, _Running] = dataclasses.field(default_factory=dict)
    timers: dict[int, asyncio.Task] = dataclasses.field(default_factory=dict)
    episodes: int = 0
    # The caller's W3C trace context from start_new, kept with the instance (distributed tracing V2 imitation).
    trace_parent: str | None = None
    trace_state: str | None = None
    span: Any = None  # the live orchestration:<name> span; not persisted (a resumed instance uses trace_parent)

    @property
    def finished(self) -> bool:
        return self.status not in ACTIVE_STATES

    @property
    def input_value(self) -> Any:
        return None if self.input_json is None else json.loads(self.input_json)

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to carry on after a restart (running tasks are re-derived from history)."""
        retries = {id(s): s for s in [*self.retry_attempts.values(), *self.retry_timers.values()]}
        return {
            "instance_id": self.instance_id, "name": self.name, "input_json": self.input_json,
            "execution_id": self.execution_id, "created": h.format_ts(self.created),
            "last_updated": h.format_ts(self.last_updated), "status": self.status,
            "custom_status": self.custom_status, "output": self.output, "history": self.history,
            "committed": [dataclasses.asdict(a) for a in self.committed], "next_id": self.seq.next_id,
            "retries": [dataclasses.asdict(s) for s in retries.values()],
            "inbox": [{"$terminate": e.reason} if isinstance(e, _Terminate) else e for e in self.inbox],
            "episodes": self.episodes, "trace_parent": self.trace_parent, "trace_state": self.trace_state,
        }

    @classmethod
    def restore(cls, snap: dict[str, Any]) -> _Instance:
        inst = cls(instance_id=snap["instance_id"], name=snap["name"], input_json=snap["input_json"],
                   execution_id=snap["execution_id"], created=h.parse_ts(snap["created"]),
                   last_updated=h.parse_ts(snap["last_updated"]), status=snap["status"],
                   custom_status=snap["custom_status"], output=snap["output"], history=snap["history"],
                   committed=[FlatAction(**a) for a in snap["committed"]], episodes=snap["episodes"],
                   trace_parent=snap.get("trace_parent"), trace_state=snap.get("trace_state"))
        inst.seq.next_id = snap["next_id"]
        for saved in snap["retries"]:
            state = RetryState(**{**saved, "policy": RetryPolicy(**saved["policy"])})
            inst.retry_attempts.update(dict.fromkeys(state.attempt_ids, state))
            inst.retry_timers.update(dict.fromkeys(state.timer_ids, state))
        inst.inbox.extend(_Terminate(e["$terminate"]) if "$terminate" in e else e for e in snap["inbox"])
        return inst


class DurableEngine:
    """Runs orchestrations of a :class:`FunctionIndex`.

    One asyncio worker task per instance processes its inbox (history events) one
    episode at a time, so episodes of one instance are serialised while instances
    are independent. Activities and timers are asyncio tasks.

    Without a ``store`` everything lives in this object and a restart loses it. With
    one, every state change is written to it and :meth:`resume` carries on after a
    restart: activities that had not reported back run again (at-least-once, as on
    Azure) and timers are re-armed at their original fire time.
    """

    def __init__(self, functions: FunctionIndex, *, clock: Clock | None = None,
                 strict_determinism: bool = True,
                 activity_overrides: dict[str, ActivityCallable] | None = None,
                 settings: ReplaySettings = DEFAULT_SETTINGS,
                 store: TaskHubStore | None = None,
                 retention: dt.timedelta | None = dt.timedelta(days=7),
                 queue_polling: QueuePolling | None = None) -> None:
        self.functions = functions
        # Off by default: with it, each orchestrator episode and each activity waits as the Azure Storage
        # provider's queue pollers would make it wait (polling.py).
        self.queue_polling = queue_polling
        self.store = store
        self.retention = retention
        self.clock: Clock = clock or RealClock()
        self.strict_determinism = strict_determinism
        self.activity_overrides: dict[str, ActivityCallable] = dict(activity_overrides or {})
        self.settings = settings
        self._instances: dict[str, _Instance] = {}
        self._closed = False

    # ------------------------------------------------------------------ client API
    async def start_new(self, orchestrator_name: str, instance_id: str | None = None,
                        input: Any = None, *, trace_parent: str | None = None,
                        trace_state: str | None = None) -> str:
        if self._closed:
            raise EngineError("engine is closed")
        if orchestrator_name not in self.functions.orchestrators:
            raise UnknownFunctionError(f"no orchestrator function named {orchestrator_name!r}")
        instance_id = instance_id or uuid.uuid4().hex
        existing = self._instances.get(instance_id)
        if existing is not None:
            if not existing.finished:
                raise InstanceExistsError(
                    f"an instance with ID {instance_id!r} already exists ({existing.status})")
            self._dispose(existing)  # Durable's default: non-running instances may be overwritten
        now = self.clock.now()
        input_json = None if input is None else df_dumps(input)
        inst = _Instance(instance_id=instance_id, name=orchestrator_name, input_json=input_json,
                         execution_id=uuid.uuid4().hex, created=now, last_updated=now)
        inst.span = start_orchestration_span(orchestrator_name, instance_id, trace_parent, trace_state)
        traced = span_trace_context(inst.span, trace_parent, trace_state)
        if traced is not None:
            inst.trace_parent, inst.trace_state = traced.Traceparent, traced.Tracestate or None
        inst.inbox.append(h.execution_started(now, orchestrator_name, input_json, instance_id,
                                              inst.execution_id))
        self._persist(inst, must=True)  # before the caller hears "started", as the task hub would
        self._instances[instance_id] = inst
        self._run(inst)
        return instance_id

    async def resume(self) -> list[str]:
        """Load the store and carry on every Pending/Running instance; returns their ids. Instances that
        finished longer than ``retention`` ago are purged instead (Durable's purge-history, done at start)."""
        if self.store is None:
            return []
        resumed = []
        purge_before = self.clock.now() - self.retention if self.retention is not None else None
        for snap in self.store.load_all():
            try:
                inst = _Instance.restore(snap)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("task hub: cannot restore instance %r: %s", snap.get("instance_id"), exc)
                continue
            if inst.finished and purge_before is not None and inst.last_updated < purge_before:
                self.store.delete(inst.instance_id)
                continue
            self._instances[inst.instance_id] = inst
            if inst.finished:
                inst.done.set()
                continue
            activities, timers = self._restart_pending_work(inst)
            log.info("resumed instance %s (%s): %d activities re-run, %d timers re-armed",
                     inst.instance_id, inst.name, activities, timers)
            self._run(inst)
            resumed.append(inst.instance_id)
        return resumed

    async def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
        inst = self._get(instance_id)
        if inst.finished:
            raise InstanceNotRunningError(f"instance {instance_id!r} is {inst.status}")
        self._enqueue_request(inst, h.event_raised(self.clock.now(), name, json.dumps(data)))

    async def terminate(self, instance_id: str, reason: str) -> None:
        inst = self._get(instance_id)
        if inst.finished:
            raise InstanceNotRunningError(f"instance {instance_id!r} is {inst.status}")
        self._enqueue_request(inst, _Terminate(reason))

    def get_status(self, instance_id: str, *, show_history: bool = False,
                   show_input: bool = True) -> dict | None:
        inst = self._instances.get(instance_id)
        if inst is None:
            return None
        status = {
            "name": inst.name,
            "instanceId": inst.instance_id,
            "runtimeStatus": inst.status,
            "input": inst.input_value if show_input else None,
            "customStatus": inst.custom_status,
            "output": inst.output,
            "createdTime": _status_time(inst.created),
            "lastUpdatedTime": _status_time(inst.last_updated),
        }
        if show_history:
            status["historyEvents"] = [
                {**{k: v for k, v in e.items() if k not in ("EventType", "IsPlayed")},
                 "EventType": h.type_name(e)}
                for e in inst.history
                if e["EventType"] not in (h.EventType.OrchestratorStarted,
                                          h.EventType.OrchestratorCompleted)]
        return status

    def list_instances(self, *, runtime_status: list[str] | None = None,
                       created_from: dt.datetime | None = None,
                       created_to: dt.datetime | None = None) -> list[dict]:
        wanted = {s.lower() for s in runtime_status} if runtime_status else None
        out = []
        for inst in self._instances.values():
            if wanted is not None and inst.status.lower() not in wanted:
                continue
            if created_from is not None and inst.created < created_from:
                continue
            if created_to is not None and inst.created > created_to:
                continue
            status = self.get_status(inst.instance_id)
            assert status is not None  # the instance was just read from the same dict
            out.append(status)
        return out

    def purge(self, *, instance_id: str | None = None, runtime_status: list[str] | None = None,
              created_from: dt.datetime | None = None, created_to: dt.datetime | None = None) -> int:
        """Durable's purge-history: forget finished instances (one by id, or every one matching the filters)
        in memory and in the store; returns how many. Pending and Running instances are never purged."""
        if instance_id is not None:
            inst = self._instances.get(instance_id)
            victims = [inst] if inst is not None and inst.finished else []
        else:
            wanted = {s.lower() for s in runtime_status} if runtime_status else None
            victims = [i for i in self._instances.values() if i.finished
                       and (wanted is None or i.status.lower() in wanted)
                       and (created_from is None or i.created >= created_from)
                       and (created_to is None or i.created < created_to)]
        for inst in victims:
            if self.store is not None:
                self.store.delete(inst.instance_id)
            del self._instances[inst.instance_id]
        return len(victims)

    async def wait_for_completion(self, instance_id: str, timeout: float) -> dict:  # noqa: ASYNC109 (returns either way)
        """Wait (real seconds) until the instance is no longer Pending/Running; return its
        status either way (check ``runtimeStatus``)."""
        inst = self._get(instance_id)
        if not inst.done.is_set():
            waiter = asyncio.ensure_future(inst.done.wait())
            try:
                await asyncio.wait({waiter}, timeout=timeout)
            finally:
                if not waiter.done():
                    waiter.cancel()
        return self.get_status(instance_id)  # type: ignore[return-value]

    def history(self, instance_id: str) -> list[dict]:
        """The committed history (host-shaped JSON dicts), for tests and debugging."""
        return [dict(e) for e in self._get(instance_id).history]

    def kill_activity(self, instance_id: str, name: str) -> int:
        """Kill the running activities ``name`` of an instance like a crashing worker:
        the task is cancelled and a ``TaskFailed`` ("worker died") is recorded, so the
        activity's retry policy applies. Returns how many were killed."""
        inst = self._get(instance_id)
        killed = 0
        for running in inst.activities.values():
            if running.name == name and running.task and not running.task.done() and not running.killed:
                running.killed = True
                running.task.cancel()
                killed += 1
        return killed

    def actions(self, instance_id: str) -> list[FlatAction]:
        """The committed leaf actions as of the last replay (``is_canceled`` is current)."""
        return list(self._get(instance_id).committed)

    def running_activities(self, instance_id: str) -> list[str]:
        return [r.name for r in self._get(instance_id).activities.values()]

    async def aclose(self) -> None:
        """Cancel every worker, activity and timer task and wait for them."""
        self._closed = True
        tasks: list[asyncio.Task] = []
        for inst in self._instances.values():
            tasks.extend(self._dispose(inst, include_activities=True))
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for inst in self._instances.values():
            if inst.span is not None:
                # Still running when the runner stops: the span ends here so the trace keeps its parent; a
                # runner resuming from the task hub parents the next activities on it (trace_parent).
                inst.span.set_attribute("durable.runtime_status", f"{inst.status} (runner stopped)")
                inst.span.end()
                inst.span = None

    # ------------------------------------------------------------------ internals
    def _run(self, inst: _Instance) -> None:
        inst.wakeup.set()
        inst.worker = asyncio.get_running_loop().create_task(
            self._worker(inst), name=f"durable:{inst.instance_id}")

    def _persist(self, inst: _Instance, must: bool = False) -> None:
        """Write the instance to the store. A request (``must``) fails if that is impossible; the
        worker logs it and goes on, since its state is still whole in memory."""
        if self.store is None:
            return
        try:
            self.store.save(inst.instance_id, inst.snapshot())
        except (OSError, TypeError, ValueError):
            if must:
                raise
            log.exception("task hub: cannot save instance %s", inst.instance_id)

    def _enqueue_request(self, inst: _Instance, item: dict | _Terminate) -> None:
        """A client's event or termination: saved before it is accepted, so a failed write changes nothing."""
        inst.inbox.append(item)
        try:
            self._persist(inst, must=True)
        except BaseException:
            inst.inbox.pop()
            raise
        inst.wakeup.set()

    def _restart_pending_work(self, inst: _Instance) -> tuple[int, int]:
        """Start again what was in flight when the process died: activities scheduled without a
        result and timers created without firing, in history or still waiting in the inbox."""
        events = [*inst.history, *(e for e in inst.inbox if isinstance(e, dict))]
        answered = {e["TaskScheduledId"] for e in events
                    if e["EventType"] in (h.EventType.TaskCompleted, h.EventType.TaskFailed)}
        fired = {e["TimerId"] for e in events if e["EventType"] == h.EventType.TimerFired}
        activities = timers = 0
        for e in inst.history:
            if e["EventType"] == h.EventType.TaskScheduled and e["EventId"] not in answered:
                self._start_activity(inst, e["EventId"], e["Name"], e["Input"])
                activities += 1
            elif e["EventType"] == h.EventType.TimerCreated and e["EventId"] not in fired:
                self._start_timer(inst, e["EventId"], h.parse_ts(e["FireAt"]))
                timers += 1
        return activities, timers

    def _get(self, instance_id: str) -> _Instance:
        inst = self._instances.get(instance_id)
        if inst is None:
            raise InstanceNotFound(f"no instance with ID {instance_id!r}")
        return inst

    def _dispose(self, inst: _Instance, include_activities: bool = False) -> list[asyncio.Task]:
        tasks = [t for t in inst.timers.values() if not t.done()]
        if inst.worker and not inst.worker.done() and inst.worker is not asyncio.current_task():
            tasks.append(inst.worker)
        if include_activities:
            tasks.extend(r.task for r in inst.activities.values() if r.task and not r.task.done())
        for t in tasks:
            t.cancel()
        inst.timers.clear()
        return tasks

    def _enqueue(self, inst: _Instance, event: dict) -> None:
        if inst.finished:
            log.debug("dropping %s for %s instance %s", h.describe(event), inst.status, inst.instance_id)
            return
        inst.inbox.append(event)
        inst.wakeup.set()

    def _is_retry_event(self, inst: _Instance, event: dict) -> bool:
        kind = event["EventType"]
        if kind == h.EventType.TaskFailed:
            return event["TaskScheduledId"] in inst.retry_attempts
        if kind == h.EventType.TimerFired:
            return event["TimerId"] in inst.retry_timers
        return False

    def _take_batch(self, inst: _Instance) -> list[dict]:
        """Events for one episode. A retry-related event (the SDK assigns ids while it
        processes it) only ever comes first, so ids are assigned in the SDK's order."""
        batch = [inst.inbox.popleft()]
        while (inst.inbox and isinstance(inst.inbox[0], dict)
               and not self._is_retry_event(inst, inst.inbox[0])):
            batch.append(inst.inbox.popleft())
        return batch

    async def _worker(self, inst: _Instance) -> None:
        try:
            while not inst.finished:
                if not inst.inbox:
                    inst.wakeup.clear()
                    await inst.wakeup.wait()
                    continue
                if self.queue_polling is not None:  # the control-queue hop
                    await asyncio.sleep(self.queue_polling.control_delay(inst.instance_id))
                if isinstance(inst.inbox[0], _Terminate):
                    self._terminate_now(inst, inst.inbox.popleft().reason)
                    self._persist(inst)
                    break
                batch = self._take_batch(inst)
                try:
                    self._episode(inst, batch)
                except Exception as exc:  # engine/SDK problem: fail loudly, keep the engine alive
                    log.exception("durable engine error in instance %s", inst.instance_id)
                    self._finish(inst, FAILED, f"engine error: {type(exc).__name__}: {exc}",
                                 self.clock.now())
                self._persist(inst)
                await asyncio.sleep(0)  # let other instances run between episodes
        finally:
            if inst.finished:
                inst.done.set()

    # -- one episode ----------------------------------------------------------
    def _episode(self, inst: _Instance, batch: list[dict]) -> None:
        now = self.clock.now()
        if inst.history:
            last = h.parse_ts(inst.history[-1]["Timestamp"])
            now = max(now, last)
        new_events: list[dict] = [h.orchestrator_started(now)]
        scheduled: list[dict] = []
        starts: list[Callable[[], None]] = []

        for event in batch:
            new_events.append(event)
            self._dtfx_on_event(inst, event, now, scheduled, starts)

        replay_history = inst.history + new_events
        context = build_context(inst.instance_id, replay_history, inst.input_value, self.settings)
        result = run_replay(self.functions.orchestrator(inst.name), context)
        inst.episodes += 1

        try:
            check_determinism(inst.committed, result.flat, strict=self.strict_determinism)
        except NonDeterminismError as exc:
            log.error("instance %s: %s", inst.instance_id, exc)
            inst.history.extend(new_events)
            self._finish(inst, FAILED, str(exc), now)
            return

        for action in result.flat[len(inst.committed):]:
            self._dtfx_schedule(inst, action, now, scheduled, starts)
        inst.committed = list(result.flat)
        inst.custom_status = result.custom_status

        inst.history.extend(new_events)
        inst.history.extend(scheduled)
        if result.failed:
            self._finish(inst, FAILED, result.error, now)
        elif result.is_done:
            self._finish(inst, COMPLETED, result.output, now)
        else:
            inst.history.append(h.orchestrator_completed(now))
            self._mark_played(inst)
            inst.status = RUNNING
            inst.last_updated = now
        for start in starts:
            start()

    def _dtfx_on_event(self, inst: _Instance, event: dict, now: dt.datetime,
                       scheduled: list[dict], starts: list) -> None:
        """DTFx RetryInterceptor: react to attempt failures and retry timers."""
        kind = event["EventType"]
        if kind == h.EventType.TaskFailed and event["TaskScheduledId"] in inst.retry_attempts:
            state = inst.retry_attempts[event["TaskScheduledId"]]
            delay = state.policy.delay_after(len(state.attempt_ids) - 1)
            fire_at = now + delay
            timer_id = inst.seq.take()
            state.timer_ids.append(timer_id)
            inst.retry_timers[timer_id] = state
            scheduled.append(h.timer_created(now, timer_id, fire_at))
            starts.append(lambda: self._start_timer(inst, timer_id, fire_at))
        elif kind == h.EventType.TimerFired and event["TimerId"] in inst.retry_timers:
            state = inst.retry_timers[event["TimerId"]]
            if state.exhausted:
                state.finished = True  # the failure surfaces in the SDK now
                return
            attempt_id = inst.seq.take()
            state.attempt_ids.append(attempt_id)
            inst.retry_attempts[attempt_id] = state
            scheduled.append(h.task_scheduled(now, attempt_id, state.name, state.input))
            starts.append(lambda: self._start_activity(inst, attempt_id, state.name, state.input))
        elif kind == h.EventType.TaskCompleted and event["TaskScheduledId"] in inst.retry_attempts:
            inst.retry_attempts[event["TaskScheduledId"]].finished = True

    def _dtfx_schedule(self, inst: _Instance, action: FlatAction, now: dt.datetime,
                       scheduled: list[dict], starts: list) -> None:
        if action.kind in (ActionType.CallActivity, ActionType.CallActivityWithRetry):
            assert action.name is not None  # the replay module reads a name for every activity action
            task_id = inst.seq.take()
            scheduled.append(h.task_scheduled(now, task_id, action.name, action.input))
            if action.kind == ActionType.CallActivityWithRetry:
                state = RetryState(action.name, action.input,
                                   RetryPolicy.from_json(action.retry_options or {}))
                state.attempt_ids.append(task_id)
                inst.retry_attempts[task_id] = state
            starts.append(lambda: self._start_activity(inst, task_id, action.name, action.input))
        elif action.kind == ActionType.CreateTimer:
            assert action.fire_at is not None  # the replay module reads fireAt for every timer action
            timer_id = inst.seq.take()
            fire_at = h.parse_ts(action.fire_at)
            scheduled.append(h.timer_created(now, timer_id, fire_at))
            starts.append(lambda: self._start_timer(inst, timer_id, fire_at))
        elif action.kind == ActionType.WaitForExternalEvent:
            pass  # no id; EventRaised is matched by name
        else:
            raise EngineError(f"action {action.kind_name} is not supported by the local engine")

    def _mark_played(self, inst: _Instance) -> None:
        for e in inst.history:
            e["IsPlayed"] = True

    def _finish(self, inst: _Instance, status: str, output: Any, now: dt.datetime) -> None:
        result_json = None if output is None else json.dumps(output)
        inst.history.append(h.execution_completed(now, status, result_json))
        inst.history.append(h.orchestrator_completed(now))
        self._mark_played(inst)
        inst.status = status
        inst.output = output
        inst.last_updated = now
        # Pending timers of a finished instance are dropped (DTFx discards their messages).
        # Running activities keep running like on a real worker; their results are dropped.
        for t in inst.timers.values():
            t.cancel()
        inst.timers.clear()
        if inst.span is not None:
            inst.span.set_attribute("durable.runtime_status", status)
            inst.span.end()
            inst.span = None
        inst.done.set()

    def _terminate_now(self, inst: _Instance, reason: str) -> None:
        now = self.clock.now()
        inst.history.append(h.orchestrator_started(now))
        inst.history.append(h.execution_terminated(now, json.dumps(reason)))
        self._finish(inst, TERMINATED, reason, now)

    # -- timers ---------------------------------------------------------------
    def _start_timer(self, inst: _Instance, timer_id: int, fire_at: dt.datetime) -> None:
        if inst.finished:
            return
        inst.timers[timer_id] = asyncio.get_running_loop().create_task(
            self._run_timer(inst, timer_id, fire_at), name=f"timer:{inst.instance_id}:{timer_id}")

    async def _run_timer(self, inst: _Instance, timer_id: int, fire_at: dt.datetime) -> None:
        await self.clock.sleep_until(fire_at)
        inst.timers.pop(timer_id, None)
        self._enqueue(inst, h.timer_fired(self.clock.now(), timer_id, fire_at))

    # -- activities -----------------------------------------------------------
    def _start_activity(self, inst: _Instance, task_id: int, name: str, input_json: str | None) -> None:
        running = _Running(name)
        inst.activities[task_id] = running
        running.task = asyncio.get_running_loop().create_task(
            self._run_activity(inst, running, task_id, name, input_json),
            name=f"activity:{inst.instance_id}:{name}:{task_id}")

    async def _invoke_activity(self, name: str, value: Any, inst: _Instance | None = None) -> Any:
        override = self.activity_overrides.get(name)
        if override is not None:
            result = override(value)  # sync overrides run inline on the loop
            if inspect.isawaitable(result):
                result = await result
            return result
        activity = self.functions.activities.get(name)
        if activity is None:
            raise LookupError(f"The function '{name}' doesn't exist, is disabled, or is not an "
                              "activity function.")
        kwargs: dict[str, Any] = {}
        span = None
        if inst is not None:
            # As the host does with distributed tracing V2: an activity:<name> span under the orchestration's,
            # whose context the invocation gets as func.Context.trace_context.
            parent = span_trace_context(inst.span, inst.trace_parent, inst.trace_state)
            span = start_activity_span(name, inst.instance_id, parent)
            if activity.accepts_context:
                kwargs["context"] = ActivityContext(name, uuid.uuid4().hex, span_trace_context(span) or parent)
        if activity.input_name:
            call = lambda: activity.fn(**{activity.input_name: value}, **kwargs)  # noqa: E731
        else:
            call = lambda: activity.fn(value, **kwargs)  # noqa: E731
        try:
            if activity.is_async:
                return await call()
            return await asyncio.to_thread(call)  # the worker runs sync functions in a thread pool
        finally:
            if span is not None:
                span.end()

    async def _run_activity(self, inst: _Instance, running: _Running, task_id: int, name: str,
                            input_json: str | None) -> None:
        try:
            if self.queue_polling is not None:  # the work-item-queue hop
                await asyncio.sleep(self.queue_polling.activity_delay())
            value = decode_activity_input(input_json)
            result = await self._invoke_activity(name, value, inst)
            event = h.task_completed(self.clock.now(), task_id, encode_activity_output(result))
        except asyncio.CancelledError:
            if not running.killed:
                raise
            event = h.task_failed(self.clock.now(), task_id,
                                  f"Activity function '{name}' failed: {WORKER_DIED}", None)
        except Exception as exc:  # noqa: BLE001 - reported like the host does
            details = "".join(traceback.format_exception(exc, limit=-8)).strip()
            event = h.task_failed(self.clock.now(), task_id,
                                  f"Activity function '{name}' failed: {type(exc).__name__}: {exc}",
                                  details)
        finally:
            inst.activities.pop(task_id, None)
        self._enqueue(inst, event)


def iter_events(history: Iterable[dict], kind: h.EventType, name: str | None = None) -> list[dict]:
    """History events of one type (optionally with ``Name``), for tests."""
    return [e for e in history if e["EventType"] == kind and (name is None or e.get("Name") == name)]
