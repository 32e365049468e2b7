"""The console's request handling in-process, without a stack: the auth guard in both modes, the route ids, the
history and chart parameters, the transfer body, and what the live listing shows. The handlers run as the Functions
worker calls them; the Durable host is a stand-in, the history table a real one on Azurite."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import azure.functions as func
import jwt
import pytest
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus

from call_workflow import console, runtime
from shared.console_auth import EntraTokenValidator
from shared.history import HistoryTable
from shared.records import build_record
from shared.routing import load_rules
from shared.settings import SettingsError
from tests.console.conftest import ROOT
from tests.console.entra_keys import CLIENT, ROLE, SIGNING, TENANT

JSON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
LIVE = "rtc_live_1"
ENDED = "rtc_ended_1"


class Answer:
    def __init__(self, response: func.HttpResponse) -> None:
        self.status = response.status_code
        self.headers = dict(response.headers)
        self.mimetype = response.mimetype
        raw = response.get_body()
        self.body = json.loads(raw or b"null") if self.mimetype == "application/json" else raw


async def call(name: str, *, method: str = "GET", params: dict | None = None, route: dict | None = None,
               headers: dict | None = None, body: bytes = b"", client: Any = None) -> Answer:
    """Invoke a console function as the worker does (the Durable binding's wrapper left out: the client is given)."""
    fn = getattr(console, name)._function.get_user_function()
    fn = getattr(fn, "__wrapped__", fn)
    req = func.HttpRequest(method, f"https://app.example.net/console/{name}", headers=headers or {},
                           params=params or {}, route_params=route or {}, body=body)
    kwargs: dict[str, Any] = {"req": req}
    if name in ("console_live", "console_hangup", "console_transfer"):
        kwargs["client"] = client if client is not None else DurableStandIn()
    result = fn(**kwargs)
    if hasattr(result, "__await__"):
        result = await result
    return Answer(result)


def status(call_id: str, runtime_status: str = "Running", state: str = "talking", started_at: str = "",
           profile: dict | None = None) -> DurableOrchestrationStatus:
    custom = {"state": state, "caller": "+1425***1212", "profile": "reception", "started_at": started_at,
              "last_turn": {"role": "assistant", "text": "stale", "at": started_at}}
    return DurableOrchestrationStatus.from_json({
        "name": "call", "instanceId": call_id, "runtimeStatus": runtime_status, "customStatus": custom,
        "createdTime": "2026-11-29T10:00:00Z", "input": json.dumps({"profile": profile or {}})})


class DurableStandIn:
    """The Durable client as the console uses it: statuses by id, the live ones (first page), raised events."""

    def __init__(self, *statuses: DurableOrchestrationStatus) -> None:
        self.statuses = {s.instance_id: s for s in statuses}
        self.events: list[tuple[str, str, dict]] = []

    async def get_status(self, instance_id: str, show_input: bool = False) -> Any:
        return self.statuses.get(instance_id) or DurableOrchestrationStatus.from_json({"instanceId": instance_id})

    async def get_status_by(self, runtime_status: Any = None) -> list[DurableOrchestrationStatus]:
        return list(self.statuses.values())

    async def raise_event(self, instance_id: str, event: str, data: dict) -> None:
        self.events.append((instance_id, event, data))


class TurnsStandIn:
    def __init__(self, turns: dict[str, list[dict]], broken: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.turns = turns
        self.broken = broken

    async def load(self, call_id: str) -> list[dict]:
        if call_id in self.broken:
            raise TimeoutError("storage is slow")
        return self.turns.get(call_id, [])


def record(call_id: str, at: str, *, outcome: str = "completed", profile: str = "reception",
           dialed: str = "+18005551212") -> dict:
    call_ = {"call_id": call_id, "accepted_at": at, "caller": "+14255551212", "dialed": dialed,
             "profile_name": profile, "profile": {"voice": "marin"}}
    summary = {"outcome": outcome, "reason": "bye", "ended_at": at.replace(":00Z", ":30Z"), "transcript": [],
               "tools": [], "greeting_ms": 420}
    return build_record(call_, summary, "caller", [])


@pytest.fixture
async def history(azurite_connection_string: str, unique_name: str) -> AsyncIterator[HistoryTable]:
    table = HistoryTable.from_connection_string(azurite_connection_string, unique_name)
    yield table
    await table._table.delete_table()
    await table.aclose()


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, history: HistoryTable) -> SimpleNamespace:
    """What the console reads from the app's runtime: the rules, the turns table and the history table."""
    rules = load_rules(ROOT / "routing.json", tool_names={"lookup_order", "end_call", "transfer_call"},
                       max_call_duration_seconds=900)
    rt = SimpleNamespace(rules=rules, history=history, turns=TurnsStandIn({}))

    async def get() -> SimpleNamespace:
        return rt

    monkeypatch.setattr(runtime, "get", get)
    return rt


def token(authority: str, **claims: Any) -> dict[str, str]:
    now = int(time.time())
    base = {"aud": CLIENT, "iss": f"{authority}/{TENANT}/v2.0", "tid": TENANT, "iat": now, "exp": now + 600,
            "name": "Ana"}
    signed = jwt.encode({**base, **claims}, SIGNING, algorithm="RS256", headers={"kid": "k1"})
    return {"authorization": f"Bearer {signed}"}


@pytest.fixture
def entra(monkeypatch: pytest.MonkeyPatch, authority: str) -> str:
    """CONSOLE_AUTH=entra, with the stand-in tenant's keys."""
    monkeypatch.setattr(console, "AUTH_MODE", "entra")
    monkeypatch.setattr(console, "_validator", EntraTokenValidator(TENANT, CLIENT, ROLE, authority=authority))
    return authority


# ------------------------------------------------------------------------------------------------ auth


async def test_with_the_function_key_the_holder_may_act() -> None:
    me = await call("console_me")
    assert (me.status, me.body) == (200, {"auth": "key", "user": "function key", "can_act": True,
                                          "operator_role": ROLE})
    assert me.mimetype == "application/json" and JSON_HEADERS.items() <= me.headers.items()
    config = await call("console_config")
    assert (config.status, config.body) == (200, {"auth": "key"})


ROUTES = [("console_me", "GET", {}), ("console_live", "GET", {}), ("console_transcript", "GET", {"call_id": LIVE}),
          ("console_hangup", "POST", {"call_id": LIVE}), ("console_transfer", "POST", {"call_id": LIVE}),
          ("console_history", "GET", {}), ("console_record", "GET", {"day": "2026-11-29", "call_id": LIVE}),
          ("console_stats", "GET", {})]


@pytest.mark.parametrize(("name", "method", "route"), ROUTES)
@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer not.a.token"}, {"authorization": "Basic YTpi"},
                                     {"x-ms-client-principal": "eyJhdXRoX3R5cCI6ImFhZCJ9"}],
                         ids=["none", "garbage", "basic", "easy-auth-header"])
