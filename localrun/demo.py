"""`make demo`: start the local stack, place a scripted call with sipp, stream it, print the record, tear down.

1. `make demo` has installed what was missing (.venv, node_modules/Azurite, sipp when root).
2. Starts the stack (Azurite, emulator, app under the local runner) on the default ports, or on free ports
   when those are taken (it says so).
3. Places the `demo` scenario through the emulator's SIP front door with sipp as the phone
   (`X-Emulator-Scenario: demo`); without sipp, through the emulator's control API (it says so).
4. Streams the conversation as it happens: caller and agent lines, tool calls, keypad digits, transfer, hangup.
5. Prints the call record taken from the Azurite queue.
6. Tears everything down and exits 0 (non-zero with a reason on failure).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .stack import (
    DEFAULT_DIALED,
    Stack,
    StackConfig,
    StackError,
    http_json,
    port_free,
)

DEMO_CALLER = "+14255551212"
FINAL_STATES = {"ended", "rejected", "expired"}

# The phone for the demo: INVITE (with X-Emulator-Scenario), expects 200 OK, ACKs, then waits for the far end to
# finish the call: a BYE (agent or operator hangs up), or a REFER (transfer; answered 202) followed by a BYE.
DEMO_SIPP_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="switchboard_demo_phone">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:[caller]@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      X-Emulator-Scenario: [scenario]
      Subject: switchboard demo
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:[caller]@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv request="REFER" optional="true" next="refer"/>
  <recv request="BYE" next="bye"/>
  <label id="refer"/>
  <send>
    <![CDATA[

      SIP/2.0 202 Accepted
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[caller]@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <recv request="BYE"/>
  <label id="bye"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[caller]@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="200"/>
</scenario>
"""


# -- placing calls -------------------------------------------------------------------------------------------

def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SippPhone:
    """One sipp process placing calls at the emulator's SIP front door."""

    def __init__(self, scenario_xml: Path, sip_port: int, workdir: Path, *, scenario: str = "default",
                 dialed: str = DEFAULT_DIALED, caller: str = DEMO_CALLER, calls: int = 1, rate: int | None = None,
                 pause_ms: int = 300, timeout_s: int = 60, transport: str = "u1", host: str = "127.0.0.1",
                 extra_keys: dict[str, str] | None = None):
        sipp = shutil.which("sipp")
        if sipp is None:
            raise FileNotFoundError("sipp is not installed (Debian package sip-tester)")
        # sipp runs inside workdir (see start()), so every path handed to it must be absolute.
        workdir = workdir.resolve()
        scenario_xml = scenario_xml.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.msg_file = workdir / f"{scenario_xml.stem}.{os.getpid()}.{time.monotonic_ns()}.msg.log"
        self.err_file = self.msg_file.with_suffix(".err.log")
        self.args = [sipp, f"{host}:{sip_port}", "-sf", str(scenario_xml), "-m", str(calls), "-l", str(calls),
                     "-p", str(_free_udp_port()), "-i", host, "-t", transport, "-timeout", f"{timeout_s}s",
                     "-timeout_error", "-s", dialed, "-key", "caller", caller, "-key", "scenario", scenario,
                     "-d", str(pause_ms), "-trace_msg", "-message_file", str(self.msg_file),
                     "-trace_err", "-error_file", str(self.err_file), "-nostdin"]
        if rate:
            self.args += ["-r", str(rate)]
        for k, v in (extra_keys or {}).items():
            self.args += ["-key", k, v]
        self.proc: subprocess.Popen | None = None

    def start(self) -> SippPhone:
        # sipp writes files of its own (e.g. <scenario>_<pid>_errors.log, screen dumps) into its working
        # directory: run it in the work folder, never in the caller's (often the repository).
        self.proc = subprocess.Popen(self.args, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        return self

    def wait(self, timeout: float = 90) -> int:
        assert self.proc is not None
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.stderr = (err or b"").decode(errors="replace")
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        out = self.msg_file.read_text(errors="replace") if self.msg_file.exists() else ""
        err = self.err_file.read_text(errors="replace") if self.err_file.exists() else ""
        return out + "\n--- errors ---\n" + err + getattr(self, "stderr", "")


def emulator_calls(emulator_url: str) -> list[dict]:
    status, body = http_json("GET", f"{emulator_url}/_emulator/calls")
    if status != 200 or not isinstance(body, dict):
        raise RuntimeError(f"emulator control API answered {status}")
    return list(body.get("data") or [])


def wait_for_new_calls(emulator_url: str, known: set[str], count: int = 1, timeout: float = 20.0,
                       source: str | None = "sip") -> list[str]:
    """Call ids that appeared at the emulator since `known` was taken."""
    deadline = time.monotonic() + timeout
    while True:
        new = [c["call_id"] for c in emulator_calls(emulator_url)
               if c["call_id"] not in known and (source is None or c.get("source") == source)]
        if len(new) >= count:
            return new
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(new)} of {count} new calls reached the emulator within {timeout:.0f} s")
        time.sleep(0.05)


