"""Process-wide wiring of the core: settings, routing rules, credentials and the clients built on them.

Settings and routing rules are read and validated once, when the app is loaded, so a bad value stops the
app at start-up with a message naming the setting instead of failing on the first call. Network clients
are made lazily, once per event loop, and reused: the webhook path must not pay for a TLS handshake or a
token fetch per call.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared import telemetry
from shared.routing import RoutingRules
from shared.settings import Settings
from shared.tools import registry as tool_registry

if TYPE_CHECKING:  # the real imports are deferred to _build/_preload (start-up cost)
    from shared.auth import ApiKeyAuth, EntraAuth
    from shared.call_control import CallControlClient
    from shared.intake import Declined, Intake
    from shared.records import RecordPublisher
    from shared.turns import TurnStore

log = logging.getLogger("switchboard.runtime")

_config: tuple[Settings, RoutingRules] | None = None
# Records of declined calls being published in the background; held here so a task is not collected mid-flight.
_declined_tasks: set[asyncio.Task] = set()
_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Runtime] = weakref.WeakKeyDictionary()


def load() -> tuple[Settings, RoutingRules]:
    """Read and validate settings and routing rules; raises SettingsError / RoutingRulesError."""
    global _config
    if _config is None:
        # The example tools register themselves on import; the rules refer to them by name.
        import call_workflow.agent_tools  # noqa: F401

        settings = Settings.from_env()
        rules = RoutingRules.load(
            settings.routing_rules_path,
            tool_names=tool_registry.names(),
            max_call_duration_seconds=settings.max_call_duration_seconds,
        )
        _config = (settings, rules)
        _preload(settings)
    return _config


def _preload(settings: Settings) -> None:
    """Import every client module while the app starts, not while the first caller's phone rings.

    Measured cold on the dev machine: the storage SDKs alone cost ~170 ms and the conversation engine ~50 ms
    more; paid here, they land in the instance's start-up (hidden by always-ready instances) instead of in
    the first webhook's ring time or the first greeting's silence.
    """
    import shared.call_control  # noqa: F401
    import shared.conversation  # noqa: F401
    import shared.intake  # noqa: F401
    import shared.records  # noqa: F401
    import shared.turns  # noqa: F401
    from shared.tls import client_context

    # httpx imports its async network backend on the first request (~70 ms cold): that request is an accept.
    import anyio._backends._asyncio  # noqa: F401
    import httpcore._backends.anyio  # noqa: F401

    client_context()  # loads the CA bundle once (~35 ms), before the first call needs it

    if settings.auth_mode == "entra" or settings.storage.uses_identity:
        import azure.identity.aio  # noqa: F401  (~200 ms cold)


@dataclass
class Runtime:
    settings: Settings
    rules: RoutingRules
    auth: ApiKeyAuth | EntraAuth
    call_control: CallControlClient
    intake: Intake
    turns: TurnStore
    publisher: RecordPublisher
    credential: Any  # the azure-identity async credential, when OpenAI or storage uses Entra; else None

    async def aclose(self) -> None:
        await self.call_control.aclose()
        await self.turns.aclose()
        await self.publisher.aclose()
        if self.credential is not None:
            await self.credential.close()


def _build(settings: Settings, rules: RoutingRules) -> Runtime:
    from shared.auth import auth_from_settings, azure_credential
    from shared.call_control import CallControlClient
    from shared.intake import Intake
    from shared.records import RecordPublisher
    from shared.turns import TurnStore

    # One credential (one token cache, one close) for Azure OpenAI and storage, made only if either needs it.
    credential = None
    if settings.auth_mode == "entra" or settings.storage.uses_identity:
        credential = azure_credential(settings.managed_identity_client_id)
    auth = auth_from_settings(settings, credential)

    call_control = CallControlClient(settings.openai_endpoint, auth)
    intake = Intake(
        secrets=settings.webhook_secrets,
        rules=rules,
        call_control=call_control,
        deployment=settings.deployment,
        tools=tool_registry,
        max_call_duration_seconds=settings.max_call_duration_seconds,
    )
    turns = TurnStore.from_settings(settings.storage, credential=credential)
    publisher = RecordPublisher.from_settings(settings.storage, credential=credential)
    return Runtime(settings, rules, auth, call_control, intake, turns, publisher, credential)


async def get() -> Runtime:
    """The runtime of the running event loop, built on first use."""
    loop = asyncio.get_running_loop()
    runtime = _per_loop.get(loop)
    if runtime is None:
        settings, rules = load()
        runtime = _per_loop[loop] = _build(settings, rules)
    return runtime


async def call_control() -> CallControlClient:
    return (await get()).call_control


async def converse(call: dict) -> dict:
    from shared.conversation import converse as run

    rt = await get()
    with telemetry.live_call(call.get("profile_name")):
        return await run(
            call,
            endpoint=rt.settings.openai_endpoint,
            auth=rt.auth,
            call_control=rt.call_control,
            tools=tool_registry,
            turns=rt.turns,
        )


async def publish_record(call: dict, summary: dict | None, ended_by: str, transfer_target: str | None = None,
                         ended_at: str | None = None) -> str:
    from shared.records import build_record
    from shared.transcript import parse_iso

    rt = await get()
    turns = await rt.turns.load(call["call_id"]) if summary is None else []  # unused when there is a summary
    record = build_record(call, summary, ended_by, turns, transfer_target=transfer_target,
                          now=parse_iso(ended_at) if ended_at else None)
    return await rt.publisher.publish(record)


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
        await rt.publisher.publish(decision_record(
            declined["call_id"], declined["outcome"], declined["reason"], sip_status=declined["sip_status"],
            caller=declined["caller"], dialed=declined["dialed"], profile_name=declined["profile_name"],
            decided_at=declined["decided_at"]))
    except Exception as exc:  # noqa: BLE001 - the call is already declined; losing its record must not surface
        log.error("call %s: the record of the %s call was not published (%s)", declined["call_id"],
                  declined["outcome"], type(exc).__name__)


async def drain_declined(timeout: float = 10.0) -> None:
    """Wait (bounded) for declined-call records still being published (shutdown, tests)."""
    if _declined_tasks:
        await asyncio.wait(list(_declined_tasks), timeout=timeout)


def reset() -> None:
    """Forget cached configuration and clients (tests change the environment between cases)."""
    global _config
    _config = None
    _per_loop.clear()