async def test_in_entra_mode_no_valid_token_is_401_and_nothing_else(entra: str, app: SimpleNamespace, name: str,
                                                                   method: str, route: dict, headers: dict) -> None:
    client = DurableStandIn(status(LIVE))
    answer = await call(name, method=method, route=route, headers=headers, body=b'{"target": "sales"}',
                        client=client)
    assert answer.status == 401 and set(answer.body) == {"error"}, answer.body
    assert JSON_HEADERS.items() <= answer.headers.items()
    assert client.events == []


async def test_in_entra_mode_a_viewer_may_look_but_not_act(entra: str, app: SimpleNamespace) -> None:
    viewer = token(entra, name="Bo", roles=["Switchboard.Viewer"])
    me = await call("console_me", headers=viewer)
    assert (me.status, me.body) == (200, {"auth": "entra", "user": "Bo", "can_act": False, "operator_role": ROLE})
    assert (await call("console_history", headers=viewer)).status == 200
    client = DurableStandIn(status(LIVE, profile={"transfer_targets": {"sales": "tel:+14155550123"}}))
    for action in ("console_hangup", "console_transfer"):
        answer = await call(action, method="POST", route={"call_id": LIVE}, headers=viewer,
                            body=b'{"target": "sales"}', client=client)
        assert answer.status == 403
        assert answer.body == {"error": f"only members of the app role {ROLE!r} may hang up or transfer calls"}
    assert client.events == []


