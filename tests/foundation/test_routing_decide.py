"""Who gets through, to which profile, and when: caller lists, dialed numbers, opening hours, holidays, the
after-hours answer and capacity, as a caller (or the operator reading the declined-call records) would notice them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from shared.routing import Decision, RoutingRules, parse_rules

ALL_WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CALLER = "+14255551212"
DIALED = "+18005551212"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def profile(**extra: Any) -> dict[str, Any]:
    return {"instructions": "Help the caller.", "greeting": "Hello!", **extra}


def load(data: dict[str, Any]) -> RoutingRules:
    return parse_rules(data, tool_names=(), max_call_duration_seconds=900)


def with_hours(hours: dict[str, Any], **root: Any) -> RoutingRules:
    """One profile ("desk") answering every number, with these opening hours."""
    return load({"numbers": {"*": "desk"}, "profiles": {"desk": profile(hours=hours)}, **root})


def in_london(weekly: dict[str, list[str]], **hours: Any) -> RoutingRules:
    # Europe/London in winter is UTC: the UTC instants below read as local wall-clock times.
    return with_hours({"timezone": "Europe/London", "weekly": weekly, **hours})


def call(rules: RoutingRules, now: datetime, *, caller: str | None = CALLER, dialed: str | None = DIALED,
         live: int | None = 0) -> Decision:
    return rules.decide(caller, dialed, now, live)


def is_open(rules: RoutingRules, now: datetime) -> bool:
    return call(rules, now).action == "accept"


# A Monday to Sunday week of winter dates in London (UTC+0): 7 to 13 December 2026.
MON, TUE, SUN = utc(2026, 12, 7), utc(2026, 12, 8), utc(2026, 12, 13)


def at(day: datetime, hh: int, mm: int = 0) -> datetime:
    return day + timedelta(hours=hh, minutes=mm)


# ------------------------------------------------------------------------------------------------ hours


def test_half_hour_opening_times_open_and_close_on_the_half_hour():
    rules = in_london({"mon": ["09:30-17:30"]})
    assert not is_open(rules, at(MON, 8, 45))  # a misread "09:30" would open at 08:30
    assert not is_open(rules, at(MON, 9, 29))
    assert is_open(rules, at(MON, 9, 30))
    assert is_open(rules, at(MON, 17, 29))
    assert not is_open(rules, at(MON, 17, 30))


def test_quarter_hours_overnight_close_on_the_quarter_of_the_next_morning():
    rules = in_london({"mon": ["22:15-06:45"]})
    assert not is_open(rules, at(MON, 22, 14))
    assert is_open(rules, at(MON, 22, 15))
    assert is_open(rules, at(TUE, 6, 44))
    assert not is_open(rules, at(TUE, 6, 45))


def test_the_whole_day_and_a_range_to_midnight():
    rules = in_london({"mon": ["00:00-24:00"], "tue": ["20:00-24:00"]})
    assert is_open(rules, at(MON, 0, 0))
    assert is_open(rules, at(MON, 23, 59))
    assert not is_open(rules, at(TUE, 0, 0))  # Monday's day ends at midnight, it does not run on
    assert is_open(rules, at(TUE, 23, 59))
    assert not is_open(rules, at(TUE, 24, 0))  # Wednesday 00:00


def test_sunday_nights_range_runs_into_monday_morning():
    rules = in_london({"sun": ["22:00-02:00"]})
    assert is_open(rules, at(SUN, 23, 0))
    assert is_open(rules, at(SUN, 25, 59))  # Monday 14 December 01:59
    assert not is_open(rules, at(SUN, 26, 0))  # Monday 02:00
    assert not is_open(rules, at(TUE, 1, 0))  # Monday night has no range of its own


def test_each_weekday_opens_on_its_own_day():
    for i, day in enumerate(ALL_WEEK):
        rules = in_london({day: ["10:00-11:00"]})
        opened = [d for d in range(7) if is_open(rules, at(MON + timedelta(days=d), 10, 30))]
        assert opened == [i], day


def test_opening_hours_are_read_in_the_profiles_time_zone():
    # 09:00-17:00 in Tokyo (UTC+9, no DST) is 00:00-08:00 UTC.
    rules = with_hours({"timezone": "Asia/Tokyo", "weekly": {"mon": ["09:00-17:00"]}})
    assert not is_open(rules, utc(2026, 12, 6, 23, 59))  # Monday 08:59 in Tokyo
    assert is_open(rules, utc(2026, 12, 7, 0, 0))  # Monday 09:00 in Tokyo (still Sunday in UTC)
    assert not is_open(rules, utc(2026, 12, 7, 10, 0))  # Monday 10:00 UTC is 19:00 in Tokyo


def test_a_holiday_closes_the_day_with_its_own_reason_and_the_next_day_opens():
    rules = in_london({d: ["00:00-24:00"] for d in ALL_WEEK}, holidays=["2026-12-08"])
    assert call(rules, at(TUE, 12)).reason == "holiday"
    assert call(rules, at(TUE, 23, 59)).reason == "holiday"
    assert is_open(rules, at(MON, 23, 59))
    assert is_open(rules, at(TUE, 24, 0))


def test_a_holiday_on_a_closed_day_still_says_holiday():
    d = call(in_london({"mon": ["09:00-17:00"]}, holidays=["2026-12-13"]), at(SUN, 12))
    assert (d.action, d.reason) == ("reject", "holiday")


def test_a_holiday_calendar_covers_last_year_to_five_years_ahead():
    # "Expanded for the load year - 1 to + 5": Christmas is a US public holiday every year.
    rules = with_hours({"timezone": "America/New_York", "weekly": {d: ["00:00-24:00"] for d in ALL_WEEK},
                        "holiday_calendar": {"country": "US"}})
    this_year = date.today().year

    def christmas(year: int) -> Decision:
        return call(rules, utc(year, 12, 25, 17))  # noon in New York

    assert christmas(this_year - 1).reason == "holiday"
    assert christmas(this_year).reason == "holiday"
    assert christmas(this_year + 5).reason == "holiday"
    assert christmas(this_year - 2).action == "accept"  # outside the expanded years
    assert christmas(this_year + 6).action == "accept"


# ------------------------------------------------------------------------------------- after-hours answer


def test_a_configured_after_hours_status_is_sent_after_hours_and_on_holidays():
    rules = in_london({"mon": ["09:00-17:00"]}, holidays=["2026-12-14"],
                      after_hours={"action": "reject", "status_code": 503})
    after_hours = call(rules, at(MON, 18))
    assert (after_hours.action, after_hours.reason, after_hours.status_code) == ("reject", "after_hours", 503)
    holiday = call(rules, at(MON + timedelta(days=7), 10))
    assert (holiday.action, holiday.reason, holiday.status_code) == ("reject", "holiday", 503)


def test_without_a_status_the_after_hours_answer_is_480():
    for hours in ({}, {"after_hours": {"action": "reject"}}):
        d = call(in_london({"mon": ["09:00-17:00"]}, **hours), at(TUE, 10))
        assert (d.action, d.reason, d.status_code) == ("reject", "after_hours", 480)
        assert d.profile_name == "desk"  # the declined-call record names the profile that was closed


@pytest.mark.parametrize("status", [300, 404, 486, 603, 699])
def test_any_sip_status_from_300_to_699_may_be_the_after_hours_answer(status):
    d = call(in_london({"mon": ["09:00-17:00"]}, after_hours={"action": "reject", "status_code": status}),
             at(TUE, 10))
    assert d.status_code == status


def test_after_hours_calls_can_be_referred_to_a_voicemail_target():
    rules = in_london({"mon": ["09:00-17:00"]}, after_hours={"action": "refer", "target_uri": "tel:+442071234567"})
    d = call(rules, at(MON, 20))
    assert (d.action, d.reason, d.target_uri, d.profile_name) == ("refer", "after_hours", "tel:+442071234567", "desk")
    assert d.status_code is None
    assert is_open(rules, at(MON, 10))


# ---------------------------------------------------------------------------------------- caller lists


def callers(**lists: Any) -> RoutingRules:
    return load({"callers": lists, "numbers": {"*": "desk"}, "profiles": {"desk": profile()}})


@pytest.mark.parametrize(("caller", "denied"), [
    ("+19005551212", True),
    ("+1900", True),  # the whole prefix is a (short) number too
    ("+19015551212", False),
    ("+11900555121", False),  # "+1900" further in is not a prefix
    ("+44900555121", False),
])
def test_a_deny_prefix_refuses_numbers_that_start_with_it(caller, denied):
    d = call(callers(deny=["+1900"]), MON, caller=caller)
    assert (d.action, d.reason) == (("reject", "caller_denied") if denied else ("accept", "accepted"))


def test_a_caller_id_that_is_not_e164_matches_no_deny_prefix():
    # The lists are a courtesy filter: a caller id that is not a number passes a deny list (and fails an allow list).
    for caller in ("+1900555121212345678", "+1900\u0665\u0665\u0665\u0661\u0662\u0661\u0662", "1900555", None):
        assert call(callers(deny=["+1900"]), MON, caller=caller).action == "accept", caller
        d = call(callers(allow=["+1900"]), MON, caller=caller)
        assert (d.action, d.reason) == ("reject", "caller_not_allowed"), caller


def test_an_allow_list_admits_only_its_prefixes_and_deny_wins():
    rules = callers(allow=["+44", "+1425"], deny=["+44900"])
    assert call(rules, MON, caller="+442071234567").action == "accept"
    assert call(rules, MON, caller="+14255550000").action == "accept"
    assert call(rules, MON, caller="+14155550000").reason == "caller_not_allowed"
    assert call(rules, MON, caller="+449001234567").reason == "caller_denied"


def test_callers_may_have_only_an_allow_list_or_only_a_deny_list():
    only_allow = callers(allow=["+44"])
    assert call(only_allow, MON, caller="+442071234567").action == "accept"
    assert call(only_allow, MON, caller="+14255550000").reason == "caller_not_allowed"
    only_deny = callers(deny=["+44"])
    assert call(only_deny, MON, caller="+14255550000").action == "accept"
    assert call(only_deny, MON, caller="+442071234567").reason == "caller_denied"
    no_lists = callers(reject_status_code=603)
    assert call(no_lists, MON, caller=None).action == "accept"


def test_refused_callers_get_403_or_the_configured_status_and_no_profile():
    for lists, status in (({"deny": ["+1"]}, 403), ({"deny": ["+1"], "reject_status_code": 603}, 603),
                          ({"allow": ["+44"], "reject_status_code": 404}, 404)):
        d = call(callers(**lists), MON)
        assert (d.action, d.status_code, d.profile_name, d.profile) == ("reject", status, None, None)


# ------------------------------------------------------------------------------ dialed number and profile


def two_desks(numbers: dict[str, str]) -> RoutingRules:
    return load({"numbers": numbers, "profiles": {"sales": profile(greeting="Sales!"),
                                                  "support": profile(greeting="Support!")}})


def test_the_dialed_number_picks_the_profile_and_star_is_the_default():
    rules = two_desks({"+18005550001": "sales", "*": "support"})
    for dialed, name in (("+18005550001", "sales"), ("+18005550002", "support"), (None, "support")):
        d = call(rules, MON, dialed=dialed)
        assert (d.action, d.reason, d.profile_name) == ("accept", "accepted", name)
        assert d.profile is rules.profiles[name]  # the accept body is built from this profile


def test_without_a_default_an_unknown_number_is_not_found():
    rules = two_desks({"+18005550001": "sales", "+18005550002": "support"})
    assert call(rules, MON, dialed="+18005550002").profile_name == "support"
    for dialed in ("+18005550003", None):
        d = call(rules, MON, dialed=dialed)
        assert (d.action, d.reason, d.status_code, d.profile_name) == ("reject", "no_route", 404, None)


def test_a_refused_caller_is_refused_before_the_number_is_looked_up():
    rules = load({"callers": {"deny": ["+1"]}, "numbers": {"+18005550001": "desk"}, "profiles": {"desk": profile()}})
    assert call(rules, MON, dialed="+18005550009").reason == "caller_denied"


# ---------------------------------------------------------------------------------------------- capacity


def test_capacity_turns_callers_away_busy_at_the_limit_naming_the_profile():
    rules = load({"capacity": {"max_concurrent_calls": 1}, "numbers": {"*": "desk"}, "profiles": {"desk": profile()}})
    assert rules.needs_live_calls
    assert call(rules, MON, live=0).action == "accept"
    for live in (1, 2):
        d = call(rules, MON, live=live)
        assert (d.action, d.reason, d.status_code, d.profile_name) == ("reject", "at_capacity", 486, "desk")
    assert call(rules, MON, live=None).action == "accept"  # the count is unknown: no limit is applied


def test_without_capacity_no_live_count_is_needed():
    rules = load({"numbers": {"*": "desk"}, "profiles": {"desk": profile()}})
    assert not rules.needs_live_calls
    assert call(rules, MON, live=1_000_000).action == "accept"


def test_a_closed_desk_answers_after_hours_before_capacity_is_counted():
    rules = with_hours({"timezone": "Europe/London", "weekly": {"mon": ["09:00-17:00"]}},
                       capacity={"max_concurrent_calls": 1})
    assert call(rules, at(MON, 20), live=5).reason == "after_hours"
    assert call(rules, at(MON, 10), live=5).reason == "at_capacity"
