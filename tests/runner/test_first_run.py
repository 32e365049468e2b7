"""The first ten minutes as a new user has them: a taken Azurite port under `make up`, a bad setting or bad routing
rules, no local.settings.json, and Ctrl-C. Each runs the real commands as processes and reads what they print."""

from __future__ import annotations

import io
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from localrun.stack import ROOT, Stack, StackConfig, StackError, http_json, next_free_port

pytestmark = pytest.mark.timeout(120)

# Tracebacks and asyncio's complaints about clients left open: none of them belongs on a user's screen.
NOISE = ("Traceback (most recent call last)", "Unclosed client session", "Unclosed connector")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a new user's shell: none of the app's settings, nothing from this test session."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    return {**{k: os.environ[k] for k in keep if k in os.environ}, "PYTHONUNBUFFERED": "1", **extra}


def app_settings() -> dict[str, str]:
    return {k: str(v) for k, v in json.loads((ROOT / "local.settings.example.json").read_text())["Values"].items()}


class Run:
    """One command as a process group, its output (stdout and stderr together) collected on a thread."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; output:\n{self.text[-4000:]}")

    def finish(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def ctrl_c(self) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)  # what the terminal does: the foreground process group
        return self.finish(timeout=30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def runs():
    started: list[Run] = []
    yield started
    for run in started:
        run.kill()


def three_free_ports() -> tuple[int, int, int]:
    blob = next_free_port("127.0.0.1", random.randrange(20000, 40000), set())
    queue = next_free_port("127.0.0.1", blob + 1, {blob})
    table = next_free_port("127.0.0.1", queue + 1, {blob, queue})
    return blob, queue, table


# -- item 8: an Azurite port that is taken ---------------------------------------------------------------------

def test_a_taken_azurite_port_stops_make_up_with_a_command_that_starts_it_and_ctrl_c_is_quiet(runs):
    ports = three_free_ports()
    holder = socket.socket()
    holder.bind(("127.0.0.1", ports[0]))
    holder.listen()  # something else (another Azurite, say) holds the blob port
    moved: tuple[int, ...] = ports
    stack_cmd = [sys.executable, "-m", "localrun.stack", "--runner"]
    others = ["--app-port", "0", "--emulator-port", "0", "--sip-port", "0"]
    try:
        first = Run([*stack_cmd, "--azurite-ports", ",".join(map(str, ports)), *others], clean_env())
        runs.append(first)
        assert first.finish() == 1
        assert f"TCP port {ports[0]} on 127.0.0.1 (Azurite blob) is already in use" in first.text, first.text
        hint = re.search(r'^\s+make up ARGS="(.+)"$', first.text, re.M)
        assert hint, first.text
        args = shlex.split(hint.group(1))
        assert args[0] == "--azurite-ports" and len(args) == 2, args
        moved = tuple(int(p) for p in args[1].split(","))
        assert moved[0] != ports[0] and moved[1:] == ports[1:], (moved, ports)
        assert "make up ARGS=--free-ports" in first.text

        # The command it gave (`make up` passes ARGS to python -m localrun.stack), with the port still held.
        second = Run([*stack_cmd, *args, *others], clean_env())
        runs.append(second)
        second.wait_for(r"Switchboard local stack is up")
        azurite = second.wait_for(r"Azurite: blob 127.0.0.1:(\d+), queue 127.0.0.1:(\d+), table 127.0.0.1:(\d+)")
        assert tuple(int(p) for p in azurite.groups()) == moved
        emulator = second.wait_for(r"Emulator \(.*\): (http://\S+)").group(1)
        app = second.wait_for(r"App \(local runner.*\): (http://\S+)/api").group(1)
        key = second.wait_for(r"function key:\s+(\S+)").group(1)

        # A call in progress, so that the app has made its storage and call-control clients, then Ctrl-C.
        status, placed = http_json("POST", f"{emulator}/_emulator/calls", {"scenario": "default"})
        assert status in (200, 201), placed
        deadline = time.monotonic() + 30
        while True:
            status, live = http_json("GET", f"{app}/api/calls", headers={"x-functions-key": key})
            if status == 200 and any(c["call_id"] == placed["call_id"] and c.get("last_turn") for c in live["calls"]):
                break
            assert time.monotonic() < deadline, live
            time.sleep(0.1)
        assert second.ctrl_c() == 0
        assert second.lines[-1] == "Stopped.", second.text[-3000:]
        stopping = second.text.split("Stopping the local stack...", 1)[1]
        assert not [n for n in NOISE if n in stopping], stopping
        # The app stopped before Azurite: its last write (the call's lease, released) still landed.
        assert "could not mark the lease released" not in stopping, stopping
    finally:
        holder.close()
        for used in (ports, moved):  # the data folders of Azurite on other ports than the default
            shutil.rmtree(ROOT / ".azurite" / "-".join(map(str, used)), ignore_errors=True)


def test_free_ports_moves_only_what_is_taken_and_says_so():
    ports = three_free_ports()
    holder = socket.socket()
    holder.bind(("127.0.0.1", ports[1]))
    holder.listen()
    try:
        stack = Stack(StackConfig(azurite_ports=ports, free_ports=True, app_port=0, emulator_http_port=0, sip_port=0))
        stack._choose_ports()
        stack.check_ports()  # nothing taken any more
    finally:
        holder.close()
    assert stack.azurite_ports[0] == ports[0] and stack.azurite_ports[2] == ports[2]
    assert stack.azurite_ports[1] not in ports
    assert stack.moved_ports == [f"Azurite queue: {ports[1]} is taken, using {stack.azurite_ports[1]}"]
    # Its data is kept apart from the Azurite that holds the default ports.
    assert stack.azurite_location == ROOT / ".azurite" / "-".join(map(str, stack.azurite_ports))
    assert Stack(StackConfig()).azurite_location == ROOT / ".azurite"


# -- item 9: a bad setting, bad routing rules, no local.settings.json -----------------------------------------

def runner(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "localrun", "--port", "0", *args], cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90)


def test_a_bad_setting_is_one_message_without_a_traceback_unless_debug():
    env = clean_env(**(app_settings() | {"MAX_CALL_DURATION_SECONDS": "5"}))
    result = runner(["--no-local-settings"], env)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    message = "Setting MAX_CALL_DURATION_SECONDS is 5; expected an integer from 10 to 3300."
    assert out.count(message) == 1 and "Traceback" not in out, out
    assert len(out.strip().splitlines()) <= 4, out
    assert "--debug shows the traceback" in out

    debug = runner(["--no-local-settings", "--debug"], env)
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr
    assert message in debug.stderr


def test_bad_routing_rules_are_one_message_naming_the_file_and_the_field(tmp_path):
    rules = json.loads((ROOT / "routing.json").read_text())
    rules["numbers"]["+18005551212"] = "nobody"
    bad = tmp_path / "rules.json"
    bad.write_text(json.dumps(rules))
    result = runner(["--no-local-settings"], clean_env(**(app_settings() | {"ROUTING_RULES_PATH": str(bad)})))
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert f"bad routing rules in {bad}: numbers.+18005551212: unknown profile 'nobody'" in out, out
    assert out.count("unknown profile 'nobody'") == 1 and "Traceback" not in out, out


def test_without_local_settings_json_the_runner_points_to_the_example_and_the_hint_works(tmp_path, runs):
    # An app folder as a fresh clone has it: the example is there, local.settings.json is not. (The app's code is
    # the repository's, found on sys.path; --app-dir says where the settings files are.)
    shutil.copy(ROOT / "local.settings.example.json", tmp_path / "local.settings.example.json")
    env = clean_env()
    result = runner(["--app-dir", str(tmp_path)], env)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "Setting AZURE_OPENAI_ENDPOINT is missing" in out and "Traceback" not in out, out
    hint = re.search(r"^\s+(cp \S+ \S+)$", out, re.M)
    assert hint, out
    assert hint.group(1) == f"cp {tmp_path / 'local.settings.example.json'} {tmp_path / 'local.settings.json'}"

    subprocess.run(shlex.split(hint.group(1)), check=True)
    started = Run([sys.executable, "-m", "localrun", "--port", "0", "--app-dir", str(tmp_path)], env)
    runs.append(started)
    url = started.wait_for(r"Local runner: function_app:app on (http://\S+)").group(1)
    with urllib.request.urlopen(f"{url}/admin/host/ping", timeout=5) as resp:
        assert resp.status == 200
    assert started.ctrl_c() == 0
    assert not [n for n in NOISE if n in started.text], started.text[-3000:]


def test_make_up_shows_the_apps_message_once(tmp_path, azurite_connection_string):
    bad = tmp_path / "rules.json"
    bad.write_text("{not json")
    out = io.StringIO()
    stack = Stack(StackConfig(app_port=0, emulator_http_port=0, sip_port=0, start_azurite=False,
                              storage_connection_string=azurite_connection_string, use_func=False, out=out,
                              app_env={"ROUTING_RULES_PATH": str(bad)}))
    with pytest.raises(StackError) as failed:
        stack.start()
    shown = out.getvalue() + "\n" + str(failed.value)
    assert shown.count("not JSON (line 1, column 2") == 1, shown
    assert "Traceback" not in shown, shown
    assert "app exited with code 2 while starting (its lines above, marked [app], say why)" in str(failed.value)
