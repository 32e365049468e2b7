"""Process-wide wiring of the core: settings, routing rules, credentials and the clients built on them.

Settings and routing rules are read and validated once, when the app is loaded, so a bad value stops the
app at start-up with a message naming the setting instead of failing on the first call. Network clients
are made lazily, once per event loop, and reused: the webhook path must not pay for a TLS handshake or a
token fetch per call.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.admission import Admission
from shared.routing import RoutingRules
from shared.settings import Settings
from shared.tools import registry as tool_registry

if TYPE_CHECKING:  # the real imports are deferred to _build/_preload (start-up cost)
    from shared.auth import ApiKeyAuth, EntraAuth
    from shared.call_control import CallControlClient
    from shared.intake import Intake
    from shared.records import RecordPublisher
    from shared.turns import TurnStore

_config: tuple[Settings, RoutingRules] | None = None
# This process's call count (MAX_CALLS_PER_INSTANCE): the webhook admits against it, converse keeps it.
_admission: Admission | None = None
_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Runtime] = weakref.WeakKeyDictionary()


def load() -> tuple[Settings, RoutingRules]:
    """Read and validate settings and routing rules; raises SettingsError / RoutingRulesError."""
    global _config, _admission
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
        _admission = Admission(settings.max_calls_per_instance)
        # In the background: the worker indexes the functions and starts taking requests meanwhile. A webhook that
        # arrives before the preload is done waits only for the module being imported (per-module import locks).
        threading.Thread(target=_preload_quietly, args=(settings,), name="switchboard-preload", daemon=True).start()
    return _config


def _preload_quietly(settings: Settings) -> None:
    try:
        _preload(settings)
    except Exception:  # the same import fails again, loudly, where the first call needs it
        logging.getLogger("switchboard.runtime").exception("preloading the client modules failed")


def _preload(settings: Settings) -> None:
    """Import every client module while the app starts, not while the first caller's phone rings.

    Measured cold on the dev machine: the storage SDKs alone cost ~170 ms and the conversation engine ~50 ms
    more; paid here, they land in the instance's start-up (hidden by always-ready instances) instead of in
    the first webhook's ring time or the first greeting's silence. It runs in a thread so that ``import
    function_app`` itself stays short (docs/performance.md, cold import).
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
        admission=admission(),
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


def admission() -> Admission:
    load()
    assert _admission is not None
    return _admission


async def call_control() -> CallControlClient:
    return (await get()).call_control


async def converse(call: dict) -> dict:
    from shared.conversation import converse as run

    rt = await get()
    count = admission()
    count.started(call["call_id"])
    try:
        return await run(
            call,
            endpoint=rt.settings.openai_endpoint,
            auth=rt.auth,
            call_control=rt.call_control,
            tools=tool_registry,
            turns=rt.turns,
        )
    finally:
        count.ended(call["call_id"])


async def publish_record(call: dict, summary: dict | None, ended_by: str, transfer_target: str | None = None,
                         ended_at: str | None = None) -> str:
    from shared.records import build_record
    from shared.transcript import parse_iso

    rt = await get()
    turns = await rt.turns.load(call["call_id"]) if summary is None else []  # unused when there is a summary
    record = build_record(call, summary, ended_by, turns, transfer_target=transfer_target,
                          now=parse_iso(ended_at) if ended_at else None)
    return await rt.publisher.publish(record)


def reset() -> None:
    """Forget cached configuration and clients (tests change the environment between cases)."""
    global _config, _admission
    _config = None
    _admission = None
    _per_loop.clear()
