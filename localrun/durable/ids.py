"""Sequence numbers and DTFx retry semantics.

Ids (``TaskScheduled.EventId`` / ``TimerCreated.EventId`` and the ``TaskScheduledId`` /
``TimerId`` of completions) come from one per-execution counter, in this order:

* each new leaf action of a reply (activity, activity-with-retry, timer; not
  ``WaitForExternalEvent``), in the order the SDK yielded it (compound children
  left to right) - that is the order of ``flatten_actions``;
* ``CallActivityWithRetry``: attempt ``n``; when it fails, the retry timer takes
  the next id (``n+1`` if nothing else was scheduled in between), the next attempt
  the one after (``n+2``). After the *last* failed attempt DTFx's ``RetryInterceptor``
  still creates one more retry timer and only then rethrows; the SDK's
  ``RetryAbleTask`` waits for that extra ``TimerFired`` too.
* long timers (V3 ``LongTimerTask``): the SDK emits one ``CreateTimer`` chunk at a
  time (``longRunningTimerIntervalDuration`` each while more than
  ``maximumShortTimerDuration`` remains); each chunk is a new leaf action.

The SDK assigns the retry timer/attempt ids while it *processes* the failure /
timer event, before resuming user code. The engine therefore processes at most one
retry-related event per episode and always first in that episode, so its counter
advances in exactly the same order as the SDK's.
"""
from __future__ import annotations

import dataclasses
import datetime as dt


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """DTFx ``RetryOptions`` as the extension builds it from the action's ``retryOptions``."""

    first_retry_interval_ms: float
    max_number_of_attempts: int
    backoff_coefficient: float = 1.0
    max_retry_interval_ms: float | None = None  # DTFx default: TimeSpan.MaxValue

    @classmethod
    def from_json(cls, options: dict) -> RetryPolicy:
        return cls(
            first_retry_interval_ms=float(options["firstRetryIntervalInMilliseconds"]),
            max_number_of_attempts=int(options["maxNumberOfAttempts"]),
            backoff_coefficient=float(options.get("backoffCoefficient", 1.0) or 1.0),
            max_retry_interval_ms=(float(options["maxRetryIntervalInMilliseconds"])
                                   if options.get("maxRetryIntervalInMilliseconds") else None),
        )

    def delay_after(self, retry_count: int) -> dt.timedelta:
        """Delay of the retry timer created after failed attempt number ``retry_count``
        (0-based) - ``RetryInterceptor.ComputeNextDelay``:
        ``first * backoff ** retry_count``, capped by ``maxRetryInterval``."""
        ms = self.first_retry_interval_ms * (self.backoff_coefficient ** retry_count)
        if self.max_retry_interval_ms is not None and ms >= self.max_retry_interval_ms:
            ms = self.max_retry_interval_ms
        return dt.timedelta(milliseconds=ms)


@dataclasses.dataclass
class RetryState:
    """One ``CallActivityWithRetry`` as DTFx's RetryInterceptor tracks it."""

    name: str
    input: str | None
    policy: RetryPolicy
    attempt_ids: list[int] = dataclasses.field(default_factory=list)
    timer_ids: list[int] = dataclasses.field(default_factory=list)
    finished: bool = False

    @property
    def failures(self) -> int:
        return len(self.timer_ids)

    @property
    def exhausted(self) -> bool:
        """True once the last allowed attempt has failed (its extra timer is pending)."""
        return len(self.attempt_ids) >= self.policy.max_number_of_attempts


class Sequence:
    """The per-execution id counter."""

    def __init__(self) -> None:
        self.next_id = 0

    def take(self) -> int:
        value = self.next_id
        self.next_id += 1
        return value
