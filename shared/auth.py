"""Credentials for Azure OpenAI REST and WebSocket calls: an API key, or an Entra token.

Entra tokens live about an hour. Fetching one costs a round trip to the identity endpoint (tens to hundreds
of milliseconds, more on a cold managed-identity endpoint), which must not sit on the ring path of every
call. The caching is azure-identity's own: ``get_bearer_token_provider`` keeps the token and fetches a new one
at the token's ``refresh_on`` (or 5 minutes before expiry), with up to a minute of random jitter so that many
instances do not refresh together, and under a lock so concurrent callers share one fetch. Below it, the
azure-identity credential keeps serving its cached token while it is valid if a refresh fails, and tries the
endpoint again at most every 30 seconds. ``azure.identity`` is imported lazily: it is the heaviest import on the
webhook path and the api-key mode never needs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .settings import Settings


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


class EntraAuth:
    """Bearer tokens from an azure-identity *async* credential, through azure-identity's bearer token provider
    (cached until its refresh time, one fetch at a time)."""

    def __init__(self, credential: Any, scope: str) -> None:
        from azure.identity.aio import get_bearer_token_provider  # lazy, see the module docstring

        self._credential = credential
        self._scope = scope
        self._token: Callable[[], Awaitable[str]] = get_bearer_token_provider(credential, scope)

    def __repr__(self) -> str:
        return f"EntraAuth(scope={self._scope!r})"

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self._token()}"}

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
