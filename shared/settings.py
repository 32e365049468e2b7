"""Typed configuration read once from environment variables.

Every setting the code reads is declared in ``SETTINGS`` so that the infrastructure tests can check that
Bicep sets each one, and so that a bad value fails at start-up with a message that names the setting and
the form it expects, instead of failing on the first phone call.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import SplitResult, urlsplit

APP_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_TOKEN_SCOPE = "https://cognitiveservices.azure.com/.default"
# Azure OpenAI caps a Realtime session at 30 minutes and OpenAI at 60; above that the platform ends the call.
# The converse activity must also end well inside host.json's functionTimeout (01:05:00): a timed-out
# invocation restarts the worker process and cuts every call on it. Accept, greeting, teardown and a late
# hangup need minutes, not seconds, so the cap keeps a 10-minute margin (docs/deploy.md, "Call length").
# tests/infra/test_host_json.py reads host.json so the two cannot drift apart.
FUNCTION_TIMEOUT_MARGIN_SECONDS = 600
# Finished orchestrations are purged after this many days (call_workflow/maintenance.py); ten years is "never".
MAX_HISTORY_RETENTION_DAYS = 3650
MAX_CALL_DURATION_CAP_SECONDS = 3900 - FUNCTION_TIMEOUT_MARGIN_SECONDS  # 3300 s = 55 min


class SettingsError(ValueError):
    """A setting is missing or malformed. The message names the setting and the expected form, never the value
    of a secret; ``setting`` is the name alone."""

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True)
class Setting:
    name: str
    form: str
    required_in_azure: bool
    default: str | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting("AZURE_OPENAI_ENDPOINT", "https://<resource>.openai.azure.com (http only for localhost)", True),
    Setting("AZURE_OPENAI_DEPLOYMENT", "the model deployment name, sent as `model` on accept", True),
    Setting("AZURE_OPENAI_MODEL", "the model behind AZURE_OPENAI_DEPLOYMENT, e.g. gpt-realtime-1.5 (default: the "
                                  "deployment name); only for the start-up shutdown-date check", True),
    Setting("AZURE_OPENAI_MODEL_VERSION", "the version of AZURE_OPENAI_MODEL, e.g. 2026-02-23", True),
    Setting("AZURE_OPENAI_ANALYSIS_DEPLOYMENT", "a chat model deployment for post-call analysis (docs/analysis.md); "
                                                "empty: analysis off", True),
    Setting("AZURE_OPENAI_AUTH", "'entra' or 'api-key'", True, "entra"),
    Setting("AZURE_OPENAI_API_KEY", "the resource key (only with AZURE_OPENAI_AUTH=api-key)", False),
    Setting("AZURE_OPENAI_TOKEN_SCOPE", "an Entra scope ending in /.default", False, DEFAULT_TOKEN_SCOPE),
    Setting("AZURE_CLIENT_ID", "client id (GUID) of the user-assigned managed identity", True),
    Setting("WEBHOOK_SECRET", "a Standard Webhooks secret 'whsec_<base64>'", True),
    Setting("WEBHOOK_SECRET_PREVIOUS", "a second 'whsec_<base64>' secret, accepted during rotation", False),
    Setting("ROUTING_RULES_PATH", "path of the routing rules JSON file", True, "routing.json"),
    Setting("ROUTING_RULES_URI", "https://<account>.blob.core.windows.net/<container>/<blob> of routing rules read "
                                 "instead of ROUTING_RULES_PATH (http only for localhost/Azurite)", True),
    Setting("ROUTING_RULES_REFRESH_SECONDS", "an integer from 5 to 3600: how often the rules blob's ETag is checked",
            False, "30"),
    Setting("MAX_CALL_DURATION_SECONDS", f"an integer from 10 to {MAX_CALL_DURATION_CAP_SECONDS}", True, "900"),
    Setting("CALL_STORAGE_CONNECTION_STRING", "a storage connection string (Azurite or local only)", False),
    Setting("CALL_STORAGE_QUEUE_URI", "https://<account>.queue.core.windows.net", True),
    Setting("CALL_STORAGE_TABLE_URI", "https://<account>.table.core.windows.net", True),
    Setting("CALL_RECORDS_QUEUE", "a queue name (3-63 lowercase letters, digits, hyphens)", True, "call-records"),
    Setting("CALL_TURNS_TABLE", "a table name (3-63 letters and digits)", True, "callturns"),
    Setting("DRAIN_MODE", "'off' or 'on' (on: the webhook takes no new calls; needs a restart to change)", False,
            "off"),
    Setting("DRAIN_REJECT_STATUS", "a SIP status code from 400 to 699, given to new calls while draining", False,
            "503"),
    Setting("DRAIN_REFER_URI", "a tel: or sip: URI new calls are referred to while draining (else rejected)", False),
    Setting("DRAIN_FLAG_TABLE", "a table name (3-63 letters and digits) holding the drain flag row", False,
            "drainflag"),
    Setting("CALL_LIVE_TABLE", "a table name (3-63 letters and digits)", False, "calllive"),
    Setting("CALL_HISTORY_TABLE", "a table name (3-63 letters and digits)", False, "callhistory"),
    Setting("CONSOLE_AUTH", "'key' (function key) or 'entra' (Entra ID access tokens) for the operator console", False,
            "key"),
    Setting("CONSOLE_ENTRA_TENANT_ID", "the Entra tenant id (GUID) the console signs users in with", False),
    Setting("CONSOLE_ENTRA_CLIENT_ID", "client id (GUID) of the console's app registration", False),
    Setting("CONSOLE_ENTRA_SCOPE", "the scope the console requests (default '<client id>/.default')", False),
    Setting("CONSOLE_OPERATOR_ROLE", "the app role whose members may hang up and transfer from the console", False,
            "Switchboard.Operator"),
    Setting("HISTORY_RETENTION_DAYS", f"an integer from 1 to {MAX_HISTORY_RETENTION_DAYS}", False, "30"),
    Setting("MAX_CALLS_PER_INSTANCE", "an integer from 1 to 100000", False, "40"),
)

# Settings only the webhook needs whose value the platform supplies at run time. In Azure WEBHOOK_SECRET is a Key
# Vault reference, and until the platform has resolved it the worker sees the literal '@Microsoft.KeyVault(...)'
# text. Checked at start-up, that would stop the worker from indexing any function (operator API, orchestrator and
# activities included), so the webhook checks them itself and answers 503 meanwhile (docs/deploy.md, "Key Vault
# references"). Plain values we write ourselves (routing rules, DRAIN_*) still fail fast at start-up: a typo there is
# a deploy bug that no amount of waiting fixes.
WEBHOOK_ONLY: frozenset[str] = frozenset({"WEBHOOK_SECRET", "WEBHOOK_SECRET_PREVIOUS"})
KEY_VAULT_REFERENCE_PREFIX = "@Microsoft.KeyVault("

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class StorageSettings:
    # repr=False: a connection string carries the account key, and settings objects end up in tracebacks.
    connection_string: str | None = field(repr=False)
    queue_uri: str | None
    table_uri: str | None
    records_queue: str
    turns_table: str
    live_table: str = "calllive"
    history_table: str = "callhistory"

    @property
    def uses_identity(self) -> bool:
        return self.connection_string is None


@dataclass(frozen=True)
class Settings:
    openai_endpoint: str
    deployment: str
    auth_mode: Literal["entra", "api-key"]
    api_key: str | None = field(repr=False)  # secrets stay out of repr (tracebacks, debug logs)
    token_scope: str
    managed_identity_client_id: str | None
    routing_rules_path: Path
    max_call_duration_seconds: int
    storage: StorageSettings
    drain: DrainSettings
    # Rules from a blob (shared/rules_store.py), checked in the background every refresh seconds; None: the file only.
    routing_rules_uri: str | None = None
    routing_rules_refresh_seconds: int = 30
    history_retention_days: int = 30
    model: str | None = None  # the model behind `deployment`, when known (shared/model_lifecycle.py)
    model_version: str | None = None
    # Calls this worker process takes on before it refuses new ones with 486 (shared/admission.py). The default
    # leaves 10 of host.json's maxConcurrentActivityFunctions (50, sized in docs/deploy.md) to the hangup, refer and
    # publish activities of ending calls (tests/infra/test_host_json.py keeps the two apart).
    max_calls_per_instance: int = 40
    # The chat deployment of post-call analysis (shared/analysis.py); None: analysis is off.
    analysis_deployment: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Every setting all functions need; the webhook-only ones (WEBHOOK_ONLY) are read by webhook_secrets()."""
        get, require = _readers(environ)
        endpoint = _endpoint(require("AZURE_OPENAI_ENDPOINT"))
        auth_mode = require("AZURE_OPENAI_AUTH").lower()
        if auth_mode not in ("entra", "api-key"):
            raise _error("AZURE_OPENAI_AUTH", f"is {auth_mode!r}")
        api_key = get("AZURE_OPENAI_API_KEY")
        if auth_mode == "api-key" and not api_key:
            raise _error("AZURE_OPENAI_API_KEY", "is missing (required because AZURE_OPENAI_AUTH=api-key)")

        scope = require("AZURE_OPENAI_TOKEN_SCOPE")
        if not scope.endswith("/.default"):
            raise _error("AZURE_OPENAI_TOKEN_SCOPE", f"is {scope!r}")

        rules_path = Path(require("ROUTING_RULES_PATH"))
        if not rules_path.is_absolute():
            rules_path = APP_ROOT / rules_path
        if not rules_path.is_file():
            raise _error("ROUTING_RULES_PATH", f"points to {str(rules_path)!r}, which is not a file")

        return cls(
            openai_endpoint=endpoint,
            deployment=require("AZURE_OPENAI_DEPLOYMENT"),
            auth_mode=auth_mode,  # type: ignore[arg-type]
            api_key=api_key,
            token_scope=scope,
            managed_identity_client_id=_client_id(get("AZURE_CLIENT_ID")),
            routing_rules_path=rules_path,
            max_call_duration_seconds=_duration(require("MAX_CALL_DURATION_SECONDS")),
            storage=_storage(get),
            drain=_drain(get),
            history_retention_days=_retention(require("HISTORY_RETENTION_DAYS")),
            model=get("AZURE_OPENAI_MODEL"),
            model_version=get("AZURE_OPENAI_MODEL_VERSION"),
            max_calls_per_instance=_positive("MAX_CALLS_PER_INSTANCE", require("MAX_CALLS_PER_INSTANCE"), 100_000),
            routing_rules_uri=_rules_uri(get("ROUTING_RULES_URI")),
            routing_rules_refresh_seconds=_refresh(require("ROUTING_RULES_REFRESH_SECONDS")),
            analysis_deployment=_deployment_name("AZURE_OPENAI_ANALYSIS_DEPLOYMENT",
                                                 get("AZURE_OPENAI_ANALYSIS_DEPLOYMENT")),
        )


