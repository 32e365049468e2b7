"""Every command's --help says each option's default and the environment variable that sets it, and never prints
a secret taken from the environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from localrun.stack import ROOT

SECRET = "s3cret-from-the-environment"


def help_text(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([sys.executable, *args, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr
    return " ".join(result.stdout.split())  # argparse wraps lines: compare on single spaces


@pytest.mark.parametrize(("command", "expected"), [
    (["-m", "localrun"], ["--port PORT port (0 = any free port) (default: 7071)", "$LOCALRUN_TELEMETRY",
                          "$LOCALRUN_QUEUE_POLLING", "$LOCALRUN_FUNCTION_KEY", "local.settings.example.json",
                          "--debug"]),
    (["-m", "localrun.stack"], ["($SWITCHBOARD_APP_PORT) (default: 7071)", "($SWITCHBOARD_SIP_PORT) (default: 5060)",
                                "($SWITCHBOARD_AZURITE_PORTS);", "(default: 10000,10001,10002)", "--free-ports",
                                "$SWITCHBOARD_TASK_HUB_DIR", "make up ARGS="]),
    (["-m", "localrun.demo"], ["(default: demo)", "$CALL_RECORDS_QUEUE"]),
    (["-m", "emulator"], ["[EMULATOR_HTTP_PORT, default 8765]", "[EMULATOR_SIP_PORT, default 5060]",
                          "[EMULATOR_API_KEY, default test-key]", "[EMULATOR_MODE, default azure]",
                          "[default 10.0]"]),
    (["scripts/drain.py"], ["[SWITCHBOARD_DRAIN_TIMEOUT, default 1200", "(default deploy)", "SWITCHBOARD_DRAIN_SKIP"]),
    (["scripts/register_webhook.py"], ["[WEBHOOK_REGISTRATION_MAX_WAIT, default 600]", "[AZURE_OPENAI_ENDPOINT]"]),
], ids=["localrun", "localrun.stack", "localrun.demo", "emulator", "drain", "register_webhook"])
def test_help_names_defaults_and_environment_variables(command: list[str], expected: list[str]) -> None:
    text = help_text(*command)
    missing = [e for e in expected if e not in text]
    assert not missing, f"{missing} not in:\n{text}"


def test_help_never_prints_a_secret_from_the_environment() -> None:
    secrets = {"EMULATOR_API_KEY": SECRET, "EMULATOR_WEBHOOK_SECRET": SECRET, "EMULATOR_BEARER_TOKEN": SECRET,
               "SWITCHBOARD_FUNCTION_KEY": SECRET, "LOCALRUN_FUNCTION_KEY": SECRET, "LOCALRUN_MASTER_KEY": SECRET}
    for command in (["-m", "emulator"], ["scripts/drain.py"], ["-m", "localrun"], ["-m", "localrun.stack"]):
        assert SECRET not in help_text(*command, env=secrets), command
