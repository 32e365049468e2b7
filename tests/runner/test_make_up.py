"""`make up` (python -m localrun.stack) as a user runs it: banner, a call, Ctrl-C, and a second start that finishes
the call the first one left behind. Azurite is the session's (--no-azurite); every port is picked free."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localrun.demo import take_call_record
from localrun.stack import ROOT, http_json

pytestmark = pytest.mark.timeout(120)


class UpProcess:
    """One `python -m localrun.stack` run, its output collected on a thread."""

    def __init__(self, env: dict[str, str], task_hub: Path) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "localrun.stack", "--runner", "--no-azurite", "--app-port", "0",
             "--emulator-port", "0", "--sip-port", "0", "--task-hub-dir", str(task_hub)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines[-40:]))

    def urls(self) -> tuple[str, str, str]:
        self.wait_for(r"Switchboard local stack is up")
        app = self.wait_for(r"App \(local runner.*\): (http://\S+)/api").group(1)
        emulator = self.wait_for(r"Emulator \(.*\): (http://\S+)").group(1)
        key = self.wait_for(r"function key:\s+(\S+)").group(1)
        return app, emulator, key

    def ctrl_c(self) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)
        code = self.proc.wait(timeout=30)
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def env(azurite_connection_string: str) -> dict[str, str]:
    return {**os.environ, "CALL_STORAGE_CONNECTION_STRING": azurite_connection_string,
            "CALL_RECORDS_QUEUE": "up" + secrets.token_hex(5), "CALL_TURNS_TABLE": "up" + secrets.token_hex(5)}


@pytest.fixture
def runs() -> Iterator[list[UpProcess]]:
    started: list[UpProcess] = []
    yield started
    for run in started:
        run.kill()


def test_ctrl_c_mid_call_and_the_next_make_up_finishes_the_call_with_its_record(env, runs, tmp_path):
    hub = tmp_path / "taskhub"
    first = UpProcess(env, hub)
    runs.append(first)
    app, emulator, key = first.urls()
    assert first.wait_for(r"orchestration state:\s+(\S+)").group(1) == str(hub.resolve())
    assert first.wait_for(r"call records queue:\s+(\S+)").group(1) == env["CALL_RECORDS_QUEUE"]
    status, placed = http_json("POST", f"{emulator}/_emulator/calls", {"scenario": "default"})
    assert status in (200, 201), placed
    call_id = placed["call_id"]
    deadline = time.monotonic() + 20
    while True:  # accepted and greeted: the call's orchestration is live in the first process
        status, live = http_json("GET", f"{app}/api/calls", headers={"x-functions-key": key})
        if status == 200 and any(c["call_id"] == call_id and c.get("last_turn") for c in live["calls"]):
            break
        assert time.monotonic() < deadline, live
        time.sleep(0.1)

    assert first.ctrl_c() == 0
    assert first.lines[-1] == "Stopped."
    assert list(hub.rglob("*.json")), "the task hub kept nothing"

    # A new `make up`: a new emulator that has never heard of the call, the same task hub.
    second = UpProcess(env, hub)
    runs.append(second)
    app, emulator, key = second.urls()
    second.wait_for(rf"resumed instance {call_id}")
    record = take_call_record(env["CALL_STORAGE_CONNECTION_STRING"], env["CALL_RECORDS_QUEUE"], call_id, timeout=30)
    assert record["outcome"] == "caller_hung_up", record  # the re-run converse found the call gone (404)
    assert record["transcript"] and record["transcript"][0]["role"] == "agent"  # the greeting from the first run
    status, body = http_json("GET", f"{app}/api/calls/{call_id}", headers={"x-functions-key": key})
    assert status == 200 and body["runtime_status"] == "Completed", body
    assert second.ctrl_c() == 0


def test_orchestration_state_is_in_memory_unless_a_folder_is_given(monkeypatch, tmp_path):
    from localrun.host.cli import parse_args as runner_args
    from localrun.stack import Stack, StackConfig
    from localrun.stack import parse_args as stack_args

    monkeypatch.delenv("SWITCHBOARD_TASK_HUB_DIR", raising=False)
    assert runner_args([]).task_hub_dir is None and stack_args([]).task_hub_dir is None
    stack = Stack(StackConfig())
    stack.app_runtime = "local runner (python -m localrun)"
    assert "orchestration state:          in memory (a restart forgets live calls" in stack.banner()
    monkeypatch.setenv("SWITCHBOARD_TASK_HUB_DIR", str(tmp_path))
    assert stack_args([]).task_hub_dir == tmp_path
    assert Stack(StackConfig(task_hub_dir=tmp_path)).task_hub_dir == tmp_path.resolve()


def test_an_emulator_option_the_emulator_cannot_take_is_refused_before_anything_starts():
    from localrun.stack import Stack, StackConfig, StackError

    with pytest.raises(StackError, match="emulator_options: unknown caller_step_delay_s; known: ring_timeout_s"):
        Stack(StackConfig(emulator_options={"caller_step_delay_s": 0.01}))
    stack = Stack(StackConfig(emulator_options={"speech_seconds_per_char": 0.01, "ring_timeout_s": 5}))
    assert stack._emulator_cmd()[-4:] == ["--speech-seconds-per-char", "0.01", "--ring-timeout", "5"]
