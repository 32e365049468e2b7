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
MAX_CALL_DURATION_CAP_SECONDS = 3600


class SettingsError(ValueError):
    """A setting is missing or malformed. The message names the setting and the expected form."""


@dataclass(frozen=True)
class Setting:
    name: str
    form: str
    required_in_azure: bool
    default: str | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting("AZURE_OPENAI_ENDPOINT", "https://<resource>.openai.azure.com (http only for localhost)", True),
    Setting("AZURE_OPENAI_DEPLOYMENT", "the model deployment name, sent as `model` on accept", True),
    Setting("AZURE_OPENAI_AUTH", "'entra' or 'api-key'", True, "entra"),
    Setting("AZURE_OPENAI_API_KEY", "the resource key (only with AZURE_OPENAI_AUTH=api-key)", False),
    Setting("AZURE_OPENAI_TOKEN_SCOPE", "an Entra scope ending in /.default", False, DEFAULT_TOKEN_SCOPE),
    Setting("AZURE_CLIENT_ID", "client id (GUID) of the user-assigned managed identity", True),
    Setting("WEBHOOK_SECRET", "a Standard Webhooks secret 'whsec_<base64>'", True),
    Setting("WEBHOOK_SECRET_PREVIOUS", "a second 'whsec_<base64>' secret, accepted during rotation", False),
    Setting("ROUTING_RULES_PATH", "path of the routing rules JSON file", True, "routing.json"),
    Setting("MAX_CALL_DURATION_SECONDS", f"an integer from 10 to {MAX_CALL_DURATION_CAP_SECONDS}", True, "900"),
    Setting("CALL_STORAGE_CONNECTION_STRING", "a storage connection string (Azurite or local only)", False),
    Setting("CALL_STORAGE_QUEUE_URI", "https://<account>.queue.core.windows.net", True),
    Setting("CALL_STORAGE_TABLE_URI", "https://<account>.table.core.windows.net", True),
    Setting("CALL_RECORDS_QUEUE", "a queue name (3-63 lowercase letters, digits, hyphens)", True, "call-records"),
    Setting("CALL_TURNS_TABLE", "a table name (3-63 letters and digits)", True, "callturns"),
    Setting("MAX_CALLS_PER_INSTANCE", "an integer from 1 to 100000", False, "80"),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class StorageSettings:
    # repr=False: a connection string carries the account key, and settings objects end up in tracebacks.
    connection_string: str | None = field(repr=False)
    queue_uri: str | None
    table_uri: str | None
    records_queue: str
    turns_table: str

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
    webhook_secrets: tuple[str, ...] = field(repr=False)
    routing_rules_path: Path
    max_call_duration_seconds: int
    storage: StorageSettings
    # Calls this worker process takes on before it refuses new ones with 486 (shared/admission.py). The default
    # leaves 20 of host.json's maxConcurrentActivityFunctions (100) to hangup/refer/publish activities.
    max_calls_per_instance: int = 80

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or _BY_NAME[name].default

        def require(name: str) -> str:
            value = get(name)
            if not value:
                raise _error(name, "is missing")
            return value

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

        secrets = [_webhook_secret("WEBHOOK_SECRET", require("WEBHOOK_SECRET"))]
        previous = get("WEBHOOK_SECRET_PREVIOUS")
        if previous:
            secrets.append(_webhook_secret("WEBHOOK_SECRET_PREVIOUS", previous))

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
            webhook_secrets=tuple(secrets),
            routing_rules_path=rules_path,
            max_call_duration_seconds=_duration(require("MAX_CALL_DURATION_SECONDS")),
            storage=_storage(get),
            max_calls_per_instance=_positive("MAX_CALLS_PER_INSTANCE", require("MAX_CALLS_PER_INSTANCE"), 100_000),
        )


def _error(name: str, problem: str) -> SettingsError:
    return SettingsError(f"Setting {name} {problem}; expected {_BY_NAME[name].form}.")


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

    if not value.startswith("whsec_"):
        raise _error(name, "does not start with 'whsec_'")
    try:
        decoded = secret_key(value)
    except ValueError:
        raise _error(name, "is not base64 after 'whsec_'") from None
    if len(decoded) < 16:
        raise _error(name, "decodes to fewer than 16 bytes")
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
    if not re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]", queue or ""):
        raise _error("CALL_RECORDS_QUEUE", f"is {queue!r}")
    table = get("CALL_TURNS_TABLE")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,62}", table or ""):
        raise _error("CALL_TURNS_TABLE", f"is {table!r}")
    return StorageSettings(
        connection_string=connection_string,
        queue_uri=None if connection_string else queue_uri,
        table_uri=None if connection_string else table_uri,
        records_queue=queue,
        turns_table=table,
    )
