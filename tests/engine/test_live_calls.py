"""The live-calls table on Azurite: what the capacity count reads instead of the task hub's history."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from shared.live_calls import LiveCallTable

NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
MIN = dt.timedelta(minutes=1)


@pytest.fixture
async def table(azurite_connection_string, unique_name):
    t = LiveCallTable.from_connection_string(azurite_connection_string, "live" + unique_name.replace("-", "")[:20])
    yield t
    await t.aclose()


async def test_count_follows_calls_starting_and_ending(table):
    assert await table.count(NOW) == 0  # the table does not exist yet: created, and empty
    await asyncio.gather(*(table.add(f"rtc_{i}", NOW + 15 * MIN) for i in range(5)))
    await table.add("rtc_0", NOW + 15 * MIN)  # a duplicate webhook delivery writes the same row
    assert await table.count(NOW) == 5
    await table.remove("rtc_3")
    await table.remove("rtc_3")  # a retried publish_call_record removes it again: fine
    await table.remove("rtc_never_added")
    assert await table.count(NOW) == 4


async def test_a_leaked_row_stops_counting_at_its_expiry_and_is_swept(table):
    await table.add("rtc_leaked", NOW + 2 * MIN)  # its publish_call_record never ran
    await table.add("rtc_live", NOW + 20 * MIN)
    assert await table.count(NOW) == 2
    assert await table.count(NOW + 3 * MIN) == 1
    assert await table.sweep(NOW + 3 * MIN) == 1
    assert await table.count(NOW) == 1  # gone for good, not just not counted
    assert await table.sweep(NOW + 3 * MIN) == 0


async def test_remove_before_the_table_exists_is_harmless(table):
    await table.remove("rtc_x")
