"""The console's JSON endpoints on the local stack: auth refusals, live calls, history filters, paging, bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from tests.console.conftest import CLOSED, RECEPTION, Console

TODAY = datetime.now(UTC).date()
DATA_PATHS = ["me", "live", "history", "stats", "calls/rtc_x/transcript", f"history/{TODAY}/rtc_x"]


def test_the_page_and_its_assets_are_served_without_data(console: Console) -> None:
    status, page = console.get("", key=None)
    assert status == 200 and "Switchboard console" in page
    assert console.get("config", key=None) == (200, {"auth": "key"})
    for asset in ("console.js", "console.css"):
        assert console.get(f"assets/{asset}", key=None)[0] == 200
    assert console.get("assets/..%2Fconsole.py", key=None)[0] == 404
    assert console.get("assets/index.html", key=None)[0] == 404


@pytest.mark.parametrize("path", DATA_PATHS)
@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_no_data_without_the_key(console: Console, path: str, key: str | None) -> None:
    status, body = console.get(path, key=key)
    assert status == 401
    # Only what is missing, never data: the host's JSON error (docs/local.md) and nothing else.
    assert isinstance(body, dict) and set(body) == {"error", "needs", "message"} and body["error"] == "unauthorized"
    assert "rtc_" not in json.dumps(body)  # not even the id that was asked for


@pytest.mark.parametrize("action", ["hangup", "transfer"])
def test_no_action_without_the_key(console: Console, action: str) -> None:
    status, _ = console.request("POST", f"calls/rtc_x/{action}", {"target": "sales"}, key=None)
    assert status == 401


def test_a_live_call_shows_masked_numbers_and_its_turns_then_is_hung_up_and_found_in_history(console: Console):
    call_id = console.place(caller="+14255550199")

    def listed():
        status, body = console.get("live")
        assert status == 200
        return next((c for c in body["calls"] if c["call_id"] == call_id and c.get("last_turns")), None)

    row = console.wait("the call listed with a turn", listed)
    assert row["caller"] == "+1425***0199" and row["dialed"] == "+1800***1212"
    assert row["profile"] == "reception" and row["state"]
    text = json.dumps(console.get("live")[1])
    assert "4255550199" not in text and "8005551212" not in text
    assert console.get("live")[1]["profiles"]["reception"] == ["sales", "support"]

    turns = console.wait("the transcript", lambda: console.get(f"calls/{call_id}/transcript")[1]["turns"])
    assert turns[0]["role"] == "agent"

    status, body = console.request("POST", f"calls/{call_id}/transfer", {"target": "nowhere"})
    assert status == 400 and "unknown transfer target" in body["error"]
    status, body = console.request("POST", f"calls/{call_id}/hangup")
    assert status == 202, body
    console.wait("the emulator saw the hangup", lambda: console.emulator(call_id)["state"] == "ended")
    console.wait("the call gone from the live list",
                 lambda: all(c["call_id"] != call_id for c in console.get("live")[1]["calls"]))
    status, body = console.request("POST", f"calls/{call_id}/hangup")
    assert status == 409

    def in_history():
        rows = console.get(f"history?dialed={quote(RECEPTION)}&limit=100")[1]["calls"]
        return next((r for r in rows if r["call_id"] == call_id), None)

    row = console.wait("the record in the history", in_history)
    assert row["ended_by"].startswith("operator") and row["caller"] == "+1425***0199"
    status, record = console.get(f"history/{row['day']}/{call_id}")
    assert status == 200 and record["ended_by"] == row["ended_by"] and record["transcript"]
    assert "4255550199" not in json.dumps(record)


def test_a_rejected_call_is_in_the_history_and_the_charts(console: Console) -> None:
    call_id = console.place(dialed=CLOSED, caller="+14255550142")
    console.wait("the call rejected", lambda: console.emulator(call_id)["state"] == "rejected")

    def rejected():
        rows = console.get("history?outcome=rejected&limit=100")[1]["calls"]
        return next((r for r in rows if r["call_id"] == call_id), None)

    row = console.wait("the rejected call in the history", rejected)
    assert row["ended_by"] == "routing" and row["sip_status"] == 480 and row["profile_name"] == "after_hours_demo"
    others = console.get("history?outcome=completed&limit=100")[1]["calls"]
    assert all(r["call_id"] != call_id for r in others)
    by_profile = console.get("history?profile=after_hours_demo")[1]["calls"]
    assert by_profile and all(r["profile_name"] == "after_hours_demo" for r in by_profile)

    status, stats = console.get("stats")
    assert status == 200 and stats["calls"] >= 1 and stats["outcomes"].get("rejected", 0) >= 1
    assert any(r["reason"].startswith("routing: ") for r in stats["end_reasons"])
    hours = [h["hour"] for h in stats["per_hour"]]
    assert hours == sorted(hours)


def test_paging_walks_every_call_once(console: Console) -> None:
    ids = [console.place(dialed=CLOSED, caller=f"+1425555{i:04d}") for i in range(3)]
    console.wait("three rejected calls stored", lambda: {r["call_id"] for r in console.get(
        "history?outcome=rejected&limit=100")[1]["calls"]} >= set(ids))
    seen, cursor = [], None
    for _ in range(50):
        status, body = console.get("history?outcome=rejected&limit=1" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200 and len(body["calls"]) <= 1
        seen += [r["call_id"] for r in body["calls"]]
        cursor = body["next"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) and set(ids) <= set(seen)


@pytest.mark.parametrize("query", [
    "from=2026-02-30", "from=yesterday", "to=2026-1-1", f"from={TODAY}&to={TODAY - timedelta(days=1)}",
    f"from={TODAY - timedelta(days=60)}&to={TODAY}", "limit=0", "limit=101", "limit=1000000", "limit=-1", "limit=ten",
    "cursor=garbage", "outcome=x%27%20or%20true", "dialed=" + "9" * 200,
])
def test_odd_input_is_400_and_shows_nothing(console: Console, query: str) -> None:
    status, body = console.get(f"history?{query}")
    assert status == 400, body
    assert set(body) == {"error"}


@pytest.mark.parametrize("path", ["history/2026-13-01/rtc_x", f"history/{TODAY}/bad%20id", "stats?from=nope"])
def test_bad_record_and_stats_requests_are_400(console: Console, path: str) -> None:
    status, body = console.get(path)
    assert status == 400 and set(body) == {"error"}


def test_an_unknown_record_is_404(console: Console) -> None:
    assert console.get(f"history/{TODAY}/rtc_never")[0] == 404


def test_make_up_prints_the_console_url_and_how_to_sign_in(console: Console) -> None:
    banner = console.stack.banner()
    line = next(line for line in banner.splitlines() if "Operator console:" in line)
    url = line.split()[-1]
    assert url == console.base
    assert "sign in with the function key" in banner
    status, page = console.get("", key=None)  # the printed URL serves the page
    assert status == 200 and "<title>Switchboard console</title>" in page


def test_a_transfer_from_the_console_refers_the_call_to_the_profiles_target(console: Console) -> None:
    call_id = console.place(caller="+14255550177")
    console.wait("the call live", lambda: any(c["call_id"] == call_id and c.get("last_turns")
                                             for c in console.get("live")[1]["calls"]))
    status, body = console.request("POST", f"calls/{call_id}/transfer", {"target": "sales"})
    assert status == 202 and body == {"call_id": call_id, "requested": "transfer", "target": "sales"}
    call = console.wait("the emulator saw the REFER", lambda: (c := console.emulator(call_id))["refer_target"] and c)
    assert call["refer_target"] == "tel:+14155550123"  # the profile's URI for "sales"; the console only shows names

    def in_history():
        rows = console.get("history?outcome=transferred&limit=100")[1]["calls"]
        return next((r for r in rows if r["call_id"] == call_id), None)

    row = console.wait("the transferred call in the history", in_history)
    assert row["transfer_target"] == "sales"
