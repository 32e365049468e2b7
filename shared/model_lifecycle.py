"""Announced shutdown dates of the models Switchboard can be configured with, and the start-up warning.

The data is a small table (docs/models.md shows it with its sources); `lifecycle_warnings` says which configured
models shut down within `WARN_DAYS` (or already have). On Azure the app only knows deployment names: the realtime
model is `AZURE_OPENAI_MODEL` (default: the deployment name) and a profile's transcription `model` is a deployment
name too, so deployments named after their model (the infra/ default) are the ones this check can see.

Announcements are made per model name (`gpt-realtime` and `gpt-realtime-2025-08-28` alike), so a row without a
version covers every version of the name. Update the table when a shutdown is announced (docs/models.md).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

log = logging.getLogger("switchboard.models")

WARN_DAYS = 90
_OPENAI_DEPRECATIONS = "https://developers.openai.com/api/docs/deprecations"
_SDK_SESSION = "openai-python: src/openai/types/realtime/realtime_session_create_request.py (model docstring)"
_SDK_TRANSCRIPTION = "openai-python: src/openai/types/realtime/audio_transcription.py (model docstring)"
_AZURE_SIP = "https://learn.microsoft.com/azure/foundry/openai/how-to/realtime-audio-sip (supported models)"


@dataclass(frozen=True)
class ModelLifecycle:
    model: str
    version: str | None  # None: the announcement covers every version of the name
    shutdown: date | None  # None: no shutdown announced
    source: str


LIFECYCLE: tuple[ModelLifecycle, ...] = (
    # realtime models listed for SIP on Azure
    ModelLifecycle("gpt-realtime", None, date(2027, 1, 20), f"{_OPENAI_DEPRECATIONS}; {_SDK_SESSION}"),
    ModelLifecycle("gpt-realtime-mini", None, date(2027, 1, 20), f"{_OPENAI_DEPRECATIONS}; {_SDK_SESSION}"),
    ModelLifecycle("gpt-realtime-1.5", "2026-02-23", None, _AZURE_SIP),
    # transcription models Azure documents for realtime input transcription
    ModelLifecycle("gpt-4o-mini-transcribe", None, date(2027, 2, 26), f"{_OPENAI_DEPRECATIONS}; {_SDK_TRANSCRIPTION}"),
    ModelLifecycle("gpt-4o-transcribe", None, date(2027, 2, 26), f"{_OPENAI_DEPRECATIONS}; {_SDK_TRANSCRIPTION}"),
    ModelLifecycle("whisper-1", None, date(2027, 2, 26), f"{_OPENAI_DEPRECATIONS}; {_SDK_TRANSCRIPTION}"),
)


def lookup(model: str, version: str | None = None) -> ModelLifecycle | None:
    """The row for `model` at `version`. A dated snapshot name (`gpt-realtime-2025-08-28`) counts as its model at
    that version, as OpenAI names snapshots. A row for the exact version wins over a row for the whole name."""
    name = model.strip().lower()
    snapshot = _SNAPSHOT.fullmatch(name)
    if snapshot:
        name, version = snapshot.group(1), snapshot.group(2)
    rows = [r for r in LIFECYCLE if r.model == name]
    return next((r for r in rows if r.version is not None and r.version == version), None) \
        or next((r for r in rows if r.version is None), None) \
        or (rows[0] if rows and version is None else None)


_SNAPSHOT = re.compile(r"(.+)-([0-9]{4}-[0-9]{2}-[0-9]{2})")


@dataclass(frozen=True)
class LifecycleWarning:
    role: str  # what the model is used for, e.g. "realtime model" or "transcription (profile reception)"
    model: str
    shutdown: date
    days_left: int  # negative: already past
    source: str

    def message(self) -> str:
        when = (f"was announced to shut down on {self.shutdown.isoformat()}, {-self.days_left} days ago"
                if self.days_left < 0 else
                f"is announced to shut down on {self.shutdown.isoformat()}, in {self.days_left} days")
        return (f"{self.role} {self.model!r} {when}: deploy its successor and switch to it "
                f"(docs/models.md; source: {self.source})")


def lifecycle_warnings(models: Iterable[tuple[str, str, str | None]], today: date,
                       warn_days: int = WARN_DAYS) -> list[LifecycleWarning]:
    """`models`: (role, model, version or None). A model whose announced shutdown is at most `warn_days` away (or
    past) gives one warning; unknown models and models without an announced shutdown give none."""
    found: list[LifecycleWarning] = []
    for role, model, version in models:
        row = lookup(model, version)
        if row is None or row.shutdown is None:
            continue
        days_left = (row.shutdown - today).days
        if days_left <= warn_days:
            found.append(LifecycleWarning(role, model, row.shutdown, days_left, row.source))
    return found


def configured_models(realtime_model: str, realtime_version: str | None,
                      transcription_by_profile: dict[str, str]) -> list[tuple[str, str, str | None]]:
    """The (role, model, version) triples of a configuration, transcription models once per model."""
    models: list[tuple[str, str, str | None]] = [("realtime model", realtime_model, realtime_version)]
    by_model: dict[str, list[str]] = {}
    for profile, model in sorted(transcription_by_profile.items()):
        by_model.setdefault(model, []).append(profile)
    for model, profiles in by_model.items():
        models.append((f"transcription model (profiles {', '.join(profiles)})", model, None))
    return models


def warn_about_shutdowns(models: Iterable[tuple[str, str, str | None]], today: date) -> list[LifecycleWarning]:
    """Log one WARNING per configured model near (or past) its announced shutdown; returns them."""
    found = lifecycle_warnings(models, today)
    for w in found:
        log.warning("%s", w.message())
    return found


__all__ = ["LIFECYCLE", "WARN_DAYS", "LifecycleWarning", "ModelLifecycle", "configured_models",
           "lifecycle_warnings", "lookup", "warn_about_shutdowns"]
