"""Hypothesis settings for the property tests: deterministic (derandomize) so CI and a laptop see the same examples,
bounded so the whole folder stays within seconds, and no per-example deadline (a loaded 2-core CI box is slow)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "properties",
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,  # no .hypothesis/ folder in the work tree; derandomize makes it pointless anyway
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("properties")
