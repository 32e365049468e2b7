"""Process-wide wiring of the core: settings, routing rules, credentials and the clients built on them.

Settings and routing rules are read and validated once, when the app is loaded, so a bad value stops the
app at start-up with a message naming the setting instead of failing on the first call. The webhook's own
secrets are the exception (shared.settings.WEBHOOK_ONLY): in Azure they are Key Vault references that may not be
resolved yet, and one of them must not stop the operator API, the orchestrator and the activities from loading.
They are checked when the webhook's intake is built; until they are valid the runtime has no intake and the webhook
answers 503 (call_workflow/incoming.py), which the platform retries. Network clients
are made lazily, once per event loop, and reused: the webhook path must not pay for a TLS handshake or a
token fetch per call.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared import logsafe, telemetry
from shared.admission import Admission
from shared.model_lifecycle import configured_models, warn_about_shutdowns
from shared.routing import RoutingRules, parse_rules_text, warn_about_past_holidays
from shared.rules_store import BlobRulesReader, RulesHolder, RulesRefresher, blob_client
from shared.settings import Settings, SettingsError, webhook_secrets
from shared.tools import registry as tool_registry

if TYPE_CHECKING:  # the real imports are deferred to _build/_preload (start-up cost)
    from shared.analysis import AnalysisClient
    from shared.auth import ApiKeyAuth, EntraAuth
    from shared.call_control import CallControlClient
    from shared.drain import DrainSwitch
    from shared.history import HistoryTable
    from shared.intake import Declined, Intake
    from shared.lease import CallLeases
    from shared.live_calls import LiveCallTable
    from shared.payloads import CallInput, CallSummary, EndedEarly
    from shared.records import RecordPublisher
    from shared.turns import TurnStore

log = logging.getLogger("switchboard.runtime")

_config: tuple[Settings, RoutingRules] | None = None
# Records of declined calls being published in the background; held here so a task is not collected mid-flight.
_declined_tasks: set[asyncio.Task] = set()
# This process's call count (MAX_CALLS_PER_INSTANCE): the webhook admits against it, converse keeps it.
_admission: Admission | None = None
_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Runtime] = weakref.WeakKeyDictionary()
# The start-up preload runs in this thread (see load()); nothing imports the client modules beside it until it is done.
_preloader: threading.Thread | None = None
_holder: RulesHolder | None = None
_refresher: RulesRefresher | None = None
# The first invocations wait this long at most for the first check of the rules blob (then the packaged rules serve
# until it lands): a webhook must be answered within seconds while the phone rings.
FIRST_RULES_CHECK_TIMEOUT_SECONDS = 3.0


def load() -> tuple[Settings, RoutingRules]:
    """Read and validate settings and routing rules; raises SettingsError / RoutingRulesError."""
    global _config, _admission, _preloader, _holder, _refresher
    if _config is None:
        # The Functions worker has installed its log handlers before it imports the app: from here on every
        # value logged from outside has its control characters escaped (shared/logsafe.py).
        logsafe.install()
        # The example tools register themselves on import; the rules refer to them by name.
        import call_workflow.agent_tools  # noqa: F401

        settings = Settings.from_env()
        rules = RoutingRules.load(
            settings.routing_rules_path,
            tool_names=tool_registry.names(),
            max_call_duration_seconds=settings.max_call_duration_seconds,
        )
        _config = (settings, rules)
        _holder = RulesHolder(rules)
        _warn_about_model_shutdowns(settings, rules)
        warn_about_past_holidays(rules, datetime.now(UTC).date())
        if settings.routing_rules_uri:
            _refresher = _make_refresher(settings, _holder)  # started by the preload thread, after its imports
        _admission = Admission(settings.max_calls_per_instance)
        # In the background: the worker indexes the functions meanwhile, and `import function_app` stays short. The
        # first invocation waits for it in get() before it builds the clients: two threads importing overlapping
        # module graphs in different orders can trip CPython's import deadlock detection (_DeadlockError in
        # httpcore, seen under the local runner when a request came in during the preload).
        _preloader = threading.Thread(target=_preload_quietly, args=(settings, _refresher),
                                      name="switchboard-preload", daemon=True)
        _preloader.start()
        try:
            webhook_secrets()
        except SettingsError as exc:  # said once at start-up; the webhook repeats it on every refused delivery
            log.error("The webhook will answer 503 until this is fixed: %s", exc)
    return _config


def rules_holder() -> RulesHolder:
    """The process's current routing rules (reloaded from ROUTING_RULES_URI in the background when it is set)."""
    load()
    assert _holder is not None
    return _holder


