"""Per-instance admission: how many calls this worker process takes on before it refuses new ones.

A call holds a ``converse`` activity, one sideband and a share of the event loop for its whole length. Past what one
process can drive (measured in docs/performance.md), every call gets worse at once: greetings come late, tool
results later, and, in Azure, ``converse`` activities beyond the host's ``maxConcurrentActivityFunctions`` wait in
the work-item queue while their callers hear silence. So the intake refuses a new call cleanly (SIP 486 Busy Here)
once this process is at ``MAX_CALLS_PER_INSTANCE``, instead of accepting a call nobody can drive.

The count is in-process and costs a dictionary lookup: the calls whose ``converse`` runs in this process, plus the
calls this process accepted in the last ``RESERVATION_SECONDS`` whose ``converse`` has not started here yet (between
the accept and the activity's start the call is on no one's books). Without a shared store this is exact for one
process (the local runner, or one instance with one worker process) and an approximation with several instances,
where an accepted call's ``converse`` may run on another one: its reservation here then lapses after
``RESERVATION_SECONDS``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

RESERVATION_SECONDS = 30.0


class Admission:
    def __init__(self, max_calls: int | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_calls = max_calls
        self._clock = clock
        self._running: dict[str, int] = {}  # call_id -> converse attempts running here
        self._reserved: dict[str, float] = {}  # call_id -> when the reservation lapses (insertion order = age)

    @property
    def live(self) -> int:
        self._purge()
        return len(self._running) + len(self._reserved)

    def try_admit(self, call_id: str) -> bool:
        """Reserve a place for a ringing call; False when this process is full (the caller should be refused)."""
        if call_id in self._running or call_id in self._reserved:
            return True
        if self.max_calls is not None and self.live >= self.max_calls:
            return False
        self._reserved[call_id] = self._clock() + RESERVATION_SECONDS
        return True

    def release(self, call_id: str) -> None:
        """The reserved call was not accepted after all (refused, caller gone, platform error)."""
        self._reserved.pop(call_id, None)

    def started(self, call_id: str) -> None:
        """A ``converse`` for the call runs in this process (a retried attempt counts once)."""
        self._reserved.pop(call_id, None)
        self._running[call_id] = self._running.get(call_id, 0) + 1

    def ended(self, call_id: str) -> None:
        n = self._running.get(call_id, 0) - 1
        if n > 0:
            self._running[call_id] = n
        else:
            self._running.pop(call_id, None)

    def _purge(self) -> None:
        now = self._clock()
        while self._reserved:
            call_id, until = next(iter(self._reserved.items()))
            if until > now:
                break
            del self._reserved[call_id]


# One per process: the webhook (intake) and the converse activities of a worker share it.
ADMISSION = Admission(None)
