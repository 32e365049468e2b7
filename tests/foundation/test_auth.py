"""Entra tokens through azure-identity's bearer token provider: cached, refreshed before expiry, one fetch at a
time under concurrency, and a failed refresh served from the credential's cache while the token is valid.

Both read the wall clock (``time.time``), which the ``clock`` fixture moves. The provider refreshes 5 minutes
before expiry less up to 60 s of random jitter, or at ``refresh_on`` plus that jitter; the tests step past both
ends of those windows."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time

import pytest
from azure.core.credentials import AccessTokenInfo
from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio._internal.get_token_mixin import GetTokenMixin

from shared.auth import ApiKeyAuth, EntraAuth, auth_from_settings

SCOPE = "https://cognitiveservices.azure.com/.default"
HOUR = 3600


class FakeCredential:
    """Stands in for an azure-identity async credential: each call is a fetch from the identity endpoint, and the
    next token's lifetime (and ``refresh_on``) is whatever the test queued."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[tuple[str, ...]] = []
        self.lifetimes: list[tuple[float, float | None]] = []  # (expires in, refresh_on relative to now)
        self.closed = False

    async def get_token_info(self, *scopes: str, options=None) -> AccessTokenInfo:
        self.calls.append(scopes)
        if self.delay:
            await asyncio.sleep(self.delay)
        expires_in, refresh_in = self.lifetimes.pop(0) if self.lifetimes else (HOUR, None)
        now = time.time()
        return AccessTokenInfo(f"tok-{len(self.calls)}", int(now + expires_in),
                               refresh_on=None if refresh_in is None else int(now + refresh_in))

    async def close(self) -> None:
        self.closed = True


class EndpointCredential(GetTokenMixin):
    """azure-identity's own caching credential logic (the base of ManagedIdentityCredential and the others),
    over a fake identity endpoint that the test can take down."""

    def __init__(self, lifetime: float) -> None:
        super().__init__()
        self.lifetime = lifetime
        self.cached: AccessTokenInfo | None = None
        self.requests = 0
        self.down = False

    async def _acquire_token_silently(self, *scopes: str, **kwargs) -> AccessTokenInfo | None:
        return self.cached

    async def _request_token(self, *scopes: str, **kwargs) -> AccessTokenInfo:
        self.requests += 1
        await asyncio.sleep(0.01)
        if self.down:
            raise ClientAuthenticationError("identity endpoint down")
        self.cached = AccessTokenInfo(f"tok-{self.requests}", int(time.time() + self.lifetime))
        return self.cached

    async def close(self) -> None:
        return None


async def test_api_key_header_and_repr():
    auth = ApiKeyAuth("k-123")
    assert await auth.headers() == {"api-key": "k-123"}
    assert "k-123" not in repr(auth)
    with pytest.raises(ValueError):
        ApiKeyAuth("")


