"""Entra token caching: one fetch per token lifetime, refresh before expiry, a single fetch under concurrency."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections import namedtuple

import pytest

from shared.auth import ApiKeyAuth, EntraAuth, auth_from_settings

AccessToken = namedtuple("AccessToken", "token expires_on")  # shape of azure.core.credentials.AccessToken


class FakeCredential:
    """Stands in for an azure-identity async credential (the seam the code is written against)."""

    def __init__(self, clock, lifetime: float = 3600, delay: float = 0.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.delay = delay
        self.calls: list[tuple[str, ...]] = []
        self.fail = False
        self.closed = False

    async def get_token(self, *scopes: str, **kwargs):
        self.calls.append(scopes)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("identity endpoint down")
        return AccessToken(f"tok-{len(self.calls)}", int(self.clock() + self.lifetime))

    async def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


SCOPE = "https://cognitiveservices.azure.com/.default"


async def test_api_key_header_and_repr():
    auth = ApiKeyAuth("k-123")
    assert await auth.headers() == {"api-key": "k-123"}
    assert "k-123" not in repr(auth)
    with pytest.raises(ValueError):
        ApiKeyAuth("")


async def test_token_is_cached_until_the_refresh_margin():
    clock = Clock()
    cred = FakeCredential(clock)
    auth = EntraAuth(cred, SCOPE, clock=clock)
    assert await auth.headers() == {"Authorization": "Bearer tok-1"}
    clock.now += 3600 - 301  # just outside the 5-minute margin
    assert await auth.headers() == {"Authorization": "Bearer tok-1"}
    assert cred.calls == [(SCOPE,)]
    clock.now += 2  # inside the margin, token not yet expired: refreshed ahead of expiry
    assert await auth.headers() == {"Authorization": "Bearer tok-2"}
    assert len(cred.calls) == 2


async def test_concurrent_callers_share_one_fetch():
    clock = Clock()
    cred = FakeCredential(clock, delay=0.05)
    auth = EntraAuth(cred, SCOPE, clock=clock)
    results = await asyncio.gather(*(auth.headers() for _ in range(20)))
    assert len(cred.calls) == 1
    assert {r["Authorization"] for r in results} == {"Bearer tok-1"}


async def test_refresh_failure_inside_margin_keeps_the_valid_token(caplog):
    clock = Clock()
    cred = FakeCredential(clock)
    auth = EntraAuth(cred, SCOPE, clock=clock)
    await auth.headers()
    clock.now += 3500
    cred.fail = True
    caplog.set_level(logging.DEBUG)
    assert await auth.headers() == {"Authorization": "Bearer tok-1"}
    clock.now += 200  # now expired
    with pytest.raises(RuntimeError):
        await auth.headers()
    assert "tok-1" not in caplog.text


async def test_short_lived_token_is_not_refetched_on_every_request():
    clock = Clock()
    cred = FakeCredential(clock, lifetime=120)  # shorter than the margin
    auth = EntraAuth(cred, SCOPE, clock=clock)
    for _ in range(10):
        await auth.headers()
    assert len(cred.calls) == 1
    clock.now += 61
    await auth.headers()
    assert len(cred.calls) == 2


async def test_token_never_logged_or_in_repr(caplog):
    clock = Clock()
    auth = EntraAuth(FakeCredential(clock), SCOPE, clock=clock)
    caplog.set_level(logging.DEBUG)
    await auth.headers()
    assert "tok-1" not in caplog.text and "tok-1" not in repr(auth)


async def test_aclose_closes_the_credential():
    cred = FakeCredential(Clock())
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


async def test_failed_refresh_inside_margin_is_not_retried_by_every_waiting_caller():
    # While the identity endpoint is down, requests must not queue one by one behind their own failing fetch:
    # one attempt serves everyone waiting, and the next attempt waits a little.
    clock = Clock()
    cred = FakeCredential(clock, delay=0.01)
    auth = EntraAuth(cred, SCOPE, clock=clock)
    await auth.headers()
    clock.now += 3500  # inside the margin: the cached token is still valid
    cred.fail = True
    results = await asyncio.gather(*(auth.headers() for _ in range(5)))
    assert results == [{"Authorization": "Bearer tok-1"}] * 5
    assert len(cred.calls) == 2  # the first fetch and one failed refresh
    await auth.headers()
    assert len(cred.calls) == 2
    clock.now += 30
    cred.fail = False
    assert await auth.headers() == {"Authorization": "Bearer tok-3"}  # retried after the pause, and it worked
