"""Options shared by the app's Azure Storage clients (turns table, records queue)."""

from __future__ import annotations

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
