"""Drain mode on the whole local stack (emulator, the app under the local runner, the shared Azurite), and
scripts/drain.py driving it over the operator API as the azd predeploy/postdeploy hooks do.

Calls come from the emulator's control API (a silent caller who stays on the line until the test hangs up), so
these tests need no sipp.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from localrun.demo import emulator_call
from localrun.stack import ROOT, Stack, StackConfig, http_json

DRAIN_SCRIPT = ROOT / "scripts" / "drain.py"


@pytest.fixture(scope="module")
def stack(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("drain-stack")
    config = StackConfig(app_port=0, emulator_http_port=0, sip_port=0, start_azurite=False,
                         storage_connection_string=azurite, use_func=False, echo=False, log_dir=tmp / "logs",
                         app_env={"DRAIN_FLAG_TABLE": "drain" + secrets.token_hex(5),
                                  "CALL_RECORDS_QUEUE": "drain" + secrets.token_hex(5),
                                  "CALL_TURNS_TABLE": "drain" + secrets.token_hex(5)})
    s = Stack(config)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def api(stack: Stack, method: str, route: str, body: object = None, key: str | None = None) -> tuple[int, object]:
    return http_json(method, f"{stack.app_url}/api/{route}", body,
                     headers={"x-functions-key": stack.function_key if key is None else key})


@pytest.fixture(autouse=True)
def undrained(stack: Stack) -> Iterator[None]:
    yield
    api(stack, "DELETE", "drain")
    for call in http_json("GET", f"{stack.emulator_url}/_emulator/calls")[1]["data"]:
        if call["state"] in ("ringing", "accepted"):
            http_json("POST", f"{stack.emulator_url}/_emulator/calls/{call['call_id']}/hangup")


def place_call(stack: Stack) -> str:
    status, body = http_json("POST", f"{stack.emulator_url}/_emulator/calls", {"scenario": "default"})
    assert status == 201, body
    return body["call_id"]  # type: ignore[index]


def wait_call(stack: Stack, call_id: str, states: set[str], timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        call = emulator_call(stack.emulator_url, call_id)
        if call["state"] in states:
            return call
        assert time.monotonic() < deadline, f"call {call_id} is {call['state']}, not {states}"
        time.sleep(0.05)


def wait_live(stack: Stack, call_id: str, timeout: float = 20) -> None:
    """Until the operator API lists the call as live (its orchestration has started)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = api(stack, "GET", "calls")
        if status == 200 and call_id in [c["call_id"] for c in body["calls"]]:  # type: ignore[index]
            return
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def hang_up(stack: Stack, call_id: str) -> None:
    status, body = http_json("POST", f"{stack.emulator_url}/_emulator/calls/{call_id}/hangup")
    assert status in (200, 202, 204), body


