"""What the app's Azure Storage clients share: transport options, how a table client is made, creating a table once."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


def storage_client_options() -> dict[str, Any]:
    """Keyword arguments for a ``TableClient`` / ``QueueClient``.

    An aiohttp transport that does not read proxy settings or ``~/.netrc`` from the environment: with the default
    (``trust_env``), aiohttp looks both up on *every* request, in an executor thread, which cost the app about 5 % of
    its CPU under load (docs/performance.md). Switchboard talks to storage directly (Azurite, or the storage
    account's endpoints from inside Azure), never through an HTTP proxy.
    """
    from azure.core.pipeline.transport import AioHttpTransport

    return {"transport": AioHttpTransport(use_env_settings=False)}


def table_client(storage: Any, table_name: str, credential: Any = None) -> Any:
    """The async ``TableClient`` of one of the app's tables, from ``shared.settings.StorageSettings``: the connection
    string (Azurite), else ``table_uri`` and the app's managed identity. One place, so every table gets the same
    transport options."""
    from azure.data.tables.aio import TableClient

    if storage.connection_string:
        return TableClient.from_connection_string(storage.connection_string, table_name=table_name,
                                                  **storage_client_options())
    if credential is None or storage.table_uri is None:
        raise ValueError("an async credential is required when storage uses identity (table_uri)")
    return TableClient(endpoint=storage.table_uri, table_name=table_name, credential=credential,
                       **storage_client_options())


class CreateOnce:
    """Creates a table the first time it is needed; concurrent first uses share one request, later ones cost nothing."""

    def __init__(self) -> None:
        self._created = False
        self._lock = asyncio.Lock()

    async def __call__(self, table: Any) -> None:
        if self._created:
            return
        from azure.core.exceptions import ResourceExistsError

        async with self._lock:
            if self._created:
                return
            with contextlib.suppress(ResourceExistsError):
                await table.create_table()
            self._created = True
