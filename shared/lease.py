"""The call lease: at most one ``converse`` attempt drives a call's sideband at any time.

Why it exists (docs/architecture.md, "One driver per call"): Durable's Azure Storage provider can hand the same
``converse`` work item to a second worker while the first still runs it (one failed lock renewal is enough), and two
sideband clients would both answer tool calls and both send ``response.create``.

The lease is one row of the turns table, in the call's own partition: PartitionKey = call_id, RowKey = ``lease``
(turn rows have digit-only keys, and :meth:`shared.turns.TurnStore.load` reads only those). Every write is guarded by
the row's ETag (``If-Match``), so of two attempts that race for the row exactly one write succeeds and the other gets
412. The row records who holds it (``owner``, a random id per attempt), ``state`` (``held`` / ``released`` /
``ended``), a ``renewals`` counter that every renewal bumps (and with it the ETag), the holder's ``ttl_seconds``
and, once the call is over, the summary without its transcript.

Expiry needs no shared clock. A waiting attempt notes when it first read the current ETag, on its own monotonic
clock; only if the same ETag is still there ``ttl_seconds`` later is the holder dead, and the waiter takes the row
with ``If-Match`` on that ETag. The holder counts its own validity from the moment it *sent* its last successful
write (which is before the service stored it, so before any waiter could have read it), and stops acting
``margin_seconds`` before its TTL runs out. So the two windows never overlap, whatever the machines' wall clocks say.

One shortcut: the row also names the holder's process (``pid``) and where it runs (``node``: the Linux boot id and
PID namespace). A waiter in the same PID namespace of the same kernel can ask the kernel whether that process still
exists; if it does not, the holder is certainly dead and the waiter takes over at once instead of after the TTL.
That is the common crash: the Functions host restarts a dead language worker on the same instance, and Durable
redelivers the activity there (or the local runner is restarted).

Every write of the row also carries the call's newest transcript turns (:meth:`Lease.carry`, the ``tail`` of
:mod:`shared.turns`), so a live call's renewals and its transcript share one request. An attempt that takes the row
over first writes the tail it finds as a turn row of its own, so that replacing the row loses no turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from .tasks import cancel_and_wait
from .telemetry import traced
from .turns import LEASE_ROW_KEY, tail_entity

log = logging.getLogger("switchboard.lease")

ROW_KEY = LEASE_ROW_KEY
HELD, RELEASED, ENDED = "held", "released", "ended"

# Why these numbers. A holder renews every 5 s and keeps the call while a renewal lands within 15 s, so a storage
# blip or a busy event loop (up to 100 calls share one loop, docs/deploy.md) gets two more tries before the call
# changes hands; the table's own latency is milliseconds. The other side of the trade: after a worker crash, the
# next attempt waits out the TTL before it answers tools again (on top of Durable's 1 min work-item visibility
# timeout), so 15 s is about the most dead air we accept. 3 renewals a TTL = 180 table writes for a 15-min call.
LEASE_TTL_SECONDS = 15.0
LEASE_RENEW_SECONDS = 5.0
# A waiting attempt reads the row this often: it notices a finished call or a dead holder within 2 s.
LEASE_POLL_SECONDS = 2.0
# The holder stops sending this long before a waiter could take over: an event already in a socket buffer, a
# renewal that took a while to be confirmed.
LEASE_MARGIN_SECONDS = 2.0

# A table string property holds 64 KiB (32K UTF-16 characters); the stored summary stays well under.
MAX_SUMMARY_CHARS = 30_000


@dataclass(frozen=True)
class LeaseTiming:
    ttl_seconds: float = LEASE_TTL_SECONDS
    renew_seconds: float = LEASE_RENEW_SECONDS
    poll_seconds: float = LEASE_POLL_SECONDS
    margin_seconds: float = LEASE_MARGIN_SECONDS

    def __post_init__(self) -> None:
        if not (0 < self.renew_seconds < self.ttl_seconds - self.margin_seconds) or self.margin_seconds < 0:
            raise ValueError("lease timing needs 0 < renew_seconds < ttl_seconds - margin_seconds and margin >= 0")
        if self.poll_seconds <= 0:
            raise ValueError("lease poll_seconds must be positive")

    @property
    def request_timeout(self) -> float:
        # One hung storage request must not use up the whole TTL: the next renewal gets its own chance.
        return self.renew_seconds


@dataclass(frozen=True)
class CallEnded:
    """Another attempt drove the call to its end; ``summary`` is its summary without the transcript."""

    summary: dict[str, Any]


@dataclass(frozen=True)
class GaveUp:
    """The wait reached its deadline while another attempt still held the call."""

    holder: str


def _precondition_failed(exc: Exception) -> bool:
    """412 (ETag moved), 409 (row created meanwhile), 404 (row gone): someone else changed the row."""
    if isinstance(exc, (ResourceModifiedError, ResourceExistsError, ResourceNotFoundError)):
        return True
    return isinstance(exc, HttpResponseError) and exc.status_code in (404, 409, 412)


@cache
def this_node() -> str:
    """Where this process's PID is meaningful: same kernel boot and same PID namespace. Empty when unknown (not
    Linux), which turns the dead-process shortcut off."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


