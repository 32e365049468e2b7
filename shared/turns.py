"""The turns table: finalised transcript turns, written while the call runs.

PartitionKey = call_id; the partition also holds the call's lease row (RowKey ``lease``, :mod:`shared.lease`),
which is not a turn: only digit RowKeys are. Why a table and not just the summary: a ``converse`` that crashed and
was retried continues the transcript instead of starting from zero, and ``publish_call_record`` can still build a
record when every retry failed.

Rows hold turns in chunks: RowKey = the zero-padded sequence number of the chunk's first turn (``000000``,
``000007``...), ``n`` = how many turns, ``turns`` = JSON ``[[role, text, at], ...]`` for turns ``first``,
``first + 1``... A storage request costs the app about 1.5 ms of CPU whatever it carries (more with many
properties: the SDK serialises each one; and an entity-group transaction costs several times that, as azure-core
builds and parses it as a MIME multipart message), so turns are written a few seconds' worth at a time, in one
property of one entity (docs/performance.md). Writes are upserts keyed by (call_id, first seq): replaying a write
after a retry is harmless. Rows of the older one-turn form (``role``/``text``/``at``) are still read.

**The lease row carries the newest turns.** A call driven under a lease (every ``converse`` activity) renews its
lease row every few seconds anyway, so the turns not yet in a chunk row ride on that write: ``tail_first`` = the
first one's sequence number, ``tail`` = their JSON, as in a chunk. A live call then costs one storage write per
renewal instead of a renewal plus a turn write every few seconds. The tail becomes a chunk row of its own when it
grows past ``SPILL_CHARS`` (or ``SPILL_TURNS``), when its attempt loses the lease, and when another attempt takes
the call over (:mod:`shared.lease`); at the end of the call the row's last write (``ended``) carries it.
:meth:`TurnStore.load` reads chunk rows and the lease row's tail together; a turn found in both (a chunk written,
the renewal that drops it from the tail not yet) is the same turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from .storage import CreateOnce, storage_client_options, table_client
from .tasks import cancel_and_wait
from .telemetry import traced

log = logging.getLogger("switchboard.turns")

# A string property holds at most 64 KiB (32K UTF-16 code units, learn.microsoft.com/rest/api/storageservices/
# understanding-the-table-service-data-model). A chunk's JSON is kept under 15K characters, so it fits even if every
# character needed two code units; one spoken turn never gets near that, but a runaway transcription is cut.
MAX_CHUNK_CHARS = 15_000
MAX_TEXT_CHARS = 12_000
MAX_CHUNK_TURNS = 100
# How long queued turns wait for company before they are written, once the call's first turn is stored: the
# crash-recovery copy is at most this far behind. The first turn is written at once, so that a retried converse
# knows the caller has been greeted. 3 s is a trade: a caller's turn and the agent's answer usually land in one
# write (half the requests of one write per turn), and a worker that dies loses at most 3 s of transcript (the
# load benchmark of docs/performance.md used 10 s: fewer writes still, but up to 10 s lost in a crash).
LINGER_SECONDS = 3.0
# A lease row's tail becomes a chunk row once it holds this much. Well under the 15K of a chunk, so that when a
# chunk write fails the tail has room to keep growing while the next attempt is made; and the tail stays
# small, because every lease renewal sends all of it.
SPILL_CHARS = 6_000
SPILL_TURNS = 40
TAIL_FIRST, TAIL = "tail_first", "tail"
LEASE_ROW_KEY = "lease"  # the call's lease row (shared/lease.py), in the same partition as its turns


def row_key(seq: int) -> str:
    return f"{seq:06d}"


def _item(turn: dict[str, Any]) -> str:
    """One turn as it is stored in a chunk's JSON, cut until it fits a chunk on its own."""
    text = (turn.get("text") or "")[:MAX_TEXT_CHARS]
    while True:
        item = json.dumps([turn["role"], text, turn.get("at")], ensure_ascii=False, separators=(",", ":"))
        if len(item) < MAX_CHUNK_CHARS - 2 or not text:
            return item
        text = text[: len(text) // 2]  # escapes (quotes, control characters) made it grow past the limit


def _chunks(items: list[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    """Runs of consecutive turns (``(seq, turn JSON)``), each as (first seq, [turn JSON...]) small enough for one
    property."""
    out: list[tuple[int, list[str]]] = []
    last_seq, chars = None, 0
    for seq, item in sorted(items, key=lambda t: t[0]):
        if (not out or seq != last_seq + 1 or len(out[-1][1]) >= MAX_CHUNK_TURNS   # type: ignore[operator]
                or chars + len(item) + 1 > MAX_CHUNK_CHARS - 2):
            out.append((seq, []))
            chars = 0
        out[-1][1].append(item)
        chars += len(item) + 1
        last_seq = seq
    return out


def _entity(call_id: str, first: int, items: list[str]) -> dict[str, Any]:
    return {"PartitionKey": call_id, "RowKey": row_key(first), "n": len(items), "turns": f"[{','.join(items)}]"}


def tail_fields(tail: list[tuple[int, str]]) -> dict[str, Any]:
    """The lease row's properties for ``tail`` (consecutive ``(seq, turn JSON)``): as many of the newest turns as
    fit one property. Older ones that do not fit are left out (their chunk write failed again and again)."""
    start, chars = len(tail), 2
    while start and chars + len(tail[start - 1][1]) + 1 <= MAX_CHUNK_CHARS:
        start -= 1
        chars += len(tail[start][1]) + 1
    if start == len(tail):
        return {}
    return {TAIL_FIRST: tail[start][0], TAIL: f"[{','.join(item for _, item in tail[start:])}]"}


def _tail_of(call_id: str, row: Mapping[str, Any]) -> tuple[int, list[list[Any]]] | None:
    """A lease row's tail, parsed: (first seq, [[role, text, at], ...]); None when it carries none."""
    first, items = row.get(TAIL_FIRST), row.get(TAIL)
    if not isinstance(first, int) or first < 0 or not isinstance(items, str) or items == "[]":
        return None
    try:
        turns = json.loads(items)
    except ValueError:
        turns = None
    if not isinstance(turns, list) or not all(isinstance(t, list) and len(t) == 3 for t in turns):
        # Only this module writes it; a damaged one must not stop a takeover or a read, so it is left out.
        log.warning("call %s: the lease row carries turns that cannot be read; they are left out", call_id)
        return None
    return first, turns


def tail_entity(call_id: str, row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The chunk row that holds a lease row's tail (None when it carries none): what an attempt that takes the call
    over writes before it replaces the row."""
    tail = _tail_of(call_id, row)
    if tail is None:
        return None
    first, turns = tail
    return {"PartitionKey": call_id, "RowKey": row_key(first), "n": len(turns), "turns": row[TAIL]}


def _seq_turns(first: int, turns: list[list[Any]]) -> list[dict[str, Any]]:
    return [{"seq": first + i, "role": role, "text": text or "", "at": at}
            for i, (role, text, at) in enumerate(turns)]


def _turns_of(entity: dict[str, Any]) -> list[dict[str, Any]]:
    if not entity["RowKey"].isdigit():  # the lease row: its tail, if any (parsed once)
        tail = _tail_of(entity["PartitionKey"], entity)
        return [] if tail is None else _seq_turns(*tail)
    first = int(entity["RowKey"])
    if "turns" not in entity:  # a one-turn row of the older form
        return [{"seq": first, "role": entity.get("role"), "text": entity.get("text") or "", "at": entity.get("at")}]
    return _seq_turns(first, json.loads(entity["turns"]))


class TurnStore:
    def __init__(self, table: TableClient) -> None:
        self._table = table
        self._create = CreateOnce()

    @property
    def table(self) -> TableClient:
        """The table client, shared with :class:`shared.lease.CallLeases` (one connection pool per process)."""
        return self._table

    @classmethod
    def from_connection_string(cls, connection_string: str, table_name: str = "callturns",
                               **client_options: Any) -> TurnStore:
        """``client_options``: more keyword arguments for the ``TableClient`` (a benchmark's request hook)."""
        return cls(TableClient.from_connection_string(connection_string, table_name=table_name,
                                                      **storage_client_options(), **client_options))

    @classmethod
    def from_settings(cls, storage: Any, credential: Any = None) -> TurnStore:
        """From ``shared.settings.StorageSettings``: the connection string (Azurite) or ``table_uri`` + an
        azure-identity *async* credential (managed identity in Azure)."""
        return cls(table_client(storage, storage.turns_table, credential))

    async def _ensure_table(self) -> None:
        await self._create(self._table)

    @traced("turns.load")
    async def load(self, call_id: str) -> list[dict[str, Any]]:
        """Every stored turn of the call, in sequence order: ``[{"seq", "role", "text", "at"}]``."""
        await self._ensure_table()
        by_seq: dict[int, dict[str, Any]] = {}
        try:
            async for entity in self._table.query_entities("PartitionKey eq @pk", parameters={"pk": call_id}):
                if not entity["RowKey"].isdigit() and entity["RowKey"] != LEASE_ROW_KEY:
                    continue
                for turn in _turns_of(entity):
                    by_seq[turn["seq"]] = turn
        except ResourceNotFoundError:
            return []
        return [by_seq[seq] for seq in sorted(by_seq)]

    async def append(self, call_id: str, seq: int, turn: dict[str, Any]) -> None:
        """Upsert turn ``seq`` of the call (idempotent: the same seq written twice is one turn)."""
        await self.append_many(call_id, [(seq, turn)])

    async def append_many(self, call_id: str, turns: list[tuple[int, dict[str, Any]]]) -> None:
        """Upsert several turns of one call: one request per run of consecutive turns that fits one entity."""
        await self.append_items(call_id, [(seq, _item(turn)) for seq, turn in turns])

    @traced("turns.append")
    async def append_items(self, call_id: str, items: list[tuple[int, str]]) -> None:
        """:meth:`append_many` for turns already in their stored JSON form (a lease row's tail)."""
        await self._ensure_table()
        for first, chunk in _chunks(items):
            await self._table.upsert_entity(_entity(call_id, first, chunk), mode=UpdateMode.REPLACE)

    async def aclose(self) -> None:
        await self._table.close()


class Carrier(Protocol):
    """What carries a call's newest turns to storage on its own writes: the call's lease (shared/lease.py)."""

    def renew_now(self) -> None:
        """Write soon, without waiting for the next regular write."""

    def valid(self) -> bool:
        """Whether it will write again (a lease still held)."""


class _TurnRows:
    """What both writers share: turns written as rows of the call's partition, each write retried a few times."""

    def __init__(self, store: TurnStore | None, call_id: str, retries: int) -> None:
        self._store = store
        self._call_id = call_id
        self._retries = retries
        self._task: asyncio.Task | None = None
        self.failed = 0
        self.requests = 0  # write batches attempted (benchmarks and tests)

    def carried(self) -> dict[str, Any]:
        """The properties the call's lease row carries for this writer's turns (none unless :class:`CarriedTurns`)."""
        return {}

    async def _write_items(self, items: list[tuple[int, str]]) -> bool:
        assert self._store is not None
        for attempt in range(self._retries):
            try:
                self.requests += 1
                await self._store.append_items(self._call_id, items)
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "call %s: write of turns %d-%d failed (attempt %d): %s",
                    self._call_id, items[0][0], items[-1][0], attempt + 1, type(exc).__name__,
                )
                await asyncio.sleep(0.2 * (attempt + 1))
        return False


class TurnWriter(_TurnRows):
    """Writes turns in order from a background task, so a slow table never stalls the event loop of a call: what
    a call without a lease uses (tests, ``bench/live_calls.py --no-lease``).

    After the call's first write, a queued turn waits up to ``linger`` seconds for the turns that follow it, and
    they go in one request: writing each turn on its own was the largest share of a live call's CPU. A failed
    write is retried a few times, then logged and skipped: losing a row of the crash-recovery copy is better than
    ending the phone call. :meth:`flush` cuts the wait short and waits (bounded) until everything queued is written.
    """

    def __init__(self, store: TurnStore | None, call_id: str, *, retries: int = 3,
                 linger: float = LINGER_SECONDS) -> None:
        super().__init__(store, call_id, retries)
        self._linger = linger
        self._queue: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
        self._hurry = asyncio.Event()

    def put(self, seq: int, turn: dict[str, Any]) -> None:
        if self._store is None:
            return
        self._queue.put_nowait((seq, turn))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"turns:{self._call_id}")

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self.requests and self._linger > 0 and not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), self._linger)
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                if not await self._write_items([(seq, _item(turn)) for seq, turn in batch]):
                    self.failed += len(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def flush(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 (bounded: logs what is left, never raises)
        if self._task is None:
            return
        self._hurry.set()
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            log.warning("call %s: %d turn writes still pending at flush", self._call_id, self._queue.qsize())
        task, self._task = self._task, None
        await cancel_and_wait(task)  # its linger's wait_for can swallow one cancellation (shared/tasks.py)


class CarriedTurns(_TurnRows):
    """A call's turns under its lease: they wait in the tail that every write of the lease row carries
    (:meth:`carried`, given to :meth:`shared.lease.Lease.carry`), and the call's first turn asks the lease to write
    at once, so that a retried converse knows the caller was greeted.

    This writer itself writes only when the tail grows past ``SPILL_CHARS`` or ``SPILL_TURNS``, and at
    :meth:`flush` if the lease was lost: a turn row, after which the tail drops those turns. A turn-row write that
    fails costs nothing: the turns stay in the tail, and the next growth or the flush tries again.
    """

    def __init__(self, store: TurnStore, call_id: str, carrier: Carrier, *, retries: int = 3) -> None:
        super().__init__(store, call_id, retries)
        self._carrier = carrier
        self._tail: list[tuple[int, str]] = []  # consecutive (seq, turn JSON) not in a turn row yet
        self._tail_chars = 0
        self._asked_carrier = False
        self._all = False  # a flush asked for the whole tail

    def carried(self) -> dict[str, Any]:
        return tail_fields(self._tail)

    def put(self, seq: int, turn: dict[str, Any]) -> None:
        item = _item(turn)
        self._tail.append((seq, item))
        self._tail_chars += len(item) + 1
        if not self._asked_carrier:
            self._asked_carrier = True
            self._carrier.renew_now()
        if self._task is None and (self._tail_chars >= SPILL_CHARS or len(self._tail) >= SPILL_TURNS):
            self._task = asyncio.create_task(self._spill(), name=f"turns:{self._call_id}")

    async def _spill(self) -> None:
        """Write the tail as turn rows while it is over the limits (or a flush asked for all of it), then drop what
        was written from it."""
        try:
            while self._tail and (self._all or self._tail_chars >= SPILL_CHARS or len(self._tail) >= SPILL_TURNS):
                n = len(self._tail)
                if not await self._write_items(self._tail[:n]):
                    return  # still in the tail, which the lease keeps carrying: the next growth or flush retries
                self._tail_chars -= sum(len(item) + 1 for _, item in self._tail[:n])
                del self._tail[:n]
        finally:
            self._task = None

    async def flush(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 (bounded: logs what is left, never raises)
        """While the lease is held, its last write (the call ended, or handed over) will carry the tail: nothing to
        write here, one request less per call. A holder that lost the lease can no longer write the row, so its tail
        becomes turn rows now; what cannot be written in time is lost from the table (the call's summary still has
        it)."""
        if self._carrier.valid():
            task = self._task  # a spill under way (past the limits) may finish; nothing new starts
        else:
            self._all = True
            task = self._task
            if task is None and self._tail:
                task = self._task = asyncio.create_task(self._spill(), name=f"turns:{self._call_id}")
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            log.warning("call %s: %d turns still unwritten at flush", self._call_id, len(self._tail))
            await cancel_and_wait(task)
