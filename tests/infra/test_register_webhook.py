"""scripts/register_webhook.py against the emulator's Azure webhook-endpoint API.

The script is synchronous (httpx.Client); the emulator serves from this test's event loop, so the
script runs in a worker thread (or a subprocess) while the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import stat
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import ROOT

SCRIPT = ROOT / "scripts" / "register_webhook.py"
ENTRA_TOKEN = "entra-token-for-tests"
WEBHOOK_URL = "https://func-test.azurewebsites.net/api/calls/incoming"


def _load_script() -> Any:
    spec = importlib.util.spec_from_file_location("register_webhook", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["register_webhook"] = module
    spec.loader.exec_module(module)
    return module


rw = _load_script()


@pytest.fixture
async def emu() -> AsyncIterator[Any]:
    from emulator import Emulator, EmulatorConfig

    # api_key=None: only the Entra-style bearer token is accepted, as on an account with local auth off.
    emulator = Emulator(EmulatorConfig(host="127.0.0.1", http_port=0, sip_port=None, api_key=None,
                                       bearer_token=ENTRA_TOKEN, mode="azure"))
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


class Tokens:
    """Token provider that hands out wrong tokens for the first `wrong_first` calls (role propagation)."""

    def __init__(self, wrong_first: int = 0, always_wrong: bool = False) -> None:
        self.wrong_first = wrong_first
        self.always_wrong = always_wrong
        self.calls: list[str] = []

    def __call__(self, scope: str) -> str:
        self.calls.append(scope)
        if self.always_wrong or len(self.calls) <= self.wrong_first:
            return "not-yet-authorised"
        return ENTRA_TOKEN


def fast_retry(max_wait: float = 5.0) -> Any:
    return rw.RetryPolicy(max_wait=max_wait, initial_delay=0.01, max_delay=0.05,
                          log=lambda m: print(f"register_webhook: {m}", file=sys.stderr))


async def run(emu: Any, store: Any, tokens: Callable[[str], str] | None = None, *, retry: Any = None,
              url: str = WEBHOOK_URL, argv: list[str] | None = None, env: dict[str, str] | None = None,
              transport: httpx.BaseTransport | None = None) -> int:
    env = {"AZURE_OPENAI_ENDPOINT": emu.http_url, "WEBHOOK_URL": url, "AZURE_ENV_NAME": "test", **(env or {})}
    return await asyncio.to_thread(rw.main, argv or [], env=env, token_provider=tokens or Tokens(), store=store,
                                   retry=retry or fast_retry(), transport=transport)


def ours(emu: Any, url: str = WEBHOOK_URL) -> list[dict[str, Any]]:
    return [e for e in emu.endpoints.all() if e["url"] == url]


@pytest.fixture
def store(tmp_path: Path) -> Any:
    return rw.FileSecretStore(tmp_path / "secrets.json")


def assert_secret_not_shown(capsys: pytest.CaptureFixture[str], *secrets: str) -> str:
    out, err = capsys.readouterr()
    for secret in secrets:
        assert not leaks(secret, out + err)
    return out + err


def leaks(secret: str, text: str) -> bool:
    """Any 8-character piece of the secret's key material in `text` (catches partial prints too)."""
    key = secret.removeprefix("whsec_")
    return any(key[i:i + 8] in text for i in range(len(key) - 7))


# --------------------------------------------------------------------------------------------------


async def test_first_registration_creates_endpoint_and_stores_its_secret(emu, store, capsys) -> None:
    tokens = Tokens()
    assert await run(emu, store, tokens) == 0

    (endpoint,) = ours(emu)
    assert endpoint["event_types"] == ["realtime.call.incoming"]
    assert endpoint["name"] == "switchboard-test"
    stored = store.get("webhook-secret")
    # The emulator signs deliveries with this endpoint's secret: the app must get exactly that one.
    assert stored.value == endpoint["signing_secret"] and stored.value.startswith("whsec_")
    assert stored.tags == {"webhook-endpoint-id": endpoint["id"], "webhook-url": WEBHOOK_URL}
    assert set(tokens.calls) == {"https://cognitiveservices.azure.com/.default"}
    output = assert_secret_not_shown(capsys, stored.value)
    assert endpoint["id"] in output
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600


