"""Routing rules from a blob, reloaded in the background without a restart (ROUTING_RULES_URI).

On Flex Consumption a deploy or a setting change restarts the app and cuts live calls, so the rules (greetings,
hours, profiles) live in a blob that operators publish with ``scripts/publish_rules.py``. The webhook never
touches storage for them: it reads :attr:`RulesHolder.current`, one attribute read, and a daemon thread checks
the blob's ETag at most every ``ROUTING_RULES_REFRESH_SECONDS`` with a conditional GET (``If-None-Match``: an
unchanged blob costs a 304 and no body). A new version is validated completely (the same ``parse_rules`` as
start-up) before it replaces the old one; an invalid one is refused with one ERROR line naming the problem and
the refused ETag, the ``switchboard.rules.rejected`` metric, and the last good rules stay.

Calls in progress are not affected by a swap: the intake copies the chosen profile into the orchestration input
(shared/intake.py ``_orchestration_input``), and the call's activities read it from there, never from the rules.

The thread uses the synchronous blob client: it shares no event loop with the webhook, and the swap is a single
reference assignment, atomic under the GIL (docs/routing.md, "Rules from storage").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from . import telemetry
from .routing import RoutingRules, RoutingRulesError

log = logging.getLogger("switchboard.rules")

MAX_RULES_BYTES = 1_000_000  # a rules file is a few kB; a bigger blob is a mistake, refused before it is read


@dataclass(frozen=True)
class RulesVersion:
    rules: RoutingRules
    etag: str | None  # None: the packaged file


class RulesHolder:
    """The process's current routing rules. Readers take ``current`` once per call; the refresher swaps it whole."""

    def __init__(self, rules: RoutingRules, etag: str | None = None) -> None:
        self._version = RulesVersion(rules, etag)

    @property
    def current(self) -> RoutingRules:
        return self._version.rules

    @property
    def version(self) -> RulesVersion:
        return self._version

    def swap(self, rules: RoutingRules, etag: str | None) -> None:
        self._version = RulesVersion(rules, etag)  # one reference assignment: readers see the old or the new pair


class RulesReader(Protocol):
    def fetch(self, etag: str | None) -> tuple[bytes, str] | None:
        """The blob's bytes and ETag, or None when its ETag is still ``etag`` (HTTP 304)."""


class RulesTooLargeError(ValueError):
    pass


def connection_string_credential(connection_string: str) -> dict[str, str]:
    """The account name and key of a storage connection string (Azurite locally), as a blob client credential."""
    parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    try:
        return {"account_name": parts["AccountName"], "account_key": parts["AccountKey"]}
    except KeyError:
        raise ValueError("the storage connection string has no AccountName/AccountKey") from None


def blob_client(uri: str, *, connection_string: str | None = None, client_id: str | None = None) -> Any:
    """A synchronous BlobClient for ``uri``: the account key of ``connection_string`` (local), else the managed
    identity ``client_id`` (Azure), else DefaultAzureCredential (a developer's sign-in)."""
    # Lazy: azure.storage.blob costs hundreds of ms cold; it is imported in the refresher thread, not on a webhook.
    from azure.storage.blob import BlobClient

    credential: Any
    if connection_string:
        credential = connection_string_credential(connection_string)
    else:
        from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

        credential = ManagedIdentityCredential(client_id=client_id) if client_id else DefaultAzureCredential()
    # Short timeouts and one retry: the refresher tries again at the next interval anyway, and the first invocations
    # wait (bounded) for its first check.
    return BlobClient.from_blob_url(uri, credential=credential, connection_timeout=5, read_timeout=10, retry_total=1)


class BlobRulesReader:
    """Conditional reads of the rules blob; the client is made on the first read, in the refresher's thread."""

    def __init__(self, make_client: Callable[[], Any]) -> None:
        self._make_client = make_client
        self._client: Any = None

    def fetch(self, etag: str | None) -> tuple[bytes, str] | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotModifiedError

        if self._client is None:
            self._client = self._make_client()

        try:
            if etag is None:
                download = self._client.download_blob()
            else:
                download = self._client.download_blob(etag=etag, match_condition=MatchConditions.IfModified)
        except (ResourceNotModifiedError, ResourceModifiedError):
            # Azure answers a GET whose If-None-Match still matches with 304; Azurite answers 412 ConditionNotMet.
            # Either way the only condition sent was "changed since etag", so the blob is unchanged.
            return None
        if download.size > MAX_RULES_BYTES:
            raise RulesTooLargeError(f"{download.size} bytes, over {MAX_RULES_BYTES}")
        return download.readall(), str(download.properties.etag)


class RulesRefresher:
    """Checks the blob every ``interval`` seconds in a daemon thread and swaps valid new rules into ``holder``."""

    def __init__(self, holder: RulesHolder, reader: RulesReader, parse: Callable[[bytes], RoutingRules], *,
                 interval: float, source: str, on_loaded: Callable[[RoutingRules], None] | None = None) -> None:
        self._holder = holder
        self._reader = reader
        self._parse = parse
        self._interval = interval
        self._source = source
        self._on_loaded = on_loaded
        self._seen: str | None = None  # the last ETag fetched, valid or not: an unchanged bad blob is said once
        self._failing = False
        self._stop = threading.Event()
        self.first_check = threading.Event()  # set after the first check, whatever its outcome
        self._thread: threading.Thread | None = None

    def check_once(self) -> str:
        """One check: 'unchanged', 'loaded', 'rejected' or 'unreadable'. Never raises."""
        try:
            got = self._reader.fetch(self._seen)
        except Exception as exc:  # noqa: BLE001 - storage down or no access: keep the rules, say so once
            if not self._failing:
                log.warning("routing rules %s unreadable (%s: %s); keeping ETag %s", self._source,
                            type(exc).__name__, str(exc)[:200], self._holder.version.etag)
                telemetry.rules_rejected("unreadable")
            self._failing = True
            return "unreadable"
        self._failing = False
        if got is None:
            return "unchanged"
        data, etag = got
        self._seen = etag
        try:
            rules = self._parse(data)
        except RoutingRulesError as exc:
            log.error("routing rules %s ETag %s rejected, keeping ETag %s: %s", self._source, etag,
                      self._holder.version.etag, exc)
            telemetry.rules_rejected("invalid")
            return "rejected"
        except Exception:  # noqa: BLE001 - a parser bug must not end the reloads (the thread would die): keep the rules
            log.exception("routing rules %s ETag %s could not be checked, keeping ETag %s", self._source, etag,
                          self._holder.version.etag)
            telemetry.rules_rejected("invalid")
            return "rejected"
        self._holder.swap(rules, etag)
        log.info("routing rules %s ETag %s loaded (%d profiles)", self._source, etag, len(rules.profiles))
        telemetry.rules_loaded()
        if self._on_loaded is not None:
            try:
                self._on_loaded(rules)
            except Exception:  # a warning hook must never undo a good reload
                log.exception("routing rules: post-load check failed")
        return "loaded"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="switchboard-rules", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.check_once()
        finally:
            self.first_check.set()
        while not self._stop.wait(self._interval):
            self.check_once()
