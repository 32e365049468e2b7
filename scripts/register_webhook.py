#!/usr/bin/env python3
"""Register the Function App's webhook with Azure OpenAI and keep its signing secret in Key Vault.

Runs as the azd ``postprovision`` hook (azure.yaml) and by hand::

    python scripts/register_webhook.py            # reads the azd environment / process environment

Inputs (flags override environment variables; azd exports the Bicep outputs to hooks):

    AZURE_OPENAI_ENDPOINT         https://<account>.openai.azure.com
    WEBHOOK_URL                   https://<app>.azurewebsites.net/api/calls/incoming
    AZURE_KEY_VAULT_URI | AZURE_KEY_VAULT_NAME
    WEBHOOK_SECRET_NAME           Key Vault secret name, default ``webhook-secret``

What it does, idempotently:

* If an endpoint for WEBHOOK_URL (event ``realtime.call.incoming``) is registered and the secret that
  belongs to it is in Key Vault: nothing.
* Otherwise (first run, secret lost, endpoint deleted): creates a new endpoint, stores the signing
  secret straight into Key Vault (Azure returns it only on creation), then deletes the other endpoints
  for the same URL - their secrets are gone, and Azure would deliver every call to them too.

The secret is never printed or logged. 429, 5xx and network errors, and 401/403 while role assignments
propagate after provisioning, are retried until ``--max-wait`` seconds have passed. A 401/403 from the
webhook-endpoint API is read first (``classify_auth_failure``): "the role has not propagated yet" is retried, "this
API wants an api-key" stops at once with the documented fallback (``KEY_FALLBACK``), anything else stops at once
with Azure's message.

Then it makes the Function App's ``WEBHOOK_SECRET`` Key Vault reference resolve, the documented way (docs/deploy.md,
"Key Vault references"): ``POST {site}/config/configreferences/appsettings/refresh`` and poll
``{site}/config/configreferences/appsettings/WEBHOOK_SECRET`` until its ``status`` is ``Resolved`` (needs
AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and AZURE_FUNCTION_APP_NAME, as in an azd hook). Until then the app runs
but its webhook answers 503. After a new secret it also restarts the app, so the running worker reads it.

Auth is Entra ID (the account has local auth disabled): a token for
https://cognitiveservices.azure.com/.default for the webhook API and https://vault.azure.net/.default for
Key Vault, from the azd login first, then DefaultAzureCredential. ``AZURE_OPENAI_AUTH=api-key`` with
``AZURE_OPENAI_API_KEY`` uses a key instead (the local emulator, or an account with local auth on).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx

EVENT_TYPE = "realtime.call.incoming"
DEFAULT_SECRET_NAME = "webhook-secret"
OPENAI_SCOPE = "https://cognitiveservices.azure.com/.default"
VAULT_SCOPE = "https://vault.azure.net/.default"
ARM_SCOPE = "https://management.azure.com/.default"
KEY_VAULT_API_VERSION = "7.4"
WEB_API_VERSION = "2024-04-01"
# The API version the Key Vault reference docs give for the refresh operation (docs/deploy.md).
CONFIG_REFERENCES_API_VERSION = "2022-03-01"
DEFAULT_MANAGEMENT_ENDPOINT = "https://management.azure.com"
# Reference states that no waiting can fix: the Bicep (reference text, identity) is wrong.
REFERENCE_PERMANENT_FAILURES = frozenset({"InvalidSyntax", "MSINotEnabled"})
# Tags on the Key Vault secret tie it to the endpoint it signs for, so a stale secret is detected.
TAG_ENDPOINT_ID = "webhook-endpoint-id"
TAG_URL = "webhook-url"

# Status codes worth waiting out: role assignments take minutes to propagate (401/403 from both the
# webhook API and Key Vault), throttling, and transient server errors.
RETRYABLE_STATUS = frozenset({401, 403, 408, 429, 500, 502, 503, 504})

TokenProvider = Callable[[str], str]
"""Returns a bearer token for a scope; called for every attempt so a refreshed identity is picked up."""


class RegistrationError(Exception):
    """Registration cannot complete; the message says what to check."""


class KeyRequiredError(RegistrationError):
    """The webhook-endpoint API refused the Entra token and asks for an api-key."""


class RetryableError(RegistrationError):
    """A failure that may go away by itself (role propagation, throttling, 5xx, network)."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status  # None for network errors


# --------------------------------------------------------------------------------------------------
# Secret stores


