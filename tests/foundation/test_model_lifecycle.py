"""shared.model_lifecycle: the table of announced shutdowns and the start-up warning."""

from __future__ import annotations

import logging
from datetime import date

import pytest

from shared.model_lifecycle import (
    LIFECYCLE,
    WARN_DAYS,
    configured_models,
    lifecycle_warnings,
    lookup,
    warn_about_shutdowns,
)

TODAY = date(2026, 11, 30)


def test_the_old_default_realtime_model_warns_and_the_new_one_does_not():
    found = lifecycle_warnings([("realtime model", "gpt-realtime", "2025-08-28")], TODAY)
    assert [(w.model, w.shutdown, w.days_left) for w in found] == [("gpt-realtime", date(2027, 1, 20), 51)]
    assert "2027-01-20" in found[0].message() and "in 51 days" in found[0].message()
    assert lifecycle_warnings([("realtime model", "gpt-realtime-1.5", "2026-02-23")], TODAY) == []


@pytest.mark.parametrize("model", ["gpt-realtime", "gpt-realtime-2025-08-28", "GPT-Realtime", "gpt-realtime-mini",
                                   "gpt-realtime-mini-2025-12-15"])
def test_every_name_of_an_announced_model_is_found(model):
    row = lookup(model)
    assert row is not None and row.shutdown == date(2027, 1, 20)


def test_the_window_is_ninety_days_and_a_past_shutdown_still_warns():
    shutdown = date(2027, 1, 20)
    models = [("realtime model", "gpt-realtime", None)]
    assert lifecycle_warnings(models, date.fromordinal(shutdown.toordinal() - WARN_DAYS - 1)) == []
    assert [w.days_left for w in lifecycle_warnings(models, date.fromordinal(shutdown.toordinal() - WARN_DAYS))] \
        == [WARN_DAYS]
    (past,) = lifecycle_warnings(models, date(2027, 3, 1))
    assert past.days_left == -40 and "40 days ago" in past.message()


def test_unknown_models_and_deployment_names_give_no_warning():
    assert lookup("my-realtime-deployment") is None
    assert lifecycle_warnings([("realtime model", "my-realtime-deployment", None)], TODAY) == []


def test_transcription_models_are_checked_once_per_model_naming_their_profiles():
    models = configured_models("gpt-realtime-1.5", "2026-02-23",
                               {"reception": "gpt-4o-mini-transcribe", "after_hours": "gpt-4o-mini-transcribe"})
    found = lifecycle_warnings(models, TODAY)
    assert [(w.role, w.model, w.days_left) for w in found] == [
        ("transcription model (profiles after_hours, reception)", "gpt-4o-mini-transcribe", 88)]


def test_every_row_has_a_source_and_rows_are_unique():
    assert all(r.source for r in LIFECYCLE)
    keys = [(r.model, r.version) for r in LIFECYCLE]
    assert len(keys) == len(set(keys))


def test_the_warning_is_logged_at_warning_level(caplog):
    with caplog.at_level(logging.WARNING, logger="switchboard.models"):
        warn_about_shutdowns([("realtime model", "gpt-realtime", None)], TODAY)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "'gpt-realtime' is announced to shut down on 2027-01-20" \
        in record.getMessage()