def emulator_call(emulator_url: str, call_id: str) -> dict:
    status, body = http_json("GET", f"{emulator_url}/_emulator/calls/{call_id}")
    if status != 200 or not isinstance(body, dict):
        raise RuntimeError(f"emulator control API: call {call_id} answered {status}")
    return body


# -- the conversation stream ---------------------------------------------------------------------------------

def describe_events(call: dict, seen: dict[str, int]) -> list[str]:
    """New human-readable lines for a call's emulator record (client and server events, state changes)."""
    lines: list[str] = []
    events = sorted([(e["t"], "server", e["event"]) for e in call.get("server_events", [])[seen.get("server", 0):]]
                    + [(e["t"], "client", e["event"]) for e in call.get("client_events", [])[seen.get("client", 0):]]
                    + [(s["t"], "state", {"state": s["state"]}) for s in call.get("states", [])[seen.get("state", 0):]],
                    key=lambda x: x[0])
    seen["server"] = len(call.get("server_events", []))
    seen["client"] = len(call.get("client_events", []))
    seen["state"] = len(call.get("states", []))
    for _, side, ev in events:
        kind = ev.get("type") if side != "state" else None
        if side == "state":
            state = ev["state"]
            if state == "accepted":
                lines.append("call accepted (SIP 200 OK)")
            elif state == "rejected":
                lines.append(f"call rejected (SIP {call.get('reject_status')})")
            elif state in ("ended", "expired"):
                lines.append(f"hangup ({call.get('ended_reason') or state})")
            elif state == "ringing":
                lines.append(f"ringing: {call.get('caller')} -> {call.get('dialed')}")
        elif kind == "conversation.item.input_audio_transcription.completed":
            lines.append(f"caller: {ev.get('transcript')}")
        elif kind == "response.output_audio_transcript.done" or kind == "response.output_text.done":
            lines.append(f"agent:  {ev.get('transcript') or ev.get('text')}")
        elif kind == "response.function_call_arguments.done":
            lines.append(f"tool:   {ev.get('name')}({ev.get('arguments')})")
        elif kind == "conversation.item.create" and (ev.get("item") or {}).get("type") == "function_call_output":
            lines.append(f"tool result: {(ev.get('item') or {}).get('output')}")
        elif kind == "input_audio_buffer.dtmf_event_received":
            lines.append(f"keypad: {ev.get('event')}")
    if call.get("refer_target") and not seen.get("refer"):
        seen["refer"] = 1
        lines.append(f"transfer: REFER to {call['refer_target']}")
    return lines


def stream_call(emulator_url: str, call_id: str, emit: Callable[[str], None], timeout: float = 60.0) -> dict:
    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while True:
        call = emulator_call(emulator_url, call_id)
        for line in describe_events(call, seen):
            emit(line)
        if call.get("state") in FINAL_STATES:
            return call
        if time.monotonic() > deadline:
            raise TimeoutError(f"call {call_id} did not end within {timeout:.0f} s (state {call.get('state')})")
        time.sleep(0.15)


# -- call records --------------------------------------------------------------------------------------------