async def test_in_entra_mode_an_operator_may_hang_up_and_transfer(entra: str, app: SimpleNamespace) -> None:
    ana = token(entra, roles=[ROLE])
    me = await call("console_me", headers=ana)
    assert me.body == {"auth": "entra", "user": "Ana", "can_act": True, "operator_role": ROLE}
    client = DurableStandIn(status(LIVE, profile={"transfer_targets": {"sales": "tel:+14155550123"}}))
    hangup = await call("console_hangup", method="POST", route={"call_id": LIVE}, headers=ana, client=client)
    assert (hangup.status, hangup.body) == (202, {"call_id": LIVE, "requested": "hangup"})
    transfer = await call("console_transfer", method="POST", route={"call_id": LIVE}, headers=ana,
                          body=b'{"target": "sales"}', client=client)
    assert (transfer.status, transfer.body) == (202, {"call_id": LIVE, "requested": "transfer", "target": "sales"})
    assert client.events == [(LIVE, "hangup", {"by": "operator"}), (LIVE, "transfer", {"target": "sales"})]


async def test_in_entra_mode_the_page_learns_how_to_sign_in(entra: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONSOLE_ENTRA_SCOPE", raising=False)
    config = await call("console_config")
    assert config.body == {"auth": "entra", "tenant_id": TENANT, "client_id": CLIENT,
                           "authority": "https://login.microsoftonline.com", "scope": f"{CLIENT}/.default"}
    monkeypatch.setenv("CONSOLE_ENTRA_SCOPE", f"api://{CLIENT}/Console.Read")
    assert (await call("console_config")).body["scope"] == f"api://{CLIENT}/Console.Read"


@pytest.mark.parametrize(("value", "mode"), [(None, "key"), ("", "key"), ("key", "key"), (" Entra ", "entra"),
                                             ("KEY", "key")])
def test_the_console_auth_setting(monkeypatch: pytest.MonkeyPatch, value: str | None, mode: str) -> None:
    if value is None:
        monkeypatch.delenv("CONSOLE_AUTH", raising=False)
    else:
        monkeypatch.setenv("CONSOLE_AUTH", value)
    assert console._auth_mode() == mode


def test_an_unknown_console_auth_stops_the_app_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSOLE_AUTH", "easyauth")
    with pytest.raises(SettingsError, match="CONSOLE_AUTH is 'easyauth'; expected 'key' or 'entra'"):
        console._auth_mode()


def test_the_entra_ids_are_checked_once_and_named_when_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "_validator", None)
    monkeypatch.setenv("CONSOLE_ENTRA_TENANT_ID", TENANT)
    monkeypatch.setenv("CONSOLE_ENTRA_CLIENT_ID", "my-console")
    with pytest.raises(SettingsError, match="CONSOLE_ENTRA_TENANT_ID / CONSOLE_ENTRA_CLIENT_ID: .*must be GUIDs"):
        console.validator()
    monkeypatch.delenv("CONSOLE_ENTRA_TENANT_ID")
    monkeypatch.setenv("CONSOLE_ENTRA_CLIENT_ID", CLIENT)
    with pytest.raises(SettingsError, match="CONSOLE_ENTRA_TENANT_ID"):
        console.validator()
    monkeypatch.setenv("CONSOLE_ENTRA_TENANT_ID", TENANT)
    made = console.validator()
    assert (made.tenant_id, made.client_id, made.operator_role) == (TENANT, CLIENT, ROLE)
    assert console.validator() is made  # one validator: its cache of the tenant's keys lives on


# ------------------------------------------------------------------------------------------------ route ids


@pytest.mark.parametrize("call_id", ["", "bad id", "rtc_x?y", "rtc_x#y", "_rtc", "a" * 129, "rtc_é"])
@pytest.mark.parametrize(("name", "method"), [("console_transcript", "GET"), ("console_hangup", "POST"),
                                              ("console_transfer", "POST"), ("console_record", "GET")])
async def test_a_malformed_call_id_is_400_and_reaches_nothing(app: SimpleNamespace, name: str, method: str,
                                                             call_id: str) -> None:
    client = DurableStandIn(status(LIVE))
    answer = await call(name, method=method, route={"call_id": call_id, "day": "2026-11-29"},
                        body=b'{"target": "sales"}', client=client)
    assert (answer.status, answer.body) == (400, {"error": "not a call id"})
    assert client.events == []


