"""A small call-control server on a real socket for fault cases the emulator cannot produce.

It records every request and answers from a per-action script of (status, json body, delay) steps; the last
step repeats. It also tells requests' client sockets apart, to prove the client pools them.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Step:
    status: int = 200
    body: Any = None
    delay: float = 0.0


NOT_FOUND = Step(404, {"error": {"message": "No session found for the provided call_id",
                                 "type": "invalid_request_error", "param": None, "code": "call_id_not_found"}})
SERVER_ERROR = Step(500, {"error": {"message": "The server had an error", "type": "server_error",
                                   "param": None, "code": None}})


@dataclass
class Recorded:
    action: str
    call_id: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer: Any = None  # (host, port) of the client socket

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class StandIn:
    script: dict[str, list[Step]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        """Distinct client sockets seen: 1 for any number of requests on a kept-alive connection."""
        return len({r.peer for r in self.requests})

    def actions(self, name: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if name is None or r.action == name]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        action = request.match_info["action"]
        self.requests.append(Recorded(action, request.match_info["call_id"], request.path,
                                      dict(request.headers), await request.read(),
                                      request.transport.get_extra_info("peername") if request.transport else None))
        steps = self.script.get(action) or [Step()]
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        if step.delay:
            await asyncio.sleep(step.delay)
        if step.body is None:
            return web.Response(status=step.status, body=b"")
        return web.json_response(step.body, status=step.status)

    async def start(self, port: int = 0) -> StandIn:
        app = web.Application()
        app.router.add_post("/openai/v1/realtime/calls/{call_id}/{action}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
