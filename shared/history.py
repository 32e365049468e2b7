"""The call history table: every call record (answered, rejected, referred, failed), browsable by day.

The records queue feeds downstream systems and cannot be browsed; the operator console reads this table instead
(docs/console.md). Layout:

- PartitionKey = the UTC day the call started (``YYYY-MM-DD``; the accept time, or the routing decision's time
  for a call that was never accepted): one day's calls are one single-partition query.
- RowKey = ``<13-digit inverted epoch ms>-<call_id>``: sorted by start time, newest first (a console lists the
  latest calls first and a table query returns rows in RowKey order), then by call id.
- Summary properties (outcome, profile, masked numbers, times, greeting_ms, reason...) for listing, filtering and
  charts without reading the record; the full record (its transcript not shortened, unlike the queue message) as
  JSON split over ``record0``, ``record1``... (a string property holds at most 32K UTF-16 code units).

Writes are upserts (REPLACE) keyed by the start time and the call id, both fixed for a call: the publishing
activity is at-least-once, and a retry writes the same row again. Numbers are stored masked only.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypedDict

from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from .phone import mask
from .storage import CreateOnce, storage_client_options, table_client
from .transcript import parse_iso

log = logging.getLogger("switchboard.history")

PART_CHARS = 16_000  # under 32K UTF-16 code units (32,768) even if every character needed two
MAX_PAGE_SIZE = 100
MAX_RANGE_DAYS = 31
MAX_STATS_ROWS = 20_000  # charts over more calls than this say so (``truncated``) instead of reading on
_INVERT = 9_999_999_999_999
_SUMMARY = ("call_id", "outcome", "ended_by", "reason", "profile_name", "caller", "dialed", "started_at",
            "ended_at", "duration_seconds", "greeting_ms", "sip_status", "transfer_target", "tool_count", "turn_count")
_FILTER_VALUE = re.compile(r"[A-Za-z0-9_.:+*@ -]{1,128}")


class HistoryQueryError(ValueError):
    """A history query the caller got wrong (bad date, range, filter value or cursor): answered 400."""


class HistoryRow(TypedDict, total=False):
    day: str
    call_id: str
    outcome: str
    ended_by: str
    reason: str
    profile_name: str | None
    caller: str | None
    dialed: str | None
    started_at: str | None
    ended_at: str | None
    duration_seconds: float | None
    greeting_ms: int | None
    sip_status: int | None
    transfer_target: str | None
    tool_count: int
    turn_count: int


@dataclass(frozen=True)
class HistoryQuery:
    start: date
    end: date
    outcome: str | None = None
    profile: str | None = None
    dialed: str | None = None  # masked, or a full number that is masked before the query

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise HistoryQueryError("'to' is before 'from'")
        if (self.end - self.start).days + 1 > MAX_RANGE_DAYS:
            raise HistoryQueryError(f"a date range covers at most {MAX_RANGE_DAYS} days")
        for name in ("outcome", "profile", "dialed"):
            value = getattr(self, name)
            if value is not None and not _FILTER_VALUE.fullmatch(value):
                raise HistoryQueryError(f"'{name}' must be 1-128 letters, digits or + * _ . : @ - characters")


def started_at(record: Mapping[str, Any]) -> datetime:
    """When the call started, for its partition and row key: the accept, else the decision (ended_at)."""
    value = record.get("accepted_at") or record.get("ended_at")
    if not value:
        raise ValueError(f"call record {record.get('id')!r} has neither accepted_at nor ended_at")
    return parse_iso(value).astimezone(UTC)


def row_key(start: datetime, call_id: str) -> str:
    millis = int(start.timestamp() * 1000)
    return f"{_INVERT - millis:013d}-{call_id}"


def to_entity(record: Mapping[str, Any]) -> dict[str, Any]:
    start = started_at(record)
    record = {**record, "caller": _masked(record.get("caller")) or None,
              "dialed": _masked(record.get("dialed")) or None}
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    parts = [text[i:i + PART_CHARS] for i in range(0, len(text), PART_CHARS)] or [""]
    entity: dict[str, Any] = {
        "PartitionKey": start.date().isoformat(),
        "RowKey": row_key(start, record["call_id"]),
        "call_id": record["call_id"],
        "outcome": record.get("outcome") or "",
        "ended_by": record.get("ended_by") or "",
        "reason": str(record.get("reason") or "")[:1000],
        "profile_name": record.get("profile_name") or "",
        # Masked again here: a full number never reaches the table, whatever the record holds.
        "caller": _masked(record.get("caller")),
        "dialed": _masked(record.get("dialed")),
        "started_at": start.isoformat().replace("+00:00", "Z"),
        "ended_at": record.get("ended_at") or "",
        "tool_count": len(record.get("tools") or []),
        "turn_count": len(record.get("transcript") or []),
        "record_parts": len(parts),
    }
    for key in ("duration_seconds", "greeting_ms", "sip_status", "transfer_target"):
        if record.get(key) is not None:
            entity[key] = record[key]
    for i, part in enumerate(parts):
        entity[f"record{i}"] = part
    return entity


def _masked(value: Any) -> str:
    if not value:
        return ""
    value = str(value)
    return value if "*" in value else (mask(value) or "")


def dialed_filter(value: str) -> str:
    """What a dialed-number filter matches: stored numbers are masked, so a full number is masked first."""
    return value if "*" in value else (mask(value) or value)


def _row(entity: Any) -> HistoryRow:
    row: dict[str, Any] = {"day": entity["PartitionKey"]}
    for key in _SUMMARY:
        value = entity.get(key)
        row[key] = value if value != "" else None
    return row  # type: ignore[return-value]


def encode_cursor(day: str, row_key_: str) -> str:
    raw = json.dumps([day, row_key_], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[date, str]:
    """A page cursor from :meth:`HistoryTable.search`; raises HistoryQueryError if it is not one."""
    try:
        if len(cursor) > 400:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        day, key = json.loads(raw)
        if not isinstance(key, str) or not re.fullmatch(r"[0-9]{13}-[A-Za-z0-9_.-]{1,128}", key):
            raise ValueError("bad row key")
        return date.fromisoformat(day), key
    except (ValueError, TypeError, binascii.Error):
        raise HistoryQueryError("'cursor' is not a cursor this API gave out") from None


class HistoryTable:
    def __init__(self, table: TableClient) -> None:
        self._table = table
        self._create = CreateOnce()

    @classmethod
    def from_connection_string(cls, connection_string: str, table_name: str = "callhistory") -> HistoryTable:
        return cls(TableClient.from_connection_string(connection_string, table_name=table_name,
                                                      **storage_client_options()))

    @classmethod
    def from_settings(cls, storage: Any, credential: Any = None) -> HistoryTable:
        """From ``shared.settings.StorageSettings``, like the turns table (Azurite string, or URI + identity)."""
        name = getattr(storage, "history_table", None) or "callhistory"
        return cls(table_client(storage, name, credential))

    async def _ensure_table(self) -> None:
        await self._create(self._table)

    async def upsert(self, record: Mapping[str, Any]) -> None:
        """Store the record (idempotent: the same call writes the same row)."""
        await self._ensure_table()
        await self._table.upsert_entity(to_entity(record), mode=UpdateMode.REPLACE)

    async def search(self, query: HistoryQuery, limit: int = 50,
                     cursor: str | None = None) -> tuple[list[HistoryRow], str | None]:
        """One page of calls, newest first, and the cursor of the next page (None: no more)."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise HistoryQueryError(f"'limit' must be 1-{MAX_PAGE_SIZE}")
        day, after = query.end, None
        if cursor:
            day, after = decode_cursor(cursor)
            if not query.start <= day <= query.end:
                raise HistoryQueryError("'cursor' belongs to another date range")
        rows: list[HistoryRow] = []
        last_key = ""
        await self._ensure_table()
        while day >= query.start:
            text, params = _filter(day, query, after)
            pager = self._table.query_entities(text, parameters=params, select=["PartitionKey", "RowKey", *_SUMMARY],
                                               results_per_page=min(limit + 1, 1000))
            async for entity in pager:
                if len(rows) == limit:
                    return rows, encode_cursor(rows[-1]["day"], last_key)
                rows.append(_row(entity))
                last_key = entity["RowKey"]
            day, after = day - timedelta(days=1), None
        return rows, None

    async def get(self, day: date, call_id: str) -> dict[str, Any] | None:
        """The full record of ``call_id`` started on ``day`` (UTC), or None."""
        await self._ensure_table()
        async for entity in self._table.query_entities("PartitionKey eq @pk and call_id eq @id",
                                                       parameters={"pk": day.isoformat(), "id": call_id}):
            parts = int(entity.get("record_parts") or 0)
            return json.loads("".join(entity.get(f"record{i}") or "" for i in range(parts)))
        return None

    async def stats(self, query: HistoryQuery) -> dict[str, Any]:
        """What the console's charts show: calls per hour by outcome, greeting latency buckets, top end reasons."""
        per_hour: dict[str, Counter[str]] = {}
        greeting: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        outcomes: Counter[str] = Counter()
        n = 0
        truncated = False
        await self._ensure_table()
        day = query.end
        while day >= query.start and not truncated:
            text, params = _filter(day, query, None)
            async for e in self._table.query_entities(text, parameters=params, select=[
                    "started_at", "outcome", "greeting_ms", "ended_by", "reason"]):
                if n >= MAX_STATS_ROWS:
                    truncated = True
                    break
                n += 1
                outcome = e.get("outcome") or "unknown"
                outcomes[outcome] += 1
                hour = (e.get("started_at") or "")[:13] + ":00Z"
                per_hour.setdefault(hour, Counter())[outcome] += 1
                if isinstance(e.get("greeting_ms"), int):
                    greeting[_bucket(e["greeting_ms"])] += 1
                reasons[end_reason(e)] += 1
            day -= timedelta(days=1)
        return {
            "calls": n,
            "truncated": truncated,
            "outcomes": dict(outcomes),
            "per_hour": [{"hour": h, "outcomes": dict(c)} for h, c in sorted(per_hour.items())],
            "greeting_ms": [{"bucket": b, "calls": greeting.get(b, 0)} for b in GREETING_BUCKETS],
            "end_reasons": [{"reason": r, "calls": c} for r, c in reasons.most_common(10)],
        }

    async def purge_before(self, day: date) -> int:
        """Delete every row of the days before ``day`` (the retention sweep); returns how many. A range query on
        PartitionKey reads only the old days' keys; deletes go in entity-group transactions of up to 100 rows
        (one partition each)."""
        await self._ensure_table()
        removed = 0
        batch: list[tuple[str, dict[str, Any]]] = []
        async for entity in self._table.query_entities("PartitionKey lt @day", parameters={"day": day.isoformat()},
                                                       select=["PartitionKey", "RowKey"]):
            if batch and (len(batch) == 100 or batch[0][1]["PartitionKey"] != entity["PartitionKey"]):
                removed += await self._delete(batch)
                batch = []
            batch.append(("delete", {"PartitionKey": entity["PartitionKey"], "RowKey": entity["RowKey"]}))
        if batch:
            removed += await self._delete(batch)
        return removed

    async def _delete(self, batch: list[tuple[str, dict[str, Any]]]) -> int:
        await self._table.submit_transaction(batch)
        return len(batch)

    async def aclose(self) -> None:
        await self._table.close()


