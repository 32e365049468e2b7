"""Queue dispatch delay of the Durable Azure Storage provider, modelled for the local runner (off by default).

Locally a started orchestration runs at once. In Azure, with the Azure Storage provider, every hop of a call's
start crosses a storage queue that is *polled*: `start_new` writes to a control queue that the orchestrator's
worker polls, and the orchestrator's `call_activity` writes to the work-item queue that activity workers poll. An
idle poller backs off, so the first message after a quiet spell waits for the poller's next poll.

What the provider does (Azure/durabletask, src/DurableTask.AzureStorage):

- `Messaging/TaskHubQueue.cs`: each queue has a `BackoffPollingHelper(minimum 50 ms, maximum
  MaxQueuePollingInterval)` (host.json `storageProvider.maxQueuePollingInterval`, default 30 s). Adding a message
  calls `backoffHelper.Reset()`, which wakes *that process's* poller of the queue at once.
- `Messaging/WorkItemQueue.cs` (and the control queue likewise): a poll that finds no message waits
  `backoffHelper.WaitAsync`; a poll that finds one calls `Reset()`.
- `BackoffPollingHelper.cs`: `WaitAsync` waits up to `CurrentInterval` on the reset event, then
  `UpdateDelay(signaled)`: signaled → interval back to the minimum; not signaled → interval = minimum +
  random(0.8..1.2) × 2^(k-1) × minimum for k = 1, 2, ... (50, ~100, ~150, ~250, ~450, ~850 ms, ...), capped at the
  maximum (`RandomizedExponentialBackoffStrategy`, borrowed from the WebJobs SDK).
- Control queues are partitioned (host.json `partitionCount`, default 4); an instance's messages go to one of them.

So a message sent by *another* process (the webhook's instance starting an orchestration that a durable-group
instance runs) waits until that poller's next poll: up to the maximum after an idle spell. A message sent by the
poller's own process wakes it. The model keeps one poller per queue (per control-queue partition), advances it
through the empty polls it would have made since its last message, and returns how long a message sent now waits.
`wake_on_send` says whether the sender is the poller's own process. See docs/durable.md ("Queue polling model").
"""
from __future__ import annotations

import dataclasses
import random
import re
import time
import zlib
from collections.abc import Callable

MIN_INTERVAL_S = 0.05  # TaskHubQueue: minPollingDelay
RANDOMIZATION = 0.2  # RandomizedExponentialBackoffStrategy.RandomizationFactor
DEFAULT_MAX_INTERVAL_S = 30.0  # the provider's default maxQueuePollingInterval
DEFAULT_PARTITIONS = 4  # the provider's default partitionCount


class BackoffPoller:
    """One queue's poller: when would a message sent at ``now`` be picked up?"""

    def __init__(self, max_interval_s: float, *, wake_on_send: bool = False, rng: random.Random | None = None,
                 start: float = 0.0) -> None:
        self.min = MIN_INTERVAL_S
        self.max = max(max_interval_s, self.min)
        self.wake_on_send = wake_on_send
        self.rng = rng or random.Random()
        # A poller that has just started has seen nothing: it is at the minimum and backs off from there.
        self.interval = self.min
        self.exponent = 1
        self.next_poll = start

    def _empty_poll(self) -> None:
        """UpdateDelay(false): the poll found nothing; the next wait is longer."""
        if self.interval != self.max:
            increment = self.rng.uniform(1 - RANDOMIZATION, 1 + RANDOMIZATION) * 2 ** (self.exponent - 1) * self.min
            backoff = self.min + increment
            if backoff < self.max:
                self.interval = backoff
                self.exponent += 1
            else:
                self.interval = self.max

    def delay(self, now: float) -> float:
        """Seconds a message sent at ``now`` waits before a poll takes it; the poller is then reset."""
        while self.next_poll < now:  # the empty polls made since the last message
            # WaitAsync waits the current interval, then UpdateDelay(false) lengthens the next one.
            self.next_poll += self.interval
            self._empty_poll()
        pickup = now if self.wake_on_send else self.next_poll
        # The poll that found the message reset the helper: the next wait returns at once (signaled), and the
        # interval is back at the minimum (UpdateDelay(true)).
        self.interval, self.exponent = self.min, 1
        self.next_poll = pickup
        return pickup - now


@dataclasses.dataclass
class QueuePolling:
    """The two queue hops of the Azure Storage provider, for :class:`~localrun.durable.engine.DurableEngine`:
    ``control_delay(instance_id)`` before an orchestrator episode, ``activity_delay()`` before an activity."""

    max_interval_s: float = DEFAULT_MAX_INTERVAL_S
    partitions: int = DEFAULT_PARTITIONS
    # The webhook (client) and the orchestrator run in different processes on Flex (the http and durable scale
    # groups); orchestrator and activity may share one, which wakes the work-item poller at once.
    control_wake_on_send: bool = False
    activity_wake_on_send: bool = False
    seed: int | None = None
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if self.max_interval_s <= 0 or self.partitions < 1:
            raise ValueError("max_interval_s must be positive and partitions at least 1")
        rng = random.Random(self.seed)
        start = self.clock()
        self._control = [BackoffPoller(self.max_interval_s, wake_on_send=self.control_wake_on_send, rng=rng,
                                       start=start) for _ in range(self.partitions)]
        self._work_items = BackoffPoller(self.max_interval_s, wake_on_send=self.activity_wake_on_send, rng=rng,
                                         start=start)

    def control_delay(self, instance_id: str) -> float:
        # The provider hashes the instance id onto a partition (Fnv1a); any stable hash shows the same spread.
        partition = zlib.crc32(instance_id.encode()) % self.partitions
        return self._control[partition].delay(self.clock())

    def activity_delay(self) -> float:
        return self._work_items.delay(self.clock())


def parse_timespan(value: str) -> float:
    """host.json's .NET TimeSpan 'hh:mm:ss[.fff]' or 'd.hh:mm:ss' in seconds; ValueError otherwise."""
    m = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2}(?:\.\d+)?)", value.strip())
    if not m:
        raise ValueError(f"not a timespan: {value!r}")
    days, h, mins, s = m.groups()
    return int(days or 0) * 86400 + int(h) * 3600 + int(mins) * 60 + float(s)


def from_host_json(host_json: dict, **options: object) -> QueuePolling:
    """The model for an app's host.json (``maxQueuePollingInterval``, ``partitionCount``)."""
    provider = ((host_json.get("extensions") or {}).get("durableTask") or {}).get("storageProvider") or {}
    interval = provider.get("maxQueuePollingInterval")
    return QueuePolling(max_interval_s=parse_timespan(interval) if interval else DEFAULT_MAX_INTERVAL_S,
                        partitions=int(provider.get("partitionCount") or DEFAULT_PARTITIONS), **options)  # type: ignore[arg-type]
