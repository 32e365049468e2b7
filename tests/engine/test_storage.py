"""Turns table and call records against real Azurite; the retried-converse scenario that depends on them."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json

from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueClient

from shared.records import SCHEMA, RecordPublisher, build_record, encode_record
from shared.transcript import greeting_instructions
from shared.turns import MAX_CHUNK_CHARS, MAX_CHUNK_TURNS, MAX_TEXT_CHARS, TurnStore, TurnWriter

from .helpers import PROFILE, Harness, scenario


async def test_turns_are_upserted_in_sequence_per_call(turn_store: TurnStore) -> None:
    await turn_store.append("rtc_a", 1, {"role": "caller", "text": "second", "at": "2026-11-25T12:00:01.000000Z"})
    await turn_store.append("rtc_a", 0, {"role": "agent", "text": "first", "at": "2026-11-25T12:00:00.000000Z"})
    # A retried write of the same seq replaces the row instead of adding one.
    await turn_store.append(
        "rtc_a", 1, {"role": "caller", "text": "second, again ☎", "at": "2026-11-25T12:00:01.000000Z"}
    )
    await turn_store.append("rtc_b", 0, {"role": "agent", "text": "other call", "at": "2026-11-25T12:00:00.000000Z"})
    rows = await turn_store.load("rtc_a")
    assert [(r["seq"], r["role"], r["text"]) for r in rows] == [(0, "agent", "first"), (1, "caller", "second, again ☎")]
    assert await turn_store.load("rtc_missing") == []


def _turn(i: int) -> dict:
    return {"role": "caller" if i % 2 else "agent", "text": f"turn {i}", "at": f"2026-11-25T12:00:{i % 60:02d}.000000Z"}


async def test_the_writer_stores_the_first_turn_at_once_then_a_few_seconds_of_turns_per_request(
    turn_store: TurnStore,
) -> None:
    writer = TurnWriter(turn_store, "rtc_linger", linger=30.0)
    writer.put(0, _turn(0))
    for _ in range(200):  # the greeting is stored at once: a retried converse must know the caller was greeted
        if await turn_store.load("rtc_linger"):
            break
        await asyncio.sleep(0.02)
    assert [t["text"] for t in await turn_store.load("rtc_linger")] == ["turn 0"]
    for i in range(1, 6):
        writer.put(i, _turn(i))
    await asyncio.sleep(0.3)
    assert len(await turn_store.load("rtc_linger")) == 1  # the next turns wait for company (linger)...
    await writer.flush(timeout=10)  # ...and the end of the call writes them without waiting out the linger
    assert [t["text"] for t in await turn_store.load("rtc_linger")] == [f"turn {i}" for i in range(6)]
    assert writer.requests == 2 and writer.failed == 0


async def test_many_turns_span_several_rows_and_old_one_turn_rows_still_read(turn_store: TurnStore) -> None:
    n = MAX_CHUNK_TURNS * 2 + 5
    await turn_store.append_many("rtc_many", [(i, _turn(i)) for i in range(n)])
    await turn_store._table.upsert_entity(  # a row of the older one-turn form, as an earlier version wrote it
        {"PartitionKey": "rtc_many", "RowKey": f"{n:06d}", "role": "agent", "text": "legacy", "at": "x"})
    rows = await turn_store.load("rtc_many")
    assert [r["seq"] for r in rows] == list(range(n + 1))
    assert rows[5]["text"] == "turn 5" and rows[-1] == {"seq": n, "role": "agent", "text": "legacy", "at": "x"}
    entities = [e async for e in turn_store._table.query_entities("PartitionKey eq 'rtc_many'")]
    assert len(entities) == 4  # three chunks and the legacy row


async def test_long_and_runaway_turns_are_cut_to_fit_a_table_property_and_never_fail_the_write(
    turn_store: TurnStore,
) -> None:
    long = "☎" * (MAX_CHUNK_CHARS // 2)  # two turns of this do not fit one row
    runaway = '"' * 100_000  # each quote doubles when escaped into the chunk's JSON
    await turn_store.append_many("rtc_long", [(0, _turn(0) | {"text": long}), (1, _turn(1) | {"text": long}),
                                              (2, _turn(2) | {"text": runaway}), (3, _turn(3))])
    rows = await turn_store.load("rtc_long")
    assert [r["seq"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["text"] == long and rows[1]["text"] == long and rows[3]["text"] == "turn 3"
    assert 0 < len(rows[2]["text"]) <= MAX_TEXT_CHARS and set(rows[2]["text"]) == {'"'}


async def _queue_messages(conn: str, name: str) -> list[dict]:
    async with QueueClient.from_connection_string(conn, name, message_decode_policy=TextBase64DecodePolicy()) as q:
        msgs = [m async for m in q.receive_messages(messages_per_page=32, visibility_timeout=5)]
    return [json.loads(m.content) for m in msgs]


async def test_record_published_once_with_masked_numbers_and_transcript(
    publisher: RecordPublisher, storage_connection_string: str, unique_name: str
) -> None:
    call = {"call_id": "rtc_rec1", "accepted_at": "2026-11-25T12:00:00.000000Z", "caller": "+14255551212",
            "dialed": "+1800***1212", "profile_name": "reception", "profile": {"voice": "marin"}}
    summary = {"call_id": "rtc_rec1", "outcome": "agent_ended", "reason": "the agent ended the call (done)",
               "started_at": call["accepted_at"], "ended_at": "2026-11-25T12:01:30.500000Z", "duration_seconds": 90.5,
               "transcript": [{"role": "agent", "text": "Hello", "at": "2026-11-25T12:00:00.500000Z"},
                              {"role": "caller", "text": "Bye", "at": "2026-11-25T12:00:02.000000Z"}],
               "tools": [{"name": "end_call", "arguments": {}, "ok": True, "at": "2026-11-25T12:00:02.100000Z"}],
               "digits": "1", "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
               "transfer_target": None}
    record = build_record(call, summary, "converse", summary["transcript"])
    assert await publisher.publish(record) == "rtc_rec1"
    [got] = await _queue_messages(storage_connection_string, unique_name)
    assert got["schema"] == SCHEMA and got["id"] == "rtc_rec1"
    assert got["caller"] == "+1425***1212"  # a full number that slipped through is masked here
    assert got["dialed"] == "+1800***1212"
    assert got["outcome"] == "agent_ended" and got["ended_by"] == "converse"
    assert got["duration_seconds"] == 90.5 and got["profile_name"] == "reception"
    assert [t["text"] for t in got["transcript"]] == ["Hello", "Bye"]
    assert got["tools"][0]["name"] == "end_call" and got["usage"]["total_tokens"] == 15 and got["digits"] == "1"


async def test_record_without_summary_comes_from_the_turns_table(
    turn_store: TurnStore, publisher: RecordPublisher, storage_connection_string: str, unique_name: str
) -> None:
    for seq, text in enumerate(["Hello", "My order is late"]):
        await turn_store.append("rtc_rec2", seq, {"role": "agent" if seq == 0 else "caller", "text": text,
                                                  "at": f"2026-11-25T12:00:0{seq}.000000Z"})
    call = {"call_id": "rtc_rec2", "accepted_at": "2026-11-25T12:00:00.000000Z", "caller": "+1425***1212",
            "dialed": "+1800***1212", "profile_name": "reception", "profile": {}}
    record = build_record(call, None, "orchestrator", await turn_store.load("rtc_rec2"))
    await publisher.publish(record)
    [got] = await _queue_messages(storage_connection_string, unique_name)
    assert got["outcome"] == "failed" and got["ended_by"] == "orchestrator"
    assert [t["text"] for t in got["transcript"]] == ["Hello", "My order is late"]
    assert set(got["transcript"][0]) == {"role", "text", "at"}  # no storage internals (seq) in the record


def test_an_oversized_record_drops_middle_turns_to_fit_a_queue_message() -> None:
    turns = [{"role": "caller", "text": f"turn {i} " + "x" * 500, "at": "t"} for i in range(200)]
    record = build_record({"call_id": "rtc_big", "accepted_at": "2026-11-25T12:00:00.000000Z"}, None, "x", turns)
    text = encode_record(record)
    assert len(base64.b64encode(text.encode())) < 64 * 1024
    got = json.loads(text)
    assert got["transcript_truncated"] > 0
    assert got["transcript"][0]["text"].startswith("turn 0 ") and got["transcript"][-1]["text"].startswith("turn 199 ")


async def test_retried_converse_continues_the_transcript_and_does_not_greet_again(
    emulator_factory, turn_store: TurnStore
) -> None:
    emu = await emulator_factory(speech_seconds_per_char=0.002)
    h = Harness(emu, turns=turn_store)
    try:
        sc = scenario([{"say": "question one"}, {"wait": 1.0}, {"say": "question two"}],
                      rules=[{"match": "one", "say": "Reply one."}, {"match": "two", "say": "Reply two."}])
        call = await h.start_call(sc)
        cid = call["call_id"]
        first = asyncio.create_task(h.converse(call))
        # Let the first run get through one exchange (its turns written), then kill it like a crashed worker.
        for _ in range(100):
            if len(await turn_store.load(cid)) >= 3:
                break
            await asyncio.sleep(0.05)
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        summary = await h.converse(call)
    finally:
        await h.aclose()
    texts = [t["text"] for t in summary["transcript"]]
    assert texts == [PROFILE["greeting"], "question one", "Reply one.", "question two", "Reply two."]
    assert h.instructions(cid).count(greeting_instructions(PROFILE["greeting"])) == 1
    rows = await turn_store.load(cid)
    assert [r["seq"] for r in rows] == [0, 1, 2, 3, 4] and [r["text"] for r in rows] == texts
    assert summary["outcome"] == "caller_hung_up"


def test_the_orchestrators_ending_decides_the_outcome() -> None:
    from shared.records import build_record

    call = {"call_id": "rtc_x", "accepted_at": "2026-11-25T12:00:00.000000Z", "caller": "+1425***1212"}
    closed = {"outcome": "completed", "ended_at": "2026-11-25T12:00:30.000000Z", "transcript": []}
    transferred = build_record(call, closed, "operator_transfer", [], transfer_target="sales")
    assert (transferred["outcome"], transferred["transfer_target"]) == ("transferred", "sales")
    assert build_record(call, None, "max_duration", [])["outcome"] == "timed_out"
    assert build_record(call, closed, "call_ended", [])["outcome"] == "completed"
    assert build_record(call, None, "failed", [])["outcome"] == "failed"


def test_a_record_without_summary_ends_when_the_call_ended_not_when_it_was_published() -> None:
    from datetime import UTC, datetime

    call = {"call_id": "rtc_late", "accepted_at": "2026-11-25T12:00:00.000000Z"}
    ended = datetime(2026, 11, 25, 12, 1, 30, tzinfo=UTC)
    record = build_record(call, None, "max_duration", [], now=ended)
    assert record["ended_at"] == "2026-11-25T12:01:30.000000Z" and record["duration_seconds"] == 90.0
    summary = {"outcome": "completed", "ended_at": "2026-11-25T12:01:00.000000Z", "transcript": []}
    assert build_record(call, summary, "call_ended", [], now=ended)["ended_at"] == summary["ended_at"]


def test_a_record_says_whether_the_hangup_was_confirmed_and_ends_when_the_late_hangup_landed() -> None:
    call = {"call_id": "rtc_h", "accepted_at": "2026-11-25T12:00:00.000000Z"}
    summary = {"outcome": "agent_ended", "ended_at": "2026-11-25T12:01:00.000000Z", "transcript": []}
    # converse's own /hangup failed; the orchestrator's landed 5 s later: the line was up until then.
    late = build_record(
        call, summary, "call_ended", [], hangup_confirmed=True, hung_up_at="2026-11-25T12:01:05.000000Z"
    )
    assert (late["hangup_confirmed"], late["ended_at"], late["duration_seconds"]) == (
        True, "2026-11-25T12:01:05.000000Z", 65.0)
    # Never given up on: the hangup was not confirmed, the end is what converse saw.
    stuck = build_record(call, summary, "call_ended", [], hangup_confirmed=False)
    assert (stuck["hangup_confirmed"], stuck["ended_at"]) == (False, summary["ended_at"])
    # The webhook's record of an unstarted call does not know: null.
    assert build_record(call, {"outcome": "failed", "reason": "x"}, "start_failed", [])["hangup_confirmed"] is None


async def test_a_retry_that_cannot_read_the_stored_turns_does_not_overwrite_them(
    emulator_factory, turn_store: TurnStore, monkeypatch
) -> None:
    emu = await emulator_factory(speech_seconds_per_char=0.002)
    h = Harness(emu, turns=turn_store)
    try:
        sc = scenario([{"say": "question one"}, {"wait": 1.0}, {"say": "question two"}],
                      rules=[{"match": "one", "say": "Reply one."}, {"match": "two", "say": "Reply two."}])
        call = await h.start_call(sc)
        cid = call["call_id"]
        first = asyncio.create_task(h.converse(call))
        for _ in range(100):
            if len(await turn_store.load(cid)) >= 3:
                break
            await asyncio.sleep(0.05)
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        before = await turn_store.load(cid)

        async def unreadable(call_id):
            raise ConnectionError("table unreachable")

        monkeypatch.setattr(turn_store, "load", unreadable)
        summary = await h.converse(call)
        monkeypatch.undo()
        after = await turn_store.load(cid)
    finally:
        await h.aclose()
    assert len(before) >= 3
    assert after == before  # the second attempt numbered from 0 but wrote nothing over the first one's rows
    assert "question two" in [t["text"] for t in summary["transcript"]]