async def test_second_run_is_a_no_op(emu, store, capsys) -> None:
    assert await run(emu, store) == 0
    first = store.get("webhook-secret")
    assert await run(emu, store) == 0

    assert len(ours(emu)) == 1
    assert store.get("webhook-secret") == first
    assert "Nothing to do" in assert_secret_not_shown(capsys, first.value)


async def test_lost_secret_triggers_re_registration_and_removes_the_stale_endpoint(emu, store, capsys) -> None:
    assert await run(emu, store) == 0
    (old,) = ours(emu)
    store.delete("webhook-secret")

    assert await run(emu, store) == 0
    (new,) = ours(emu)  # exactly one: the stale endpoint (secret unknown) was deleted
    assert new["id"] != old["id"]
    stored = store.get("webhook-secret")
    assert stored.value == new["signing_secret"] != old["signing_secret"]
    assert stored.tags["webhook-endpoint-id"] == new["id"]
    assert_secret_not_shown(capsys, old["signing_secret"], new["signing_secret"])


async def test_endpoint_deleted_remotely_is_registered_again(emu, store) -> None:
    assert await run(emu, store) == 0
    (old,) = ours(emu)
    emu.endpoints.delete(old["id"])

    assert await run(emu, store) == 0
    (new,) = ours(emu)
    assert store.get("webhook-secret").value == new["signing_secret"]
    assert store.get("webhook-secret").tags["webhook-endpoint-id"] == new["id"]


async def test_secret_of_another_endpoint_is_replaced(emu, store) -> None:
    """The stored secret belongs to an endpoint that is gone while another one for the URL exists."""
    assert await run(emu, store) == 0
    (first,) = ours(emu)
    emu.endpoints.delete(first["id"])
    async with httpx.AsyncClient(base_url=emu.http_url, headers={"Authorization": f"Bearer {ENTRA_TOKEN}"}) as c:
        r = await c.post("/openai/v1/dashboard/webhook_endpoints",
                         json={"name": "manual", "url": WEBHOOK_URL, "event_types": ["realtime.call.incoming"]})
        assert r.status_code == 200
    assert await run(emu, store) == 0
    (current,) = ours(emu)
    assert store.get("webhook-secret").value == current["signing_secret"]


async def test_endpoints_for_other_urls_are_left_alone(emu, store) -> None:
    other = "https://another-app.example.com/hook"
    assert await run(emu, rw.FileSecretStore(store.path.with_name("other.json")), url=other) == 0
    assert await run(emu, store) == 0
    store.delete("webhook-secret")
    assert await run(emu, store) == 0
    assert len(ours(emu, other)) == 1 and len(ours(emu)) == 1


async def test_endpoint_kept_as_previous_during_rotation_is_not_deleted(emu, store) -> None:
    assert await run(emu, store) == 0
    (old,) = ours(emu)
    current = store.get("webhook-secret")
    store.set("webhook-secret-previous", current.value, current.tags)
    store.delete("webhook-secret")

    assert await run(emu, store) == 0
    ids = {e["id"] for e in ours(emu)}
    assert old["id"] in ids and len(ids) == 2
    assert store.get("webhook-secret").tags["webhook-endpoint-id"] in ids - {old["id"]}