GREETING_EDGES = (250, 500, 750, 1000, 1500, 2000, 3000)
GREETING_BUCKETS = tuple([f"<{GREETING_EDGES[0]}"] + [f"{a}-{b}" for a, b in zip(GREETING_EDGES, GREETING_EDGES[1:],
                                                                                  strict=False)]
                         + [f">={GREETING_EDGES[-1]}"])


def _bucket(ms: int) -> str:
    if ms < GREETING_EDGES[0]:
        return GREETING_BUCKETS[0]
    for i, (a, b) in enumerate(zip(GREETING_EDGES, GREETING_EDGES[1:], strict=False)):
        if a <= ms < b:
            return GREETING_BUCKETS[i + 1]
    return GREETING_BUCKETS[-1]


def end_reason(entity: Any) -> str:
    """A short end reason for the chart: who ended it, and for a routing decision its reason (after_hours...)."""
    ended_by = entity.get("ended_by") or "unknown"
    if ended_by == "routing":
        return f"routing: {(entity.get('reason') or '?')[:40]}"
    return ended_by


def _filter(day: date, query: HistoryQuery, after: str | None) -> tuple[str, dict[str, Any]]:
    parts, params = ["PartitionKey eq @pk"], {"pk": day.isoformat()}
    if after:
        parts.append("RowKey gt @after")
        params["after"] = after
    if query.outcome:
        parts.append("outcome eq @outcome")
        params["outcome"] = query.outcome
    if query.profile:
        parts.append("profile_name eq @profile")
        params["profile"] = query.profile
    if query.dialed:
        parts.append("dialed eq @dialed")
        params["dialed"] = dialed_filter(query.dialed)
    return " and ".join(parts), params