class Clock:
    """The wall clock that azure-core's provider and azure-identity's credential read (``time.time``)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(time, "time", c)
    return c


async def test_token_is_cached_while_far_from_expiry(clock):
    cred = FakeCredential()
    auth = EntraAuth(cred, SCOPE)
    for _ in range(50):
        assert await auth.headers() == {"Authorization": "Bearer tok-1"}
    clock.now += HOUR - 301  # just outside the 5-minute window
    assert await auth.headers() == {"Authorization": "Bearer tok-1"}
    assert cred.calls == [(SCOPE,)]


async def test_token_is_refreshed_before_it_expires(clock):
    cred = FakeCredential()
    auth = EntraAuth(cred, SCOPE)
    assert await auth.headers() == {"Authorization": "Bearer tok-1"}
    clock.now += HOUR - 239  # 239 s left: inside the window whatever the jitter, and tok-1 still valid
    assert await auth.headers() == {"Authorization": "Bearer tok-2"}
    assert await auth.headers() == {"Authorization": "Bearer tok-2"}
    assert len(cred.calls) == 2


async def test_refresh_on_is_honoured(clock):
    # The identity platform may ask for a refresh (refresh_on) long before expiry.
    cred = FakeCredential()
    cred.lifetimes = [(HOUR, 1800)]
    auth = EntraAuth(cred, SCOPE)
    assert await auth.headers() == {"Authorization": "Bearer tok-1"}
    clock.now += 1799
    assert await auth.headers() == {"Authorization": "Bearer tok-1"}
    clock.now += 62  # refresh_on plus the longest jitter has passed
    assert await auth.headers() == {"Authorization": "Bearer tok-2"}
    assert len(cred.calls) == 2


async def test_concurrent_callers_share_one_fetch(clock):
    cred = FakeCredential(delay=0.05)
    auth = EntraAuth(cred, SCOPE)
    first = await asyncio.gather(*(auth.headers() for _ in range(20)))
    assert len(cred.calls) == 1 and {r["Authorization"] for r in first} == {"Bearer tok-1"}
    # A refresh with 20 requests waiting: still one fetch, and every request gets the new token.
    clock.now += HOUR - 200
    second = await asyncio.gather(*(auth.headers() for _ in range(20)))
    assert len(cred.calls) == 2 and {r["Authorization"] for r in second} == {"Bearer tok-2"}


async def test_failed_refresh_keeps_the_valid_token_and_is_not_retried_by_every_caller(clock):
    # While the identity endpoint is down, requests keep the token that still works, and do not queue one by one
    # behind their own failing fetch: azure-identity tries again at most every 30 s.
    cred = EndpointCredential(lifetime=HOUR)
    auth = EntraAuth(cred, SCOPE)
    assert await auth.headers() == {"Authorization": "Bearer tok-1"}
    clock.now += HOUR - 200  # due for refresh, 200 s of validity left
    cred.down = True
    results = await asyncio.gather(*(auth.headers() for _ in range(5)))
    assert results == [{"Authorization": "Bearer tok-1"}] * 5
    assert cred.requests == 2  # the first fetch and one failed refresh
    clock.now += 10
    assert await auth.headers() == {"Authorization": "Bearer tok-1"}
    assert cred.requests == 2
    clock.now += 30
    cred.down = False
    assert await auth.headers() == {"Authorization": "Bearer tok-3"}  # retried after the pause, and it worked


async def test_expired_token_is_not_served_when_the_endpoint_is_down(clock):
    cred = EndpointCredential(lifetime=HOUR)
    auth = EntraAuth(cred, SCOPE)
    await auth.headers()
    clock.now += HOUR + 1
    cred.down = True
    with pytest.raises(ClientAuthenticationError):
        await auth.headers()


async def test_token_never_logged_or_in_repr(caplog):
    auth = EntraAuth(FakeCredential(), SCOPE)
    caplog.set_level(logging.DEBUG)
    await auth.headers()
    assert "tok-1" not in caplog.text and "tok-1" not in repr(auth)


async def test_aclose_closes_the_credential():
    cred = FakeCredential()
    await EntraAuth(cred, SCOPE).aclose()
    assert cred.closed


async def test_auth_from_settings_picks_the_mode(monkeypatch, tmp_path):
    from shared.settings import Settings

    rules = tmp_path / "r.json"
    rules.write_text("{}")
    base = {"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "d",
            "WEBHOOK_SECRET": "whsec_" + "A" * 32, "ROUTING_RULES_PATH": str(rules),
            "CALL_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true;"}
    key_auth = auth_from_settings(
        Settings.from_env({**base, "AZURE_OPENAI_AUTH": "api-key", "AZURE_OPENAI_API_KEY": "k"})
    )
    assert isinstance(key_auth, ApiKeyAuth)
    mi = auth_from_settings(Settings.from_env({**base, "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000001"}))
    assert isinstance(mi, EntraAuth)
    assert type(mi._credential).__name__ == "ManagedIdentityCredential"
    await mi.aclose()


def test_webhook_path_does_not_import_azure_identity_or_openai():
    code = ("import sys, shared.intake; "
            "print(sorted(m for m in ('azure.identity', 'openai', 'azure.functions') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=".")
    assert out.stdout.strip() == "[]"
