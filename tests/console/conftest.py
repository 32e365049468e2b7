"""One local stack (Azurite, emulator, app under the local runner) for the console's API and browser tests.

Calls are placed through the emulator's control API (no sipp needed); each test finds its calls by the call id
the emulator gives back, so tests never depend on each other's calls.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from localrun.demo import emulator_call
from localrun.stack import ROOT, Stack, StackConfig, http_json
from tests.console.entra_keys import authority  # noqa: F401 (a fixture: the stand-in tenant's keys)

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
RECEPTION = "+18005551212"
CLOSED = "+18005550100"  # routing.json's after-hours demo profile


def routing_rules() -> dict:
    rules = json.loads((ROOT / "routing.json").read_text())
    today = datetime.now(UTC).date()
    rules["profiles"]["after_hours_demo"]["hours"] = {  # always closed: every call to it is rejected with 480
        "timezone": "UTC", "weekly": {"mon": ["09:00-17:00"]},
        "holidays": [(today + timedelta(days=d)).isoformat() for d in (-1, 0, 1)],
        "after_hours": {"action": "reject", "status_code": 480},
    }
    return rules


@pytest.fixture(scope="session")
def console_stack(tmp_path_factory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("console-stack")
    rules = tmp / "routing.json"
    rules.write_text(json.dumps(routing_rules(), indent=2))
    config = StackConfig(
        app_port=0, emulator_http_port=0, sip_port=0, azurite_ports=(0, 0, 0), azurite_location=tmp / "azurite",
        scenario_dir=SCENARIOS, use_func=False, echo=False, log_dir=tmp / "logs", task_hub_dir=tmp / "taskhub",
        emulator_options={"speech_seconds_per_char": 0.01},
        app_env={"ROUTING_RULES_PATH": str(rules), "CALL_RECORDS_QUEUE": "c" + secrets.token_hex(5),
                 "CALL_TURNS_TABLE": "c" + secrets.token_hex(5), "CALL_HISTORY_TABLE": "h" + secrets.token_hex(5)},
    )
    stack = Stack(config)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


class Console:
    """The console's JSON endpoints and the emulator's control API, over real sockets."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.base = f"{stack.app_url}/console"

    def get(self, path: str, key: str | None = "default", headers: dict | None = None) -> tuple[int, Any]:
        return self.request("GET", path, key=key, headers=headers)

    def request(self, method: str, path: str, body: Any = None, key: str | None = "default",
                headers: dict | None = None) -> tuple[int, Any]:
        h = dict(headers or {})
        if key == "default":
            key = self.stack.function_key
        if key is not None:
            h["x-functions-key"] = key
        return http_json(method, f"{self.base}/{path}" if path else self.base, body, headers=h)

    def place(self, scenario: str = "console_long", dialed: str = RECEPTION, caller: str = "+14255551212") -> str:
        status, body = http_json("POST", f"{self.stack.emulator_url}/_emulator/calls",
                                 {"scenario": scenario, "caller": caller, "dialed": dialed})
        assert status == 201, body
        return body["call_id"]

    def emulator(self, call_id: str) -> dict:
        return emulator_call(self.stack.emulator_url, call_id)

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 30.0, every: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout:.0f} s")
            time.sleep(every)

    def hang_up_at_emulator(self, call_id: str) -> None:
        http_json("POST", f"{self.stack.emulator_url}/_emulator/calls/{call_id}/hangup")


@pytest.fixture(scope="session")
def console(console_stack: Stack) -> Console:
    return Console(console_stack)