@dataclass(frozen=True)
class StoredSecret:
    value: str
    tags: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # never let a traceback or a debug print show the value
        return f"StoredSecret(value=<redacted>, tags={dict(self.tags)!r})"


class SecretStore(Protocol):
    """Where the signing secret goes. Key Vault in Azure; a file in tests and local runs."""

    def get(self, name: str) -> StoredSecret | None: ...

    def set(self, name: str, value: str, tags: Mapping[str, str]) -> None: ...

    def describe(self) -> str: ...


class FileSecretStore:
    """JSON file ``{name: {"value": ..., "tags": {...}}}`` with owner-only permissions."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text(encoding="utf-8") or "{}")

    def get(self, name: str) -> StoredSecret | None:
        entry = self._load().get(name)
        if not entry:
            return None
        return StoredSecret(entry["value"], dict(entry.get("tags") or {}))

    def set(self, name: str, value: str, tags: Mapping[str, str]) -> None:
        data = self._load()
        data[name] = {"value": value, "tags": dict(tags)}
        self._write(data)

    def delete(self, name: str) -> None:
        data = self._load()
        if data.pop(name, None) is not None:
            self._write(data)

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, self.path)

    def describe(self) -> str:
        return f"file {self.path}"


class KeyVaultSecretStore:
    """Key Vault secrets over REST (httpx + an Entra token): no extra SDK dependency."""

    def __init__(self, vault_url: str, token: TokenProvider, client: httpx.Client) -> None:
        self.vault_url = vault_url.rstrip("/")
        self._token = token
        self._client = client

    def describe(self) -> str:
        return f"Key Vault {self.vault_url}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token(VAULT_SCOPE)}"}

    def _url(self, path: str) -> str:
        return f"{self.vault_url}/{path}?api-version={KEY_VAULT_API_VERSION}"

    def get(self, name: str) -> StoredSecret | None:
        r = _send(self._client, "GET", self._url(f"secrets/{quote(name)}"), self._headers(),
                  what=f"reading secret {name!r} from {self.describe()}", ok=(200, 404))
        if r.status_code == 404:
            return None
        body = r.json()
        return StoredSecret(body["value"], dict(body.get("tags") or {}))

    def set(self, name: str, value: str, tags: Mapping[str, str]) -> None:
        body = {"value": value, "contentType": "Standard Webhooks signing secret", "tags": dict(tags)}
        what = f"storing secret {name!r} in {self.describe()}"
        r = _send(self._client, "PUT", self._url(f"secrets/{quote(name)}"), self._headers(), json_body=body,
                  what=what, ok=(200, 409))
        if r.status_code == 200:
            return
        # 409: a secret of that name was deleted but is still soft-deleted (recoverable). Recover it,
        # wait until it is readable again, then write the new value as a new version.
        _send(self._client, "POST", self._url(f"deletedsecrets/{quote(name)}/recover"), self._headers(),
              what=f"recovering soft-deleted secret {name!r}", ok=(200,))
        deadline = time.monotonic() + 60
        while self.get(name) is None:
            if time.monotonic() > deadline:
                raise RegistrationError(f"Secret {name!r} was recovered but is still not readable after 60 s.")
            time.sleep(2)
        _send(self._client, "PUT", self._url(f"secrets/{quote(name)}"), self._headers(), json_body=body,
              what=what, ok=(200,))


# --------------------------------------------------------------------------------------------------
# HTTP plumbing


def _send(client: httpx.Client, method: str, url: str, headers: Mapping[str, str], *, what: str,
          ok: Iterable[int], json_body: Any = None,
          on_auth_failure: Callable[[httpx.Response, str], RegistrationError] | None = None) -> httpx.Response:
    """One request; classifies failures. Error text never includes a request body (it may hold a secret).

    ``on_auth_failure`` turns a 401/403 into the error to raise (by default: retryable, as roles propagate)."""
    try:
        r = client.request(method, url, headers=dict(headers), json=json_body)
    except httpx.TransportError as exc:
        raise RetryableError(f"{what}: {type(exc).__name__}: {exc}") from None
    if r.status_code in tuple(ok):
        return r
    detail = _error_detail(r)
    message = f"{what}: HTTP {r.status_code} from {method} {_strip_query(url)}{detail}"
    if r.status_code in (401, 403) and on_auth_failure is not None:
        raise on_auth_failure(r, message)
    if r.status_code in RETRYABLE_STATUS:
        raise RetryableError(message, _retry_after(r), r.status_code)
    raise RegistrationError(message)


def _error_detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        text = r.text.strip()
        return f": {text[:300]}" if text else ""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        parts = [str(err[k]) for k in ("code", "message") if err.get(k)]
        return ": " + " - ".join(parts) if parts else ""
    return ""


def _retry_after(r: httpx.Response) -> float | None:
    try:
        return float(r.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _strip_query(url: str) -> str:
    return url.split("?", 1)[0]


@dataclass
class RetryPolicy:
    max_wait: float = 600.0  # role assignments usually propagate in 1-5 minutes, rarely 10
    initial_delay: float = 2.0
    max_delay: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    log: Callable[[str], None] = lambda message: None

    def run(self, fn: Callable[[], Any], what: str,
            retry_if: Callable[[RetryableError], bool] = lambda exc: True) -> Any:
        deadline = time.monotonic() + self.max_wait
        delay = self.initial_delay
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except RetryableError as exc:
                if not retry_if(exc):
                    raise RegistrationError(f"{exc}{_hint(str(exc))}") from None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RegistrationError(
                        f"Gave up {what} after {attempt} attempts over {self.max_wait:g} s. Last error: {exc}"
                        + _hint(str(exc))
                    ) from None
                wait = min(exc.retry_after or delay, self.max_delay, remaining)
                self.log(f"{what}: {exc} - retrying in {wait:.1f} s")
                self.sleep(wait)
                delay = min(delay * 2, self.max_delay)


def _hint(message: str) -> str:
    if " 401 " in message or " 403 " in message:
        return (
            "\nCheck that the identity running this script holds 'Cognitive Services User' on the Azure OpenAI"
            " account and 'Key Vault Secrets Officer' on the vault (azd assigns both to AZURE_PRINCIPAL_ID"
            " during provisioning; new assignments can take up to 10 minutes to apply)."
        )
    return ""


# --------------------------------------------------------------------------------------------------
# Webhook endpoint API (Azure: /openai/v1/dashboard/webhook_endpoints)

ROLE_PENDING, KEY_REQUIRED, OTHER_AUTH_FAILURE = "role_pending", "key_required", "other"

# What the one-time fallback looks like when the API will not take an Entra token (docs/deploy.md).
KEY_FALLBACK = """\
Microsoft documents only api-key auth for the webhook-endpoint API, and this account has local auth disabled.
One-time fallback: enable local auth, register with a key, disable it again (the next `azd provision` disables it too):
  ID=$(az cognitiveservices account show -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_OPENAI_ACCOUNT_NAME" --query id -o tsv)
  az resource update --ids "$ID" --set properties.disableLocalAuth=false
  AZURE_OPENAI_AUTH=api-key AZURE_OPENAI_API_KEY="$(az cognitiveservices account keys list -g "$AZURE_RESOURCE_GROUP" \\
    -n "$AZURE_OPENAI_ACCOUNT_NAME" --query key1 -o tsv)" sh scripts/hook.sh scripts/register_webhook.py
  az resource update --ids "$ID" --set properties.disableLocalAuth=true"""


def classify_auth_failure(r: httpx.Response) -> str:
    """Why the webhook-endpoint API answered 401/403: ROLE_PENDING, KEY_REQUIRED or OTHER_AUTH_FAILURE.

    Read from Azure's error body: a principal without its role gets code ``PermissionDenied`` ("Principal does not
    have access to API/Operation", "... lacks the required data action ..."), which a role assignment still
    propagating also gives; an endpoint that wants a key answers "Access denied due to invalid subscription key" or
    names the api-key (the OpenAI-style ``invalid_api_key`` / ``missing_api_key`` codes).
    """
    code, message = "", ""
    try:
        body = r.json()
    except ValueError:
        message = r.text
    else:
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            code, message = str(err.get("code") or ""), str(err.get("message") or "")
        elif isinstance(body, dict):  # the API gateway's own shape: {"statusCode": 401, "message": "..."}
            message = str(body.get("message") or "")
    code, message = code.lower(), message.lower()
    if code == "permissiondenied" or "does not have access" in message or "lacks the required data action" in message:
        return ROLE_PENDING
    if (code in ("invalid_api_key", "missing_api_key") or "subscription key" in message or "api key" in message
            or "api-key" in message):
        return KEY_REQUIRED
    return OTHER_AUTH_FAILURE


def _webhook_auth_failure(r: httpx.Response, message: str) -> RegistrationError:
    kind = classify_auth_failure(r)
    if kind == ROLE_PENDING:
        return RetryableError(f"{message} (the role assignment has not propagated yet)", _retry_after(r),
                              r.status_code)
    if kind == KEY_REQUIRED:
        return KeyRequiredError(f"{message}\n{KEY_FALLBACK}")
    return RegistrationError(f"{message}\nNeither a missing role nor a key requirement: check that the token is for"
                             " the account's tenant (azd auth login --tenant-id ...) and the endpoint is right.")


class WebhookEndpoints:
    def __init__(self, endpoint: str, client: httpx.Client, *, token: TokenProvider | None = None,
                 api_key: str | None = None) -> None:
        if not token and not api_key:
            raise ValueError("token or api_key required")
        self.base = endpoint.rstrip("/").removesuffix("/openai/v1") + "/openai/v1/dashboard/webhook_endpoints"
        self._client = client
        self._token = token
        self._api_key = api_key

    def _headers(self) -> dict[str, str]:
        if self._api_key:
            return {"api-key": self._api_key}
        assert self._token is not None
        return {"Authorization": f"Bearer {self._token(OPENAI_SCOPE)}"}

    def list(self) -> list[dict[str, Any]]:
        endpoints: list[dict[str, Any]] = []
        url = self.base
        for _ in range(100):  # pagination guard
            r = _send(self._client, "GET", url, self._headers(), what="listing webhook endpoints", ok=(200,),
                      on_auth_failure=_webhook_auth_failure)
            body = r.json()
            page = body.get("data", []) if isinstance(body, dict) else body
            endpoints.extend(page)
            if not (isinstance(body, dict) and body.get("has_more") and page):
                return endpoints
            url = f"{self.base}?after={quote(str(page[-1]['id']))}"
        raise RegistrationError("listing webhook endpoints: more than 100 pages")

    def create(self, name: str, url: str) -> dict[str, Any]:
        r = _send(self._client, "POST", self.base, self._headers(), what="creating the webhook endpoint",
                  ok=(200, 201), json_body={"name": name, "url": url, "event_types": [EVENT_TYPE]},
                  on_auth_failure=_webhook_auth_failure)
        return r.json()

    def delete(self, endpoint_id: str) -> None:
        # 404: already gone, which is what we want.
        _send(self._client, "DELETE", f"{self.base}/{quote(endpoint_id)}", self._headers(),
              what=f"deleting webhook endpoint {endpoint_id}", ok=(200, 202, 204, 404),
              on_auth_failure=_webhook_auth_failure)


# --------------------------------------------------------------------------------------------------
# Reconciliation


@dataclass
class Outcome:
    changed: bool
    endpoint_id: str
    deleted: list[str] = field(default_factory=list)


def _serves(endpoint: Mapping[str, Any], url: str) -> bool:
    return endpoint.get("url") == url and EVENT_TYPE in (endpoint.get("event_types") or [])


def register(webhooks: WebhookEndpoints, store: SecretStore, *, url: str, secret_name: str, endpoint_name: str,
             retry: RetryPolicy, log: Callable[[str], None] = print) -> Outcome:
    stored = retry.run(lambda: store.get(secret_name), f"reading {secret_name!r} from {store.describe()}")
    try:
        endpoints = retry.run(webhooks.list, "listing webhook endpoints")
    except KeyRequiredError:
        if stored is None or not stored.tags.get(TAG_ENDPOINT_ID):
            raise
        # Registered once with the key fallback: without local auth this run cannot look, and must not fail every
        # `azd provision` for it. The stored secret is kept; run the fallback again if the endpoint was deleted.
        log(f"warning: the webhook-endpoint API wants an api-key, so the registration cannot be checked; keeping"
            f" the stored secret of endpoint {stored.tags[TAG_ENDPOINT_ID]} ({secret_name!r} in {store.describe()}).")
        return Outcome(changed=False, endpoint_id=stored.tags[TAG_ENDPOINT_ID])
    ours = [e for e in endpoints if _serves(e, url)]

    if stored is not None and ours:
        tagged = stored.tags.get(TAG_ENDPOINT_ID)
        match = next((e for e in ours if e.get("id") == tagged), None)
        if match is not None or not tagged:
            # A secret without our tag was stored by hand; trust it rather than break a working setup.
            endpoint_id = match["id"] if match else ours[0]["id"]
            log(f"Webhook already registered: {url} (endpoint {endpoint_id}); secret {secret_name!r} is in"
                f" {store.describe()}. Nothing to do.")
            return Outcome(changed=False, endpoint_id=endpoint_id)
        log(f"Secret {secret_name!r} belongs to endpoint {tagged}, which no longer exists; registering again.")
    elif stored is None and ours:
        log(f"{len(ours)} endpoint(s) for {url} exist but secret {secret_name!r} is missing from"
            f" {store.describe()}; registering a new endpoint (the secret cannot be read back).")

    # Retried only when the request was certainly refused (auth not yet propagated, throttled): a create
    # that timed out or hit a 5xx may have succeeded, and a second one would leave an endpoint whose
    # secret nobody has. After such a failure the next run repairs things (it creates a fresh endpoint
    # and deletes the same-URL endpoints whose secret is not stored).
    created = retry.run(lambda: webhooks.create(endpoint_name, url), "creating the webhook endpoint",
                        retry_if=lambda exc: exc.status in (401, 403, 429))
    endpoint_id = str(created.get("id") or "")
    secret = created.get("signing_secret")
    if not endpoint_id or not isinstance(secret, str) or not secret:
        raise RegistrationError("The webhook endpoint was created but the response has no id or signing_secret;"
                                f" delete it (endpoint {endpoint_id or '?'}) and run again.")
    tags = {TAG_ENDPOINT_ID: endpoint_id, TAG_URL: url}
    try:
        retry.run(lambda: store.set(secret_name, secret, tags), f"storing {secret_name!r} in {store.describe()}")
    except RegistrationError:
        # Without its secret the new endpoint is useless; do not leave it delivering calls.
        with contextlib.suppress(RegistrationError):
            webhooks.delete(endpoint_id)
        raise
    log(f"Registered webhook endpoint {endpoint_id} for {url} ({EVENT_TYPE}); signing secret stored as"
        f" {secret_name!r} in {store.describe()}.")

    # Endpoints for the same URL whose secret is no longer stored: every call would also be delivered to
    # them, signed with a secret the app does not know. Keep the one a rotation still holds as previous.
    keep = {endpoint_id}
    previous = retry.run(lambda: store.get(f"{secret_name}-previous"), "reading the previous secret")
    if previous is not None and previous.tags.get(TAG_ENDPOINT_ID):
        keep.add(previous.tags[TAG_ENDPOINT_ID])
    deleted = []
    for e in ours:
        if e.get("id") not in keep:
            retry.run(lambda eid=e["id"]: webhooks.delete(eid), f"deleting stale endpoint {e['id']}")
            deleted.append(e["id"])
            log(f"Deleted stale webhook endpoint {e['id']} (its secret was not stored).")
    return Outcome(changed=True, endpoint_id=endpoint_id, deleted=deleted)


def rotate(webhooks: WebhookEndpoints, store: SecretStore, *, url: str, secret_name: str, endpoint_name: str,
           retry: RetryPolicy, log: Callable[[str], None] = print) -> Outcome:
    """Step 1 of a rotation (Azure has no rotate operation): a second endpoint with a new secret.

    The current secret becomes ``<name>-previous``, the new one ``<name>``. Both endpoints deliver every
    call until step 2 (``finish_rotation``) deletes the old one; the app accepts both secrets meanwhile.
    """
    current = retry.run(lambda: store.get(secret_name), f"reading {secret_name!r}")
    endpoints = retry.run(webhooks.list, "listing webhook endpoints")
    old_id = current.tags.get(TAG_ENDPOINT_ID) if current else None
    if current is None or not any(e.get("id") == old_id and _serves(e, url) for e in endpoints):
        raise RegistrationError("Nothing to rotate: run without --rotate first so that the current endpoint and"
                                " its secret are registered.")
    created = retry.run(lambda: webhooks.create(endpoint_name, url), "creating the new webhook endpoint",
                        retry_if=lambda exc: exc.status in (401, 403, 429))
    new_id, secret = str(created.get("id") or ""), created.get("signing_secret")
    if not new_id or not isinstance(secret, str) or not secret:
        raise RegistrationError("The new webhook endpoint has no id or signing_secret in the response.")
    retry.run(lambda: store.set(f"{secret_name}-previous", current.value, dict(current.tags)),
              f"storing {secret_name}-previous")
    retry.run(lambda: store.set(secret_name, secret, {TAG_ENDPOINT_ID: new_id, TAG_URL: url}),
              f"storing {secret_name!r}")
    log(f"Rotation step 1 done: new endpoint {new_id} (secret in {secret_name!r}), old endpoint {old_id} (secret"
        f" in {secret_name + '-previous'!r}). Next: `azd env set WEBHOOK_SECRET_PREVIOUS_ENABLED true && azd"
        " provision`, then `python scripts/register_webhook.py --finish-rotation`.")
    return Outcome(changed=True, endpoint_id=new_id)


def finish_rotation(webhooks: WebhookEndpoints, store: SecretStore, *, secret_name: str, retry: RetryPolicy,
                    log: Callable[[str], None] = print) -> Outcome:
    """Step 2 of a rotation: delete the old endpoint, so only the new secret signs deliveries."""
    current = retry.run(lambda: store.get(secret_name), f"reading {secret_name!r}")
    previous = retry.run(lambda: store.get(f"{secret_name}-previous"), f"reading {secret_name}-previous")
    old_id = previous.tags.get(TAG_ENDPOINT_ID) if previous else None
    new_id = current.tags.get(TAG_ENDPOINT_ID) if current else None
    if not old_id or not new_id or old_id == new_id:
        raise RegistrationError(f"No rotation in progress ({secret_name}-previous names no other endpoint).")
    retry.run(lambda: webhooks.delete(old_id), f"deleting old endpoint {old_id}")
    log(f"Deleted old webhook endpoint {old_id}; endpoint {new_id} remains. Finally: `azd env set"
        " WEBHOOK_SECRET_PREVIOUS_ENABLED false && azd provision`.")
    return Outcome(changed=False, endpoint_id=new_id, deleted=[old_id])


@dataclass(frozen=True)
class Site:
    """The Function App in Azure Resource Manager."""

    subscription_id: str
    resource_group: str
    name: str
    management_endpoint: str = DEFAULT_MANAGEMENT_ENDPOINT

    @property
    def url(self) -> str:
        return (f"{self.management_endpoint.rstrip('/')}/subscriptions/{quote(self.subscription_id)}/resourceGroups/"
                f"{quote(self.resource_group)}/providers/Microsoft.Web/sites/{quote(self.name)}")


def resolve_key_vault_references(client: httpx.Client, token: TokenProvider, site: Site, settings: Iterable[str], *,
                                 retry: RetryPolicy, log: Callable[[str], None] = print) -> None:
    """Make the app's Key Vault references fetch their secrets now, the documented way, and wait until they have.

    App Service caches resolved references for up to 24 hours, and a bare restart is not documented to refetch
    them. The refresh operation is (docs/deploy.md, "Key Vault references"): POST it, then read each setting's
    reference status until ``Resolved``. States a wait can fix (``AccessToKeyVaultDenied`` while the app identity's
    role propagates, ``SecretNotFound`` just after the write, ``Initialized``, ``FetchTimedOut``...) refresh again;
    403 from Resource Manager (the deploying user's role propagating) is retried. Raises RegistrationError.
    """
    headers = lambda: {"Authorization": f"Bearer {token(ARM_SCOPE)}"}  # noqa: E731 - fresh token per attempt
    refresh = f"{site.url}/config/configreferences/appsettings/refresh?api-version={CONFIG_REFERENCES_API_VERSION}"
    pending = list(settings)

    def attempt() -> None:
        _send(client, "POST", refresh, headers(), what=f"refreshing the Key Vault references of {site.name}",
              ok=(200, 202, 204))
        for name in list(pending):
            url = (f"{site.url}/config/configreferences/appsettings/{quote(name)}"
                   f"?api-version={CONFIG_REFERENCES_API_VERSION}")
            r = _send(client, "GET", url, headers(), what=f"reading the reference status of {name}", ok=(200, 404))
            if r.status_code == 404:
                raise RegistrationError(f"{site.name} has no Key Vault reference in the app setting {name}")
            props = (r.json() or {}).get("properties") or {}
            status = str(props.get("status") or "unknown")
            if status == "Resolved":
                pending.remove(name)
                log(f"{name}: Key Vault reference resolved.")
                continue
            detail = f" ({props['details']})" if props.get("details") else ""
            if status in REFERENCE_PERMANENT_FAILURES:
                raise RegistrationError(f"{name}: Key Vault reference status {status}{detail}; check the reference"
                                        " and keyVaultReferenceIdentity in infra/modules/functionapp.bicep")
            raise RetryableError(f"{name}: Key Vault reference status {status}{detail}")

    retry.run(attempt, f"resolving the Key Vault references of {site.name}")


def restart_function_app(client: httpx.Client, token: TokenProvider, site: Site) -> None:
    """After a new secret, so that the running worker reads the resolved value (it reads settings at start)."""
    _send(client, "POST", f"{site.url}/restart?api-version={WEB_API_VERSION}",
          {"Authorization": f"Bearer {token(ARM_SCOPE)}"}, what=f"restarting {site.name}", ok=(200, 202, 204))


# --------------------------------------------------------------------------------------------------
# CLI


def azure_identity_token_provider(tenant_id: str | None = None) -> TokenProvider:
    from azure.identity import AzureDeveloperCliCredential, ChainedTokenCredential, DefaultAzureCredential

    # In an azd hook the azd login is the identity that received the roles (AZURE_PRINCIPAL_ID).
    credential = ChainedTokenCredential(
        AzureDeveloperCliCredential(tenant_id=tenant_id or "", process_timeout=30),
        DefaultAzureCredential(exclude_interactive_browser_credential=True),
    )

    def token(scope: str) -> str:
        try:
            return credential.get_token(scope).token
        except Exception as exc:  # azure-identity raises several types; all mean "not signed in"
            raise RegistrationError(
                f"Could not get an Entra token for {scope}: sign in with `azd auth login` or `az login`."
                f" ({type(exc).__name__})"
            ) from None

    return token


def _env_vault_url(env: Mapping[str, str]) -> str | None:
    if env.get("AZURE_KEY_VAULT_URI"):
        return env["AZURE_KEY_VAULT_URI"]
    if env.get("AZURE_KEY_VAULT_NAME"):
        return f"https://{env['AZURE_KEY_VAULT_NAME']}.vault.azure.net"
    return None


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Flags override the environment variables named in brackets (azd exports "
                                       "the Bicep outputs to its hooks).")
    p.add_argument("--endpoint", default=env.get("AZURE_OPENAI_ENDPOINT"),
                   help="Azure OpenAI endpoint [AZURE_OPENAI_ENDPOINT]")
    p.add_argument("--webhook-url", default=env.get("WEBHOOK_URL"),
                   help="the app's https://.../api/calls/incoming [WEBHOOK_URL]")
    p.add_argument("--vault-url", default=_env_vault_url(env),
                   help="Key Vault URI [AZURE_KEY_VAULT_URI, or AZURE_KEY_VAULT_NAME]")
    p.add_argument("--secret-file", default=None,
                   help="store the secret in this JSON file instead of Key Vault (local use and tests)")
    p.add_argument("--secret-name", default=env.get("WEBHOOK_SECRET_NAME") or DEFAULT_SECRET_NAME,
                   help="secret name [WEBHOOK_SECRET_NAME, default webhook-secret]")
    p.add_argument("--name", default=None, help="endpoint name (default switchboard-<AZURE_ENV_NAME>)")
    p.add_argument("--max-wait", type=float, default=float(env.get("WEBHOOK_REGISTRATION_MAX_WAIT") or 600),
                   help="seconds to keep retrying 401/403/429/5xx [WEBHOOK_REGISTRATION_MAX_WAIT, default 600]")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--rotate", action="store_true",
                      help="rotation step 1: register a second endpoint, keep the current secret as <name>-previous")
    mode.add_argument("--finish-rotation", action="store_true",
                      help="rotation step 2: delete the endpoint whose secret is <name>-previous")
    p.add_argument("--no-restart", action="store_true",
                   help="do not restart the Function App after the secret changed")
    p.add_argument("--reference-wait", type=float,
                   default=float(env.get("WEBHOOK_REFERENCE_MAX_WAIT") or 600),
                   help="seconds to wait for the app's WEBHOOK_SECRET Key Vault reference to resolve"
                        " [WEBHOOK_REFERENCE_MAX_WAIT, default 600]")
    p.add_argument("--management-endpoint", default=env.get("AZURE_RESOURCE_MANAGER_ENDPOINT")
                   or DEFAULT_MANAGEMENT_ENDPOINT, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None, *, env: Mapping[str, str] | None = None,
         token_provider: TokenProvider | None = None, store: SecretStore | None = None,
         retry: RetryPolicy | None = None, transport: httpx.BaseTransport | None = None) -> int:
    env = os.environ if env is None else env
    args = build_parser(env).parse_args(argv)

    def err(message: str) -> None:
        print(f"register_webhook: {message}", file=sys.stderr)

    missing = [flag for flag, value in (("--endpoint/AZURE_OPENAI_ENDPOINT", args.endpoint),
                                        ("--webhook-url/WEBHOOK_URL", args.webhook_url)) if not value]
    if store is None and not args.secret_file and not args.vault_url:
        missing.append("--vault-url/AZURE_KEY_VAULT_URI or AZURE_KEY_VAULT_NAME")
    if missing:
        err("missing " + ", ".join(missing) + ". Run inside `azd` (hooks get the Bicep outputs) or pass flags.")
        return 2
    parts = urlsplit(args.webhook_url)
    if parts.scheme != "https" and parts.hostname not in ("localhost", "127.0.0.1"):
        err(f"WEBHOOK_URL must be https (got {args.webhook_url!r}).")
        return 2

    api_key = env.get("AZURE_OPENAI_API_KEY") if env.get("AZURE_OPENAI_AUTH", "").lower() == "api-key" else None
    if token_provider is None and (not api_key or (store is None and not args.secret_file)):
        token_provider = azure_identity_token_provider(env.get("AZURE_TENANT_ID"))
    retry = retry or RetryPolicy(max_wait=args.max_wait, log=err)
    name = args.name or f"switchboard-{env.get('AZURE_ENV_NAME') or 'app'}"

    with httpx.Client(timeout=httpx.Timeout(30.0), transport=transport) as client:
        if store is None:
            if args.secret_file:
                store = FileSecretStore(args.secret_file)
            else:
                assert token_provider is not None
                store = KeyVaultSecretStore(args.vault_url, token_provider, client)
        webhooks = WebhookEndpoints(args.endpoint, client, token=None if api_key else token_provider,
                                    api_key=api_key)
        try:
            if args.rotate:
                outcome = rotate(webhooks, store, url=args.webhook_url, secret_name=args.secret_name,
                                 endpoint_name=name, retry=retry)
            elif args.finish_rotation:
                outcome = finish_rotation(webhooks, store, secret_name=args.secret_name, retry=retry)
            else:
                outcome = register(webhooks, store, url=args.webhook_url, secret_name=args.secret_name,
                                   endpoint_name=name, retry=retry)
        except RegistrationError as exc:
            err(f"FAILED: {exc}")
            return 1

        app, group, sub = (env.get("AZURE_FUNCTION_APP_NAME"), env.get("AZURE_RESOURCE_GROUP"),
                           env.get("AZURE_SUBSCRIPTION_ID"))
        if not (app and group and sub) or token_provider is None:
            if app or group or sub:
                err("warning: AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and AZURE_FUNCTION_APP_NAME are all needed"
                    " to resolve the app's WEBHOOK_SECRET Key Vault reference; until it resolves the webhook answers"
                    " 503 (docs/deploy.md).")
        else:
            site = Site(sub, group, app, args.management_endpoint)
            settings = ["WEBHOOK_SECRET"]
            if (env.get("WEBHOOK_SECRET_PREVIOUS_ENABLED") or "").lower() == "true":
                settings.append("WEBHOOK_SECRET_PREVIOUS")
            ref_retry = RetryPolicy(max_wait=args.reference_wait, initial_delay=retry.initial_delay,
                                    max_delay=retry.max_delay, sleep=retry.sleep, log=retry.log)
            try:
                resolve_key_vault_references(client, token_provider, site, settings, retry=ref_retry)
            except RegistrationError as exc:
                err(f"FAILED: {exc}\nThe webhook answers 503 until the reference resolves; run this hook again"
                    " (azd hooks run postprovision) once the cause is fixed.")
                return 1
            if outcome.changed and not args.no_restart:
                try:
                    restart_function_app(client, token_provider, site)
                    print(f"Restarted {app} so that its worker reads the new WEBHOOK_SECRET.")
                except RegistrationError as exc:
                    err(f"warning: {exc}. Restart the app yourself: az functionapp restart -g {group} -n {app}")
    if env.get("SIP_URI"):
        print(f"Point your SIP trunk at: {env['SIP_URI']}")
    return 0


def upload_initial_rules(env: Mapping[str, str]) -> int:
    """Post-provision, after the webhook: put the packaged routing.json into the rules blob (ROUTING_RULES_URI, a Bicep
    output) unless rules were published there already (scripts/publish_rules.py --if-absent)."""
    if not env.get("ROUTING_RULES_URI"):
        return 0
    import subprocess

    root = Path(__file__).resolve().parent.parent
    return subprocess.call([sys.executable, str(root / "scripts" / "publish_rules.py"), str(root / "routing.json"),
                            "--if-absent", "--wait", "300"], cwd=root)


if __name__ == "__main__":
    code = main()
    sys.exit(code or upload_initial_rules(os.environ))