def _make_refresher(settings: Settings, holder: RulesHolder) -> RulesRefresher:
    """Checks the rules blob at once and every ROUTING_RULES_REFRESH_SECONDS in a daemon thread (shared/rules_store.py).

    Started by the preload thread once its imports are done: two threads importing overlapping module graphs (the
    blob SDK and the queue/table SDKs share azure.core) can trip CPython's import deadlock detection.

    The packaged file serves until the first check has loaded the blob; the first invocations wait for that check
    in get(), bounded, so a call is not routed by the packaged rules while the blob is one request away.
    """
    uri = settings.routing_rules_uri
    assert uri is not None

    def parse(data: bytes) -> RoutingRules:
        return parse_rules_text(data, "ROUTING_RULES_URI", tool_names=tool_registry.names(),
                                max_call_duration_seconds=settings.max_call_duration_seconds)

    def on_loaded(rules: RoutingRules) -> None:
        _warn_about_model_shutdowns(settings, rules)
        warn_about_past_holidays(rules, datetime.now(UTC).date())

    reader = BlobRulesReader(lambda: blob_client(uri, connection_string=settings.storage.connection_string,
                                                 client_id=settings.managed_identity_client_id))
    refresher = RulesRefresher(holder, reader, parse, interval=settings.routing_rules_refresh_seconds,
                               source=uri, on_loaded=on_loaded)  # the URI has no query (settings): no SAS to hide
    return refresher


def _warn_about_model_shutdowns(settings: Settings, rules: RoutingRules) -> None:
    """A WARNING at start-up for each configured model within 90 days of its announced shutdown (or past it)."""
    transcription = {name: str(p.transcription["model"]) for name, p in rules.profiles.items()
                     if p.transcription and p.transcription.get("model")}
    models = configured_models(settings.model or settings.deployment, settings.model_version, transcription)
    warn_about_shutdowns(models, datetime.now(UTC).date())


def _preload_quietly(settings: Settings, refresher: RulesRefresher | None = None) -> None:
    try:
        _preload(settings)
    except Exception:  # the same import fails again, loudly, where the first call needs it
        logging.getLogger("switchboard.runtime").exception("preloading the client modules failed")
    finally:
        if refresher is not None:
            refresher.start()


def _preload(settings: Settings) -> None:
    """Import every client module while the app starts, not while the first caller's phone rings.

    Measured cold on the dev machine: the storage SDKs alone cost ~170 ms and the conversation engine ~50 ms
    more; paid here, they land in the instance's start-up (hidden by always-ready instances) instead of in
    the first webhook's ring time or the first greeting's silence. It runs in a thread so that ``import
    function_app`` itself stays short (docs/performance.md, cold import).
    """
    # httpx imports its async network backend on the first request (~70 ms cold): that request is an accept.
    import anyio._backends._asyncio  # noqa: F401
    import httpcore._backends.anyio  # noqa: F401

    import shared.call_control  # noqa: F401
    import shared.conversation  # noqa: F401
    import shared.drain  # noqa: F401
    import shared.history  # noqa: F401
    import shared.intake  # noqa: F401
    import shared.lease  # noqa: F401
    import shared.live_calls  # noqa: F401
    import shared.records  # noqa: F401
    import shared.turns  # noqa: F401
    from shared.tls import client_context

    client_context()  # loads the CA bundle once (~35 ms), before the first call needs it

    if settings.auth_mode == "entra" or settings.storage.uses_identity:
        import azure.identity.aio  # noqa: F401  (~200 ms cold)


@dataclass
class Runtime:
    settings: Settings
    rules: RoutingRules
    auth: ApiKeyAuth | EntraAuth
    call_control: CallControlClient
    intake: Intake | None  # None while the webhook's secrets are invalid (see webhook_error)
    webhook_error: SettingsError | None
    drain: DrainSwitch
    turns: TurnStore
    publisher: RecordPublisher
    credential: Any  # the azure-identity async credential, when OpenAI or storage uses Entra; else None
    leases: CallLeases  # on the turns table's client: closed with it
    live: LiveCallTable
    history: HistoryTable  # every record, browsable by day (the operator console, shared/history.py)
    analysis: AnalysisClient | None = None  # None: AZURE_OPENAI_ANALYSIS_DEPLOYMENT is empty (analysis off)

    async def aclose(self) -> None:
        if self.analysis is not None:
            await self.analysis.aclose()
        await self.call_control.aclose()
        await self.turns.aclose()
        await self.live.aclose()
        await self.history.aclose()
        await self.publisher.aclose()
        await self.drain.aclose()
        if self.credential is not None:
            await self.credential.close()