def every_call_record(connection_string: str, queue: str, visibility_timeout: int = 300) -> list[dict]:
    """Every record on the call-records queue, each read once: messages are hidden for ``visibility_timeout``
    seconds, not deleted, so a second count run later sees them all again. A missing queue holds none."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.queue import QueueClient, TextBase64DecodePolicy

    records: list[dict] = []
    with QueueClient.from_connection_string(connection_string, queue,
                                            message_decode_policy=TextBase64DecodePolicy()) as client:
        try:
            while True:
                batch = list(client.receive_messages(messages_per_page=32, visibility_timeout=visibility_timeout,
                                                     max_messages=32))
                if not batch:
                    return records
                records.extend(json.loads(m.content) for m in batch)
        except ResourceNotFoundError:
            return records


def take_call_record(connection_string: str, queue: str, call_id: str, timeout: float = 20.0,
                     delete: bool = True) -> dict:
    """The record of `call_id` from the call-records queue (base64 JSON); other messages are left alone."""
    return take_call_records(connection_string, queue, [call_id], timeout=timeout, delete=delete)[call_id]


def take_call_records(connection_string: str, queue: str, call_ids: Iterable[str], timeout: float = 20.0,
                      delete: bool = True) -> dict[str, dict]:
    """The records of `call_ids` (call id -> record), read in one pass over the queue.

    Receiving hides a message for its visibility timeout. Messages that are not wanted here are made visible
    again at once, so the next reader (e.g. the lookup of another call's record) does not stall on them.
    """
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
    from azure.storage.queue import QueueClient, TextBase64DecodePolicy

    wanted = set(call_ids)
    found: dict[str, dict] = {}
    client = QueueClient.from_connection_string(connection_string, queue,
                                                message_decode_policy=TextBase64DecodePolicy())
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                messages = list(client.receive_messages(messages_per_page=32, visibility_timeout=2, max_messages=32))
            except ResourceNotFoundError:
                messages = []
            for m in messages:
                try:
                    record = json.loads(m.content)
                except ValueError:
                    record = None
                call_id = record.get("call_id") if isinstance(record, dict) else None
                if call_id in wanted and call_id not in found:
                    found[call_id] = record
                    if delete:
                        client.delete_message(m)
                        continue
                with contextlib.suppress(HttpResponseError):
                    # By id and receipt, without the content: given the message object, the SDK writes its
                    # content back through this client's encode policy (none: plain text), and the next reader
                    # can no longer decode it as base64.
                    client.update_message(m.id, pop_receipt=m.pop_receipt, visibility_timeout=0)
            if len(found) == len(wanted):
                return found
            if time.monotonic() > deadline:
                missing = ", ".join(sorted(wanted - set(found)))
                raise TimeoutError(f"no record for call {missing} in queue {queue!r} within {timeout:.0f} s")
            time.sleep(0.25)
    finally:
        client.close()


# -- main ----------------------------------------------------------------------------------------------------

def _ports_free(host: str, ports: list[tuple[int, socket.SocketKind]]) -> bool:
    return all(port_free(host, p, kind) for p, kind in ports)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m localrun.demo", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Start the local stack, place a scripted call, stream it, print its record, tear down "
                    "(`make demo`; give flags as make demo ARGS=\"...\"). $CALL_RECORDS_QUEUE names the records "
                    "queue (default call-records).")
    p.add_argument("--scenario", default="demo", help="emulator scenario to play (emulator/scenarios/NAME.yaml)")
    p.add_argument("--control-api", action="store_true", help="place the call through the control API, not sipp")
    p.add_argument("--debug", action="store_true",
                   help="the app prints the traceback of a bad setting or bad routing rules, not only the message")
    args = p.parse_args(argv)

    t0 = time.monotonic()
    out = sys.stdout

    def say(line: str) -> None:
        out.write(f"[{time.monotonic() - t0:5.1f}s] {line}\n")
        out.flush()

    host = "127.0.0.1"
    defaults = [(7071, socket.SOCK_STREAM), (8765, socket.SOCK_STREAM), (5060, socket.SOCK_STREAM),
                (5060, socket.SOCK_DGRAM), (10000, socket.SOCK_STREAM), (10001, socket.SOCK_STREAM),
                (10002, socket.SOCK_STREAM)]
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-demo-"))
    if _ports_free(host, defaults):
        config = StackConfig(echo=False, log_dir=workdir)
    else:
        say("Some default ports (7071, 8765, 5060, 10000-10002) are taken — another `make up` or Azurite may be "
            "running. The demo uses free ports instead and its own Azurite data folder.")
        config = StackConfig(echo=False, log_dir=workdir, app_port=0, emulator_http_port=0, sip_port=0,
                             azurite_ports=(0, 0, 0), azurite_location=workdir / "azurite")
    config.use_func = False
    config.debug = args.debug
    config.emulator_options = {"speech_seconds_per_char": 0.02}
    queue = os.environ.get("CALL_RECORDS_QUEUE", "call-records")
    stack = Stack(config)
    sipp = shutil.which("sipp") is not None and not args.control_api
    phone: SippPhone | None = None
    succeeded = False
    try:
        say("Starting Azurite, the emulator and the app (local runner)...")
        stack.start()
        say(f"Stack up: app {stack.app_url}/api, emulator {stack.emulator_url}, SIP {stack.sip_uri}")
        known = {c["call_id"] for c in emulator_calls(stack.emulator_url)}
        if sipp:
            xml = workdir / "demo_phone.xml"
            xml.write_text(DEMO_SIPP_XML)
            say(f"Calling {DEFAULT_DIALED} from {DEMO_CALLER[:5]}***{DEMO_CALLER[-4:]} with sipp through the SIP "
                f"front door ({stack.sip_uri})")
            phone = SippPhone(xml, stack.sip_port, workdir, scenario=args.scenario, timeout_s=60).start()
            call_id = wait_for_new_calls(stack.emulator_url, known)[0]
        else:
            why = "--control-api given" if args.control_api else "sipp is not installed (apt-get install sip-tester)"
            say(f"Placing the call through the emulator's control API because {why}.")
            status, body = http_json("POST", f"{stack.emulator_url}/_emulator/calls", {"scenario": args.scenario})
            if status != 201 or not isinstance(body, dict):
                raise RuntimeError(f"the emulator did not place the call: {status} {body}")
            call_id = body["call_id"]
        say(f"Call {call_id}")
        call = stream_call(stack.emulator_url, call_id, lambda line: say("  " + line))
        if phone is not None:
            rc = phone.wait(timeout=15)
            if rc != 0:
                raise RuntimeError(f"sipp reported a failed call (exit {rc}):\n{phone.log()[-3000:]}")
            say("sipp: 200 OK received, the call was ended by the far end (BYE), sipp answered 200 OK")
        if call.get("state") != "ended":
            raise RuntimeError(f"the call did not connect: {call.get('state')} {call.get('ended_reason') or ''}")
        say(f"Call record from the Azurite queue {queue!r}:")
        record = take_call_record(stack.storage_connection_string, queue, call_id)
        out.write(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        say(f"Done in {time.monotonic() - t0:.1f} s. Tearing down.")
        succeeded = True
        return 0
    except (StackError, RuntimeError, TimeoutError, FileNotFoundError) as exc:
        say(f"DEMO FAILED: {exc}")
        # A StackError already quotes the lines of the part that failed to start.
        for name in () if isinstance(exc, StackError) else ("app", "emulator"):
            lines = stack.logs(name)[-30:]
            if lines:
                out.write(f"--- last lines of the {name} ---\n" + "\n".join(lines) + "\n")
        out.write(f"(all logs in {workdir})\n")
        return 1
    except KeyboardInterrupt:
        say("Interrupted.")
        return 130
    finally:
        if phone is not None:
            phone.kill()
        stack.stop()
        # The work folder (logs, sipp files, Azurite data when the default ports were taken) is only worth
        # keeping when the demo failed: the failure message points at it.
        if succeeded:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