def drain_script(stack: Stack, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(DRAIN_SCRIPT), *args, f"--base-url={stack.app_url}/api",
                             f"--key={stack.function_key}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


# --------------------------------------------------------------------------------------------------


def test_a_drained_app_turns_new_calls_away_and_takes_them_again_once_undrained(stack: Stack) -> None:
    status, view = api(stack, "GET", "drain")
    assert status == 200 and view["drained"] is False and view["source"] == "none"  # type: ignore[index]

    status, view = api(stack, "POST", "drain", {"reason": "test", "expires_in_minutes": 30})
    assert status == 200, view
    assert view["drained"] is True and view["source"] == "flag" and view["reason"] == "test"  # type: ignore[index]
    assert view["expires_at"] and view["effective_by"]  # type: ignore[index]

    turned_away = place_call(stack)
    call = wait_call(stack, turned_away, {"rejected", "ended", "expired"})
    assert call["state"] == "rejected" and call["reject_status"] == 503  # the DRAIN_REJECT_STATUS default
    # The Durable API on the app's port needs the master key (docs/local.md).
    status, _ = http_json("GET", f"{stack.app_url}/runtime/webhooks/durabletask/instances/{turned_away}",
                          headers={"x-functions-key": stack.master_key})
    assert status == 404  # no workflow was started for it

    status, view = api(stack, "DELETE", "drain")
    assert status == 200 and view["drained"] is False  # type: ignore[index]
    taken = place_call(stack)
    assert wait_call(stack, taken, {"accepted", "rejected", "expired"})["state"] == "accepted"
    hang_up(stack, taken)


@pytest.mark.parametrize("body", [{"expires_in_minutes": 0}, {"expires_in_minutes": "5"}, {"reason": 7},
                                  {"drain": True}, [1]])
def test_a_bad_drain_request_is_400_and_changes_nothing(stack: Stack, body: object) -> None:
    status, answer = api(stack, "POST", "drain", body)
    assert status == 400 and answer["error"], answer  # type: ignore[index]
    assert api(stack, "GET", "drain")[1]["drained"] is False  # type: ignore[index]


def test_the_drain_endpoint_needs_the_function_key(stack: Stack) -> None:
    assert api(stack, "POST", "drain", key="wrong")[0] == 401
    assert api(stack, "GET", "drain")[1]["drained"] is False  # type: ignore[index]


def test_predeploy_waits_until_the_live_call_ends_and_postdeploy_undrains(stack: Stack) -> None:
    live = place_call(stack)
    wait_call(stack, live, {"accepted"})
    wait_live(stack, live)

    proc = drain_script(stack, "predeploy", "--timeout", "60")
    try:
        # The drain is in force at once on the instance that wrote it: a new call is turned away...
        deadline = time.monotonic() + 30
        while api(stack, "GET", "drain")[1]["drained"] is not True:  # type: ignore[index]
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        turned_away = place_call(stack)
        assert wait_call(stack, turned_away, {"rejected", "accepted", "expired"})["state"] == "rejected"
        # ...while the live call goes on, and the script waits for it (past the drain's cache period).
        time.sleep(7)
        assert proc.poll() is None, proc.communicate()
        assert emulator_call(stack.emulator_url, live)["state"] == "accepted"
        hang_up(stack, live)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "1 live call(s)" in err and "no live call: safe to deploy" in err

    off = drain_script(stack, "postdeploy")
    _, err = off.communicate(timeout=60)
    assert off.returncode == 0, err
    assert api(stack, "GET", "drain")[1]["drained"] is False  # type: ignore[index]


def test_a_wait_that_times_out_undrains_and_fails_unless_forced(stack: Stack) -> None:
    live = place_call(stack)
    wait_call(stack, live, {"accepted"})
    wait_live(stack, live)

    proc = drain_script(stack, "on", "--wait", "--timeout", "1")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "1 call(s) still live" in err and "drain turned off again" in err
    assert api(stack, "GET", "drain")[1]["drained"] is False  # type: ignore[index]  (the deploy is off: take calls)

    proc = drain_script(stack, "predeploy", "--timeout", "1", "--force")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "--force" in err
    assert api(stack, "GET", "drain")[1]["drained"] is True  # type: ignore[index]  (the deploy goes ahead drained)
    assert emulator_call(stack.emulator_url, live)["state"] == "accepted"  # only a real deploy would cut it


def test_status_and_usage_errors(stack: Stack) -> None:
    proc = drain_script(stack, "status")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.startswith("taking calls") and "0 live call(s)" in out, err
    proc = subprocess.run([sys.executable, str(DRAIN_SCRIPT), "on"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and "no app URL" in proc.stderr
    proc = subprocess.run([sys.executable, str(DRAIN_SCRIPT), "on", f"--base-url={stack.app_url}/api",
                           "--key", "wrong"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "wrong function key" in proc.stderr
    assert api(stack, "GET", "drain")[1]["drained"] is False  # type: ignore[index]


def test_the_deploy_hooks_can_be_skipped_for_rolling_updates() -> None:
    # No app at that address: a skipped hook must not even try to reach it.
    for action in ("predeploy", "postdeploy"):
        proc = subprocess.run([sys.executable, str(DRAIN_SCRIPT), action, "--base-url", "http://127.0.0.1:9/api",
                               "--key", "k"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin", "SWITCHBOARD_DRAIN_SKIP": "true"})
        assert proc.returncode == 0 and "skipped" in proc.stderr, proc.stderr
