"""SIP front door (UDP and TCP): a minimal UAS so that a real SIP client (e.g. sipp) can place the call.

INVITE -> 100 Trying -> webhook; accept -> 180 Ringing + 200 OK (SDP, PCMU), retransmitted until ACK (a call whose
200 is never ACKed ends with a BYE after 64*T1); reject -> the chosen final status; ring timeout -> 480;
CANCEL -> 200 + 487; caller BYE -> 200 and the call ends; /refer -> REFER to the caller, then BYE; /hangup -> BYE.

RFC 3261 (https://www.rfc-editor.org/rfc/rfc3261) parts implemented, behaviour documented in docs/emulator.md:
- a malformed request is answered 400 with a reason phrase naming the problem (§8.1.1 mandatory headers, §8.1.1.5
  CSeq, §18.3 Content-Length) and creates nothing; a malformed ACK or response is dropped. Either way the log gets
  one WARNING line with the peer address and the escaped reason, never a traceback;
- server transactions are matched by top Via branch + sent-by + method (§17.2.3), so a retransmission is answered
  from its transaction and a new transaction is a new request (a reused Call-ID included);
- dialogs are matched by Call-ID + local tag + remote tag (§12); a second INVITE without a To tag that collides with a
  pending INVITE is answered 482 (merged request, §8.2.2.2) or 500 + Retry-After (§14.2);
- 2xx retransmission from T1 doubling up to T2 and the BYE after 64*T1 without an ACK (§13.3.1.4); non-2xx
  retransmission over UDP until the ACK (§17.2.1); in-dialog requests we send retransmit the same way (§17.1.2.2).
Not implemented: authentication, forking, re-INVITE negotiation (answered 200 with the same SDP), real RTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .calls import ACCEPTED, RINGING
from .scenario import ScenarioError, find_by_dialed, find_by_name
from .util import mask_number

if TYPE_CHECKING:
    from .server import Emulator

log = logging.getLogger("emulator.sip")

T2 = 4.0  # RFC 3261 §17.1.2.2: the cap of the retransmission interval (T1 comes from EmulatorConfig.sip_t1_s)
MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7: branches of RFC 3261 peers start with it
MAX_TCP_BODY = 65535  # a larger Content-Length on a stream is refused (413) instead of being read into memory
MAX_TCP_HEAD = 65536  # a longer header section on a stream drops the connection
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY"
COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact", "l": "content-length",
           "c": "content-type", "k": "supported", "r": "refer-to", "b": "referred-by", "s": "subject"}
CANONICAL = {"call-id": "Call-ID", "cseq": "CSeq", "from": "From", "to": "To", "via": "Via",
             "max-forwards": "Max-Forwards", "content-length": "Content-Length"}
# RFC 3261 §8.1.1: every request carries these; a response carries all of them but Max-Forwards.
MANDATORY = ("to", "from", "call-id", "cseq", "via", "max-forwards")
SINGLE = ("to", "from", "call-id", "cseq", "max-forwards", "content-length")
REASONS = {
    100: "Trying", 180: "Ringing", 200: "OK", 202: "Accepted", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 413: "Request Entity Too Large", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 500: "Server Internal Error", 501: "Not Implemented", 503: "Service Unavailable",
    505: "Version Not Supported", 600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
}
# Headers never copied into the webhook's sip_headers (docs/platform.md §3.1: authorization headers are excluded).
AUTH_HEADERS = {"authorization", "proxy-authorization"}

_TOKEN = r"[A-Za-z0-9.!%*_+`'~-]+"
_REQUEST_LINE = re.compile(rf"({_TOKEN}) (\S+) SIP/(\S+)")
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?")
_HEADER_NAME = re.compile(_TOKEN)
_CSEQ = re.compile(rf"([0-9]{{1,10}})[ \t]+({_TOKEN})")
_VIA = re.compile(r"SIP\s*/\s*2\.0\s*/\s*([A-Za-z]+)\s+([^;\s,]+)\s*(;[^,]*)?")
_TAG = re.compile(r";\s*tag\s*=\s*([^;,\s]+)", re.I)
_BRANCH = re.compile(r";\s*branch\s*=\s*([^;,\s]+)", re.I)
_BAD_CHARS = re.compile(r"[\x00\r\n]")
# ASCII digits only: str.isdigit() also takes "²" or "١", which int() then refuses.
_NUMBER = re.compile(r"[0-9]{1,18}")


def _escape(value: str, limit: int = 60) -> str:
    """A value from the wire as it may appear in a log line: phone numbers masked, quoted, control chars escaped."""
    return repr(mask_number(value[:limit]))


class Malformed(Exception):
    """What is wrong with a message: the status to answer a request with and a reason phrase naming the problem."""

    def __init__(self, reason: str, detail: str = "", status: int = 400) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason  # a fixed text: it goes into the status line of our response
        self.detail = detail  # already escaped, for the log only


@dataclass
class SipMessage:
    start: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    kind: str = ""  # "request" | "response" | "" (start line not understood)
    problem: Malformed | None = None

    @property
    def is_request(self) -> bool:
        return self.kind == "request"

    @property
    def method(self) -> str:
        return self.start.split(" ", 1)[0] if self.is_request else ""

    @property
    def status(self) -> int:
        return int(self.start.split(" ")[1]) if self.kind == "response" else 0

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if COMPACT.get(k.lower(), k.lower()) == name]

    def get(self, name: str, default: str = "") -> str:
        values = self.all(name)
        return values[0] if values else default

    @property
    def cseq(self) -> tuple[int, str]:
        m = _CSEQ.fullmatch(self.get("cseq"))
        return (int(m.group(1)), m.group(2)) if m else (0, "")

    @property
    def top_via(self) -> str:
        vias = self.all("via")
        return vias[0].split(",", 1)[0].strip() if vias else ""

    @property
    def branch(self) -> str:
        m = _BRANCH.search(self.top_via)
        return m.group(1) if m else ""

    @property
    def sent_by(self) -> str:
        m = _VIA.fullmatch(self.top_via)
        return m.group(2).lower() if m else ""

    @property
    def from_tag(self) -> str:
        return _tag(self.get("from"))

    @property
    def to_tag(self) -> str:
        return _tag(self.get("to"))


def _tag(value: str) -> str:
    # The tag is a header parameter: after the closing '>' of a name-addr (a URI parameter is not a tag).
    m = _TAG.search(value.rsplit(">", 1)[-1])
    return m.group(1) if m else ""


def parse(data: bytes, datagram: bool = True) -> SipMessage:
    """Parse one message. Never raises: what RFC 3261 calls malformed is reported in `problem`.

    `datagram`: the bytes are one whole UDP datagram, so a Content-Length larger than what follows the header
    section is an error (RFC 3261 §18.3); on a stream the caller has already read exactly Content-Length bytes.
    """
    head, _, body = data.lstrip(b"\r\n").partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    start = lines[0].strip()
    msg = SipMessage(start, [], body)
    request = _REQUEST_LINE.fullmatch(start)
    if _STATUS_LINE.fullmatch(start):
        msg.kind = "response"
    elif request:
        msg.kind = "request"
    else:
        msg.problem = Malformed("Bad Start Line", _escape(start))
        return msg
    headers = msg.headers
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # header folding (RFC 3261 §7.3.1)
            headers[-1] = (headers[-1][0], headers[-1][1] + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon or not _HEADER_NAME.fullmatch(name.strip()):
            msg.problem = msg.problem or Malformed("Malformed Header Line", _escape(line))
            continue
        headers.append((name.strip(), value.strip()))
    if msg.problem:
        return msg
    msg.problem = _check(msg, request, datagram)
    return msg


def _check(msg: SipMessage, request: re.Match[str] | None, datagram: bool) -> Malformed | None:
    if request and request.group(3) != "2.0":
        return Malformed("Version Not Supported", _escape(request.group(3)), 505)
    for name in MANDATORY if msg.is_request else MANDATORY[:-1]:
        if not msg.get(name):
            return Malformed(f"Missing {CANONICAL[name]} Header")
    for name in SINGLE:
        if len(msg.all(name)) > 1:
            return Malformed(f"Duplicate {CANONICAL[name]} Header")
    for name, value in msg.headers:
        if _BAD_CHARS.search(value):
            return Malformed("Bad Character In Header", _escape(name))
    cseq = _CSEQ.fullmatch(msg.get("cseq"))
    if cseq is None or int(cseq.group(1)) >= 2**31:  # RFC 3261 §8.1.1.5: a 32-bit number below 2**31, then a method
        return Malformed("Bad CSeq", _escape(msg.get("cseq")))
    if msg.is_request and cseq.group(2) != msg.method:
        return Malformed("CSeq Method Does Not Match Request", _escape(msg.get("cseq")))
    if not _VIA.fullmatch(msg.top_via):
        return Malformed("Bad Via", _escape(msg.top_via))
    if msg.is_request and not _NUMBER.fullmatch(msg.get("max-forwards")):
        return Malformed("Bad Max-Forwards", _escape(msg.get("max-forwards")))
    if msg.all("content-length"):
        length = msg.get("content-length")
        if not _NUMBER.fullmatch(length):
            return Malformed("Bad Content-Length", _escape(length))
        if datagram and int(length) > len(msg.body):
            return Malformed("Content-Length Exceeds Datagram", f"{length[:12]} > {len(msg.body)}")
        msg.body = msg.body[: int(length)]  # RFC 3261 §18.3: bytes after the body are discarded
    return None


def serialize(start: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [start] + [f"{k}: {v}" for k, v in headers if k.lower() != "content-length"]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def build_response(request: SipMessage, status: int, to_tag: str, extra: list[tuple[str, str]] | None = None,
                   body: bytes = b"", reason: str | None = None) -> bytes:
    """A response that copies Via, From, To, Call-ID and CSeq (RFC 3261 §8.2.6.2), whatever of them the request has."""
    to = request.get("to")
    if status != 100 and to and not _tag(to):
        to = f"{to};tag={to_tag}"
    # The 400 to a "Bad Character In Header" request must not echo that character: a bare CR or LF copied into our
    # response would let the request inject header lines into it. Such a value is left out.
    headers = [("Via", v) for v in request.all("via") if not _BAD_CHARS.search(v)]
    headers += [(CANONICAL[n], v) for n, v in (("from", request.get("from")), ("to", to),
                                               ("call-id", request.get("call-id")), ("cseq", request.get("cseq")))
                if v and not _BAD_CHARS.search(v)]
    headers.append(("Server", "switchboard-emulator"))
    return serialize(f"SIP/2.0 {status} {reason or REASONS.get(status, 'Unknown')}", headers + (extra or []), body)


_URI = re.compile(r"<?(sips?|tel):([^@;>]+)")


def uri_user(value: str) -> str:
    m = _URI.search(value)
    return m.group(2) if m else value


def contact_uri(value: str) -> str:
    m = re.search(r"<([^>]+)>", value)
    return m.group(1) if m else value.split(";")[0].strip()


def _peer(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return "unknown peer"


@dataclass
class ServerTransaction:
    """One server transaction (RFC 3261 §17.2): its request, its last response, and the non-2xx retransmission."""

    server: SipServer
    key: tuple
    request: SipMessage
    send: Callable[[bytes], None]
    transport: str  # "UDP" | "TCP"
    to_tag: str = field(default_factory=lambda: secrets.token_hex(4))
    last_response: bytes | None = None
    final_status: int = 0
    acked: asyncio.Event = field(default_factory=asyncio.Event)  # the ACK of a non-2xx final response
    dialog: Dialog | None = None  # the call leg an initial INVITE created

    @property
    def method(self) -> str:
        return self.request.method

    def respond(self, status: int, extra: list[tuple[str, str]] | None = None, body: bytes = b"",
                reason: str | None = None) -> bytes:
        data = build_response(self.request, status, self.to_tag, extra, body, reason)
        self.last_response = data
        self.send(data)
        if status >= 200 and not self.final_status:
            self.final_status = status
            # Kept 64*T1 after the final response (Timers H, J and RFC 6026's L): a retransmitted request gets this
            # response again, and its ACK or CANCEL still finds it.
            self.server.expire_later(self, 64 * self.server.t1)
            if self.method == "INVITE" and status >= 300 and self.transport == "UDP":
                self.server.spawn(self._retransmit_non_2xx(data))
        return data

    async def _retransmit_non_2xx(self, data: bytes) -> None:
        # RFC 3261 §17.2.1: Timer G from T1, doubling up to T2, until the ACK; Timer H (64*T1) gives up.
        await _retransmit_until(self.acked, lambda: self.send(data), self.server.t1)


async def _retransmit_until(done: asyncio.Event, resend: Callable[[], None], t1: float) -> bool:
    """Resend at T1, 2*T1, 4*T1 ... (capped at T2) until `done` is set; False when 64*T1 passed without it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 64 * t1
    interval = t1
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return done.is_set()
        try:
            await asyncio.wait_for(done.wait(), min(interval, remaining))
            return True
        except TimeoutError:
            if loop.time() >= deadline:
                return done.is_set()
            resend()
            interval = min(interval * 2, T2)