def _build(settings: Settings, rules: RoutingRules) -> Runtime:
    from shared.auth import auth_from_settings, azure_credential
    from shared.call_control import CallControlClient
    from shared.drain import DrainFlagStore, DrainSwitch
    from shared.history import HistoryTable
    from shared.intake import Intake
    from shared.lease import CallLeases
    from shared.live_calls import LiveCallTable
    from shared.mcp import McpConfigError
    from shared.records import RecordPublisher
    from shared.turns import TurnStore

    # One credential (one token cache, one close) for Azure OpenAI and storage, made only if either needs it.
    credential = None
    if settings.auth_mode == "entra" or settings.storage.uses_identity:
        credential = azure_credential(settings.managed_identity_client_id)
    auth = auth_from_settings(settings, credential)

    call_control = CallControlClient(settings.openai_endpoint, auth)
    drain = DrainSwitch(settings.drain, DrainFlagStore.from_settings(settings.storage, settings.drain.flag_table,
                                                                     credential=credential))
    intake: Intake | None = None
    webhook_error: SettingsError | None = None
    try:
        secrets = webhook_secrets()
    except SettingsError as exc:
        webhook_error = exc
    else:
        try:
            intake = Intake(
                secrets=secrets,
                rules=rules_holder(),
                call_control=call_control,
                deployment=settings.deployment,
                tools=tool_registry,
                max_call_duration_seconds=settings.max_call_duration_seconds,
                drain=drain,
                admission=admission(),
            )
        except McpConfigError as exc:
            # An MCP header's setting is a Key Vault reference the platform has not resolved yet: like the webhook
            # secrets, the webhook answers 503 meanwhile and every other function runs (shared/mcp.py).
            webhook_error = SettingsError(str(exc), exc.setting)
    turns = TurnStore.from_settings(settings.storage, credential=credential)
    publisher = RecordPublisher.from_settings(settings.storage, credential=credential)
    live = LiveCallTable.from_settings(settings.storage, credential=credential)
    analysis = None
    if settings.analysis_deployment:
        from shared.analysis import AnalysisClient

        # The same auth (Entra token cache, or the local key) as call control: one identity, keyless in Azure.
        analysis = AnalysisClient(settings.openai_endpoint, settings.analysis_deployment, auth)
    return Runtime(settings, rules, auth, call_control, intake, webhook_error, drain, turns, publisher, credential,
                   leases=CallLeases(turns.table), live=live,
                   history=HistoryTable.from_settings(settings.storage, credential=credential), analysis=analysis)


async def get() -> Runtime:
    """The runtime of the running event loop, built on first use."""
    loop = asyncio.get_running_loop()
    runtime = _per_loop.get(loop)
    if runtime is None:
        settings, rules = load()
        preloader = _preloader
        if preloader is not None and preloader.is_alive():
            await asyncio.to_thread(preloader.join)  # only the first invocations, in the first few hundred ms
        refresher = _refresher
        if refresher is not None and not refresher.first_check.is_set():
            await asyncio.to_thread(refresher.first_check.wait, FIRST_RULES_CHECK_TIMEOUT_SECONDS)
        runtime = _per_loop.get(loop)  # another invocation may have built it while this one waited
        if runtime is None:
            runtime = _per_loop[loop] = _build(settings, rules)
    return runtime


def admission() -> Admission:
    load()
    assert _admission is not None
    return _admission


async def call_control() -> CallControlClient:
    return (await get()).call_control


async def converse(call: CallInput) -> CallSummary:
    from shared.conversation import converse as run

    rt = await get()
    count = admission()
    count.started(call["call_id"])
    try:
        with telemetry.live_call(call.get("profile_name")):
            return await run(
                call,
                endpoint=rt.settings.openai_endpoint,
                auth=rt.auth,
                call_control=rt.call_control,
                tools=tool_registry,
                turns=rt.turns,
                leases=rt.leases,
            )
    finally:
        count.ended(call["call_id"])


