"""The turns table: finalised transcript turns, written while the call runs.

PartitionKey = call_id, RowKey = zero-padded sequence number (``000000``, ``000001``...), columns role/text/at.
The call's partition also holds its lease row (RowKey ``lease``, :mod:`shared.lease`); only digit keys are turns.
Why a table and not just the summary: a ``converse`` that crashed and was retried continues the transcript
instead of starting from zero, and ``publish_call_record`` can still build a record when every retry failed.
Writes are upserts keyed by (call_id, seq), so replaying a write after a retry is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from .telemetry import traced

log = logging.getLogger("switchboard.turns")

# Table properties hold at most 64 KiB (32K UTF-16 characters); one spoken turn never gets near that, but a
# runaway transcription must not make the write fail.
MAX_TEXT_CHARS = 30_000


def row_key(seq: int) -> str:
    return f"{seq:06d}"


class TurnStore:
    def __init__(self, table: TableClient) -> None:
        self._table = table
        self._created = False
        self._create_lock = asyncio.Lock()

    @property
    def table(self) -> TableClient:
        """The table client, shared with :class:`shared.lease.CallLeases` (one connection pool per process)."""
        return self._table

    @classmethod
    def from_connection_string(cls, connection_string: str, table_name: str = "callturns") -> TurnStore:
        return cls(TableClient.from_connection_string(connection_string, table_name=table_name))

    @classmethod
    def from_settings(cls, storage: Any, credential: Any = None) -> TurnStore:
        """From ``shared.settings.StorageSettings``: the connection string (Azurite) or ``table_uri`` + an
        azure-identity *async* credential (managed identity in Azure)."""
        if storage.connection_string:
            return cls.from_connection_string(storage.connection_string, storage.turns_table)
        if credential is None:
            raise ValueError("an async credential is required when storage uses identity (table_uri)")
        return cls(TableClient(endpoint=storage.table_uri, table_name=storage.turns_table, credential=credential))

    async def _ensure_table(self) -> None:
        if self._created:
            return
        async with self._create_lock:
            if self._created:
                return
            try:
                await self._table.create_table()
            except ResourceExistsError:
                pass
            self._created = True

    @traced("turns.load")
    async def load(self, call_id: str) -> list[dict[str, Any]]:
        """Every stored turn of the call, in sequence order: ``[{"seq", "role", "text", "at"}]``."""
        await self._ensure_table()
        rows = []
        try:
            async for entity in self._table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": call_id}, select=["RowKey", "role", "text", "at"]
            ):
                if entity["RowKey"].isdigit():  # not the lease row
                    rows.append(entity)
        except ResourceNotFoundError:
            return []
        rows.sort(key=lambda e: e["RowKey"])
        return [
            {"seq": int(e["RowKey"]), "role": e.get("role"), "text": e.get("text") or "", "at": e.get("at")}
            for e in rows
        ]

    @traced("turns.append")
    async def append(self, call_id: str, seq: int, turn: dict[str, Any]) -> None:
        """Upsert turn ``seq`` of the call (idempotent: the same seq written twice is one row)."""
        await self._ensure_table()
        entity = {
            "PartitionKey": call_id,
            "RowKey": row_key(seq),
            "role": turn["role"],
            "text": (turn.get("text") or "")[:MAX_TEXT_CHARS],
            "at": turn.get("at"),
        }
        await self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    async def aclose(self) -> None:
        await self._table.close()


class TurnWriter:
    """Writes turns in order from a background task, so a slow table never stalls the event loop of a call.

    A failed write is retried a few times, then logged and skipped: losing a row of the crash-recovery copy is
    better than ending the phone call. :meth:`flush` waits (bounded) until everything queued is written.
    """

    def __init__(self, store: TurnStore | None, call_id: str, *, retries: int = 3) -> None:
        self._store = store
        self._call_id = call_id
        self._retries = retries
        self._queue: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self.failed = 0

    def put(self, seq: int, turn: dict[str, Any]) -> None:
        if self._store is None:
            return
        self._queue.put_nowait((seq, turn))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"turns:{self._call_id}")

    async def _run(self) -> None:
        assert self._store is not None
        while True:
            seq, turn = await self._queue.get()
            try:
                for attempt in range(self._retries):
                    try:
                        await self._store.append(self._call_id, seq, turn)
                        break
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        log.warning(
                            "call %s: turn %d write failed (attempt %d): %s",
                            self._call_id, seq, attempt + 1, type(exc).__name__,
                        )
                        await asyncio.sleep(0.2 * (attempt + 1))
                else:
                    self.failed += 1
            finally:
                self._queue.task_done()

    async def flush(self, timeout: float = 10.0) -> None:
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            log.warning("call %s: %d turn writes still pending at flush", self._call_id, self._queue.qsize())
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, Exception):
            pass
        self._task = None
