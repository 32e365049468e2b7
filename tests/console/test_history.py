"""The call history table on Azurite: day partitions, newest first, idempotent upserts, filters, paging, charts."""

from __future__ import annotations

from datetime import date

import pytest

from shared.history import (
    HistoryQuery,
    HistoryQueryError,
    HistoryTable,
    decode_cursor,
    encode_cursor,
    to_entity,
)
from shared.records import build_record, decision_record


def answered(call_id: str, accepted_at: str, *, outcome: str = "completed", profile: str = "reception",
             dialed: str = "+18005551212", greeting_ms: int | None = 420, ended_by: str = "caller") -> dict:
    call = {"call_id": call_id, "accepted_at": accepted_at, "caller": "+14255551212", "dialed": dialed,
            "profile_name": profile, "profile": {"voice": "marin"}}
    summary = {"outcome": outcome, "reason": "bye", "ended_at": accepted_at.replace(":00Z", ":30Z"),
               "transcript": [{"role": "assistant", "text": "Hello", "at": accepted_at}],
               "tools": [{"name": "lookup", "ok": True, "at": accepted_at, "latency_ms": 12}],
               "greeting_ms": greeting_ms}
    return build_record(call, summary, ended_by, [])


@pytest.fixture
async def history(azurite_connection_string: str, unique_name: str):
    table = HistoryTable.from_connection_string(azurite_connection_string, unique_name)
    yield table
    await table._table.delete_table()
    await table.aclose()


def test_entity_layout_never_holds_a_full_number() -> None:
    record = answered("rtc_a", "2026-11-29T23:59:59Z")
    record["caller"] = "+14255551212"  # as if a record came in unmasked
    entity = to_entity(record)
    assert entity["PartitionKey"] == "2026-11-29"
    assert entity["RowKey"].endswith("-rtc_a")
    assert entity["caller"] == "+1425***1212"
    assert "4255551212" not in str(entity)


async def test_one_day_newest_first_and_upsert_is_idempotent(history: HistoryTable) -> None:
    await history.upsert(answered("rtc_early", "2026-11-29T08:00:00Z"))
    await history.upsert(answered("rtc_late", "2026-11-29T17:00:00Z"))
    await history.upsert(answered("rtc_late", "2026-11-29T17:00:00Z", outcome="transferred"))  # a retried publish
    await history.upsert(answered("rtc_other_day", "2026-11-30T00:00:01Z"))
    rows, cursor = await history.search(HistoryQuery(date(2026, 11, 29), date(2026, 11, 29)))
    assert [r["call_id"] for r in rows] == ["rtc_late", "rtc_early"]
    assert rows[0]["outcome"] == "transferred"
    assert cursor is None
    record = await history.get(date(2026, 11, 29), "rtc_late")
    assert record is not None and record["tools"][0]["latency_ms"] == 12


async def test_filters_and_paging_across_days(history: HistoryTable) -> None:
    for i in range(5):
        await history.upsert(answered(f"rtc_p{i}", f"2026-11-2{7 + i % 3}T1{i}:00:00Z",
                                      profile="sales" if i % 2 else "reception"))
    await history.upsert(decision_record("rtc_rej", "rejected", "after_hours", sip_status=480, caller="+14255550000",
                                         dialed="+18005550100", profile_name="closed",
                                         decided_at="2026-11-28T03:00:00Z"))
    rng = HistoryQuery(date(2026, 11, 27), date(2026, 11, 29))
    seen, cursor, pages = [], None, 0
    while True:
        rows, cursor = await history.search(rng, limit=2, cursor=cursor)
        seen += [r["call_id"] for r in rows]
        pages += 1
        if cursor is None:
            break
    assert len(seen) == 6 and len(set(seen)) == 6 and pages == 3
    starts = [r["started_at"] for r in (await history.search(rng, limit=100))[0]]
    assert starts == sorted(starts, reverse=True)

    sales, _ = await history.search(HistoryQuery(date(2026, 11, 27), date(2026, 11, 29), profile="sales"))
    assert {r["call_id"] for r in sales} == {"rtc_p1", "rtc_p3"}
    rejected, _ = await history.search(HistoryQuery(date(2026, 11, 27), date(2026, 11, 29), outcome="rejected"))
    assert [(r["call_id"], r["sip_status"]) for r in rejected] == [("rtc_rej", 480)]
    # A full number is masked before it is compared with the stored (masked) one; the masked form works too.
    for dialed in ("+18005550100", "+1800***0100"):
        by_number, _ = await history.search(HistoryQuery(date(2026, 11, 27), date(2026, 11, 29), dialed=dialed))
        assert [r["call_id"] for r in by_number] == ["rtc_rej"]


async def test_stats_for_the_charts(history: HistoryTable) -> None:
    await history.upsert(answered("rtc_s1", "2026-11-29T10:05:00Z", greeting_ms=300))
    await history.upsert(answered("rtc_s2", "2026-11-29T10:45:00Z", greeting_ms=1200, outcome="caller_hung_up"))
    await history.upsert(decision_record("rtc_s3", "rejected", "after_hours", sip_status=480, caller=None,
                                         dialed=None, profile_name="closed", decided_at="2026-11-29T11:00:00Z"))
    stats = await history.stats(HistoryQuery(date(2026, 11, 29), date(2026, 11, 29)))
    assert stats["calls"] == 3
    assert stats["per_hour"] == [{"hour": "2026-11-29T10:00Z", "outcomes": {"completed": 1, "caller_hung_up": 1}},
                                 {"hour": "2026-11-29T11:00Z", "outcomes": {"rejected": 1}}]
    buckets = {b["bucket"]: b["calls"] for b in stats["greeting_ms"]}
    assert buckets["250-500"] == 1 and buckets["1000-1500"] == 1 and sum(buckets.values()) == 2
    assert {"reason": "routing: after_hours", "calls": 1} in stats["end_reasons"]


@pytest.mark.parametrize("kwargs", [
    {"start": date(2026, 11, 29), "end": date(2026, 11, 1)},  # reversed
    {"start": date(2026, 1, 1), "end": date(2026, 3, 1)},  # too long
    {"start": date(2026, 11, 29), "end": date(2026, 11, 29), "outcome": "x' or 1 eq 1"},
    {"start": date(2026, 11, 29), "end": date(2026, 11, 29), "dialed": "+1" * 100},
])
def test_bad_queries_are_refused(kwargs: dict) -> None:
    with pytest.raises(HistoryQueryError):
        HistoryQuery(**kwargs)


@pytest.mark.parametrize("cursor", ["", "!!!", "a" * 500, encode_cursor("2026-13-01", "0000000000000-x"),
                                    encode_cursor("2026-11-01", "not-a-key")])
def test_bad_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(HistoryQueryError):
        decode_cursor(cursor)


async def test_purge_before_removes_only_older_days(history: HistoryTable) -> None:
    for i in range(105):  # more than one transaction's worth in one day
        await history.upsert(answered(f"rtc_old{i}", f"2026-10-01T10:{i // 60:02d}:{i % 60:02d}Z"))
    await history.upsert(answered("rtc_old_b", "2026-10-02T10:00:00Z"))
    await history.upsert(answered("rtc_keep", "2026-10-03T00:00:00Z"))
    assert await history.purge_before(date(2026, 10, 3)) == 106
    rows, _ = await history.search(HistoryQuery(date(2026, 10, 1), date(2026, 10, 3)), limit=100)
    assert [r["call_id"] for r in rows] == ["rtc_keep"]
    assert await history.purge_before(date(2026, 10, 3)) == 0