async def test_rotation_keeps_both_endpoints_then_deletes_the_old_one(emu, store, capsys) -> None:
    assert await run(emu, store, argv=["--rotate"]) == 1  # nothing registered yet
    assert await run(emu, store) == 0
    (old,) = ours(emu)

    assert await run(emu, store, argv=["--rotate"]) == 0
    assert len(ours(emu)) == 2
    new_id = store.get("webhook-secret").tags["webhook-endpoint-id"]
    assert store.get("webhook-secret-previous").value == old["signing_secret"]
    assert store.get("webhook-secret").value == emu.endpoints.get(new_id)["signing_secret"]
    assert await run(emu, store) == 0 and len(ours(emu)) == 2  # a provision in between changes nothing

    assert await run(emu, store, argv=["--finish-rotation"]) == 0
    assert [e["id"] for e in ours(emu)] == [new_id]
    assert await run(emu, store, argv=["--finish-rotation"]) == 0  # old endpoint already gone: 404 is fine
    assert_secret_not_shown(capsys, old["signing_secret"], store.get("webhook-secret").value)


# Azure's 401/403 bodies on the data plane (the emulator answers OpenAI-style envelopes instead).
PERMISSION_DENIED = {
    "error": {"code": "PermissionDenied", "message": "Principal does not have access to API/Operation."}
}
KEY_WANTED = {"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint."
                                                  " Make sure to provide a valid key for an active subscription and use"
                                                  " a correct regional API endpoint for your resource."}}
BAD_TOKEN = {"error": {"code": "401", "message": "Access token is missing, invalid, audience is incorrect"
                                                 " (https://cognitiveservices.azure.com), or have expired."}}


class AzureFront(httpx.BaseTransport):
    """Azure's answer in front of the emulator: the first `times` webhook-endpoint requests (of `methods`) get
    `status` and `body`; every other request goes through to the real server."""

    def __init__(self, status: int, body: dict[str, Any], times: int = 10**9, methods: tuple[str, ...] = ("GET", "POST",
                                                                                                     "DELETE")) -> None:
        self.status, self.body, self.times, self.methods = status, body, times, methods
        self.refused = 0
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if "/dashboard/webhook_endpoints" in request.url.path and request.method in self.methods and self.times > 0:
            self.times -= 1
            self.refused += 1
            return httpx.Response(self.status, json=self.body)
        return self.inner.handle_request(request)


@pytest.mark.parametrize("status", [401, 403])
async def test_a_role_still_propagating_is_retried(emu, store, capsys, status) -> None:
    front = AzureFront(status, PERMISSION_DENIED, times=3)
    assert await run(emu, store, transport=front) == 0
    assert front.refused == 3
    (endpoint,) = ours(emu)
    assert store.get("webhook-secret").value == endpoint["signing_secret"]
    out = assert_secret_not_shown(capsys, endpoint["signing_secret"])
    assert f"HTTP {status}" in out and "has not propagated yet" in out and "retrying" in out


async def test_a_role_that_never_arrives_fails_with_the_roles_to_check(emu, store, capsys) -> None:
    rc = await run(emu, store, transport=AzureFront(401, PERMISSION_DENIED), retry=fast_retry(max_wait=0.3))
    assert rc == 1
    _, err = capsys.readouterr()
    assert "FAILED" in err and "HTTP 401" in err and "Gave up" in err
    assert "Cognitive Services User" in err  # tells the user which role to check
    assert ours(emu) == [] and store.get("webhook-secret") is None


async def test_an_api_that_wants_a_key_stops_at_once_with_the_fallback(emu, store, capsys) -> None:
    front = AzureFront(401, KEY_WANTED)
    rc = await run(emu, store, transport=front, retry=fast_retry(max_wait=30))
    assert rc == 1 and front.refused == 1  # no 10-minute wait for a role that would not help
    _, err = capsys.readouterr()
    assert "FAILED" in err and "Access denied due to invalid subscription key" in err
    assert "disableLocalAuth=false" in err and "disableLocalAuth=true" in err and "AZURE_OPENAI_AUTH=api-key" in err
    assert "retrying" not in err
    assert ours(emu) == [] and store.get("webhook-secret") is None