async def test_the_transcript_of_a_call(app: SimpleNamespace) -> None:
    app.turns = TurnsStandIn({LIVE: [{"role": "assistant", "text": "Hello", "at": "t1", "extra": "x"},
                                     {"role": "user", "text": "Hi", "at": "t2"}]})
    answer = await call("console_transcript", route={"call_id": LIVE})
    assert (answer.status, answer.body) == (200, {"call_id": LIVE, "turns": [
        {"role": "assistant", "text": "Hello", "at": "t1"}, {"role": "user", "text": "Hi", "at": "t2"}]})


# ------------------------------------------------------------------------------------------------ actions


@pytest.mark.parametrize(("body", "code", "says"), [
    (b"", 400, "body must be JSON"), (b"[]", 400, "body must be a JSON object"),
    (b'{"target": ""}', 400, "'target' must be a non-empty string"),
    (b'{"target": "tel:+14155550123"}', 400, "unknown transfer target 'tel:+14155550123'"),
])
async def test_a_bad_transfer_body_is_400_and_transfers_nothing(app: SimpleNamespace, body: bytes, code: int,
                                                                says: str) -> None:
    client = DurableStandIn(status(LIVE, profile={"transfer_targets": {"sales": "tel:+14155550123"}}))
    answer = await call("console_transfer", method="POST", route={"call_id": LIVE}, body=body, client=client)
    assert answer.status == code and says in answer.body["error"], answer.body
    assert client.events == []


@pytest.mark.parametrize("action", ["console_hangup", "console_transfer"])
async def test_an_action_on_an_unknown_or_ended_call(app: SimpleNamespace, action: str) -> None:
    profile = {"transfer_targets": {"sales": "tel:+14155550123"}}
    client = DurableStandIn(status(ENDED, runtime_status="Completed", state="ended", profile=profile))
    body = b'{"target": "sales"}'
    unknown = await call(action, method="POST", route={"call_id": "rtc_nobody"}, body=body, client=client)
    assert (unknown.status, unknown.body) == (404, {"error": "no call 'rtc_nobody'"})
    over = await call(action, method="POST", route={"call_id": ENDED}, body=body, client=client)
    assert over.status == 409 and set(over.body) == {"error"}
    assert client.events == []


# ------------------------------------------------------------------------------------------------ live


async def test_the_live_listing_shows_the_last_turns_and_target_names_only(app: SimpleNamespace,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    turns = [{"role": "user" if i % 2 else "assistant", "text": f"turn {i} " + "x" * 300, "at": f"t{i}"}
             for i in range(5)]
    app.turns = TurnsStandIn({"rtc_a": turns, "rtc_b": turns[:1]}, broken={"rtc_c"})
    client = DurableStandIn(status("rtc_b", started_at="2026-11-29T10:02:00Z"),
                            status("rtc_a", started_at="2026-11-29T10:01:00Z"),
                            status("rtc_c", started_at="2026-11-29T10:03:00Z"),
                            status(ENDED, runtime_status="Completed", state="ended"))
    caplog.set_level(logging.WARNING, logger="switchboard.console")
    answer = await call("console_live", client=client)
    assert answer.status == 200
    calls = answer.body["calls"]
    assert [c["call_id"] for c in calls] == ["rtc_a", "rtc_b", "rtc_c"]  # oldest first, the ended call left out
    assert [t["at"] for t in calls[0]["last_turns"]] == ["t2", "t3", "t4"]
    assert calls[0]["last_turns"][0]["text"].startswith("turn 2 ") and len(calls[0]["last_turns"][0]["text"]) == 160
    assert [t["at"] for t in calls[1]["last_turns"]] == ["t0"]
    assert calls[2]["last_turns"] == []  # its turns could not be read: listed all the same
    assert all("last_turn" not in c for c in calls)
    assert "call rtc_c: cannot read its turns: TimeoutError" in caplog.text
    # Each profile's transfer target names, never the URIs (they may be phone numbers).
    assert answer.body["profiles"] == {"reception": ["sales", "support"], "after_hours_demo": ["support"]}
    assert "tel:" not in json.dumps(answer.body)
    assert datetime.fromisoformat(answer.body["now"]).tzinfo is not None


# ------------------------------------------------------------------------------------------------ history


TODAY = date(2026, 11, 29)


@pytest.mark.parametrize(("params", "start", "end"), [
    ({}, date(2026, 11, 23), TODAY),
    ({"from": "", "to": ""}, date(2026, 11, 23), TODAY),
    ({"to": "2026-11-10"}, date(2026, 11, 4), date(2026, 11, 10)),
    ({"from": "2026-11-28"}, date(2026, 11, 28), TODAY),
    ({"from": "2026-10-30", "to": "2026-11-29"}, date(2026, 10, 30), TODAY),
])
def test_the_history_range_defaults_to_the_last_seven_days(params: dict, start: date, end: date) -> None:
    query = console.history_query(params, today=TODAY)
    assert (query.start, query.end) == (start, end)
    assert (query.outcome, query.profile, query.dialed) == (None, None, None)


class LateOnTheUtcDay(datetime):
    """23:00 UTC on 2026-11-29, read on a host whose local clock is 14 hours ahead (already 2026-11-30)."""

    @classmethod
    def now(cls, tz: Any = None) -> Any:
        instant = datetime(2026, 11, 29, 23, 0, tzinfo=UTC)
        return instant.astimezone(tz) if tz else instant.astimezone(ZoneInfo("Pacific/Kiritimati")).replace(tzinfo=None)


def test_the_history_range_ends_today_in_utc_whatever_the_hosts_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "datetime", LateOnTheUtcDay)
    query = console.history_query({})
    assert (query.start, query.end) == (date(2026, 11, 23), date(2026, 11, 29))


