"""Timer triggers in the local runner: each `timerTrigger` function runs on its NCRONTAB schedule, as under the host.

The schedule is the host's six-field NCRONTAB (seconds first), read with croniter (`second_at_beginning`); times
are UTC, as on Flex Consumption (WEBSITE_TIME_ZONE is not supported there). The function gets a
`azure.functions.TimerRequest` and, when it has a `durable_client_input`, the same client binding as an HTTP trigger.
`run_on_startup` runs it once when the runner starts. `POST /admin/functions/{name}` (master key; the real host's
endpoint for running a non-HTTP function) runs it now, which is how tests and people trigger a daily job.

Like the host, one invocation of a function at a time: a tick that comes while the previous run is still going
is skipped, and a failure is logged, never fatal to the runner.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.functions.timer import (
    TimerRequest,  # the worker's concrete class (func.TimerRequest is abstract)
)
from croniter import croniter

log = logging.getLogger("localrun.timers")


@dataclass
class TimerFunction:
    name: str
    function: Any
    arg_name: str
    schedule: str
    run_on_startup: bool
    client_name: str | None
    running: asyncio.Lock = field(default_factory=asyncio.Lock)

    def next_fire(self, after: datetime) -> datetime:
        return croniter(self.schedule, after, second_at_beginning=True).get_next(datetime)


def timer_functions(functions: list) -> list[TimerFunction]:
    """The app's timer-triggered functions. A schedule croniter cannot read fails here, at start, naming it."""
    found = []
    for f in functions:
        trigger = f.get_trigger()
        if getattr(trigger, "type", None) != "timerTrigger":
            continue
        name = f.get_function_name()
        schedule = str(getattr(trigger, "schedule", ""))
        if not croniter.is_valid(schedule, second_at_beginning=True) or len(schedule.split()) != 6:
            raise SystemExit(f"function {name}: timer schedule {schedule!r} is not a six-field NCRONTAB expression")
        client = next((b.name for b in f.get_bindings() if b.type == "durableClient"), None)
        found.append(TimerFunction(name, f, trigger.name, schedule, bool(getattr(trigger, "run_on_startup", False)),
                                   client))
    return found


class TimerScheduler:
    """Runs the timer functions on their schedules until :meth:`stop`."""

    def __init__(self, timers: list[TimerFunction], client_binding: Callable[[], str],
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.timers = {t.name: t for t in timers}
        self._client_binding = client_binding
        self._now = now
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for timer in self.timers.values():
            self._tasks.append(loop.create_task(self._loop(timer), name=f"timer:{timer.name}"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _loop(self, timer: TimerFunction) -> None:
        if timer.run_on_startup:
            await self.invoke(timer.name)
        while True:
            fire_at = timer.next_fire(self._now())
            await asyncio.sleep(max(0.0, (fire_at - self._now()).total_seconds()))
            await self.invoke(timer.name, fire_at=fire_at)

    async def invoke(self, name: str, fire_at: datetime | None = None) -> bool:
        """Run one timer function now; False when it is still running from the last tick (this one is skipped)."""
        timer = self.timers[name]
        if timer.running.locked():
            log.warning("timer %s: previous run still going; this tick is skipped", name)
            return False
        async with timer.running:
            now = self._now()
            past_due = fire_at is not None and (now - fire_at).total_seconds() > 1
            request = TimerRequest(past_due=past_due, schedule={"AdjustForDST": True},
                                        schedule_status={"Last": (fire_at or now).isoformat(),
                                                         "Next": timer.next_fire(now).isoformat()})
            kwargs: dict[str, Any] = {timer.arg_name: request}
            if timer.client_name:
                kwargs[timer.client_name] = self._client_binding()
            user = timer.function.get_user_function()
            try:
                if inspect.iscoroutinefunction(user):
                    await user(**kwargs)
                else:
                    await asyncio.to_thread(user, **kwargs)
                log.info("timer %s: ran", name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("timer %s failed", name)
        return True
