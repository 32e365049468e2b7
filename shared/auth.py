"""Credentials for Azure OpenAI REST and WebSocket calls: an API key, or a cached Entra token.

Entra tokens live about an hour. Fetching one costs a round trip to the identity endpoint (tens to hundreds
of milliseconds, more on a cold managed-identity endpoint), which must not sit on the ring path of every
call, so the token is cached and refreshed a few minutes before it expires, and concurrent callers share a
single fetch. ``azure.identity`` is imported lazily: it is the heaviest import on the webhook path and the
api-key mode never needs it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger("switchboard.auth")

REFRESH_MARGIN_SECONDS = 300
# After a failed refresh while the cached token still works, wait this long before trying again.
RETRY_AFTER_FAILURE_SECONDS = 10


class AuthProvider(Protocol):
    async def headers(self) -> dict[str, str]: ...


class ApiKeyAuth:
    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("API key is empty")
        self._key = key

    async def headers(self) -> dict[str, str]:
        return {"api-key": self._key}

    def __repr__(self) -> str:  # never the key
        return "ApiKeyAuth(key=***)"

    async def aclose(self) -> None:
        return None


class AsyncTokenCredential(Protocol):
    async def get_token(self, *scopes: str, **kwargs: Any) -> Any: ...  # -> azure.core.credentials.AccessToken


class EntraAuth:
    """Bearer tokens from an azure-identity *async* credential, cached until ``margin`` before expiry."""

    def __init__(
        self,
        credential: AsyncTokenCredential,
        scope: str,
        *,
        margin_seconds: float = REFRESH_MARGIN_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credential = credential
        self._scope = scope
        self._margin = margin_seconds
        self._clock = clock
        self._token: str | None = None
        self._expires_on: float = 0.0
        self._refresh_at: float = 0.0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"EntraAuth(scope={self._scope!r})"

    def _fresh(self) -> bool:
        return self._token is not None and self._clock() < self._refresh_at

    async def headers(self) -> dict[str, str]:
        if not self._fresh():
            await self._refresh()
        assert self._token is not None
        return {"Authorization": f"Bearer {self._token}"}

    async def _refresh(self) -> None:
        async with self._lock:
            if self._fresh():  # another caller refreshed while we waited for the lock
                return
            try:
                access = await self._credential.get_token(self._scope)
            except Exception as exc:
                # Inside the margin the old token still works: keep serving it rather than fail a call.
                now = self._clock()
                if self._token is not None and now < self._expires_on:
                    # And pause before the next attempt: otherwise every request waiting on the lock would
                    # make its own (possibly slow) failing fetch in turn, delaying every call in the queue.
                    self._refresh_at = min(now + RETRY_AFTER_FAILURE_SECONDS, self._expires_on)
                    log.warning("token refresh failed (%s); using the cached token until it expires",
                                type(exc).__name__)
                    return
                raise
            now = self._clock()
            self._token = access.token
            self._expires_on = float(access.expires_on)
            # A token living less than the margin would otherwise be refetched on every request:
            # refresh those at half their remaining life instead.
            self._refresh_at = max(self._expires_on - self._margin, now + (self._expires_on - now) / 2)
            log.info("token acquired for %s, expires in %.0f s", self._scope, self._expires_on - now)

    async def aclose(self) -> None:
        close = getattr(self._credential, "close", None)
        if close is not None:
            await close()


def azure_credential(managed_identity_client_id: str | None) -> Any:
    """The process's async azure-identity credential: the user-assigned managed identity when its client id
    is set, else DefaultAzureCredential (developer sign-in locally). One instance serves Azure OpenAI and
    storage, so there is one token cache per resource and one place to close."""
    # Lazy: azure.identity pulls in msal, cryptography, requests... (tens of ms cold, see bench/webhook_path.py).
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    if managed_identity_client_id:
        return ManagedIdentityCredential(client_id=managed_identity_client_id)
    return DefaultAzureCredential()


def auth_from_settings(settings: Settings, credential: Any = None) -> ApiKeyAuth | EntraAuth:
    """The Azure OpenAI auth of ``AZURE_OPENAI_AUTH``; Entra uses ``credential`` (shared with storage) or a new one."""
    if settings.auth_mode == "api-key":
        assert settings.api_key  # Settings.from_env guarantees it
        return ApiKeyAuth(settings.api_key)
    return EntraAuth(credential or azure_credential(settings.managed_identity_client_id), settings.token_scope)