@dataclass
class Dialog:
    """One INVITE dialog (UAS side); also the call's `leg` (the emulator tells it about accept/reject/refer/hangup)."""

    server: SipServer
    invite_tx: ServerTransaction
    transport: str  # "UDP" | "TCP"
    call_id: str = ""
    acked: asyncio.Event = field(default_factory=asyncio.Event)  # the ACK of our 2xx arrived
    # Set by the ACK, or when 64*T1 passed without one: only then may we send BYE/REFER (RFC 3261 §15).
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)
    terminated: bool = False
    cancelled: bool = False
    local_cseq: int = 0
    remote_cseq: int = 0

    def __post_init__(self) -> None:
        self.remote_cseq = self.invite.cseq[0]

    @property
    def invite(self) -> SipMessage:
        return self.invite_tx.request

    @property
    def send(self) -> Callable[[bytes], None]:
        return self.invite_tx.send

    @property
    def local_tag(self) -> str:
        return self.invite_tx.to_tag

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.sip_call_id, self.local_tag, self.invite.from_tag)

    @property
    def sip_call_id(self) -> str:
        return self.invite.get("call-id")

    @property
    def final_sent(self) -> bool:
        return bool(self.invite_tx.final_status)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.server.spawn(coro)

    # ------------------------------------------------------------------ responses to the INVITE
    def respond_invite(self, status: int, extra: list[tuple[str, str]] | None = None, body: bytes = b"",
                       reason: str | None = None) -> None:
        if self.final_sent:
            return
        data = self.invite_tx.respond(status, extra, body, reason)
        if 200 <= status < 300:
            self._spawn(self._retransmit_2xx(data))
        elif status >= 300:
            self.server.forget_dialog(self)  # a non-2xx final response ends the early dialog

    async def _retransmit_2xx(self, data: bytes) -> None:
        # RFC 3261 §13.3.1.4: the UAS core resends the 2xx from T1, doubling up to T2, until the ACK, whatever the
        # transport. After 64*T1 without one "the dialog is confirmed, but the session SHOULD be terminated" (BYE).
        if await _retransmit_until(self.acked, lambda: self.send(data), self.server.t1):
            return
        self.confirmed.set()
        log.warning("sip %s no ACK for the 200 OK within %gs: ending the call with BYE", self.call_id,
                    64 * self.server.t1)
        if not self.terminated:
            self.terminated = True
            self._spawn(self._request("BYE", []))
        call = self.server.emu.calls.get(self.call_id)
        if call is not None and call.state == ACCEPTED:
            # The platform's side ends like a caller hang-up: sidebands drop, /hangup answers 404.
            await self.server.emu.caller_hangup(call.call_id, "ack_timeout", notify_leg=False)

    def on_ack(self) -> None:
        self.acked.set()
        self.confirmed.set()

    def _contact(self) -> str:
        return f"<sip:emulator@{self.server.host}:{self.server.port};transport={self.transport.lower()}>"

    def sdp(self) -> bytes:
        h = self.server.host
        return (f"v=0\r\no=emulator 1 1 IN IP4 {h}\r\ns=switchboard-emulator\r\nc=IN IP4 {h}\r\nt=0 0\r\n"
                "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
                "a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n").encode()

    def answer_headers(self) -> list[tuple[str, str]]:
        return [("Contact", self._contact()), ("Content-Type", "application/sdp"), ("Allow", ALLOW)]

    # ------------------------------------------------------------------ CallLeg
    async def on_accepted(self) -> None:
        self.respond_invite(180, [("Contact", self._contact())])
        self.respond_invite(200, self.answer_headers(), self.sdp())
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

    # ------------------------------------------------------------------ requests from the caller
    def on_cancel(self) -> None:
        """CANCEL (or BYE) before the final response: 487 to the INVITE, and the ringing call expires."""
        if self.final_sent:
            return
        self.cancelled = True
        self.respond_invite(487)
        call = self.server.emu.calls.get(self.call_id)
        if call is not None and call.state == RINGING:
            self.server.spawn(self.server.emu.caller_hangup(call.call_id, "caller_cancelled", notify_leg=False))

    def on_bye(self) -> None:
        self.server.forget_dialog(self)
        if not self.final_sent:
            self.on_cancel()
            return
        self.on_ack()  # a BYE proves the caller has the 2xx: stop resending it
        if not self.terminated:
            self.terminated = True
            log.info("sip %s caller BYE", self.call_id)
            call = self.server.emu.calls.get(self.call_id)
            if call is not None and not call.is_final:
                self.server.spawn(self.server.emu.caller_hangup(call.call_id, "caller_hangup", notify_leg=False))

    # ------------------------------------------------------------------ in-dialog requests we send
    async def _request(self, method: str, extra: list[tuple[str, str]]) -> int | None:
        t1 = self.server.t1
        # RFC 3261 §15: no BYE on a confirmed dialog before its ACK arrived or 64*T1 passed (set by _retransmit_2xx).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.confirmed.wait(), 64 * t1 + 1)
        self.local_cseq += 1
        to_value = self.invite.get("to")
        frm = f"{to_value};tag={self.local_tag}" if not _tag(to_value) else to_value
        target = contact_uri(self.invite.get("contact")) or uri_user(self.invite.get("from"))
        branch = MAGIC_COOKIE + secrets.token_hex(8)
        headers = [
            ("Via", f"SIP/2.0/{self.transport} {self.server.host}:{self.server.port};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", frm),
            ("To", self.invite.get("from")),
            ("Call-ID", self.sip_call_id),
            ("CSeq", f"{self.local_cseq} {method}"),
            ("Contact", self._contact()),
        ] + extra
        data = serialize(f"{method} {target} SIP/2.0", headers)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        answered = asyncio.Event()
        fut.add_done_callback(lambda _f: answered.set())
        self.server.client_transactions[branch] = fut
        self.send(data)
        log.info("sip %s sent %s", self.call_id, method)
        try:
            # RFC 3261 §17.1.2.2: Timer E resends over UDP from T1 doubling up to T2; Timer F gives up at 64*T1.
            if self.transport == "UDP":
                await _retransmit_until(answered, lambda: self.send(data), t1)
            else:
                await asyncio.wait_for(answered.wait(), 64 * t1)
        except TimeoutError:
            pass
        finally:
            self.server.client_transactions.pop(branch, None)
            if method == "BYE":
                self.server.forget_dialog(self)  # our BYE ends the dialog, answered or not (RFC 3261 §15.1.1)
        if not fut.done():
            log.info("sip %s %s got no final response", self.call_id, method)
            return None
        log.info("sip %s %s answered %d", self.call_id, method, fut.result())
        return fut.result()


