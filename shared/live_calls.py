"""The live-calls table: one row per call that may still be on the line, for the capacity count.

Why not count orchestrations: with the Azure Storage provider a query on runtime status scans the Instances
table, which holds every call ever made until it is purged, so the webhook would pay for the whole history
on every ring (docs/architecture.md, "Capacity count"). This table holds only the calls that are live now:

- the webhook adds a row once it has started the call's orchestration (RowKey = call_id, so a duplicate
  delivery writes the same row again);
- the ``publish_call_record`` activity, the first step after the call ended, deletes it;
- every row carries ``expires``: the latest moment the call can still be live (accept + its max duration +
  the orchestrator's grace). A row whose delete was lost (a crashed worker, a storage error) stops counting
  then, and the daily maintenance sweep removes it.

One partition, so a count is a single-partition query over at most the live calls (plus expired leftovers
not yet swept), whatever the history size.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from .storage import CreateOnce, storage_client_options, table_client

log = logging.getLogger("switchboard.live_calls")

PARTITION = "live"


class LiveCallTable:
    def __init__(self, table: TableClient) -> None:
        self._table = table
        self._create = CreateOnce()

    @classmethod
    def from_connection_string(cls, connection_string: str, table_name: str = "calllive") -> LiveCallTable:
        return cls(TableClient.from_connection_string(connection_string, table_name=table_name,
                                                      **storage_client_options()))

    @classmethod
    def from_settings(cls, storage: Any, credential: Any = None) -> LiveCallTable:
        """From ``shared.settings.StorageSettings``, like the turns table (Azurite string, or URI + identity)."""
        return cls(table_client(storage, storage.live_table, credential))

    async def _ensure_table(self) -> None:
        await self._create(self._table)

    async def add(self, call_id: str, expires: dt.datetime) -> None:
        """The call is live until ``expires`` at the latest (idempotent: an upsert keyed by call_id)."""
        await self._ensure_table()
        await self._table.upsert_entity({"PartitionKey": PARTITION, "RowKey": call_id, "expires": expires},
                                        mode=UpdateMode.REPLACE)

    async def remove(self, call_id: str) -> None:
        """The call is over (idempotent: a missing row or table is fine)."""
        with contextlib.suppress(ResourceNotFoundError):
            await self._table.delete_entity(PARTITION, call_id)

    async def count(self, now: dt.datetime) -> int:
        """How many calls are live at ``now`` (rows not yet expired). Only RowKey comes back."""
        await self._ensure_table()
        n = 0
        async for _ in self._table.query_entities("PartitionKey eq @pk and expires gt @now",
                                                  parameters={"pk": PARTITION, "now": now}, select=["RowKey"]):
            n += 1
        return n

    async def sweep(self, now: dt.datetime) -> int:
        """Delete rows that expired before ``now`` (their delete was lost); returns how many."""
        await self._ensure_table()
        removed = 0
        async for entity in self._table.query_entities("PartitionKey eq @pk and expires le @now",
                                                       parameters={"pk": PARTITION, "now": now},
                                                       select=["RowKey"]):
            await self.remove(entity["RowKey"])
            removed += 1
        return removed

    async def aclose(self) -> None:
        await self._table.close()