def test_history_filters_are_passed_and_empty_ones_ignored() -> None:
    query = console.history_query({"outcome": "rejected", "profile": "sales", "dialed": "+1800***1212"}, today=TODAY)
    assert (query.outcome, query.profile, query.dialed) == ("rejected", "sales", "+1800***1212")
    query = console.history_query({"outcome": "", "profile": "", "dialed": ""}, today=TODAY)
    assert (query.outcome, query.profile, query.dialed) == (None, None, None)


@pytest.mark.parametrize(("params", "says"), [
    ({"from": "2026-1-29"}, "'from' must be a date YYYY-MM-DD"),
    ({"to": "20261129"}, "'to' must be a date YYYY-MM-DD"),
    ({"to": "2026-W48-1"}, "'to' must be a date YYYY-MM-DD"),
    ({"from": "2026-11-31"}, "'from' must be a date YYYY-MM-DD"),
    ({"from": "2026-11-29T00"}, "'from' must be a date YYYY-MM-DD"),
    ({"from": "2026-11-29", "to": "2026-11-28"}, "'to' is before 'from'"),
    ({"from": "2026-10-29", "to": "2026-11-29"}, "a date range covers at most 31 days"),
    ({"outcome": "x' or 1 eq 1"}, "'outcome' must be"),
    ({"profile": "a/b"}, "'profile' must be"),
])
def test_bad_history_parameters_are_400(params: dict, says: str) -> None:
    with pytest.raises(console.ConsoleError) as err:
        console.history_query(params, today=TODAY)
    assert err.value.status == 400 and says in err.value.reason


@pytest.mark.parametrize(("value", "limit"), [(None, 25), ("", 25), ("1", 1), ("100", 100), ("007", 7)])
def test_the_page_size(value: str | None, limit: int) -> None:
    assert console._limit(value) == limit


@pytest.mark.parametrize("value", ["0", "101", "-1", "1.5", "ten", " 5", "²", "٣"])
def test_a_page_size_outside_1_to_100_is_400(value: str) -> None:
    with pytest.raises(console.ConsoleError) as err:
        console._limit(value)
    assert (err.value.status, err.value.reason) == (400, "'limit' must be an integer from 1 to 100")


