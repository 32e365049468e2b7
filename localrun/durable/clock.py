"""Clocks for the durable engine.

The engine reads time only through a :class:`Clock`: ``now()`` stamps every
``OrchestratorStarted`` event (the only thing that moves ``current_utc_datetime``)
and ``sleep_until()`` drives durable timers.

* :class:`RealClock` - wall-clock time; what the local runner uses.
* :class:`VirtualClock` - test time. Time only moves when every coroutine on the
  loop is idle or blocked (auto-advance: jump to the earliest pending sleeper) or
  when a test calls :meth:`VirtualClock.advance`. A 10-minute max-duration timer
  then fires in milliseconds, at exactly the virtual instant it was due.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
from typing import Protocol, runtime_checkable

UTC = dt.UTC


@runtime_checkable
class Clock(Protocol):
    def now(self) -> dt.datetime:
        """Current time, tz-aware UTC."""

    async def sleep_until(self, when: dt.datetime) -> None:
        """Return once ``now() >= when``."""


def _aware(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None:
        raise ValueError("naive datetime given to a durable clock; use tz-aware UTC")
    return when.astimezone(UTC)


class RealClock:
    """Wall-clock time (UTC)."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(UTC)

    async def sleep_until(self, when: dt.datetime) -> None:
        when = _aware(when)
        while True:
            remaining = (when - self.now()).total_seconds()
            if remaining <= 0:
                return
            # Long sleeps are chunked so a clock step (NTP) can't make us oversleep a lot.
            await asyncio.sleep(min(remaining, 60.0))


class VirtualClock:
    """Deterministic test clock.

    ``auto_advance=True``: a background task waits until the event loop has nothing
    runnable (every task blocked on a future, an event, or a virtual sleep), then
    jumps to the earliest pending ``sleep_until`` deadline and wakes those sleepers.
    Code blocked on *real* I/O or ``asyncio.sleep`` counts as idle, so do not mix
    real delays into virtual-time tests.

    ``auto_advance=False``: time moves only through :meth:`advance` / :meth:`advance_to`.
    """

    def __init__(self, start: dt.datetime | None = None, *, auto_advance: bool = True,
                 idle_rounds: int = 3) -> None:
        self._now = _aware(start) if start else dt.datetime(2026, 1, 1, tzinfo=UTC)
        self.auto_advance = auto_advance
        self._idle_rounds = idle_rounds
        self._sleepers: list[tuple[dt.datetime, int, asyncio.Future]] = []
        self._seq = itertools.count()
        self._changed: asyncio.Event | None = None
        self._driver: asyncio.Task | None = None

    # -- Clock protocol -------------------------------------------------------
    def now(self) -> dt.datetime:
        return self._now

    async def sleep_until(self, when: dt.datetime) -> None:
        when = _aware(when)
        if when <= self._now:
            await asyncio.sleep(0)
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._seq), fut))
        self._ensure_driver()
        await fut

    # -- manual control -------------------------------------------------------
    async def advance(self, seconds: float) -> None:
        await self.advance_to(self._now + dt.timedelta(seconds=seconds))

    async def advance_to(self, when: dt.datetime) -> None:
        """Move time to ``when``, waking due sleepers in deadline order and letting the
        loop settle after each step (so timers fire at their own instants)."""
        when = _aware(when)
        await self.wait_idle()
        while True:
            self._prune()
            if self._sleepers and self._sleepers[0][0] <= when:
                self._fire_next()
                await self.wait_idle()
            else:
                break
        if when > self._now:
            self._now = when
        await self.wait_idle()

    async def wait_idle(self) -> None:
        """Yield until no other callback is ready to run for a few loop rounds."""
        loop = asyncio.get_running_loop()
        quiet = 0
        rounds = 0
        while quiet < self._idle_rounds:
            await asyncio.sleep(0)
            rounds += 1
            ready = getattr(loop, "_ready", None)  # CPython BaseEventLoop internals
            if ready is None or len(ready) == 0:
                quiet += 1
            else:
                quiet = 0
            if rounds > 100_000:  # something spins forever; don't hang the test
                return

    def close(self) -> None:
        if self._driver and not self._driver.done():
            self._driver.cancel()
        self._driver = None

    # -- internals ----------------------------------------------------------
    def _prune(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)

    def _fire_next(self) -> None:
        when, _, fut = heapq.heappop(self._sleepers)
        if when > self._now:
            self._now = when
        if not fut.done():
            fut.set_result(None)
        # wake every other sleeper due at the same instant
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, other = heapq.heappop(self._sleepers)
            if not other.done():
                other.set_result(None)

    def _ensure_driver(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        self._changed.set()
        if self.auto_advance and (self._driver is None or self._driver.done()):
            self._driver = asyncio.get_running_loop().create_task(self._drive(), name="virtual-clock")

    async def _drive(self) -> None:
        assert self._changed is not None
        while True:
            self._prune()
            if not self._sleepers:
                self._changed.clear()
                await self._changed.wait()
                continue
            await self.wait_idle()
            self._prune()
            if self._sleepers:
                self._fire_next()
