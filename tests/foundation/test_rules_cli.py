"""`python -m shared.routing validate FILE` prints the error the app would give at start-up, with exit codes 0/1/2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.routing import RoutingRulesError, load_rules
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