async def test_an_openai_style_key_error_also_means_a_key_is_wanted(emu, store, capsys) -> None:
    # The emulator refuses an unknown bearer token the OpenAI way (invalid_api_key): no retry either.
    rc = await run(emu, store, Tokens(always_wrong=True), retry=fast_retry(max_wait=30))
    assert rc == 1
    assert "disableLocalAuth=false" in capsys.readouterr().err


async def test_any_other_auth_failure_stops_at_once_with_azures_message(emu, store, capsys) -> None:
    front = AzureFront(401, BAD_TOKEN)
    rc = await run(emu, store, transport=front, retry=fast_retry(max_wait=30))
    assert rc == 1 and front.refused == 1
    _, err = capsys.readouterr()
    assert "audience is incorrect" in err and "Neither a missing role nor a key requirement" in err
    assert "disableLocalAuth" not in err and "retrying" not in err


async def test_after_the_key_fallback_a_later_provision_keeps_the_stored_secret(emu, store, capsys) -> None:
    assert await run(emu, store) == 0  # the one-time registration (with a key, in real life)
    stored = store.get("webhook-secret")
    rc = await run(emu, store, transport=AzureFront(401, KEY_WANTED))
    assert rc == 0  # `azd provision` must not fail for ever because the API cannot be checked without a key
    assert store.get("webhook-secret") == stored and len(ours(emu)) == 1
    assert "cannot be checked" in capsys.readouterr().out


def test_auth_failure_classification() -> None:
    def kind(status: int, body: Any) -> str:
        return rw.classify_auth_failure(httpx.Response(status, json=body) if not isinstance(body, str)
                                        else httpx.Response(status, text=body))

    assert kind(403, PERMISSION_DENIED) == rw.ROLE_PENDING
    assert kind(401, {"error": {"code": "PermissionDenied", "message": "The principal `x` lacks the required data"
                                                                        " action `Microsoft.CognitiveServices/...`"}}) \
        == rw.ROLE_PENDING
    assert kind(401, KEY_WANTED) == rw.KEY_REQUIRED
    assert (
        kind(401, {"statusCode": 401, "message": "Access denied due to missing subscription key."}) == rw.KEY_REQUIRED
    )
    assert kind(401, "Access denied due to missing subscription key.") == rw.KEY_REQUIRED
    assert (
        kind(401, {"error": {"code": "missing_api_key", "message": "You didn't provide an API key."}})
        == rw.KEY_REQUIRED
    )
    assert kind(401, BAD_TOKEN) == rw.OTHER_AUTH_FAILURE
    assert kind(403, "") == rw.OTHER_AUTH_FAILURE


async def test_secret_store_failure_removes_the_new_endpoint(emu, store, capsys) -> None:
    class BrokenStore(rw.FileSecretStore):
        def set(self, name: str, value: str, tags: Any) -> None:
            raise rw.RegistrationError("storing secret: HTTP 400 from PUT https://kv/secrets/webhook-secret")

    rc = await run(emu, BrokenStore(store.path))
    assert rc == 1
    assert ours(emu) == []  # an endpoint whose secret nobody holds must not keep receiving calls
    assert "FAILED" in capsys.readouterr().err


async def test_webhook_url_must_be_https_except_localhost(emu, store, capsys) -> None:
    rc = await run(emu, store, url="ftp://nowhere.example.com/hook")
    assert rc == 2  # rejected before calling Azure
    rc = await run(emu, store, url="http://localhost:1/not-https-but-local")
    assert rc == 0  # localhost http is allowed (emulator/local runner)


