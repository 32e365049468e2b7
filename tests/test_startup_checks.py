"""What the app does at start-up besides validating settings: it warns about models near their announced shutdown
and puts the log-escaping filter on the handlers the Functions worker installed before importing it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.test_startup import ROOT, good_env

# As the Functions worker does: its log handler exists before the app module is imported.
LOAD = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
import function_app
from shared.logsafe import SafeLogFilter
print("filtered" if all(any(isinstance(f, SafeLogFilter) for f in h.filters) for h in logging.getLogger().handlers)
      else "unfiltered")
logging.getLogger("probe").info("value %s", "a\\r\\nFORGED")
"""


def start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", LOAD], check=False, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_a_realtime_model_near_its_shutdown_is_a_start_up_warning(tmp_path: Path) -> None:
    result = start(good_env(tmp_path) | {"AZURE_OPENAI_DEPLOYMENT": "gpt-realtime"})
    assert result.returncode == 0, result.stderr
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("WARNING switchboard.models")]
    assert any("realtime model 'gpt-realtime'" in ln and "2027-01-20" in ln for ln in warnings), result.stderr


def test_a_custom_deployment_name_is_checked_through_azure_openai_model(tmp_path: Path) -> None:
    env = good_env(tmp_path) | {"AZURE_OPENAI_DEPLOYMENT": "voice-prod", "AZURE_OPENAI_MODEL": "gpt-realtime",
                                "AZURE_OPENAI_MODEL_VERSION": "2025-08-28"}
    result = start(env)
    assert "realtime model 'gpt-realtime'" in result.stderr, result.stderr


def test_the_default_realtime_model_gives_no_realtime_warning(tmp_path: Path) -> None:
    result = start(good_env(tmp_path) | {"AZURE_OPENAI_DEPLOYMENT": "gpt-realtime-1.5"})
    assert result.returncode == 0, result.stderr
    assert "realtime model" not in result.stderr


def test_the_app_escapes_log_values_from_start_up_on(tmp_path: Path) -> None:
    result = start(good_env(tmp_path))
    assert result.stdout.strip() == "filtered", result.stderr
    assert "INFO probe: value a\\r\\nFORGED" in result.stderr
    assert "\nFORGED" not in result.stderr