@dataclass(frozen=True)
class DrainSettings:
    """What the webhook does while draining (shared/drain.py): refer to ``refer_uri``, else reject."""

    always: bool  # DRAIN_MODE=on: drained whatever the flag says
    reject_status: int
    refer_uri: str | None
    flag_table: str


def webhook_secrets(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The webhook's signing secrets (current first), validated; raises SettingsError naming the setting.

    Called when the webhook's intake is built, not at start-up: see WEBHOOK_ONLY.
    """
    get, require = _readers(environ)
    secrets = [_webhook_secret("WEBHOOK_SECRET", require("WEBHOOK_SECRET"))]
    previous = get("WEBHOOK_SECRET_PREVIOUS")
    if previous:
        secrets.append(_webhook_secret("WEBHOOK_SECRET_PREVIOUS", previous))
    return tuple(secrets)


def _readers(environ: Mapping[str, str] | None) -> tuple[Callable[[str], str | None], Callable[[str], str]]:
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or _BY_NAME[name].default

    def require(name: str) -> str:
        value = get(name)
        if not value:
            raise _error(name, "is missing")
        return value

    return get, require


def _error(name: str, problem: str) -> SettingsError:
    return SettingsError(f"Setting {name} {problem}; expected {_BY_NAME[name].form}.", name)


def _shown(url: str) -> str:
    """A URL as quoted in an error: user info, query and fragment elided, as they may hold a key or SAS token."""
    base = url.split("?", 1)[0].split("#", 1)[0]
    shown = re.sub(r"(?<=//)[^/]*@", "***@", base) + ("..." if base != url else "")
    return repr(shown)


def _url(name: str, value: str) -> SplitResult:
    """urlsplit, with malformed hosts and ports reported against the setting instead of escaping."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        raise _error(name, f"is {_shown(value)}, which is not a valid URL") from None
    return parts


def _endpoint(value: str) -> str:
    parts = _url("AZURE_OPENAI_ENDPOINT", value)
    local = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme not in ("https", "http") or not parts.hostname or (parts.scheme == "http" and not local):
        raise _error("AZURE_OPENAI_ENDPOINT", f"is {_shown(value)}")
    if parts.query or parts.fragment:
        raise _error("AZURE_OPENAI_ENDPOINT", f"is {_shown(value)} (no query or fragment)")
    # Accept a pasted '/openai/v1' suffix: the clients add it themselves.
    path = parts.path.rstrip("/").removesuffix("/openai/v1").rstrip("/")
    return f"{parts.scheme}://{parts.netloc}{path}"


def _webhook_secret(name: str, value: str) -> str:
    from .webhook import secret_key  # the verifier's own decoding, so both agree on what a secret is

    if value.startswith(KEY_VAULT_REFERENCE_PREFIX):
        # The platform passes a reference it could not resolve through as text (the secret is not stored yet, or
        # the app identity's role has not propagated). Never echo it: it names the vault and the secret.
        raise _error(name, "is an unresolved Key Vault reference (the platform has not fetched the secret yet)")
    if not value.startswith("whsec_"):
        raise _error(name, "does not start with 'whsec_'")
    try:
        decoded = secret_key(value)
    except ValueError:
        raise _error(name, "is not base64 after 'whsec_'") from None
    if len(decoded) < 16:
        raise _error(name, "decodes to fewer than 16 bytes")
    return value


def _deployment_name(name: str, value: str | None) -> str | None:
    # A deployment name goes into a request body, not a URL, but a typo with spaces or slashes is still a typo.
    if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", value):
        raise _error(name, f"is {value[:64]!r}")
    return value


def _client_id(value: str | None) -> str | None:
    import uuid

    if value is None:
        return None
    try:
        uuid.UUID(value)
    except ValueError:
        raise _error("AZURE_CLIENT_ID", f"is {value!r}") from None
    return value


def _duration(value: str) -> int:
    try:
        seconds = int(value)
    except ValueError:
        raise _error("MAX_CALL_DURATION_SECONDS", f"is {value!r}") from None
    if not 10 <= seconds <= MAX_CALL_DURATION_CAP_SECONDS:
        raise _error("MAX_CALL_DURATION_SECONDS", f"is {seconds}")
    return seconds


def _retention(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise _error("HISTORY_RETENTION_DAYS", f"is {value!r}") from None
    if not 1 <= days <= MAX_HISTORY_RETENTION_DAYS:
        raise _error("HISTORY_RETENTION_DAYS", f"is {days}")
    return days


def _rules_uri(value: str | None) -> str | None:
    if value is None:
        return None
    parts = _url("ROUTING_RULES_URI", value)
    local = parts.hostname in ("localhost", "127.0.0.1", "::1")
    segments = [p for p in parts.path.split("/") if p]
    if parts.scheme not in ("https", "http") or not parts.hostname or (parts.scheme == "http" and not local):
        raise _error("ROUTING_RULES_URI", f"is {_shown(value)}")
    if parts.query or parts.fragment or len(segments) < 2:
        raise _error("ROUTING_RULES_URI", f"is {_shown(value)} (a container and a blob name, no query)")
    return value


def _refresh(value: str) -> int:
    try:
        seconds = int(value)
    except ValueError:
        raise _error("ROUTING_RULES_REFRESH_SECONDS", f"is {value!r}") from None
    if not 5 <= seconds <= 3600:
        raise _error("ROUTING_RULES_REFRESH_SECONDS", f"is {seconds}")
    return seconds


def _positive(name: str, value: str, most: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise _error(name, f"is {value!r}") from None
    if not 1 <= number <= most:
        raise _error(name, f"is {number}")
    return number


def _storage(get: Callable[[str], str | None]) -> StorageSettings:
    connection_string = get("CALL_STORAGE_CONNECTION_STRING")
    queue_uri = get("CALL_STORAGE_QUEUE_URI")
    table_uri = get("CALL_STORAGE_TABLE_URI")
    if connection_string:
        if "=" not in connection_string:
            raise _error("CALL_STORAGE_CONNECTION_STRING", "is not a connection string")
    else:
        for name, uri in (("CALL_STORAGE_QUEUE_URI", queue_uri), ("CALL_STORAGE_TABLE_URI", table_uri)):
            if not uri:
                raise _error(name, "is missing (set it, or CALL_STORAGE_CONNECTION_STRING for local use)")
            if _url(name, uri).scheme != "https":
                raise _error(name, f"is {_shown(uri)}")
    queue = get("CALL_RECORDS_QUEUE")
    if queue is None or not re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]", queue):
        raise _error("CALL_RECORDS_QUEUE", f"is {queue!r}")
    tables: dict[str, str] = {}
    for name in ("CALL_TURNS_TABLE", "CALL_LIVE_TABLE", "CALL_HISTORY_TABLE"):
        table = get(name)
        if table is None or not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,62}", table):
            raise _error(name, f"is {table!r}")
        tables[name] = table
    if tables["CALL_TURNS_TABLE"].lower() == tables["CALL_LIVE_TABLE"].lower():
        raise _error("CALL_LIVE_TABLE", "names the turns table (CALL_TURNS_TABLE); use a table of its own")
    return StorageSettings(
        connection_string=connection_string,
        queue_uri=None if connection_string else queue_uri,
        table_uri=None if connection_string else table_uri,
        records_queue=queue,
        turns_table=tables["CALL_TURNS_TABLE"],
        live_table=tables["CALL_LIVE_TABLE"],
        history_table=tables["CALL_HISTORY_TABLE"] or "callhistory",
    )


def _drain(get: Callable[[str], str | None]) -> DrainSettings:
    mode = (get("DRAIN_MODE") or "").lower()
    if mode not in ("off", "on"):
        raise _error("DRAIN_MODE", f"is {mode!r}")
    raw_status = get("DRAIN_REJECT_STATUS") or ""
    try:
        status = int(raw_status)
    except ValueError:
        raise _error("DRAIN_REJECT_STATUS", f"is {raw_status!r}") from None
    if not 400 <= status <= 699:
        raise _error("DRAIN_REJECT_STATUS", f"is {status}")
    refer = get("DRAIN_REFER_URI")
    if refer is not None:
        from .routing import _TARGET, MAX_TARGET_CHARS  # the same rule as a routing rule's refer target

        if not _TARGET.fullmatch(refer) or len(refer.split(":", 1)[1]) > MAX_TARGET_CHARS:
            raise _error("DRAIN_REFER_URI", f"is {refer[:64]!r}")
    table = get("DRAIN_FLAG_TABLE")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,62}", table or ""):
        raise _error("DRAIN_FLAG_TABLE", f"is {table!r}")
    return DrainSettings(always=mode == "on", reject_status=status, refer_uri=refer, flag_table=table or "")
