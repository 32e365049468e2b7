"""Holiday calendars in opening hours (the holidays package), and the warning when the explicit dates run out."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from shared import routing
from shared.routing import AgentProfile, RoutingRulesError, parse_rules, warn_about_past_holidays

ROOT = Path(__file__).resolve().parents[2]


class _Loaded30November2026(date):
    @classmethod
    def today(cls) -> _Loaded30November2026:
        return cls(2026, 11, 30)


@pytest.fixture(autouse=True)
def rules_loaded_on_30_november_2026(monkeypatch):
    # A calendar is expanded for the load year - 1 to + 5, and the dates below are fixed: so is the load date
    # (otherwise these tests would start failing in 2028, when 2026 drops out of the expanded years).
    monkeypatch.setattr(routing, "date", _Loaded30November2026)


def rules_with(hours: dict):
    return parse_rules({"numbers": {"*": "p"}, "profiles": {"p": {
        "instructions": "x", "greeting": "y", "hours": {
            "timezone": "America/New_York", "weekly": {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
            **hours}}}}, tool_names=(), max_call_duration_seconds=900)


def at_ny_10am(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 15, tzinfo=UTC)  # 10:00 EST (winter dates below)


def test_a_calendar_closes_on_its_public_holidays():
    rules = rules_with({"holiday_calendar": {"country": "US", "subdiv": "NY"}})
    # Thanksgiving is Thursday 26 November 2026; New Year's Day 2027 is a Friday; Christmas 2026 is a Friday.
    for day in (date(2026, 11, 26), date(2026, 12, 25), date(2027, 1, 1)):
        d = rules.decide(None, "+18005551212", at_ny_10am(day), None)
        assert (d.action, d.reason) == ("reject", "holiday"), day
    # An ordinary Monday is open.
    assert rules.decide(None, "+18005551212", at_ny_10am(date(2026, 11, 30)), None).action == "accept"


def test_a_subdivision_adds_its_own_holidays():
    # Lincoln's Birthday (12 February) is a New York state holiday, not a federal one.
    lincoln = at_ny_10am(date(2026, 2, 12))
    assert rules_with({"holiday_calendar": {"country": "US"}}).decide(None, "+1", lincoln, None).action == "accept"
    ny = rules_with({"holiday_calendar": {"country": "US", "subdiv": "NY"}})
    assert ny.decide(None, "+1", lincoln, None).reason == "holiday"


def test_explicit_dates_and_a_calendar_combine():
    rules = rules_with({"holidays": ["2026-12-24"], "holiday_calendar": {"country": "US"}})
    assert rules.decide(None, "+1", at_ny_10am(date(2026, 12, 24)), None).reason == "holiday"
    assert rules.decide(None, "+1", at_ny_10am(date(2026, 12, 25)), None).reason == "holiday"


@pytest.mark.parametrize(("calendar", "message"), [
    ({"country": "XX"}, "profiles.p.hours.holiday_calendar.country: 'XX' has no holiday calendar"),
    ({"country": "us"}, "profiles.p.hours.holiday_calendar.country: expected an ISO 3166-1 country code"),
    ({"country": "US", "subdiv": "ZZ"}, "profiles.p.hours.holiday_calendar.subdiv: US has no subdivision 'ZZ'"),
    ({"subdiv": "NY"}, "profiles.p.hours.holiday_calendar.country: is required"),
    ({"country": "US", "region": "NY"}, "profiles.p.hours.holiday_calendar.region: unknown key"),
    ("US", "profiles.p.hours.holiday_calendar: expected an object"),
])
def test_bad_calendars_fail_naming_the_field(calendar, message):
    with pytest.raises(RoutingRulesError) as info:
        rules_with({"holiday_calendar": calendar})
    assert str(info.value).startswith(message)


def test_the_calendar_travels_in_the_orchestration_input():
    profile = rules_with({"holiday_calendar": {"country": "US", "subdiv": "NY"}}).profiles["p"]
    data = json.loads(json.dumps(profile.to_json()))
    assert data["hours"]["holiday_calendar"] == {"country": "US", "subdiv": "NY"}
    assert AgentProfile.from_json(data) == profile


def test_a_warning_when_every_explicit_holiday_is_past(caplog):
    caplog.set_level(logging.WARNING, logger="switchboard.routing")
    old = rules_with({"holidays": ["2025-12-25", "2026-01-01"]})
    assert warn_about_past_holidays(old, date(2026, 11, 30)) == ["p"]
    [record] = caplog.records
    assert "profiles.p.hours.holidays is past (the last is 2026-01-01)" in record.getMessage()
    caplog.clear()
    # One date still ahead: no warning; no explicit dates (a calendar only): nothing to run out.
    assert warn_about_past_holidays(rules_with({"holidays": ["2025-12-25", "2026-12-25"]}), date(2026, 11, 30)) == []
    assert warn_about_past_holidays(rules_with({"holiday_calendar": {"country": "US"}}), date(2030, 1, 1)) == []
    assert caplog.records == []


def test_the_shipped_rules_close_on_holidays_after_2027():
    # The old explicit list ended on 2027-01-01; the shipped rules now use a calendar.
    from shared.routing import load_rules

    rules = load_rules(ROOT / "routing.json", tool_names={"lookup_order"}, max_call_duration_seconds=900)
    assert warn_about_past_holidays(rules, date(2027, 6, 1)) == []
    july_4th_2027_observed = at_ny_10am(date(2027, 7, 5))  # 4 July 2027 is a Sunday: observed Monday 5 July
    d = rules.decide(None, "+18005550100", july_4th_2027_observed, None)
    assert (d.action, d.reason) == ("reject", "holiday")
