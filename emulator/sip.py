"""SIP front door (UDP and TCP): a minimal UAS so that a real SIP client (e.g. sipp) can place the call.

INVITE -> 100 Trying -> webhook; accept -> 180 Ringing + 200 OK (SDP, PCMU), retransmitted over UDP until ACK;
reject -> the chosen final status; ring timeout -> 480; CANCEL -> 200 + 487; caller BYE -> 200 and the call ends;
/refer -> REFER to the caller, then BYE; /hangup -> BYE. Retransmitted requests get the last response again.
Only what the emulator needs of RFC 3261 is implemented: no authentication, no forking, no re-INVITE.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Optional

from .calls import RINGING
from .scenario import ScenarioError, find_by_dialed, find_by_name
from .util import mask_number

if TYPE_CHECKING:
    from .server import Emulator

log = logging.getLogger("emulator.sip")

T1, T2, TIMEOUT = 0.5, 4.0, 32.0
COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact", "l": "content-length",
           "c": "content-type", "k": "supported", "r": "refer-to", "b": "referred-by", "s": "subject"}
REASONS = {
    100: "Trying", 180: "Ringing", 200: "OK", 202: "Accepted", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here", 500: "Server Internal Error",
    501: "Not Implemented", 503: "Service Unavailable", 600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
}
# Headers never copied into the webhook's sip_headers (reference §3.1: authorization headers are excluded).
AUTH_HEADERS = {"authorization", "proxy-authorization"}


@dataclass
class SipMessage:
    start: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return not self.start.startswith("SIP/2.0")

    @property
    def method(self) -> str:
        return self.start.split(" ", 1)[0] if self.is_request else ""

    @property
    def status(self) -> int:
        return int(self.start.split(" ")[1]) if not self.is_request else 0

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if COMPACT.get(k.lower(), k.lower()) == name]

    def get(self, name: str, default: str = "") -> str:
        values = self.all(name)
        return values[0] if values else default

    @property
    def cseq(self) -> tuple[int, str]:
        num, _, method = self.get("cseq").partition(" ")
        return int(num or 0), method.strip()


def parse(data: bytes) -> SipMessage:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # header folding
            headers[-1] = (headers[-1][0], headers[-1][1] + " " + line.strip())
        elif ":" in line:
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
    msg = SipMessage(lines[0].strip(), headers, body)
    length = msg.get("content-length")
    if length.isdigit():
        msg.body = body[: int(length)]
    return msg


def serialize(start: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [start] + [f"{k}: {v}" for k, v in headers if k.lower() != "content-length"]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


_URI = re.compile(r"<?(sips?|tel):([^@;>]+)")


def uri_user(value: str) -> str:
    m = _URI.search(value)
    return m.group(2) if m else value


def contact_uri(value: str) -> str:
    m = re.search(r"<([^>]+)>", value)
    return m.group(1) if m else value.split(";")[0].strip()


@dataclass
class Dialog:
    """One INVITE dialog; also the call's `leg` (the emulator tells it about accept/reject/refer/hangup)."""

    server: "SipServer"
    invite: SipMessage
    send: Callable[[bytes], None]
    transport: str  # "UDP" | "TCP"
    to_tag: str = field(default_factory=lambda: secrets.token_hex(4))
    call_id: str = ""
    last_response: Optional[bytes] = None
    final_sent: bool = False
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    terminated: bool = False
    local_cseq: int = 0
    pending: dict[int, asyncio.Future] = field(default_factory=dict)
    tasks: set[asyncio.Task] = field(default_factory=set)

    @property
    def sip_call_id(self) -> str:
        return self.invite.get("call-id")

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ------------------------------------------------------------------ responses to the INVITE
    def response(self, request: SipMessage, status: int, extra: Optional[list[tuple[str, str]]] = None,
                 body: bytes = b"", reason: Optional[str] = None) -> bytes:
        to = request.get("to")
        if status != 100 and ";tag=" not in to:
            to = f"{to};tag={self.to_tag}"
        headers = [("Via", v) for v in request.all("via")]
        headers += [("From", request.get("from")), ("To", to), ("Call-ID", request.get("call-id")),
                    ("CSeq", request.get("cseq")), ("Server", "switchboard-emulator")]
        headers += extra or []
        return serialize(f"SIP/2.0 {status} {reason or REASONS.get(status, 'Unknown')}", headers, body)

    def respond_invite(self, status: int, extra: Optional[list[tuple[str, str]]] = None, body: bytes = b"") -> None:
        data = self.response(self.invite, status, extra, body)
        self.last_response = data
        self.send(data)
        if status >= 200:
            self.final_sent = True
            if self.transport == "UDP":
                self._spawn(self._retransmit_final(data))

    async def _retransmit_final(self, data: bytes) -> None:
        # RFC 3261 13.3.1.4 / 17.2.1: resend the final response until the ACK arrives (UDP only).
        interval, waited = T1, 0.0
        while waited < TIMEOUT and not self.acked.is_set():
            try:
                await asyncio.wait_for(self.acked.wait(), interval)
                return
            except asyncio.TimeoutError:
                waited += interval
                interval = min(interval * 2, T2)
                if not self.acked.is_set():
                    self.send(data)
        if not self.acked.is_set():
            log.info("sip %s no ACK for the final response", self.call_id)

    def _contact(self) -> str:
        return f"<sip:emulator@{self.server.host}:{self.server.port};transport={self.transport.lower()}>"

    def _sdp(self) -> bytes:
        h = self.server.host
        return (f"v=0\r\no=emulator 1 1 IN IP4 {h}\r\ns=switchboard-emulator\r\nc=IN IP4 {h}\r\nt=0 0\r\n"
                "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
                "a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n").encode()

    # ------------------------------------------------------------------ CallLeg
    async def on_accepted(self) -> None:
        self.respond_invite(180, [("Contact", self._contact())])
        self.respond_invite(200, [("Contact", self._contact()), ("Content-Type", "application/sdp"),
                                  ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY")], self._sdp())
        log.info("sip %s answered 200 OK", self.call_id)

    async def on_rejected(self, status_code: int) -> None:
        self.respond_invite(status_code)
        log.info("sip %s answered %d", self.call_id, status_code)

    async def on_expired(self, reason: str) -> None:
        if not self.final_sent:
            self.respond_invite(480)
            log.info("sip %s answered 480 (%s)", self.call_id, reason)

    async def on_refer(self, target_uri: str) -> None:
        self._spawn(self._request("REFER", [("Refer-To", f"<{target_uri}>"), ("Referred-By", self._contact())]))

    async def on_platform_hangup(self, reason: str) -> None:
        if not self.terminated:
            self.terminated = True
            self._spawn(self._request("BYE", []))

    # ------------------------------------------------------------------ in-dialog requests we send
    async def _request(self, method: str, extra: list[tuple[str, str]]) -> Optional[int]:
        if self.transport == "UDP":
            # Wait for the dialog to be confirmed (ACK) before sending in-dialog requests.
            try:
                await asyncio.wait_for(self.acked.wait(), TIMEOUT)
            except asyncio.TimeoutError:
                pass
        self.local_cseq += 1
        cseq = self.local_cseq
        to_value = self.invite.get("to")
        frm = f"{to_value};tag={self.to_tag}" if ";tag=" not in to_value else to_value
        target = contact_uri(self.invite.get("contact")) or uri_user(self.invite.get("from"))
        branch = "z9hG4bK" + secrets.token_hex(8)
        headers = [("Via", f"SIP/2.0/{self.transport} {self.server.host}:{self.server.port};branch={branch};rport"),
                   ("Max-Forwards", "70"), ("From", frm), ("To", self.invite.get("from")), ("Call-ID", self.sip_call_id),
                   ("CSeq", f"{cseq} {method}"), ("Contact", self._contact())] + extra
        data = serialize(f"{method} {target} SIP/2.0", headers)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self.pending[cseq] = fut
        self.send(data)
        log.info("sip %s sent %s", self.call_id, method)
        interval, waited = T1, 0.0
        try:
            while waited < TIMEOUT:
                try:
                    status = await asyncio.wait_for(asyncio.shield(fut), interval if self.transport == "UDP" else TIMEOUT)
                    log.info("sip %s %s answered %d", self.call_id, method, status)
                    return status
                except asyncio.TimeoutError:
                    waited += interval if self.transport == "UDP" else TIMEOUT
                    interval = min(interval * 2, T2)
                    if self.transport == "UDP":
                        self.send(data)
            return None
        finally:
            self.pending.pop(cseq, None)

    def on_response(self, msg: SipMessage) -> None:
        num, _ = msg.cseq
        fut = self.pending.get(num)
        if fut is not None and not fut.done() and msg.status >= 200:
            fut.set_result(msg.status)


class SipServer:
    def __init__(self, emu: "Emulator", host: str, port: int) -> None:
        self.emu = emu
        self.host = host
        self.port = port
        self.dialogs: dict[str, Dialog] = {}
        self._udp: Optional[asyncio.DatagramTransport] = None
        self._tcp: Optional[asyncio.base_events.Server] = None
        self._conns: set[asyncio.StreamWriter] = set()
        # Tasks started from dispatch(): the loop keeps only weak references to tasks, so hold them here.
        self._tasks: set[asyncio.Task] = set()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        server = self

        class _Udp(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
                send = lambda d: server._udp.sendto(d, addr) if server._udp else None  # noqa: E731
                server.dispatch(data, send, "UDP")

        # UDP first (port 0 picks an ephemeral port), then TCP on the same number.
        for _ in range(5):
            self._udp, _p = await loop.create_datagram_endpoint(_Udp, local_addr=(self.host, self.port))
            port = self._udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._tcp_conn, self.host, port)
                self.port = port
                break
            except OSError:
                self._udp.close()
                if self.port:
                    raise
        log.info("sip listening udp+tcp %s:%d", self.host, self.port)

    async def stop(self) -> None:
        pending = [t for d in self.dialogs.values() for t in d.tasks] + list(self._tasks)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._udp:
            self._udp.close()
        for w in list(self._conns):
            w.close()
        if self._tcp:
            self._tcp.close()
            await self._tcp.wait_closed()

    async def _tcp_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)

        def send(data: bytes) -> None:
            if not writer.is_closing():
                writer.write(data)

        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.strip():
                    continue  # keep-alive CRLFs
                msg = parse(head)
                length = int(msg.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                self.dispatch(head + body, send, "TCP")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._conns.discard(writer)
            writer.close()

    # ------------------------------------------------------------------ dispatch
    def dispatch(self, data: bytes, send: Callable[[bytes], None], transport: str) -> None:
        if not data.strip():
            return
        try:
            msg = parse(data)
        except (ValueError, IndexError):
            log.info("sip unparseable message dropped")
            return
        dialog = self.dialogs.get(msg.get("call-id"))
        if not msg.is_request:
            if dialog is not None:
                dialog.on_response(msg)
            return
        method = msg.method
        if method == "INVITE":
            if dialog is not None:
                if msg.cseq == dialog.invite.cseq:
                    # Retransmitted INVITE: same answer again, no second call.
                    if dialog.last_response:
                        send(dialog.last_response)
                    return
                # re-INVITE (e.g. session refresh): accept with the same SDP.
                send(dialog.response(msg, 200, [("Contact", dialog._contact()), ("Content-Type", "application/sdp")], dialog._sdp()))
                return
            # Register the dialog now, so that a retransmission arriving before the task runs finds it.
            dialog = Dialog(self, msg, send, transport)
            self.dialogs[dialog.sip_call_id] = dialog
            dialog.respond_invite(100)
            self._spawn(self._new_invite(dialog))
        elif method == "ACK":
            if dialog is not None:
                dialog.acked.set()
        elif method == "CANCEL":
            if dialog is None:
                send(_stateless(msg, 481))
                return
            send(dialog.response(msg, 200))
            if not dialog.final_sent:
                dialog.respond_invite(487)
                call = self.emu.calls.get(dialog.call_id)
                if call is not None and call.state == RINGING:
                    self._spawn(self.emu.caller_hangup(call.call_id, "caller_cancelled", notify_leg=False))
        elif method == "BYE":
            if dialog is None:
                send(_stateless(msg, 481))
                return
            send(dialog.response(msg, 200))
            dialog.acked.set()
            if not dialog.terminated:
                dialog.terminated = True
                log.info("sip %s caller BYE", dialog.call_id)
                call = self.emu.calls.get(dialog.call_id)
                if call is not None and not call.is_final:
                    self._spawn(self.emu.caller_hangup(call.call_id, "caller_hangup", notify_leg=False))
        elif method == "OPTIONS":
            send(_stateless(msg, 200, [("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY")]))
        elif method in ("NOTIFY", "INFO", "UPDATE"):
            send(_stateless(msg, 200) if dialog else _stateless(msg, 481))
        else:
            send(_stateless(msg, 501))

    async def _new_invite(self, dialog: Dialog) -> None:
        msg, transport = dialog.invite, dialog.transport
        caller, dialed = uri_user(msg.get("from")), uri_user(msg.get("to"))
        try:
            name = msg.get("x-emulator-scenario")
            scenario = (find_by_name(name, self.emu.config.scenario_dir) if name
                        else find_by_dialed(dialed, self.emu.config.scenario_dir))
        except ScenarioError as exc:
            log.info("sip INVITE for unknown scenario: %s", exc)
            dialog.respond_invite(400, [("Warning", f'399 emulator "{str(exc).splitlines()[0][:120]}"')])
            return
        wanted = {"from", "to", "call-id"}
        sip_headers = [{"name": _canonical(k), "value": v} for k, v in msg.headers
                       if (COMPACT.get(k.lower(), k.lower()) in wanted or k.lower().startswith("x-"))
                       and k.lower() not in AUTH_HEADERS]
        dialog.call_id = await self.emu.place_call(scenario, caller=caller, dialed=dialed, leg=dialog,
                                                   sip_headers=sip_headers, source="sip")
        log.info("sip INVITE %s from=%s to=%s over %s -> call %s", dialog.sip_call_id[:12], mask_number(caller),
                 mask_number(dialed), transport, dialog.call_id)


def _canonical(name: str) -> str:
    full = COMPACT.get(name.lower(), name)
    return {"call-id": "Call-ID", "from": "From", "to": "To"}.get(full.lower(), name)


def _stateless(request: SipMessage, status: int, extra: Optional[list[tuple[str, str]]] = None) -> bytes:
    to = request.get("to")
    if ";tag=" not in to and status != 100:
        to = f"{to};tag={secrets.token_hex(4)}"
    headers = [("Via", v) for v in request.all("via")]
    headers += [("From", request.get("from")), ("To", to), ("Call-ID", request.get("call-id")), ("CSeq", request.get("cseq"))]
    return serialize(f"SIP/2.0 {status} {REASONS.get(status, 'Unknown')}", headers + (extra or []))