async def test_history_pages_filters_and_records_through_the_api(app: SimpleNamespace) -> None:
    for i, (day, profile) in enumerate([("2026-11-27", "reception"), ("2026-11-28", "sales"),
                                        ("2026-11-29", "reception"), ("2026-11-29", "sales")]):
        await app.history.upsert(record(f"rtc_h{i}", f"{day}T1{i}:00:00Z", profile=profile))
    await app.history.upsert(record("rtc_h9", "2026-11-20T09:00:00Z"))
    rng = {"from": "2026-11-27", "to": "2026-11-29"}
    first = await call("console_history", params={**rng, "limit": "3"})
    assert first.status == 200 and (first.body["from"], first.body["to"]) == ("2026-11-27", "2026-11-29")
    assert [c["call_id"] for c in first.body["calls"]] == ["rtc_h3", "rtc_h2", "rtc_h1"]
    second = await call("console_history", params={**rng, "limit": "3", "cursor": first.body["next"]})
    assert [c["call_id"] for c in second.body["calls"]] == ["rtc_h0"] and second.body["next"] is None
    sales = await call("console_history", params={**rng, "profile": "sales"})
    assert [c["call_id"] for c in sales.body["calls"]] == ["rtc_h3", "rtc_h1"]

    found = await call("console_record", route={"day": "2026-11-28", "call_id": "rtc_h1"})
    assert found.status == 200 and found.body["call_id"] == "rtc_h1" and found.body["profile_name"] == "sales"
    missing = await call("console_record", route={"day": "2026-11-27", "call_id": "rtc_h1"})
    assert (missing.status, missing.body) == (404, {"error": "no record of call 'rtc_h1' on 2026-11-27"})

    stats = await call("console_stats", params=rng)
    assert stats.status == 200 and stats.body["calls"] == 4
    assert (stats.body["from"], stats.body["to"]) == ("2026-11-27", "2026-11-29")


@pytest.mark.parametrize(("name", "params", "route", "says"), [
    ("console_history", {"limit": "0"}, {}, "'limit' must be an integer from 1 to 100"),
    ("console_history", {"limit": "²"}, {}, "'limit' must be an integer from 1 to 100"),
    ("console_history", {"cursor": "!!!"}, {}, "'cursor' is not a cursor this API gave out"),
    ("console_history", {"from": "yesterday"}, {}, "'from' must be a date YYYY-MM-DD"),
    ("console_stats", {"to": "2026-W48-1"}, {}, "'to' must be a date YYYY-MM-DD"),
    ("console_stats", {"from": "2026-01-01", "to": "2026-03-01"}, {}, "a date range covers at most 31 days"),
    ("console_record", {}, {"day": "2026-13-01", "call_id": LIVE}, "'day' must be a date YYYY-MM-DD"),
    ("console_record", {}, {"day": "2026-W48-1", "call_id": LIVE}, "'day' must be a date YYYY-MM-DD"),
    ("console_record", {}, {"call_id": LIVE}, "'day' must be a date YYYY-MM-DD"),
])
async def test_bad_history_requests_are_400_with_the_reason_only(app: SimpleNamespace, name: str, params: dict,
                                                                route: dict, says: str) -> None:
    answer = await call(name, params=params, route=route)
    assert (answer.status, answer.body) == (400, {"error": says})
    assert JSON_HEADERS.items() <= answer.headers.items()


# ------------------------------------------------------------------------------------------------ page


def auth_level(name: str) -> str:
    bindings = json.loads(getattr(console, name)._function.get_function_json())["bindings"]
    return next(b["authLevel"] for b in bindings if b["type"] == "httpTrigger")


def test_in_key_mode_the_host_asks_for_the_key_on_every_data_route() -> None:
    assert console.AUTH_MODE == "key"  # CONSOLE_AUTH is not set for the tests
    assert {name: auth_level(name) for name, _, _ in ROUTES} == {name: "FUNCTION" for name, _, _ in ROUTES}
    for anonymous in ("console_page", "console_asset", "console_config"):  # no data in them
        assert auth_level(anonymous) == "ANONYMOUS"


async def test_the_page_and_its_assets_run_only_their_own_code() -> None:
    page = await call("console_page")
    policy = dict(d.strip().split(" ", 1) for d in page.headers["Content-Security-Policy"].split(";"))
    assert policy == {"default-src": "'self'", "img-src": "'self' data:", "style-src": "'self'",
                      "script-src": "'self'", "connect-src": "'self' https://login.microsoftonline.com",
                      "frame-ancestors": "'none'", "base-uri": "'none'", "form-action": "'none'"}
    assert page.headers["X-Frame-Options"] == "DENY" and JSON_HEADERS.items() <= page.headers.items()
    assert page.mimetype == "text/html"
    for name, mimetype in (("console.js", "text/javascript"), ("console.css", "text/css")):
        asset = await call("console_asset", route={"name": name})
        assert (asset.status, asset.mimetype) == (200, mimetype)
        assert asset.headers["Content-Security-Policy"] == page.headers["Content-Security-Policy"]
    for name in ("index.html", "../console.py", "", "console.JS"):
        assert (await call("console_asset", route={"name": name})).status == 404
