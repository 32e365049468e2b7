"""The Azure Storage queue-polling model of the local runner (localrun/durable/polling.py): the provider's back-off
algorithm, and the engine waiting on it for each hop when (and only when) it is switched on."""
from __future__ import annotations

import random
import time

import azure.durable_functions as df
import pytest

from localrun.durable import DurableEngine, FunctionIndex, RealClock
from localrun.durable.polling import MIN_INTERVAL_S, BackoffPoller, QueuePolling, from_host_json, parse_timespan

app = df.DFApp()


RAN_AT: list[float] = []


@app.orchestration_trigger(context_name="context")
def greet(context: df.DurableOrchestrationContext):
    greeting = yield context.call_activity("say_hello", context.get_input()["name"])
    return greeting


@app.activity_trigger(input_name="name")
def say_hello(name: str) -> str:
    RAN_AT.append(time.monotonic())
    return f"hello {name}"


def idle_polls(poller: BackoffPoller, until: float) -> list[float]:
    """The times of the empty polls an idle poller makes until ``until`` (advancing a copy's state)."""
    times = []
    while poller.next_poll < until:
        times.append(poller.next_poll)
        poller.next_poll += poller.interval
        poller._empty_poll()
    return times


def test_idle_poller_backs_off_like_the_provider_and_stops_at_the_maximum():
    poller = BackoffPoller(1.0, rng=random.Random(7))
    polls = idle_polls(poller, 10.0)
    gaps = [b - a for a, b in zip(polls, polls[1:], strict=False)]
    # First wait: the 50 ms minimum; then minimum + 0.8..1.2 x 2^(k-1) x minimum, until the 1 s cap.
    assert gaps[0] == pytest.approx(MIN_INTERVAL_S)
    for k, gap in enumerate(gaps[1:5], start=1):
        base = 2 ** (k - 1) * MIN_INTERVAL_S
        assert MIN_INTERVAL_S + 0.8 * base - 1e-9 <= gap <= MIN_INTERVAL_S + 1.2 * base + 1e-9, (k, gap)
    assert gaps[-3:] == pytest.approx([1.0, 1.0, 1.0])
    assert max(gaps) == pytest.approx(1.0)


def test_a_message_after_an_idle_spell_waits_for_the_next_poll_unless_its_sender_wakes_the_poller():
    rng_seed = 3
    cross = BackoffPoller(1.0, rng=random.Random(rng_seed))
    twin = BackoffPoller(1.0, rng=random.Random(rng_seed))
    polls = idle_polls(twin, 60.0)
    next_poll = min(t for t in polls + [twin.next_poll] if t >= 30.0)
    assert cross.delay(30.0) == pytest.approx(next_poll - 30.0)
    assert 0 <= cross.delay(45.0) <= 1.0
    # Right after a message the poller is fast again: back-to-back messages wait at most the minimum.
    assert cross.delay(45.0 + cross.delay(45.0)) <= MIN_INTERVAL_S + 1e-9

    same_process = BackoffPoller(1.0, wake_on_send=True, rng=random.Random(rng_seed))
    assert same_process.delay(30.0) == 0.0


def test_delays_after_idle_spread_over_the_whole_maximum_interval():
    model = QueuePolling(max_interval_s=1.0, partitions=1, seed=11, clock=lambda: 0.0)
    poller = model._control[0]
    delays = []
    now = 0.0
    for _ in range(2000):
        now += 7.3  # a quiet spell of seconds between calls: the poller is at its 1 s maximum
        delays.append(poller.delay(now))
    delays.sort()
    assert delays[0] >= 0.0 and delays[-1] <= 1.0
    assert 0.4 < delays[len(delays) // 2] < 0.6  # uniform over [0, 1 s]: p50 about half the maximum
    assert delays[int(len(delays) * 0.99)] > 0.95


def test_model_reads_host_json():
    host = {"extensions": {"durableTask": {"storageProvider": {"maxQueuePollingInterval": "00:00:02",
                                                               "partitionCount": 2}}}}
    model = from_host_json(host)
    assert (model.max_interval_s, model.partitions) == (2.0, 2)
    assert from_host_json({}).max_interval_s == 30.0  # the provider's default
    assert parse_timespan("1.00:00:01.5") == 86401.5
    with pytest.raises(ValueError):
        parse_timespan("1s")
    with pytest.raises(ValueError):
        QueuePolling(max_interval_s=0)


class Recorded(QueuePolling):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.delays: list[tuple[str, float]] = []

    def control_delay(self, instance_id: str) -> float:
        d = super().control_delay(instance_id)
        self.delays.append(("control", d))
        return d

    def activity_delay(self) -> float:
        d = super().activity_delay()
        self.delays.append(("activity", d))
        return d


async def run_one(queue_polling: QueuePolling | None) -> float:
    """Seconds from start_new until the activity body runs."""
    RAN_AT.clear()
    engine = DurableEngine(FunctionIndex.from_app(app), clock=RealClock(), queue_polling=queue_polling)
    try:
        t0 = time.monotonic()
        await engine.start_new("greet", "i-1", {"name": "bob"})
        status = await engine.wait_for_completion("i-1", 10)
        assert status["runtimeStatus"] == "Completed" and status["output"] == "hello bob", status
        return RAN_AT[0] - t0
    finally:
        await engine.aclose()


async def test_engine_waits_each_hop_only_with_the_model_on():
    assert await run_one(None) < 0.5  # off: immediate (generous bound for a loaded machine)
    # The pollers have been idle for a minute (the model's clock runs 60 s ahead): both hops wait for a poll.
    model = Recorded(max_interval_s=0.4, partitions=1, seed=5, clock=lambda: time.monotonic() + 60)
    model._control[0].next_poll = model._work_items.next_poll = time.monotonic()  # last activity: a minute ago
    elapsed = await run_one(model)
    hops = [kind for kind, _ in model.delays]
    assert hops[:2] == ["control", "activity"]
    first_two = sum(d for _, d in model.delays[:2])
    assert all(0 <= d <= 0.4 for _, d in model.delays)
    assert elapsed >= first_two - 0.01
