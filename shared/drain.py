"""Drain mode: the webhook takes no new calls while the live ones finish (before a deploy or a setting change).

On Flex Consumption every deploy, app-setting change and restart force-terminates running executions under the
default site update strategy (docs/deploy.md, "Deploying without dropping calls"), so live calls must be over first.
Two switches, either one drains:

* ``DRAIN_MODE=on`` (app setting): fixed for the life of the process. Changing it restarts the app, and so kills
  calls: it is for a standing maintenance state, not for deploys.
* the **drain flag**, one row in the ``DRAIN_FLAG_TABLE`` table, flipped through the operator API
  (``POST``/``DELETE /api/drain``, scripts/drain.py) without a restart. It may carry an expiry so that a deploy that
  dies half-way cannot leave the app refusing calls for ever.

The webhook reads the flag at most once per ``ttl`` seconds per process (the ring path stays one dictionary lookup),
so a change takes up to ``ttl`` seconds to reach every instance; the operator API reports when it is in force
everywhere (``effective_by``). A flag that cannot be read counts as *not drained*: an unreadable table must not turn
every caller away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .settings import DrainSettings, StorageSettings
from .storage import table_client

log = logging.getLogger("switchboard.drain")

PARTITION = "drain"
ROW = "webhook"
CACHE_SECONDS = 5.0  # how stale a webhook's view of the flag may be
READ_TIMEOUT_SECONDS = 1.0  # a slow table read must not hold a ringing call
MAX_REASON_CHARS = 200


def utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class DrainState:
    drained: bool
    source: str  # "setting" (DRAIN_MODE=on), "flag" (the table row) or "none"
    since: str | None = None
    expires_at: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


NOT_DRAINED = DrainState(False, "none")


class DrainFlagStore:
    """The drain flag row (PartitionKey ``drain``, RowKey ``webhook``) in its own table."""

    def __init__(self, table: Any, now: Callable[[], datetime] = utc_now) -> None:
        self._table = table  # azure.data.tables.aio.TableClient
        self._now = now

    @classmethod
    def from_settings(cls, storage: StorageSettings, table_name: str, credential: Any = None) -> DrainFlagStore:
        return cls(table_client(storage, table_name, credential))

    async def read(self) -> DrainState:
        """The flag as stored; a missing table or row means not drained. Storage errors propagate."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            row = await self._table.get_entity(PARTITION, ROW)
        except ResourceNotFoundError:  # no table yet, or never drained
            return NOT_DRAINED
        if not row.get("drained"):
            return NOT_DRAINED
        expires = _parse(row.get("expires_at"))
        if expires is not None and self._now() >= expires:
            return NOT_DRAINED  # a forgotten drain ends by itself
        return DrainState(True, "flag", row.get("since"), row.get("expires_at"), row.get("reason"))

    async def write(self, drained: bool, *, reason: str | None = None,
                    expires_in: timedelta | None = None) -> DrainState:
        from azure.core.exceptions import ResourceExistsError
        from azure.data.tables import UpdateMode

        now = self._now()
        entity: dict[str, Any] = {"PartitionKey": PARTITION, "RowKey": ROW, "drained": drained,
                                  "since": _iso(now), "expires_at": "", "reason": (reason or "")[:MAX_REASON_CHARS]}
        if drained and expires_in is not None:
            entity["expires_at"] = _iso(now + expires_in)
        with contextlib.suppress(ResourceExistsError):
            await self._table.create_table()
        await self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        if not drained:
            return NOT_DRAINED
        return DrainState(True, "flag", entity["since"], entity["expires_at"] or None, entity["reason"] or None)

    async def aclose(self) -> None:
        await self._table.close()


class DrainSwitch:
    """The webhook's view of drain mode: the setting, else the flag cached for ``ttl`` seconds; fails open."""

    def __init__(self, settings: DrainSettings, store: DrainFlagStore | None, *, ttl: float = CACHE_SECONDS,
                 timeout: float = READ_TIMEOUT_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.store = store
        self.ttl = ttl
        self._timeout = timeout
        self._clock = clock
        self._cached: DrainState | None = None
        self._read_at = 0.0
        self._lock = asyncio.Lock()

    async def state(self) -> DrainState:
        if self.settings.always:
            return DrainState(True, "setting", reason="DRAIN_MODE=on")
        if self.store is None:
            return NOT_DRAINED
        if self._cached is not None and self._clock() - self._read_at < self.ttl:
            return self._cached
        async with self._lock:  # one read per expiry, however many webhooks arrive together
            if self._cached is not None and self._clock() - self._read_at < self.ttl:
                return self._cached
            try:
                state = await asyncio.wait_for(self.store.read(), self._timeout)
            except Exception as exc:  # noqa: BLE001 - fail open, whatever the storage SDK raised
                log.warning("drain flag unreadable (%s); taking calls", type(exc).__name__)
                state = self._cached or NOT_DRAINED
            self._cached, self._read_at = state, self._clock()
            return state

    def remember(self, state: DrainState) -> None:
        """This process's own write: in force here at once (other instances follow within ``ttl``)."""
        if not self.settings.always:
            self._cached, self._read_at = state, self._clock()

    async def aclose(self) -> None:
        if self.store is not None:
            await self.store.aclose()
