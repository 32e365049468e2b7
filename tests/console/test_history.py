"""The call history table on Azurite: day partitions, newest first, idempotent upserts, filters, paging, charts."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from shared import history as history_module
from shared.history import (
    HistoryQuery,
    HistoryQueryError,
    HistoryTable,
    decode_cursor,
    dialed_filter,
    encode_cursor,
    end_reason,
    started_at,
    to_entity,
)
from shared.records import build_record, decision_record
from shared.settings import StorageSettings


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


@pytest.mark.parametrize(("start", "end"), [(date(2026, 11, 1), date(2026, 12, 1)), (date(2026, 11, 29),
                                                                                       date(2026, 11, 29))])
def test_a_range_of_one_to_31_days_is_a_query(start: date, end: date) -> None:
    assert HistoryQuery(start, end).end == end


def test_range_errors_say_what_is_wrong() -> None:
    with pytest.raises(HistoryQueryError, match="^'to' is before 'from'$"):
        HistoryQuery(date(2026, 11, 29), date(2026, 11, 28))
    with pytest.raises(HistoryQueryError, match="^a date range covers at most 31 days$"):
        HistoryQuery(date(2026, 11, 1), date(2026, 12, 2))


@pytest.mark.parametrize("value", ["caller_hung_up", "+1800***1212", "sip:desk@pbx.example.com", "after hours",
                                   "a" * 128, "v1.2-x"])
def test_filter_values_of_the_documented_alphabet_are_accepted(value: str) -> None:
    assert HistoryQuery(date(2026, 11, 29), date(2026, 11, 29), outcome=value, profile=value, dialed=value)


@pytest.mark.parametrize("value", ["", "a" * 129, "x'", 'x"', "a/b", "(x)", "x\ny", "é", "a;b"])
@pytest.mark.parametrize("name", ["outcome", "profile", "dialed"])
def test_filter_values_outside_it_are_refused_naming_the_filter(name: str, value: str) -> None:
    with pytest.raises(HistoryQueryError, match=rf"^'{name}' must be 1-128 letters, digits or \+ \* _ \. : @ - "):
        HistoryQuery(date(2026, 11, 29), date(2026, 11, 29), **{name: value})


def test_a_call_is_filed_under_the_utc_day_it_was_accepted() -> None:
    record = answered("rtc_tz", "2026-11-30T01:30:00+02:00")
    entity = to_entity(record)
    assert entity["PartitionKey"] == "2026-11-29" and entity["started_at"] == "2026-11-29T23:30:00Z"
    # RowKey = <13-digit inverted epoch ms>-<call id> (docs/console.md)
    millis = int(datetime(2026, 11, 29, 23, 30, tzinfo=UTC).timestamp() * 1000)
    assert entity["RowKey"] == f"{9_999_999_999_999 - millis:013d}-rtc_tz"
    # A call never accepted is filed under its routing decision, and one with neither time cannot be filed.
    declined = decision_record("rtc_d", "rejected", "after_hours", sip_status=480, caller=None, dialed=None,
                               profile_name="closed", decided_at="2026-11-28T23:59:59.999Z")
    assert to_entity(declined)["PartitionKey"] == "2026-11-28"
    with pytest.raises(ValueError, match="call record 'rec_1' has neither accepted_at nor ended_at"):
        started_at({"id": "rec_1", "accepted_at": None, "ended_at": ""})
    both = {"accepted_at": "2026-11-29T10:00:00Z", "ended_at": "2026-11-29T10:05:00Z"}
    assert started_at(both) == datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def test_the_row_of_a_call_shows_its_summary() -> None:
    record = answered("rtc_row", "2026-11-29T10:00:00Z", greeting_ms=None)
    record.update(duration_seconds=12.5, sip_status=None, transfer_target="sales", reason="r" * 1500,
                  caller="+1425***1212")
    entity = to_entity(record)
    assert entity["reason"] == "r" * 1000  # a reason is cut to 1000 characters
    assert entity["caller"] == "+1425***1212" and entity["dialed"] == "+1800***1212"
    assert (entity["duration_seconds"], entity["transfer_target"]) == (12.5, "sales")
    assert "greeting_ms" not in entity and "sip_status" not in entity
    assert (entity["tool_count"], entity["turn_count"], entity["ended_at"]) == (1, 1, "2026-11-29T10:00:30Z")
    no_end = decision_record("rtc_no", "rejected", "x", sip_status=None, caller=None, dialed=None,
                             profile_name=None, decided_at="2026-11-29T10:00:00Z")
    no_end["ended_at"] = None
    no_end["accepted_at"] = "2026-11-29T10:00:00Z"
    assert to_entity(no_end)["ended_at"] == "" and to_entity(no_end)["caller"] == ""


@pytest.mark.parametrize(("value", "matches"), [("+18005550100", "+1800***0100"), ("+1800***0100", "+1800***0100"),
                                                ("+1234", "***"), ("+1800***", "+1800***")])
def test_a_dialed_filter_matches_the_masked_numbers_stored(value: str, matches: str) -> None:
    assert dialed_filter(value) == matches


def test_a_cursor_is_opaque_and_url_safe() -> None:
    cursor = encode_cursor("2026-11-29", "8204089599999-rtc_ABC.x-1_2")
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert decode_cursor(cursor) == (date(2026, 11, 29), "8204089599999-rtc_ABC.x-1_2")
    for key in ["8204089599999-" + "a" * 128, "0000000000000-x"] + [f"8204089599999-rtc_{i}" for i in range(300)]:
        assert decode_cursor(encode_cursor("2026-01-01", key))[1] == key


@pytest.mark.parametrize("key", ["8204089599999-" + "a" * 129, "820408959999-rtc", "8204089599999_rtc",
                                 "8204089599999-rtc/x", "8204089599999-", 42])
def test_a_cursor_with_another_row_key_is_refused(key: object) -> None:
    with pytest.raises(HistoryQueryError, match="^'cursor' is not a cursor this API gave out$"):
        decode_cursor(encode_cursor("2026-11-29", key))  # type: ignore[arg-type]


async def test_page_sizes_outside_1_to_100_are_refused(history: HistoryTable) -> None:
    day = HistoryQuery(date(2026, 11, 29), date(2026, 11, 29))
    for limit in (0, 101):
        with pytest.raises(HistoryQueryError, match="^'limit' must be 1-100$"):
            await history.search(day, limit=limit)
    for limit in (1, 100):
        assert await history.search(day, limit=limit) == ([], None)


async def test_every_page_size_walks_every_call_once_newest_first(history: HistoryTable) -> None:
    starts = ["2026-11-26T09:00:00Z", "2026-11-27T09:00:00Z", "2026-11-27T18:00:00.001Z", "2026-11-27T18:00:00.002Z",
              "2026-11-29T08:00:00Z", "2026-11-29T08:30:00Z"]
    # Call ids sort against their start times: the order is the time's, to the millisecond.
    for i, at in enumerate(starts):
        await history.upsert(answered(f"rtc_{'zyxwvu'[i]}", at))
    newest_first = [f"rtc_{c}" for c in reversed("zyxwvu")]
    for rng in (HistoryQuery(date(2026, 11, 26), date(2026, 11, 29)),):
        for limit in (1, 2, 3, 4, 6):
            seen, cursor = [], None
            while True:
                rows, cursor = await history.search(rng, limit=limit, cursor=cursor)
                assert 0 < len(rows) <= limit
                seen += [r["call_id"] for r in rows]
                if cursor is None:
                    break
            assert seen == newest_first, limit
    # A cursor is for the range it came from; its own first and last days are in it.
    one_day = HistoryQuery(date(2026, 11, 27), date(2026, 11, 27))
    rows, cursor = await history.search(one_day, limit=1)
    rows2, _ = await history.search(one_day, limit=1, cursor=cursor)
    assert [r["call_id"] for r in rows + rows2] == ["rtc_w", "rtc_x"]
    with pytest.raises(HistoryQueryError, match="^'cursor' belongs to another date range$"):
        await history.search(HistoryQuery(date(2026, 11, 28), date(2026, 11, 29)), cursor=cursor)


async def test_without_a_page_size_a_page_is_50_calls(history: HistoryTable) -> None:
    for i in range(51):
        await history.upsert(answered(f"rtc_{i:02d}", f"2026-11-29T10:{i:02d}:00Z"))
    rows, cursor = await history.search(HistoryQuery(date(2026, 11, 29), date(2026, 11, 29)))
    assert len(rows) == 50 and cursor is not None


async def test_the_rows_carry_the_summary_only(history: HistoryTable) -> None:
    record = answered("rtc_sum", "2026-11-29T10:00:00Z", greeting_ms=None)
    await history.upsert(record)
    [row], _ = await history.search(HistoryQuery(date(2026, 11, 29), date(2026, 11, 29)))
    assert row == {"day": "2026-11-29", "call_id": "rtc_sum", "outcome": "completed", "ended_by": "caller",
                   "reason": "bye", "profile_name": "reception", "caller": "+1425***1212", "dialed": "+1800***1212",
                   "started_at": "2026-11-29T10:00:00Z", "ended_at": "2026-11-29T10:00:30Z", "duration_seconds": 30.0,
                   "greeting_ms": None, "sip_status": None, "transfer_target": None, "tool_count": 1, "turn_count": 1}


async def test_a_large_record_reads_back_whole_and_a_republished_one_replaces_the_row(history: HistoryTable) -> None:
    record = answered("rtc_big", "2026-11-29T10:00:00Z")
    record["transcript"] = [{"role": "user", "text": f"{i} é 😀 " + "word " * 40, "at": "t"} for i in range(300)]
    record["transfer_target"] = "sales"
    assert len(json.dumps(record, ensure_ascii=False)) > 2 * 30_000  # three parts and more
    await history.upsert(record)
    assert await history.get(date(2026, 11, 29), "rtc_big") == json.loads(json.dumps(record))
    # A retried publish with a corrected record: the row is the new record, no property of the old one stays.
    smaller = answered("rtc_big", "2026-11-29T10:00:00Z")
    await history.upsert(smaller)
    assert await history.get(date(2026, 11, 29), "rtc_big") == json.loads(json.dumps(smaller))
    [row], _ = await history.search(HistoryQuery(date(2026, 11, 29), date(2026, 11, 29)))
    assert row["transfer_target"] is None and row["turn_count"] == 1
    assert await history.get(date(2026, 11, 28), "rtc_big") is None


async def test_the_charts_count_every_call_over_the_range(history: HistoryTable,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    greetings = [249, 250, 499, 500, 2999, 3000, 10_000, None]
    for i, ms in enumerate(greetings):
        await history.upsert(answered(f"rtc_g{i}", f"2026-11-2{7 + i % 3}T10:{i:02d}:00Z", greeting_ms=ms,
                                      outcome="completed" if i % 4 else "caller_hung_up"))
    for i in range(11):  # eleven distinct routing reasons, the first one twice
        await history.upsert(decision_record(f"rtc_r{i}", "rejected", f"reason_{i:02d}_" + "x" * 50, sip_status=480,
                                             caller=None, dialed=None, profile_name="closed",
                                             decided_at=f"2026-11-29T11:{i:02d}:00Z"))
    await history.upsert(decision_record("rtc_r0b", "rejected", "reason_00_" + "x" * 50, sip_status=480,
                                         caller=None, dialed=None, profile_name="closed",
                                         decided_at="2026-11-29T11:30:00Z"))
    unknown = answered("rtc_u", "2026-11-29T12:00:00Z", ended_by="")
    unknown["outcome"] = None
    await history.upsert(unknown)

    stats = await history.stats(HistoryQuery(date(2026, 11, 27), date(2026, 11, 29)))
    assert stats["calls"] == 8 + 12 + 1 and stats["truncated"] is False
    assert stats["outcomes"] == {"completed": 6, "caller_hung_up": 2, "rejected": 12, "unknown": 1}
    buckets = {b["bucket"]: b["calls"] for b in stats["greeting_ms"]}
    assert buckets == {"<250": 1, "250-500": 3, "500-750": 1, "750-1000": 0, "1000-1500": 0, "1500-2000": 0,
                       "2000-3000": 1, ">=3000": 2}  # 250-500: two of the list and rtc_u's 420 ms
    assert [b["bucket"] for b in stats["greeting_ms"]] == ["<250", "250-500", "500-750", "750-1000", "1000-1500",
                                                            "1500-2000", "2000-3000", ">=3000"]
    hours = {h["hour"]: h["outcomes"] for h in stats["per_hour"]}
    assert hours["2026-11-29T11:00Z"] == {"rejected": 12}
    assert hours["2026-11-27T10:00Z"] == {"caller_hung_up": 1, "completed": 2}
    assert list(hours) == sorted(hours)
    reasons = stats["end_reasons"]
    assert len(reasons) == 10  # the ten most frequent of thirteen
    assert reasons[:2] == [{"reason": "caller", "calls": 8},
                           {"reason": "routing: reason_00_" + "x" * 30, "calls": 2}]  # cut to 40 characters

    # Over the cap, the charts stop counting and say so.
    monkeypatch.setattr(history_module, "MAX_STATS_ROWS", 5)
    capped = await history.stats(HistoryQuery(date(2026, 11, 27), date(2026, 11, 29)))
    assert (capped["calls"], capped["truncated"]) == (5, True)


def test_a_routing_decision_without_a_reason_is_charted_as_such() -> None:
    assert end_reason({"ended_by": "routing", "reason": None}) == "routing: ?"
    assert end_reason({"ended_by": "operator"}) == "operator"
    assert end_reason({}) == "unknown"


async def test_the_table_named_in_the_settings_is_used(azurite_connection_string: str, unique_name: str) -> None:
    storage = StorageSettings(connection_string=azurite_connection_string, queue_uri=None, table_uri=None,
                              records_queue="q", turns_table="t", history_table=unique_name)
    table = HistoryTable.from_settings(storage)
    try:
        await table.upsert(answered("rtc_set", "2026-11-29T10:00:00Z"))
        direct = HistoryTable.from_connection_string(azurite_connection_string, unique_name)
        assert await direct.get(date(2026, 11, 29), "rtc_set") is not None
        await direct.aclose()
    finally:
        await table._table.delete_table()
        await table.aclose()
    assert HistoryTable.from_settings(replace(storage, history_table=""))._table.table_name == "callhistory"
    assert HistoryTable.from_connection_string(azurite_connection_string)._table.table_name == "callhistory"
    in_azure = replace(storage, connection_string=None, table_uri="https://acct.table.core.windows.net")
    with pytest.raises(ValueError, match="an async credential is required"):
        HistoryTable.from_settings(in_azure)


async def test_storage_is_reached_directly_whatever_proxy_the_environment_names(
        history: HistoryTable, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    await history.upsert(answered("rtc_px", "2026-11-29T10:00:00Z"))
    assert await history.get(date(2026, 11, 29), "rtc_px") is not None


async def test_a_record_of_characters_outside_the_bmp_is_stored_and_reads_back(history: HistoryTable) -> None:
    # Each of these takes two UTF-16 code units, and a table string property holds at most 32K code units.
    record = answered("rtc_emoji", "2026-11-29T10:00:00Z")
    record["transcript"] = [{"role": "user", "text": "😀" * 1000, "at": "t"} for _ in range(40)]
    await history.upsert(record)
    assert await history.get(date(2026, 11, 29), "rtc_emoji") == json.loads(json.dumps(record))


async def test_missing_summary_fields_are_empty_in_the_rows(history: HistoryTable) -> None:
    declined = decision_record("rtc_bare", "rejected", "after_hours", sip_status=None, caller=None, dialed=None,
                               profile_name=None, decided_at="2026-11-29T10:00:00Z")
    declined.update(ended_by="", reason=None)
    await history.upsert(declined)
    [row], _ = await history.search(HistoryQuery(date(2026, 11, 29), date(2026, 11, 29)))
    assert {k: row[k] for k in ("ended_by", "reason", "profile_name", "caller", "dialed", "sip_status")} == {
        "ended_by": None, "reason": None, "profile_name": None, "caller": None, "dialed": None, "sip_status": None}


def test_the_day_is_the_utc_day_whatever_the_hosts_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14
    time.tzset()
    try:
        entity = to_entity(answered("rtc_tz2", "2026-11-29T23:30:00Z"))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert entity["PartitionKey"] == "2026-11-29" and entity["started_at"] == "2026-11-29T23:30:00Z"


class TokenStandIn:
    async def get_token(self, *scopes: str, **kwargs: object) -> object:
        raise AssertionError("no request is made here")


def test_in_azure_the_table_is_reached_with_the_apps_identity() -> None:
    storage = StorageSettings(connection_string=None, queue_uri=None, table_uri="https://acct.table.core.windows.net",
                              records_queue="q", turns_table="t", history_table="callhistory")
    table = HistoryTable.from_settings(storage, credential=TokenStandIn())
    assert (table._table.account_name, table._table.table_name) == ("acct", "callhistory")