async def call_ended(call_id: str) -> None:
    """Take the call out of the live-calls table. A failure is logged, not raised: the row expires on its own
    (shared/live_calls.py), and the record must not wait for it."""
    import logging

    try:
        await (await get()).live.remove(call_id)
    except Exception as exc:  # noqa: BLE001 - logged; the row expires
        logging.getLogger("switchboard.live_calls").warning(
            "call %s: live-calls row not removed (%s); it expires on its own", call_id, type(exc).__name__)


async def analyze(call: dict, summary: dict | None) -> dict:
    """The post-call analysis of a call whose profile asks for one: ``{"analysis": {...}}``, or
    ``{"analysis": None, "skipped": why}`` when analysis is off. Raises AnalysisError when it could not be made
    (the orchestrator then publishes the record with ``analysis_error``)."""
    spec = (call.get("profile") or {}).get("analysis")
    if not spec:
        return {"analysis": None, "skipped": "profile has no analysis"}
    rt = await get()
    if rt.analysis is None:
        return {"analysis": None, "skipped": "AZURE_OPENAI_ANALYSIS_DEPLOYMENT is empty"}
    transcript = (summary or {}).get("transcript") if summary is not None else None
    if transcript is None:  # converse failed: the finished turns are in the table
        transcript = await rt.turns.load(call["call_id"])
    result = await rt.analysis.analyze(call, transcript, spec)
    return {"analysis": dict(result)}


async def publish_record(call: CallInput, summary: CallSummary | EndedEarly | None, ended_by: str,
                         transfer_target: str | None = None, ended_at: str | None = None,
                         hangup_confirmed: bool | None = None, hung_up_at: str | None = None,
                         analysis: dict | None = None, analysis_error: str | None = None) -> str:
    from shared.records import build_record
    from shared.transcript import parse_iso

    rt = await get()
    turns = await rt.turns.load(call["call_id"]) if summary is None else []  # unused when there is a summary
    record = build_record(call, summary, ended_by, turns, transfer_target=transfer_target,
                          now=parse_iso(ended_at) if ended_at else None, hangup_confirmed=hangup_confirmed,
                          hung_up_at=hung_up_at, analysis=analysis, analysis_error=analysis_error)
    await _store_history(rt, record)
    return await rt.publisher.publish(record)


async def _store_history(rt: Runtime, record: Mapping[str, Any]) -> None:
    """The console's copy of the record (shared/history.py), written before the queue message: both are
    idempotent by call id, so when either fails the activity's retry writes both again."""
    await rt.history.upsert(record)


def publish_declined(declined: Declined) -> asyncio.Task:
    """Publish the record of a rejected or referred call in the background: the webhook answers at once (the
    call's fate is already sent to the platform) and a failure is logged, never raised. Delivery is best effort
    plus the queue's own retries; a redelivered webhook finds the call remembered and does not publish again."""
    task = asyncio.get_running_loop().create_task(_publish_declined(declined), name=f"{declined['call_id']}:record")
    _declined_tasks.add(task)
    task.add_done_callback(_declined_tasks.discard)
    return task


async def _publish_declined(declined: Declined) -> None:
    from shared.records import decision_record

    try:
        rt = await get()
        record = decision_record(
            declined["call_id"], declined["outcome"], declined["reason"], sip_status=declined["sip_status"],
            caller=declined["caller"], dialed=declined["dialed"], profile_name=declined["profile_name"],
            decided_at=declined["decided_at"])
        try:
            await _store_history(rt, record)
        except Exception as exc:  # noqa: BLE001 - no retry here: the queue still gets the record
            log.error("call %s: the %s call is not in the history table (%s)", declined["call_id"],
                      declined["outcome"], type(exc).__name__)
        await rt.publisher.publish(record)
    except Exception as exc:  # noqa: BLE001 - the call is already declined; losing its record must not surface
        log.error("call %s: the record of the %s call was not published (%s)", declined["call_id"],
                  declined["outcome"], type(exc).__name__)


async def drain_declined(timeout: float = 10.0) -> None:  # noqa: ASYNC109 (a bounded wait that never raises)
    """Wait (bounded) for declined-call records still being published (shutdown, tests)."""
    if _declined_tasks:
        await asyncio.wait(list(_declined_tasks), timeout=timeout)


def reset() -> None:
    """Forget cached configuration and clients (tests change the environment between cases)."""
    global _config, _admission, _preloader, _holder, _refresher
    _config = None
    _admission = None
    _preloader = None
    _holder = None
    if _refresher is not None:
        _refresher.stop()
    _refresher = None
    _per_loop.clear()
