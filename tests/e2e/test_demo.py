"""`make demo`, the main job, run as a user runs it: a fresh stack, a scripted call, the record, exit 0."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "localrun.demo", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def the_record(output: str) -> dict:
    start = output.index("Call record from the Azurite queue")
    body = output[output.index("{", start):]
    return json.JSONDecoder().raw_decode(body)[0]


def assert_the_demo_conversation(output: str) -> None:
    lines = [re.sub(r"^\[\s*[\d.]+s\]\s*", "", line).strip() for line in output.splitlines()]
    expected = [
        "agent:  Thank you for calling Example Corp. How can I help?",
        "caller: Hi, where is my order 1234?",
        'tool:   lookup_order({"order_id":"1234"})',
        "keypad: 3",
        "agent:  Our office hours are nine to five, Monday to Friday, Eastern time.",
        "caller: Thanks, that's all. Goodbye!",
        'tool:   end_call({"reason":"caller said goodbye"})',
    ]
    positions = [lines.index(line) for line in expected]  # each line is there ...
    assert positions == sorted(positions)                  # ... in the order the call happened
    record = the_record(output)
    assert record["outcome"] == "agent_ended" and record["caller"] == "+1425***1212"
    assert [t["name"] for t in record["tools"]] == ["lookup_order", "end_call"] and record["digits"] == "3"
    assert "+14255551212" not in output  # the full caller number is never printed


@pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) is not installed")
def test_make_demo_places_a_sip_call_and_prints_its_record() -> None:
    result = run_demo()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "with sipp through the SIP front door" in result.stdout
    assert "sipp: 200 OK received" in result.stdout
    assert_the_demo_conversation(result.stdout)


def test_make_demo_without_sipp_uses_the_control_api_and_says_so() -> None:
    result = run_demo("--control-api")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "--control-api given" in result.stdout
    assert_the_demo_conversation(result.stdout)