async def test_cli_end_to_end_never_prints_the_secret(emu, tmp_path: Path) -> None:
    """The real entry point, as the azd hook runs it (env vars in, exit code out)."""
    emu.config.api_key = "local-key"  # api-key mode: the emulator/local path, no Entra login needed here
    secret_file = tmp_path / "kv.json"
    env = {**os.environ, "AZURE_OPENAI_ENDPOINT": emu.http_url, "WEBHOOK_URL": WEBHOOK_URL,
           "AZURE_OPENAI_AUTH": "api-key", "AZURE_OPENAI_API_KEY": "local-key",
           "SIP_URI": "sip:proj_abc@eastus2.sip.ai.azure.com;transport=tls"}
    for _attempt in (1, 2):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(SCRIPT), "--secret-file", str(secret_file), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        secret = json.loads(secret_file.read_text())["webhook-secret"]["value"]
        assert not leaks(secret, (out + err).decode())
        assert b"sip:proj_abc@eastus2.sip.ai.azure.com" in out
    assert b"Nothing to do" in out
    assert len(ours(emu)) == 1


async def test_cli_missing_configuration_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "WEBHOOK_"))}
    proc = await asyncio.create_subprocess_exec(sys.executable, str(SCRIPT), env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert b"AZURE_OPENAI_ENDPOINT" in err and b"WEBHOOK_URL" in err and b"AZURE_KEY_VAULT" in err


# --------------------------------------------------------------------------------------------------
# Key Vault REST store (against a fake vault: Key Vault's REST contract, api-version 7.4)


class FakeVault:
    def __init__(self, forbidden_first: int = 0, soft_deleted: tuple[str, ...] = ()) -> None:
        self.secrets: dict[str, dict[str, Any]] = {}
        self.deleted: dict[str, dict[str, Any]] = {n: {"value": "old", "tags": {}} for n in soft_deleted}
        self.forbidden_first = forbidden_first
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.url.params["api-version"] == "7.4"
        if request.headers.get("Authorization") != "Bearer vault-token":
            return httpx.Response(401, json={"error": {"code": "Unauthorized"}})
        if len(self.requests) <= self.forbidden_first:
            return httpx.Response(403, json={"error": {"code": "Forbidden", "message": "Caller is not authorized"}})
        parts = request.url.path.strip("/").split("/")
        if parts[0] == "secrets" and request.method == "GET":
            s = self.secrets.get(parts[1])
            if s is None:
                return httpx.Response(404, json={"error": {"code": "SecretNotFound"}})
            return httpx.Response(200, json={"value": s["value"], "tags": s["tags"], "id": "x"})
        if parts[0] == "secrets" and request.method == "PUT":
            if parts[1] in self.deleted:
                return httpx.Response(
                    409,
                    json={
                        "error": {
                            "code": "Conflict",
                            "message": "Secret is currently in a deleted but recoverable state",
                        }
                    },
                )
            payload = json.loads(request.content)
            self.secrets[parts[1]] = {"value": payload["value"], "tags": payload.get("tags", {})}
            return httpx.Response(200, json={"id": "x", "tags": payload.get("tags", {})})
        if parts[0] == "deletedsecrets" and parts[2] == "recover" and request.method == "POST":
            self.secrets[parts[1]] = self.deleted.pop(parts[1])
            return httpx.Response(200, json={"id": "x"})
        return httpx.Response(400)


def vault_store(fake: FakeVault) -> Any:
    scopes: list[str] = []

    def token(scope: str) -> str:
        scopes.append(scope)
        return "vault-token"

    client = httpx.Client(transport=httpx.MockTransport(fake))
    store = rw.KeyVaultSecretStore("https://kv-test.vault.azure.net/", token, client)
    store.scopes = scopes  # type: ignore[attr-defined]
    return store


def test_key_vault_store_round_trip() -> None:
    fake = FakeVault()
    store = vault_store(fake)
    assert store.get("webhook-secret") is None
    store.set("webhook-secret", "whsec_abc", {"webhook-endpoint-id": "we_1"})
    got = store.get("webhook-secret")
    assert got.value == "whsec_abc" and got.tags == {"webhook-endpoint-id": "we_1"}
    assert "whsec_abc" not in repr(got)
    assert set(store.scopes) == {"https://vault.azure.net/.default"}
    assert str(fake.requests[0].url).startswith("https://kv-test.vault.azure.net/secrets/webhook-secret?")


def test_key_vault_store_recovers_a_soft_deleted_secret_before_writing() -> None:
    fake = FakeVault(soft_deleted=("webhook-secret",))
    store = vault_store(fake)
    store.set("webhook-secret", "whsec_new", {})
    assert fake.secrets["webhook-secret"]["value"] == "whsec_new"
    assert [r.method for r in fake.requests][:2] == ["PUT", "POST"]


def test_key_vault_403_is_retryable_and_retried() -> None:
    fake = FakeVault(forbidden_first=2)
    store = vault_store(fake)
    with pytest.raises(rw.RetryableError) as info:
        store.get("webhook-secret")
    assert info.value.status == 403 and "Caller is not authorized" in str(info.value)
    assert fast_retry().run(lambda: store.get("webhook-secret"), "reading") is None


# --------------------------------------------------------------------------------------------------
# Key Vault reference resolution, against a local stand-in for Azure Resource Manager (real sockets)

SUB, GROUP, APP = "00000000-0000-0000-0000-00000000abcd", "rg-test", "func-test"
SITE = f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.Web/sites/{APP}"


class ArmStandIn:
    """The site's config-reference operations as the Key Vault reference docs describe them.

    A reference is re-resolved only by the refresh operation (never by a restart, which no doc says refetches):
    the n-th refresh moves WEBHOOK_SECRET to `statuses[n-1]` (the last one repeats). The first `forbidden`
    requests answer 403, as while the deploying user's role assignment propagates.
    """

    def __init__(self, statuses: list[str], forbidden: int = 0, settings: tuple[str, ...] = ("WEBHOOK_SECRET",)):
        self.statuses, self.forbidden, self.settings = statuses, forbidden, settings
        self.log: list[str] = []  # "refresh", "get <name>", "restart", "403"
        self.refreshes = 0
        self.url = ""
        self._runner: Any = None

    def status(self) -> str:
        return "Initialized" if self.refreshes == 0 else self.statuses[min(self.refreshes, len(self.statuses)) - 1]

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        assert request.headers.get("Authorization") == f"Bearer {ENTRA_TOKEN}"
        assert request.query.get("api-version")
        path = request.path
        if self.forbidden > 0:
            self.forbidden -= 1
            self.log.append("403")
            return web.json_response({"error": {"code": "AuthorizationFailed", "message": "The client does not have"
                                                " authorization to perform action"}}, status=403)
        if request.method == "POST" and path == f"{SITE}/config/configreferences/appsettings/refresh":
            assert request.query["api-version"] == "2022-03-01"
            self.refreshes += 1
            self.log.append("refresh")
            return web.json_response({"value": []})
        prefix = f"{SITE}/config/configreferences/appsettings/"
        if request.method == "GET" and path.startswith(prefix):
            assert request.query["api-version"] == "2022-03-01"
            name = path.removeprefix(prefix)
            self.log.append(f"get {name}")
            if name not in self.settings:
                return web.json_response({"error": {"code": "NotFound"}}, status=404)
            status = self.status()
            return web.json_response({"id": f"{prefix}{name}", "name": name, "properties": {
                "reference": "@Microsoft.KeyVault(VaultName=kv-abc;SecretName=webhook-secret)", "status": status,
                "details": "" if status == "Resolved" else f"Reference status {status}."}})
        if request.method == "POST" and path == f"{SITE}/restart":
            self.log.append("restart")
            return web.Response(status=200)
        return web.json_response({"error": {"code": "NotFound", "message": path}}, status=404)

    async def __aenter__(self) -> ArmStandIn:
        from aiohttp import web

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._runner.cleanup()


def arm_env(arm: ArmStandIn, **extra: str) -> dict[str, str]:
    return {"AZURE_SUBSCRIPTION_ID": SUB, "AZURE_RESOURCE_GROUP": GROUP, "AZURE_FUNCTION_APP_NAME": APP,
            "AZURE_RESOURCE_MANAGER_ENDPOINT": arm.url, **extra}


async def test_a_new_secret_is_resolved_by_refresh_and_poll_then_the_app_restarts(emu, store, capsys) -> None:
    async with ArmStandIn(["SecretNotFound", "AccessToKeyVaultDenied", "Resolved"], forbidden=2) as arm:
        tokens = Tokens()
        assert await run(emu, store, tokens, env=arm_env(arm)) == 0
    # 403s while the role propagates, then refresh+read until Resolved; the restart only once it resolved.
    assert arm.log[:2] == ["403", "403"]
    assert arm.log[2:] == ["refresh", "get WEBHOOK_SECRET"] * 3 + ["restart"]
    assert "https://management.azure.com/.default" in tokens.calls
    out = assert_secret_not_shown(capsys, store.get("webhook-secret").value)
    assert "AccessToKeyVaultDenied" in out and "WEBHOOK_SECRET: Key Vault reference resolved." in out


async def test_an_unchanged_registration_still_makes_sure_the_reference_resolved(emu, store) -> None:
    assert await run(emu, store) == 0
    async with ArmStandIn(["Resolved"]) as arm:
        assert await run(emu, store, env=arm_env(arm)) == 0
    assert arm.log == ["refresh", "get WEBHOOK_SECRET"]  # nothing changed: no restart, and no live call cut


async def test_during_a_rotation_both_references_are_resolved(emu, store) -> None:
    async with ArmStandIn(["Resolved"], settings=("WEBHOOK_SECRET", "WEBHOOK_SECRET_PREVIOUS")) as arm:
        assert await run(emu, store, env=arm_env(arm, WEBHOOK_SECRET_PREVIOUS_ENABLED="true")) == 0
    assert "get WEBHOOK_SECRET_PREVIOUS" in arm.log


async def test_a_broken_reference_fails_at_once(emu, store, capsys) -> None:
    async with ArmStandIn(["InvalidSyntax"]) as arm:
        assert await run(emu, store, env=arm_env(arm), retry=fast_retry(max_wait=30)) == 1
    assert arm.log == ["refresh", "get WEBHOOK_SECRET"]
    err = capsys.readouterr().err
    assert "InvalidSyntax" in err and "webhook answers 503" in err


async def test_a_reference_that_never_resolves_gives_up_and_does_not_restart(emu, store, capsys) -> None:
    async with ArmStandIn(["AccessToKeyVaultDenied"]) as arm:
        assert await run(emu, store, env=arm_env(arm), argv=["--reference-wait", "0.3"]) == 1
    assert "restart" not in arm.log and arm.refreshes >= 2
    err = capsys.readouterr().err
    assert "Gave up resolving" in err and "AccessToKeyVaultDenied" in err
    assert store.get("webhook-secret") is not None  # the registration itself stands; a rerun only resolves


async def test_an_app_without_the_reference_setting_fails(emu, store, capsys) -> None:
    async with ArmStandIn(["Resolved"], settings=()) as arm:
        assert await run(emu, store, env=arm_env(arm)) == 1
    assert "has no Key Vault reference in the app setting WEBHOOK_SECRET" in capsys.readouterr().err


async def test_without_the_site_nothing_is_asked_of_resource_manager(emu, store, capsys) -> None:
    async with ArmStandIn(["Resolved"]) as arm:
        assert await run(emu, store, env={"AZURE_FUNCTION_APP_NAME": APP,
                                          "AZURE_RESOURCE_MANAGER_ENDPOINT": arm.url}) == 0
    assert arm.log == []
    assert "are all needed to resolve" in capsys.readouterr().err
