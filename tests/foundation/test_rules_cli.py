"""`python -m shared.routing validate FILE` prints the error the app would give at start-up, with exit codes 0/1/2."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shared import rules_cli
from shared.routing import RoutingRulesError, load_rules
from shared.rules_cli import main, validate_bytes
from shared.tools import registry

ROOT = Path(__file__).resolve().parents[2]


def validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shared.routing", "validate", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_the_shipped_rules_are_valid():
    result = validate("routing.json")
    assert result.returncode == 0, result.stderr
    assert "routing.json: valid (2 profiles" in result.stdout


@pytest.mark.parametrize("rules", [
    {"numbers": {"*": "p"}, "profiles": {"p": {"instructions": "x", "greeting": "y", "tools": ["nope"]}}},
    {"numbers": {"*": "p"}, "profiles": {"p": {"instructions": "x", "greeting": "y", "max_duration_seconds": 99999}}},
    {"numbers": {"+1": "p"}, "profiles": {"p": {"instructions": "x", "greeting": "y"}}},
    {"numbers": {"*": "p"}, "profiles": {"p": {"instructions": "x", "greeting": "y", "hours": {
        "timezone": "America/New_York", "weekly": {"mon": ["09:00-17:00"]}, "holiday_calendar": {"country": "XX"}}}}},
])
def test_an_invalid_file_prints_the_apps_own_error(tmp_path, rules):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules))
    # What the app says at start-up: the same loader, the app's registered tools, the default call cap.
    import call_workflow.agent_tools  # noqa: F401

    with pytest.raises(RoutingRulesError) as app:
        load_rules(path, tool_names=registry.names(), max_call_duration_seconds=900)
    result = validate(str(path))
    assert result.returncode == 1
    assert result.stderr.strip() == f"invalid: {app.value}"


def test_the_call_cap_setting_applies(tmp_path, monkeypatch):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"numbers": {"*": "p"}, "profiles": {"p": {
        "instructions": "x", "greeting": "y", "max_duration_seconds": 600}}}))
    assert validate(str(path)).returncode == 0
    monkeypatch.setenv("MAX_CALL_DURATION_SECONDS", "300")
    result = validate(str(path))
    assert result.returncode == 1 and "600 is outside 10..300" in result.stderr


def test_usage_errors_exit_2(tmp_path):
    assert validate(str(tmp_path / "missing.json")).returncode == 2
    assert subprocess.run([sys.executable, "-m", "shared.routing"], cwd=ROOT, capture_output=True,
                          timeout=60).returncode == 2


def test_a_past_holiday_list_warns(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"numbers": {"*": "p"}, "profiles": {"p": {
        "instructions": "x", "greeting": "y", "hours": {
        "timezone": "America/New_York", "weekly": {"mon": ["09:00-17:00"]}, "holidays": ["2020-12-25"]}}}}))
    result = validate(str(path))
    assert result.returncode == 0
    assert "WARNING: routing rules: every holiday of profiles.p.hours.holidays is past" in result.stderr


# The same command in-process (shared.rules_cli.main), for what the exit code alone does not show.

def rules_file(tmp_path: Path, profile: dict, name: str = "rules.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"numbers": {"*": "p", "+18005551212": "p"},
                                "profiles": {"p": {"instructions": "x", "greeting": "y", **profile}}}))
    return path


@pytest.fixture
def plain_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAX_CALL_DURATION_SECONDS", raising=False)


def test_a_valid_file_is_summed_up_on_stdout(tmp_path: Path, plain_env: None, capsys: pytest.CaptureFixture) -> None:
    path = rules_file(tmp_path, {"tools": ["lookup_order"]})
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: valid (1 profiles, 2 numbers)\n" and err == ""


def test_an_invalid_file_is_exit_1_with_the_error_on_stderr(tmp_path: Path, plain_env: None,
                                                           capsys: pytest.CaptureFixture) -> None:
    path = rules_file(tmp_path, {"tools": ["nope"]})
    assert main(["validate", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("invalid: profiles.p.tools") and "nope" in err
    path.write_text('{"numbers": ')
    assert main(["validate", str(path)]) == 1
    assert capsys.readouterr().err.startswith(f"invalid: {path}: not JSON (line 1")  # the file is named


@pytest.mark.parametrize(("value", "code"), [("", 0), ("  ", 0), ("600", 0), (" 600 ", 0), ("599", 1), ("300", 1)])
def test_the_call_cap_setting_is_read_as_the_app_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture, value: str,
                                                          code: int) -> None:
    monkeypatch.setenv("MAX_CALL_DURATION_SECONDS", value)
    path = rules_file(tmp_path, {"max_duration_seconds": 600})
    assert main(["validate", str(path)]) == code
    if code:
        assert f"600 is outside 10..{value.strip()}" in capsys.readouterr().err


def test_without_the_setting_the_call_cap_is_the_apps_default(tmp_path: Path, plain_env: None) -> None:
    assert main(["validate", str(rules_file(tmp_path, {"max_duration_seconds": 900}))]) == 0
    assert main(["validate", str(rules_file(tmp_path, {"max_duration_seconds": 901}))]) == 1


@pytest.mark.parametrize("value", ["fifteen minutes", "5", "99999"])
def test_a_bad_call_cap_setting_is_a_usage_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture, value: str) -> None:
    monkeypatch.setenv("MAX_CALL_DURATION_SECONDS", value)
    assert main(["validate", str(rules_file(tmp_path, {}))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "MAX_CALL_DURATION_SECONDS" in err


def test_an_unreadable_file_is_a_usage_error(tmp_path: Path, plain_env: None, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "missing.json"
    assert main(["validate", str(missing)]) == 2
    assert capsys.readouterr().err == f"error: {missing}: cannot read (No such file or directory)\n"
    assert main(["validate", str(tmp_path)]) == 2  # a directory
    assert capsys.readouterr().err == f"error: {tmp_path}: cannot read (Is a directory)\n"


def test_the_tools_module_decides_which_tool_names_exist(tmp_path: Path, plain_env: None,
                                                         capsys: pytest.CaptureFixture) -> None:
    path = rules_file(tmp_path, {"tools": ["lookup_order"]})
    assert main(["validate", str(path), "--tools-module", "call_workflow.agent_tools"]) == 0
    assert main(["validate", str(path), "--tools-module", "no_such_tools_module"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot import the tools module 'no_such_tools_module' (")


def test_validate_bytes_is_the_apps_parser(plain_env: None) -> None:
    good = json.dumps({"numbers": {"*": "p"}, "profiles": {"p": {"instructions": "x", "greeting": "y",
                                                                  "max_duration_seconds": 60}}}).encode()
    assert validate_bytes(good, "blob").profiles["p"].max_duration_seconds == 60
    with pytest.raises(RoutingRulesError, match="outside 10..50"):
        validate_bytes(good, "blob", max_call_duration_seconds=50)
    with pytest.raises(RoutingRulesError, match="^blob: not JSON"):
        validate_bytes(b"{", "blob")


def test_usage_is_python_dash_m_shared_routing(capsys: pytest.CaptureFixture) -> None:
    for argv in ([], ["check", "routing.json"], ["validate"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert "usage: python -m shared.routing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["validate", "--help"])
    help_ = " ".join(capsys.readouterr().out.split())
    assert "module that registers the tools (default call_workflow.agent_tools)" in help_


def test_a_past_holiday_list_is_a_warning_line_on_stderr(tmp_path: Path, plain_env: None,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    # As on the command line: no logging configured yet (pytest's own handlers set aside), INFO left out.
    monkeypatch.setattr(logging.root, "handlers", [])
    level = logging.root.level
    logging.root.setLevel(logging.NOTSET)
    path = rules_file(tmp_path, {"hours": {"timezone": "America/New_York", "weekly": {"mon": ["09:00-17:00"]},
                                           "holidays": ["2020-12-25"]}})
    try:
        assert main(["validate", str(path)]) == 0
        logging.getLogger("switchboard.routing").info("not shown")
    finally:
        for handler in logging.root.handlers:
            handler.close()
        logging.root.setLevel(level)  # setLevel, not an assignment: it also resets the loggers' level caches
    err = capsys.readouterr().err
    assert err == ("WARNING: routing rules: every holiday of profiles.p.hours.holidays is past (the last is "
                   "2020-12-25); add this year's dates, or use a holiday_calendar\n")


class LateOnTheUtcDay(datetime):
    """23:00 UTC on 2026-11-29, read on a host whose local clock is 14 hours ahead (already 2026-11-30)."""

    @classmethod
    def now(cls, tz: Any = None) -> Any:
        instant = datetime(2026, 11, 29, 23, 0, tzinfo=UTC)
        return instant.astimezone(tz) if tz else instant.astimezone(ZoneInfo("Pacific/Kiritimati")).replace(tzinfo=None)


def test_a_holiday_is_past_by_the_utc_date_as_at_app_start_up(tmp_path: Path, plain_env: None,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(rules_cli, "datetime", LateOnTheUtcDay)
    path = rules_file(tmp_path, {"hours": {"timezone": "America/New_York", "weekly": {"mon": ["09:00-17:00"]},
                                           "holidays": ["2026-11-29"]}})
    caplog.set_level(logging.WARNING)
    assert main(["validate", str(path)]) == 0
    assert "is past" not in caplog.text  # still 2026-11-29 in UTC, as call_workflow/runtime.py reckons