def transaction_key(msg: SipMessage, method: str | None = None) -> tuple:
    """RFC 3261 §17.2.3: top Via branch + sent-by + method (an ACK's is INVITE; CANCEL passes method="INVITE")."""
    method = method or ("INVITE" if msg.method == "ACK" else msg.method)
    branch = msg.branch
    if branch.startswith(MAGIC_COOKIE):
        return (branch, msg.sent_by, method)
    # An RFC 2543 peer's branch is not unique: match on what identifies its request instead.
    return ("rfc2543", msg.start.split(" ")[1], msg.from_tag, msg.get("call-id"), msg.cseq[0], msg.top_via, method)


class SipServer:
    def __init__(self, emu: Emulator, host: str, port: int) -> None:
        self.emu = emu
        self.host = host
        self.port = port
        self.t1 = float(emu.config.sip_t1_s)
        self.transactions: dict[tuple, ServerTransaction] = {}
        self.dialogs: dict[tuple[str, str, str], Dialog] = {}  # (Call-ID, our tag, the caller's tag)
        self.client_transactions: dict[str, asyncio.Future[int]] = {}  # our requests' branch -> final status
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        # Tasks started from dispatch(): the loop keeps only weak references to tasks, so hold them here.
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def expire_later(self, tx: ServerTransaction, delay: float) -> None:
        def _expire() -> None:
            self._timers.discard(handle)
            if self.transactions.get(tx.key) is tx:
                del self.transactions[tx.key]

        handle = asyncio.get_running_loop().call_later(delay, _expire)
        self._timers.add(handle)

    def forget_dialog(self, dialog: Dialog) -> None:
        if self.dialogs.get(dialog.key) is dialog:
            del self.dialogs[dialog.key]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        server = self

        class _Udp(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple) -> None:
                send = lambda d: server._udp.sendto(d, addr) if server._udp else None  # noqa: E731
                server.dispatch(data, send, "UDP", addr)

        # UDP first (port 0 picks an ephemeral port), then TCP on the same number.
        for _ in range(5):
            self._udp, _p = await loop.create_datagram_endpoint(_Udp, local_addr=(self.host, self.port))
            port = self._udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._tcp_conn, self.host, port, limit=MAX_TCP_HEAD)
                self.port = port
                break
            except OSError:
                self._udp.close()
                if self.port:
                    raise
        log.info("sip listening udp+tcp %s:%d", self.host, self.port)

    async def stop(self) -> None:
        for handle in self._timers:
            handle.cancel()
        pending = list(self._tasks)
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
        peer = writer.get_extra_info("peername")

        def send(data: bytes) -> None:
            if not writer.is_closing():
                writer.write(data)

        head = b""
        try:
            while True:
                head = b""
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.strip():
                    continue  # keep-alive CRLFs (RFC 5626 §3.5.1)
                # On a stream, Content-Length frames the message (RFC 3261 §18.3); without it there is no body.
                lengths = parse(head, datagram=False).all("content-length")
                length = lengths[0] if lengths else "0"
                if not _NUMBER.fullmatch(length) or int(length) > MAX_TCP_BODY:
                    # Framing is lost (or the body is refused): answer, then drop the connection.
                    if _NUMBER.fullmatch(length):
                        self._malformed(parse(head, datagram=False), send, "TCP", peer,
                                        Malformed("Request Entity Too Large", _escape(length), 413))
                    else:
                        self.dispatch(head, send, "TCP", peer)
                    break
                body = await reader.readexactly(int(length)) if int(length) else b""
                self.dispatch(head + body, send, "TCP", peer)
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip() or head:
                log.warning("sip truncated message from %s over TCP: connection closed after %d bytes",
                            _peer(peer), len(head) + len(exc.partial))
        except asyncio.LimitOverrunError:
            log.warning("sip header section from %s over TCP is larger than %d bytes: connection dropped",
                        _peer(peer), MAX_TCP_HEAD)
        except ConnectionError:
            pass
        finally:
            self._conns.discard(writer)
            writer.close()

    # ------------------------------------------------------------------ dispatch
    def dispatch(self, data: bytes, send: Callable[[bytes], None], transport: str, peer: Any = None) -> None:
        if not data.strip():
            return
        msg = parse(data, datagram=transport == "UDP")
        if msg.problem is not None:
            self._malformed(msg, send, transport, peer, msg.problem)
            return
        if not msg.is_request:
            fut = self.client_transactions.get(msg.branch)
            if fut is not None and not fut.done() and msg.status >= 200:
                fut.set_result(msg.status)
            return
        if msg.method == "ACK":
            self._on_ack(msg)
            return
        tx = self.transactions.get(transaction_key(msg))
        if tx is not None:
            # A retransmission (RFC 3261 §17.2.3 match): the transaction answers it with its last response.
            if tx.last_response is not None:
                send(tx.last_response)
            return
        tx = ServerTransaction(self, transaction_key(msg), msg, send, transport)
        self.transactions[tx.key] = tx
        handler = {"INVITE": self._on_invite, "CANCEL": self._on_cancel, "BYE": self._on_bye}.get(msg.method)
        if handler is not None:
            handler(tx)
        elif msg.method == "OPTIONS":
            tx.respond(200, [("Allow", ALLOW)])
        elif msg.method in ("NOTIFY", "INFO", "UPDATE"):
            tx.respond(200 if self._dialog_of(msg) else 481)
        else:
            tx.respond(501, [("Allow", ALLOW)])

    def _malformed(self, msg: SipMessage, send: Callable[[bytes], None], transport: str, peer: Any,
                   problem: Malformed) -> None:
        """One WARNING line, and a response when the message is a request that can have one (not an ACK)."""
        answer = msg.is_request and msg.method != "ACK"
        what = f"{msg.method} request" if msg.is_request else "response" if msg.kind == "response" else "message"
        log.warning("sip malformed %s from %s over %s: %s%s%s", what, _peer(peer), transport, problem.reason,
                    f" {problem.detail}" if problem.detail else "",
                    f"; answered {problem.status}" if answer else "; dropped")
        if answer:
            send(build_response(msg, problem.status, secrets.token_hex(4), reason=problem.reason))

    def _dialog_of(self, msg: SipMessage) -> Dialog | None:
        return self.dialogs.get((msg.get("call-id"), msg.to_tag, msg.from_tag))

    def _on_ack(self, msg: SipMessage) -> None:
        tx = self.transactions.get(transaction_key(msg))
        if tx is not None and tx.final_status >= 300:
            tx.acked.set()  # the ACK of a non-2xx final response belongs to the INVITE transaction
            return
        dialog = self._dialog_of(msg)
        if dialog is not None and msg.cseq[0] == dialog.invite.cseq[0]:
            dialog.on_ack()

    def _on_invite(self, tx: ServerTransaction) -> None:
        msg = tx.request
        if msg.to_tag:
            self._on_reinvite(tx)
            return
        for other in self.transactions.values():
            if (other is not tx and other.method == "INVITE" and not other.final_status
                    and other.request.get("call-id") == msg.get("call-id") and other.request.from_tag == msg.from_tag):
                if other.request.cseq == msg.cseq:
                    # RFC 3261 §8.2.2.2: same From tag, Call-ID and CSeq as a pending INVITE but another transaction
                    # is a merged request (it came twice, by two paths): 482, and the first INVITE goes on.
                    tx.respond(482)
                else:
                    # A second INVITE from the same caller and Call-ID while the first is unanswered: RFC 3261 §14.2's
                    # answer to an INVITE that overlaps a pending one (491 is only for glare with our own INVITE).
                    tx.respond(500, [("Retry-After", str(random.randint(0, 10)))])
                log.info("sip INVITE %r overlaps a pending INVITE: answered %d", msg.get("call-id")[:16],
                         tx.final_status)
                return
        dialog = Dialog(self, tx, tx.transport)
        tx.dialog = dialog
        self.dialogs[dialog.key] = dialog
        tx.respond(100)
        self.spawn(self._new_invite(dialog))

    def _on_reinvite(self, tx: ServerTransaction) -> None:
        dialog = self._dialog_of(tx.request)
        if dialog is None:
            tx.respond(481)
        elif not dialog.final_sent or tx.request.cseq[0] <= dialog.remote_cseq:
            # RFC 3261 §14.2: an INVITE while the initial one is unanswered gets 500 + Retry-After; §12.2.2: so does a
            # request whose CSeq is not above the last one.
            tx.respond(500, [("Retry-After", str(random.randint(0, 10)))])
        else:
            dialog.remote_cseq = tx.request.cseq[0]
            tx.respond(200, dialog.answer_headers(), dialog.sdp())

    def _on_cancel(self, tx: ServerTransaction) -> None:
        # RFC 3261 §9.2: the CANCEL names the INVITE transaction by the same branch and sent-by.
        invite = self.transactions.get(transaction_key(tx.request, "INVITE"))
        if invite is None:
            tx.respond(481)
            return
        tx.to_tag = invite.to_tag
        tx.respond(200)
        if invite.dialog is not None:
            invite.dialog.on_cancel()

    def _on_bye(self, tx: ServerTransaction) -> None:
        dialog = self._dialog_of(tx.request)
        if dialog is None:
            tx.respond(481)
            return
        tx.respond(200)
        dialog.on_bye()

    async def _new_invite(self, dialog: Dialog) -> None:
        msg, transport = dialog.invite, dialog.transport
        if dialog.cancelled:
            return  # CANCELled before the call was placed
        caller, dialed = uri_user(msg.get("from")), uri_user(msg.get("to"))
        try:
            name = msg.get("x-emulator-scenario")
            scenario = (find_by_name(name, self.emu.config.scenario_dir) if name
                        else find_by_dialed(dialed, self.emu.config.scenario_dir))
        except ScenarioError as exc:
            log.info("sip INVITE for unknown scenario: %r", str(exc)[:200])
            dialog.respond_invite(400, [("Warning", f'399 emulator "{_quoted(str(exc).splitlines()[0][:120])}"')])
            return
        wanted = {"from", "to", "call-id"}
        sip_headers = [{"name": _canonical(k), "value": v} for k, v in msg.headers
                       if (COMPACT.get(k.lower(), k.lower()) in wanted or k.lower().startswith("x-"))
                       and k.lower() not in AUTH_HEADERS]
        dialog.call_id = await self.emu.place_call(scenario, caller=caller, dialed=dialed, leg=dialog,
                                                   sip_headers=sip_headers, source="sip")
        log.info("sip INVITE %r from=%s to=%s over %s -> call %s", dialog.sip_call_id[:12], mask_number(caller),
                 mask_number(dialed), transport, dialog.call_id)


def _quoted(text: str) -> str:
    # A quoted-string of a Warning header: no quotes or backslashes inside (RFC 3261 §25.1).
    return text.replace("\\", "/").replace('"', "'")


def _canonical(name: str) -> str:
    full = COMPACT.get(name.lower(), name)
    return {"call-id": "Call-ID", "from": "From", "to": "To"}.get(full.lower(), name)
