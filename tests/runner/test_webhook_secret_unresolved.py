"""The whole local stack with the webhook secret in the state Azure leaves it before the post-provision hook has
run: the literal, unresolved Key Vault reference. The emulator signs its deliveries with the real secret.

The app must come up, answer the webhook 503 (so the platform redelivers) without accepting anything, and keep
every other function working: the operator API here, the orchestrator and activities in tests/test_startup.py.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest

from localrun.demo import emulator_call
from localrun.stack import Stack, StackConfig, http_json

UNRESOLVED = "@Microsoft.KeyVault(VaultName=kv-abc123;SecretName=webhook-secret)"


@pytest.fixture(scope="module")
def stack(azurite: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("unresolved-stack")
    config = StackConfig(app_port=0, emulator_http_port=0, sip_port=0, start_azurite=False,
                         storage_connection_string=azurite, use_func=False, echo=False, log_dir=tmp / "logs",
                         app_env={"WEBHOOK_SECRET": UNRESOLVED,
                                  "DRAIN_FLAG_TABLE": "drain" + secrets.token_hex(5),
                                  "CALL_RECORDS_QUEUE": "unres" + secrets.token_hex(5),
                                  "CALL_TURNS_TABLE": "unres" + secrets.token_hex(5)})
    s = Stack(config)
    s.start()  # the app started: indexing did not fail on the secret
    try:
        yield s
    finally:
        s.stop()


def test_the_webhook_answers_503_and_nothing_is_accepted(stack: Stack) -> None:
    status, body = http_json("POST", f"{stack.emulator_url}/_emulator/calls", {"scenario": "default"})
    assert status == 201, body
    call_id = body["call_id"]  # type: ignore[index]
    deadline = time.monotonic() + 20
    while True:  # the platform redelivers after a 503: wait for a redelivery that was answered 503 too
        call = emulator_call(stack.emulator_url, call_id)
        statuses = [a["status"] for a in call["webhook_attempts"]]
        if len(statuses) >= 2 and 503 in statuses[1:]:
            break
        assert time.monotonic() < deadline, call
        time.sleep(0.1)
    # Every answered attempt was a 503 (an attempt can also time out on a loaded machine: status None).
    assert {s for s in statuses if s is not None} == {503}, call["webhook_attempts"]
    assert call["state"] == "ringing" and "accepted" not in [s["state"] for s in call["states"]]
    # The Durable API on the app's port needs the master key (docs/local.md).
    status, _ = http_json("GET", f"{stack.app_url}/runtime/webhooks/durabletask/instances/{call_id}",
                          headers={"x-functions-key": stack.master_key})
    assert status == 404  # no workflow started

    # A 503 body names the setting, and the app's log has one clear line per refused delivery, without the value.
    status, answer = http_json("POST", f"{stack.app_url}/api/calls/incoming", {"type": "realtime.call.incoming"})
    assert status == 503 and answer == {"error": "webhook_unavailable", "setting": "WEBHOOK_SECRET"}
    refused = [line for line in stack.logs("app") if "webhook answered 503" in line]
    assert refused and all("Setting WEBHOOK_SECRET is an unresolved Key Vault reference" in line for line in refused)
    assert not any("kv-abc123" in line for line in stack.logs("app"))
    http_json("POST", f"{stack.emulator_url}/_emulator/calls/{call_id}/hangup")


def test_the_other_functions_keep_working(stack: Stack) -> None:
    key = {"x-functions-key": stack.function_key}
    assert http_json("GET", f"{stack.app_url}/api/calls", headers=key) == (200, {"calls": []})
    assert http_json("GET", f"{stack.app_url}/api/calls/rtc_unknown", headers=key)[0] == 404
    status, view = http_json("GET", f"{stack.app_url}/api/drain", headers=key)
    assert status == 200 and view["drained"] is False  # type: ignore[index]
