"""Daily housekeeping (timer trigger): purge finished orchestrations and the console's call history rows of the same
age, sweep expired live-call rows.

Nothing else removes a finished call's orchestration history from the task hub, so without this it grows by one
instance (and its history rows and blobs) per call, forever; docs/deploy.md ("History retention") has the
numbers. Calls still Pending or Running are never purged: only Completed, Failed and Terminated instances created
more than ``HISTORY_RETENTION_DAYS`` ago. The call records (the queue) are the durable output of a call; the
orchestration history is only needed while an operator may still look at a recent call.
"""

from __future__ import annotations

import datetime as dt
import logging

import azure.durable_functions as df
import azure.functions as func

from call_workflow import runtime

bp = df.Blueprint()
log = logging.getLogger("switchboard.maintenance")

# NCRONTAB (seconds first): every day at 03:17 UTC, off the hour so it does not meet other hourly jobs.
PURGE_SCHEDULE = "0 17 3 * * *"
FINISHED = [df.OrchestrationRuntimeStatus.Completed, df.OrchestrationRuntimeStatus.Failed,
            df.OrchestrationRuntimeStatus.Terminated]
# The SDK requires a lower bound (purge_instance_history_by raises without created_time_from); no call predates it.
HISTORY_START = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


def purge_cutoff(now: dt.datetime, retention_days: int) -> dt.datetime:
    """Instances created before this are old enough to purge."""
    return now - dt.timedelta(days=retention_days)


@bp.timer_trigger(schedule=PURGE_SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=True)
@bp.durable_client_input(client_name="client")
async def purge_history(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    settings, _ = runtime.load()
    now = dt.datetime.now(dt.UTC)
    cutoff = purge_cutoff(now, settings.history_retention_days)
    result = await client.purge_instance_history_by(created_time_from=HISTORY_START, created_time_to=cutoff,
                                                    runtime_status=FINISHED)
    log.info("purged %d finished orchestration(s) created before %s%s", result.instances_deleted,
             cutoff.isoformat(timespec="seconds"), " (run was past due)" if timer.past_due else "")
    try:  # the console's call history (shared/history.py) keeps the same days as the orchestrations
        history = await (await runtime.get()).history.purge_before(cutoff.date())
        if history:
            log.info("removed %d call history row(s) of days before %s", history, cutoff.date().isoformat())
    except Exception as exc:  # noqa: BLE001 - tomorrow's run removes them; the live-calls sweep still runs
        log.warning("call history purge failed (%s)", type(exc).__name__)
    try:
        swept = await (await runtime.get()).live.sweep(now)
    except Exception as exc:  # noqa: BLE001 - the purge is done; leftover rows stop counting at their expiry
        log.warning("live-calls sweep failed (%s)", type(exc).__name__)
        return
    if swept:
        log.warning("removed %d expired live-call row(s) whose call ended without removing them", swept)
