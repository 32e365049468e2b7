"""Local emulator of Azure OpenAI / OpenAI Realtime over SIP (not deployed). See docs/emulator.md."""

from .config import EmulatorConfig
from .scenario import Scenario, ScenarioError
from .server import Emulator

__all__ = ["Emulator", "EmulatorConfig", "Scenario", "ScenarioError"]