def process_gone(node: Any, pid: Any) -> bool:
    """True only when ``pid`` on ``node`` is certainly not running: same node as us, and the kernel has no such
    process. Anything else (another node, a pid we may not signal, a reused pid) counts as alive."""
    if not node or node != this_node() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def slim_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary as stored on the lease row: no transcript (the turns table holds it), and if the tool log is
    enormous, not that either."""
    slim = {k: v for k, v in summary.items() if k != "transcript"}
    if len(json.dumps(slim, default=str)) > MAX_SUMMARY_CHARS:
        slim["tools"] = []
    return slim


class CallLeases:
    """The lease rows of every call. Made once per process on the turns table's client (``call_workflow/runtime``)."""

    def __init__(self, table: TableClient, timing: LeaseTiming = LeaseTiming()) -> None:
        self._table = table
        self.timing = timing
        self._created = False
        self._create_lock = asyncio.Lock()

    async def _ensure_table(self) -> None:
        if self._created:
            return
        async with self._create_lock:
            if not self._created:
                with contextlib.suppress(ResourceExistsError):
                    await self._table.create_table()
                self._created = True

    async def _get(self, call_id: str) -> Any:
        try:
            return await asyncio.wait_for(self._table.get_entity(call_id, ROW_KEY), self.timing.request_timeout)
        except ResourceNotFoundError:
            return None

    def _row(self, call_id: str, owner: str, state: str, **extra: Any) -> dict[str, Any]:
        return {"PartitionKey": call_id, "RowKey": ROW_KEY, "owner": owner, "state": state,
                "ttl_seconds": self.timing.ttl_seconds, "node": this_node(), "pid": os.getpid(), **extra}

    # The timeout is each attempt's share of the lease's remaining time, computed by the caller.
    @traced("lease.write")
    async def write(self, call_id: str, row: dict[str, Any], etag: str | None, timeout: float) -> str:  # noqa: ASYNC109
        """Create the row (``etag`` None) or replace it if it still has ``etag``; returns the new ETag.
        Raises what :func:`_precondition_failed` recognises when another attempt got there first."""
        if etag is None:
            op = self._table.create_entity(row)
        else:
            op = self._table.update_entity(row, mode=UpdateMode.REPLACE, etag=etag,
                                           match_condition=MatchConditions.IfNotModified)
        result = await asyncio.wait_for(op, timeout)
        return result["etag"]

    async def acquire(
        self, call_id: str, *, attempt: str | None = None, give_up_at: float | None = None,
    ) -> Lease | CallEnded | GaveUp:
        """Take the call's lease, waiting while another live attempt holds it.

        Returns a held :class:`Lease`; :class:`CallEnded` when the holder finished the call meanwhile (or before);
        :class:`GaveUp` when ``give_up_at`` (event-loop time) passes first. ``attempt`` names the caller; a holder
        that lost its lease passes its own id and gets the row straight back if nobody else took it."""
        loop = asyncio.get_running_loop()
        attempt = attempt or secrets.token_hex(6)
        seen_etag: str | None = None
        seen_since = 0.0
        waiting_logged = False
        first = True
        while True:
            try:
                await self._ensure_table()
                if first:
                    # The common case is the first attempt of a new call: insert straight away, one round trip
                    # before the sideband opens (the caller hears silence until the greeting). 409: read it.
                    first = False
                    with contextlib.suppress(ResourceExistsError):
                        return await self._take(call_id, attempt, None, previous=None)
                row = await self._get(call_id)
                now = loop.time()
                if row is None:
                    return await self._take(call_id, attempt, None, previous=None)
                etag, state, owner = row.metadata["etag"], row.get("state"), str(row.get("owner") or "")
                if state == ENDED:
                    log.info("call %s: attempt %s finds the call ended by attempt %s", call_id, attempt, owner)
                    return CallEnded(summary=json.loads(row.get("summary") or "{}"))
                if state == RELEASED or owner == attempt:
                    return await self._take(call_id, attempt, etag, previous=owner, row=row)
                if etag != seen_etag:
                    seen_etag, seen_since = etag, now
                if not waiting_logged:
                    log.info("call %s: attempt %s waits: attempt %s holds the call", call_id, attempt, owner)
                    waiting_logged = True
                ttl = float(row.get("ttl_seconds") or self.timing.ttl_seconds)
                if process_gone(row.get("node"), row.get("pid")):
                    log.warning("call %s: attempt %s takes over from attempt %s (its process is gone)",
                                call_id, attempt, owner)
                    return await self._take(call_id, attempt, etag, previous=owner, row=row)
                if now - seen_since >= ttl:
                    log.warning("call %s: attempt %s takes over from attempt %s (no renewal for %.1fs)",
                                call_id, attempt, owner, now - seen_since)
                    return await self._take(call_id, attempt, etag, previous=owner, row=row)
            except Exception as exc:
                if not _precondition_failed(exc):
                    log.warning("call %s: lease read/write failed: %s", call_id, type(exc).__name__)
                # Another attempt moved first (or storage failed): look again after a pause.
            if give_up_at is not None and loop.time() >= give_up_at:
                log.warning("call %s: attempt %s stops waiting for the lease", call_id, attempt)
                return GaveUp(holder=str((await self._peek(call_id)) or "unknown"))
            await asyncio.sleep(self.timing.poll_seconds)

    async def _peek(self, call_id: str) -> str | None:
        try:
            row = await self._get(call_id)
        except Exception:
            return None
        return None if row is None else row.get("owner")

    async def _take(self, call_id: str, attempt: str, etag: str | None, previous: str | None,
                    row: Mapping[str, Any] | None = None) -> Lease:
        carried = tail_entity(call_id, row) if row is not None else None
        if carried is not None:
            # The row carries the newest turns of the attempt before: store them as a turn row before the row is
            # replaced (an upsert: doing it twice, if the take below loses a race, is harmless).
            await asyncio.wait_for(self._table.upsert_entity(carried, mode=UpdateMode.REPLACE),
                                   self.timing.request_timeout)
        sent = asyncio.get_running_loop().time()
        new_etag = await self.write(call_id, self._row(call_id, attempt, HELD, renewals=0), etag,
                                    self.timing.request_timeout)
        # The common case, a call's first attempt, is DEBUG: the intake's "accepted" line already says the call
        # started. A takeover or a second attempt is worth an INFO line.
        log.log(logging.INFO if previous or etag is not None else logging.DEBUG, "call %s: attempt %s holds the call%s",
                call_id, attempt, f" (after attempt {previous})" if previous else "")
        return Lease(self, call_id, attempt, new_etag, sent, previous=previous, created=etag is None)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Lease:
    """A held lease. :meth:`start` renews it in the background; :meth:`valid` says whether the holder may still
    act (send on the sideband, hang up, refer)."""

    def __init__(self, leases: CallLeases, call_id: str, attempt: str, etag: str, sent_at: float,
                 previous: str | None = None, created: bool = False) -> None:
        self._leases = leases
        self.timing = leases.timing
        self.call_id = call_id
        self.attempt = attempt
        self.previous = previous
        # This attempt created the lease row: no attempt held the call before it, and as every attempt takes the
        # lease before it writes a turn, the turns table holds none of this call (converse skips reading it).
        self.created = created
        self._etag = etag
        self._renewals = 0
        self._valid_until = sent_at + self.timing.ttl_seconds - self.timing.margin_seconds
        self.lost = False
        self._on_lost: Callable[[], None] | None = None
        self._task: asyncio.Task | None = None
        self._carried: Callable[[], dict[str, Any]] = dict
        self._hurry = False
        self._waiter: asyncio.Future[None] | None = None

    def carry(self, fields: Callable[[], dict[str, Any]]) -> None:
        """Every later write of the row adds ``fields()`` (the call's newest turns, shared/turns.py)."""
        self._carried = fields

    def _carry_fields(self) -> dict[str, Any]:
        # A fault in what the row carries must never cost the call its lease: renew without the turns.
        try:
            return self._carried()
        except Exception:
            log.exception("call %s: the turns the lease row carries could not be built", self.call_id)
            return {}

    def renew_now(self) -> None:
        """Renew without waiting for the next regular renewal (to carry the call's first turn at once)."""
        self._hurry = True
        if self._waiter is not None:
            _wake(self._waiter)

    async def _pause(self, seconds: float) -> None:
        # A bare future and a timer rather than asyncio.wait_for, which can swallow a cancellation on Python 3.11
        # (shared/tasks.py).
        if seconds > 0 and not self._hurry:
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(seconds, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        self._hurry = False

    def valid(self) -> bool:
        return not self.lost and asyncio.get_running_loop().time() < self._valid_until

    def start(self, on_lost: Callable[[], None]) -> None:
        self._on_lost = on_lost
        self._task = asyncio.create_task(self._renew_loop(), name=f"lease:{self.call_id}")

    def _lose(self, why: str) -> None:
        if self.lost:
            return
        self.lost = True
        log.warning("call %s: attempt %s lost the call's lease (%s); it stops sending", self.call_id, self.attempt, why)
        if self._on_lost is not None:
            self._on_lost()

    async def _renew_loop(self) -> None:
        loop = asyncio.get_running_loop()
        pause = self.timing.renew_seconds
        while True:
            # Never sleep past the end of validity: a lease that lapses is reported at once, not at the next tick.
            await self._pause(max(0.0, min(pause, self._valid_until - loop.time())))
            if not self.valid():
                self._lose("no renewal landed within the TTL")
                return
            sent = loop.time()
            try:
                self._etag = await self._leases.write(
                    self.call_id,
                    self._leases._row(self.call_id, self.attempt, HELD, renewals=self._renewals + 1,
                                      **self._carry_fields()),
                    self._etag, max(0.01, min(self.timing.request_timeout, self._valid_until - sent)))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if _precondition_failed(exc):
                    self._lose("another attempt took the call over")
                    return
                log.warning("call %s: lease renewal failed: %s", self.call_id, type(exc).__name__)
                pause = self.timing.poll_seconds  # try again soon, while the lease is still valid
                continue
            self._renewals += 1
            self._valid_until = sent + self.timing.ttl_seconds - self.timing.margin_seconds
            pause = self.timing.renew_seconds

    async def stop(self) -> None:
        """Stop renewing (the row is left as it is)."""
        task, self._task = self._task, None
        await cancel_and_wait(task)  # a renewal's asyncio.wait_for can swallow one cancellation (shared/tasks.py)

    async def _final(self, state: str, **extra: Any) -> bool:
        await self.stop()
        if self.lost:
            return False
        row = self._leases._row(self.call_id, self.attempt, state, **extra, **self._carry_fields())
        try:
            try:
                self._etag = await self._leases.write(self.call_id, row, self._etag, self.timing.request_timeout)
            except Exception as exc:
                if not _precondition_failed(exc):
                    raise
                # Stopping may have cut off a renewal whose write landed anyway: the row is still ours under a
                # newer ETag. Anyone else's row is left alone.
                current = await self._leases._get(self.call_id)
                if current is None or current.get("owner") != self.attempt or current.get("state") != HELD:
                    raise
                self._etag = await self._leases.write(self.call_id, row, current.metadata["etag"],
                                                      self.timing.request_timeout)
        except Exception as exc:
            log.warning("call %s: could not mark the lease %s: %s", self.call_id, state, type(exc).__name__)
            return False
        self.lost = True  # no longer ours to act on
        return True

    async def end(self, summary: Mapping[str, Any]) -> bool:
        """The call is over: waiting attempts return this summary instead of driving a finished call."""
        return await self._final(ENDED, summary=json.dumps(slim_summary(summary), default=str,
                                                           separators=(",", ":")))

    async def release(self) -> bool:
        """Give the call up without ending it (this attempt is being stopped): a waiter takes over at once."""
        return await self._final(RELEASED)
