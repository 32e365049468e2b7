"""`make up`: the whole local stack in the foreground — Azurite, the emulator, the app.

* Azurite from the npm package (`node_modules/.bin/azurite`), data in `.azurite/`.
* The emulator of Azure OpenAI Realtime over SIP (`python -m emulator`): HTTP 8765, SIP 5060 (UDP+TCP),
  its webhook pointed at the app, with a webhook secret and an API key generated for this run and given to
  both sides.
* The app: under `func start` when Azure Functions Core Tools are installed, else under the local runner
  (`python -m localrun`), on port 7071 under /api.

Every child runs in its own process group; its output is prefixed (`[azurite]`, `[emulator]`, `[app]`).
Ctrl-C (SIGINT) or SIGTERM stops all of them and exits 0. Ports that are taken stop the start with a message
naming the port and a command that starts the stack on free ones; `--free-ports` moves whatever is taken at once.

Programmatic use (the e2e tests and `make demo`):

    with Stack(StackConfig(app_port=0, emulator_http_port=0, sip_port=0, ...)) as stack:
        stack.endpoints["operator_api"], stack.function_key, ...
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent

AZURITE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
DEFAULT_DIALED = "+18005551212"
DEFAULT_AZURITE_PORTS = (10000, 10001, 10002)


def azurite_connection_string(host: str = "127.0.0.1", blob: int = 10000, queue: int = 10001,
                              table: int = 10002) -> str:
    return (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{blob}/devstoreaccount1;"
        f"QueueEndpoint=http://{host}:{queue}/devstoreaccount1;"
        f"TableEndpoint=http://{host}:{table}/devstoreaccount1;"
    )


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


# StackConfig.emulator_options keys (EmulatorConfig field names) -> `python -m emulator` flags.
EMULATOR_FLAGS = {"ring_timeout_s": "--ring-timeout", "session_limit_s": "--session-limit",
                  "speech_seconds_per_char": "--speech-seconds-per-char"}


class StackError(RuntimeError):
    """The stack could not start; the message says why and what to do."""


# -- ports ---------------------------------------------------------------------------------------------------

def port_free(host: str, port: int, kind: int = socket.SOCK_STREAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", udp_too: bool = False) -> int:
    """A port free for TCP (and UDP when asked) right now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if not udp_too or port_free(host, port, socket.SOCK_DGRAM):
            return port
    raise StackError("could not find a free port")


def next_free_port(host: str, start: int, avoid: set[int], udp_too: bool = False) -> int:
    """The first port from `start` up that is free (TCP, and UDP when asked) and not in `avoid`: a port near the
    default is easier to recognise and type than an ephemeral one, and the same one comes back run after run."""
    for port in range(start, min(start + 200, 65536)):
        if port not in avoid and port_free(host, port) and (not udp_too or port_free(host, port, socket.SOCK_DGRAM)):
            return port
    return free_port(host, udp_too)


def parse_ports(text: str) -> tuple[int, int, int]:
    """`BLOB,QUEUE,TABLE` (Azurite's three ports) -> a tuple; ValueError with the reason."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError(f"expected three ports BLOB,QUEUE,TABLE such as 10010,10011,10012, got {text!r}")
    blob, queue, table = (int(p) for p in parts)
    ports = (blob, queue, table)
    if not all(0 <= p <= 65535 for p in ports) or len(set(ports) - {0}) != len([p for p in ports if p]):
        raise ValueError(f"expected three different ports from 1 to 65535 (0 = any free one), got {text!r}")
    return ports


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


# -- configuration -------------------------------------------------------------------------------------------

@dataclass
class StackConfig:
    root: Path = ROOT
    host: str = "127.0.0.1"
    # 0 = any free port (tests). Defaults are what `func start`, the emulator and Azurite use.
    app_port: int = 7071
    emulator_http_port: int = 8765
    sip_port: int = 5060
    azurite_ports: tuple[int, int, int] = DEFAULT_AZURITE_PORTS
    # A port that is taken is replaced by the next free one above it (and the banner says so), instead of stopping
    # the start. Azurite then keeps its data apart (see azurite_location).
    free_ports: bool = False
    # Start Azurite (data in azurite_location), or use an existing storage account: storage_connection_string.
    start_azurite: bool = True
    # Default: <root>/.azurite on the default ports; on others <root>/.azurite/<blob>-<queue>-<table>, so that it never
    # shares its files with another Azurite (say the one `make test` started) that holds the default ports.
    azurite_location: Path | None = None
    storage_connection_string: str | None = None
    # Where the local runner keeps orchestration state so that a restarted app resumes live calls; None: in memory.
    task_hub_dir: Path | None = None
    scenario_dir: Path | None = None  # default: <root>/emulator/scenarios
    # Extra settings for the app (ROUTING_RULES_PATH, MAX_CALL_DURATION_SECONDS, CALL_RECORDS_QUEUE, ...).
    app_env: dict[str, str] = field(default_factory=dict)
    # Emulator settings beyond ports/webhook/keys: the keys of EMULATOR_FLAGS, e.g. speech_seconds_per_char.
    emulator_options: dict[str, object] = field(default_factory=dict)
    # None: `func start` when Core Tools are installed, else the local runner.
    use_func: bool | None = None
    # The local runner prints the traceback of a bad setting or bad routing rules, not only the message.
    debug: bool = False
    # Where child output goes: printed with a prefix (echo) and/or written to <log_dir>/<name>.log.
    echo: bool = True
    log_dir: Path | None = None
    out: IO[str] = field(default_factory=lambda: sys.stdout)
    start_timeout_s: float = 60.0


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen
    lines: collections.deque
    thread: threading.Thread
    logfile: IO[str] | None = None
    stop_signal: int = signal.SIGTERM


class Stack:
    def __init__(self, config: StackConfig | None = None):
        self.config = config or StackConfig()
        c = self.config
        unknown = sorted(set(c.emulator_options) - set(EMULATOR_FLAGS))
        if unknown:
            known = ", ".join(sorted(EMULATOR_FLAGS))
            raise StackError(f"emulator_options: unknown {', '.join(unknown)}; known: {known}")
        self.webhook_secret = new_webhook_secret()
        self.api_key = "emu-" + secrets.token_urlsafe(24)
        self.function_key = secrets.token_urlsafe(32)
        self.master_key = secrets.token_urlsafe(32)
        self.app_port = c.app_port
        self.emulator_http_port = c.emulator_http_port
        self.sip_port = c.sip_port
        self.azurite_ports = c.azurite_ports
        self.children: list[_Child] = []
        self.moved_ports: list[str] = []  # "what: default -> new" for each port free_ports replaced
        self.app_runtime = ""
        self._lock = threading.Lock()
        self._stopped = False

    # -- derived values ----------------------------------------------------------------------------------
    @property
    def app_url(self) -> str:
        return f"http://{self.config.host}:{self.app_port}"

    @property
    def emulator_url(self) -> str:
        return f"http://{self.config.host}:{self.emulator_http_port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.app_url}/api/calls/incoming"

    @property
    def sip_uri(self) -> str:
        return f"sip:{DEFAULT_DIALED}@{self.config.host}:{self.sip_port}"

    @property
    def storage_connection_string(self) -> str:
        if self.config.storage_connection_string:
            return self.config.storage_connection_string
        b, q, t = self.azurite_ports
        return azurite_connection_string(self.config.host, b, q, t)

    @property
    def azurite_location(self) -> Path:
        c = self.config
        if c.azurite_location is not None:
            return Path(c.azurite_location)
        if tuple(self.azurite_ports) == DEFAULT_AZURITE_PORTS:
            return c.root / ".azurite"
        return c.root / ".azurite" / "-".join(str(p) for p in self.azurite_ports)

    @property
    def task_hub_dir(self) -> Path | None:
        return Path(self.config.task_hub_dir).resolve() if self.config.task_hub_dir else None

    @property
    def endpoints(self) -> dict[str, str]:
        return {
            "webhook": self.webhook_url,
            "operator_api": f"{self.app_url}/api/calls",
            "function_key": self.function_key,
            "emulator_http": self.emulator_url,
            "emulator_control": f"{self.emulator_url}/_emulator/calls",
            "sip": self.sip_uri,
            "azurite_queue": f"http://{self.config.host}:{self.azurite_ports[1]}/devstoreaccount1",
        }

    # -- lifecycle -----------------------------------------------------------------------------------------
    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _choose_ports(self) -> None:
        c = self.config
        if self.app_port == 0:
            self.app_port = free_port(c.host)
        if self.emulator_http_port == 0:
            self.emulator_http_port = free_port(c.host)
        if self.sip_port == 0:
            self.sip_port = free_port(c.host, udp_too=True)
        if c.start_azurite and 0 in self.azurite_ports:
            self.azurite_ports = tuple(p or free_port(c.host) for p in self.azurite_ports)  # type: ignore[assignment]
        if c.free_ports:
            self._move_taken_ports()

    def _ports(self) -> list[tuple[str, str, int, bool]]:
        """(flag, what, port, needs UDP too) for every port this stack listens on."""
        ports = [("--app-port", "the app (Functions HTTP)", self.app_port, False),
                 ("--emulator-port", "the emulator's HTTP API", self.emulator_http_port, False),
                 ("--sip-port", "the emulator's SIP front door", self.sip_port, True)]
        if self.config.start_azurite:
            ports += [("--azurite-ports", f"Azurite {what}", port, False)
                      for what, port in zip(("blob", "queue", "table"), self.azurite_ports, strict=True)]
        return ports

    def _taken(self) -> list[tuple[str, str, int, str]]:
        """(flag, what, port, protocols) for every port this stack needs that something else holds."""
        host = self.config.host
        taken = []
        for flag, what, port, udp in self._ports():
            checks = (("TCP", socket.SOCK_STREAM, True), ("UDP", socket.SOCK_DGRAM, udp))
            protos = [proto for proto, kind, check in checks if check and not port_free(host, port, kind)]
            if protos:
                taken.append((flag, what, port, "+".join(protos)))
        return taken

    def _replacements(self) -> dict[int, int]:
        """A free port for each taken one: the next free one above it that no other part of the stack uses."""
        avoid = {port for _, _, port, _ in self._ports()}
        moved: dict[int, int] = {}
        for flag, _, port, _ in self._taken():
            if port not in moved:
                moved[port] = next_free_port(self.config.host, port + 1, avoid, udp_too=flag == "--sip-port")
                avoid.add(moved[port])
        return moved

    def _move_taken_ports(self) -> None:
        moved = self._replacements()
        if not moved:
            return
        for _flag, what, port, _ in self._ports():
            if port in moved:
                self.moved_ports.append(f"{what}: {port} is taken, using {moved[port]}")
        self.app_port = moved.get(self.app_port, self.app_port)
        self.emulator_http_port = moved.get(self.emulator_http_port, self.emulator_http_port)
        self.sip_port = moved.get(self.sip_port, self.sip_port)
        blob, queue, table = self.azurite_ports
        self.azurite_ports = (moved.get(blob, blob), moved.get(queue, queue), moved.get(table, table))

    def check_ports(self) -> None:
        """Raise StackError naming every taken port, what it is for, and a command that starts on free ones."""
        c = self.config
        taken = self._taken()
        if not taken:
            return
        lines = [f"  {proto} port {port} on {c.host} ({what}) is already in use" for _, what, port, proto in taken]
        moved = self._replacements()
        flags: dict[str, str] = {}
        for flag, _, port, _ in taken:
            if flag == "--azurite-ports":
                flags[flag] = ",".join(str(moved.get(p, p)) for p in self.azurite_ports)
            else:
                flags[flag] = str(moved[port])
        if c.host != "127.0.0.1":
            flags = {"--host": c.host, **flags}
        args = " ".join(f"{flag} {value}" for flag, value in flags.items())
        ports = "|".join(sorted({str(port) for _, _, port, _ in taken}))
        hint = (f"Stop whatever holds {'it' if len(taken) == 1 else 'them'} (`ss -ltnup | grep -E ':({ports})\\b'` "
                "shows what; an earlier `make up`, the Azurite of `make test` or `func start` may still be running), "
                f"or start on ports that are free now:\n    make up ARGS=\"{args}\"\n"
                "  or let the stack pick free ports for whatever is taken:\n    make up ARGS=--free-ports\n"
                "  (`python -m localrun.stack` takes the same flags)")
        raise StackError("cannot start the local stack:\n" + "\n".join(lines) + "\n" + hint)

    def start(self) -> None:
        c = self.config
        self._choose_ports()
        self.check_ports()
        if c.log_dir is not None:
            Path(c.log_dir).mkdir(parents=True, exist_ok=True)
        try:
            if c.start_azurite:
                self._start_azurite()
            self._start_emulator()
            self._start_app()
        except BaseException:
            self.stop()
            raise

    def _start_azurite(self) -> None:
        c = self.config
        binary = c.root / "node_modules" / ".bin" / "azurite"
        if not binary.exists():
            found = shutil.which("azurite")
            if not found:
                raise StackError("Azurite is not installed: run `npm ci` in the repository (make up does this)")
            binary = Path(found)
        location = self.azurite_location
        location.mkdir(parents=True, exist_ok=True)
        b, q, t = self.azurite_ports
        cmd = [str(binary), "--location", str(location), "--skipApiVersionCheck", "--loose",
               "--blobHost", c.host, "--queueHost", c.host, "--tableHost", c.host,
               "--blobPort", str(b), "--queuePort", str(q), "--tablePort", str(t)]
        self._spawn("azurite", cmd, os.environ.copy())
        self._wait("azurite", lambda: all(_listening(c.host, p) for p in self.azurite_ports))

    def _emulator_cmd(self) -> list[str]:
        c = self.config
        scenarios = str(c.scenario_dir or c.root / "emulator" / "scenarios")
        extra = [arg for key, value in c.emulator_options.items() for arg in (EMULATOR_FLAGS[key], str(value))]
        return [sys.executable, "-m", "emulator", "--host", c.host, "--http-port", str(self.emulator_http_port),
                "--sip-port", str(self.sip_port), "--webhook-url", self.webhook_url,
                "--webhook-secret", self.webhook_secret, "--api-key", self.api_key,
                "--scenario-dir", scenarios, "--mode", "azure", *extra]

    def _start_emulator(self) -> None:
        env = os.environ.copy()
        env["PYTHONUNBUFFERED"] = "1"
        self._spawn("emulator", self._emulator_cmd(), env)
        self._wait("emulator", lambda: _http_ok(f"{self.emulator_url}/_emulator/health"))

    def app_environment(self) -> dict[str, str]:
        """The settings the app gets (on top of local.settings.json, which they override)."""
        env = {
            "AZURE_OPENAI_ENDPOINT": self.emulator_url,
            "AZURE_OPENAI_AUTH": "api-key",
            "AZURE_OPENAI_API_KEY": self.api_key,
            "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime-1.5",
            "WEBHOOK_SECRET": self.webhook_secret,
            "CALL_STORAGE_CONNECTION_STRING": self.storage_connection_string,
            "AzureWebJobsStorage": self.storage_connection_string,
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT": "262144",  # as deployed (infra/modules/functionapp.bicep)
            "LOCALRUN_FUNCTION_KEY": self.function_key,
            "LOCALRUN_MASTER_KEY": self.master_key,
            # One timing line per call (accept, greeting, tools, end) from the runner's local telemetry.
            "LOCALRUN_TELEMETRY": "summary",
        }
        env.update(self.config.app_env)
        return env

    def _start_app(self) -> None:
        c = self.config
        env = os.environ.copy()
        env.update(self.app_environment())
        env["PYTHONUNBUFFERED"] = "1"
        use_func = c.use_func if c.use_func is not None else shutil.which("func") is not None
        if use_func:
            self.app_runtime = "func start (Azure Functions Core Tools)"
            cmd = ["func", "start", "--port", str(self.app_port)]
        else:
            self.app_runtime = "local runner (python -m localrun)"
            cmd = [sys.executable, "-m", "localrun", "--host", c.host, "--port", str(self.app_port),
                   "--app", "function_app:app", "--app-dir", str(c.root)]
            if c.debug:
                cmd.append("--debug")
            if self.task_hub_dir is not None:
                cmd += ["--task-hub-dir", str(self.task_hub_dir)]
        self._spawn("app", cmd, env)
        self._wait("app", lambda: _http_ok(f"{self.app_url}/admin/host/ping", any_status=use_func))

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        c = self.config
        try:
            proc = subprocess.Popen(cmd, cwd=str(c.root), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True, text=True, bufsize=1,
                                    errors="replace")
        except FileNotFoundError as exc:
            raise StackError(f"cannot start {name}: {exc}") from None
        # Outlives this method: the pump thread writes it and _Child closes it when the process is reaped.
        logfile = open(Path(c.log_dir) / f"{name}.log", "a", encoding="utf-8") if c.log_dir else None  # noqa: SIM115
        lines: collections.deque = collections.deque(maxlen=200)
        thread = threading.Thread(target=self._pump, args=(name, proc, lines, logfile), daemon=True,
                                  name=f"pump-{name}")
        # Azurite shuts down at once on SIGINT but drags on for a minute or more on SIGTERM.
        child = _Child(name, proc, lines, thread, logfile, signal.SIGINT if name == "azurite" else signal.SIGTERM)
        self.children.append(child)
        thread.start()

    def _pump(self, name: str, proc: subprocess.Popen, lines: collections.deque, logfile: IO[str] | None) -> None:
        assert proc.stdout is not None
        prefix = f"[{name}] "
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            if logfile is not None:
                logfile.write(line + "\n")
                logfile.flush()
            if self.config.echo:
                with self._lock:
                    self.config.out.write(prefix + line + "\n")
                    self.config.out.flush()

    def _wait(self, name: str, ready: Callable[[], bool]) -> None:
        child = next(ch for ch in self.children if ch.name == name)
        deadline = time.monotonic() + self.config.start_timeout_s
        while not ready():
            if child.proc.poll() is not None:
                child.thread.join(timeout=2)  # let the pump catch the last lines
                if self.config.echo:  # its lines, the reason among them, are on the screen already: not twice
                    raise StackError(f"{name} exited with code {child.proc.returncode} while starting "
                                     f"(its lines above, marked [{name}], say why)")
                raise StackError(f"{name} exited with code {child.proc.returncode} while starting; its last lines:\n"
                                 + "\n".join("    " + line for line in list(child.lines)[-25:]))
            if time.monotonic() > deadline:
                raise StackError(f"{name} did not become ready within {self.config.start_timeout_s:.0f} s; "
                                 "its last lines:\n" + "\n".join("    " + line for line in list(child.lines)[-25:]))
            time.sleep(0.1)

    def crash_app(self) -> None:
        """SIGKILL the app, as when its worker dies: no shutdown code runs, in-flight work is lost."""
        child = next(ch for ch in self.children if ch.name == "app")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.proc.pid, signal.SIGKILL)
        child.proc.wait(timeout=10)
        child.thread.join(timeout=2)
        if child.logfile is not None:
            child.logfile.close()
        self.children.remove(child)

    def restart_app(self) -> None:
        """Start the app again on the same port (the emulator's webhook URL points there)."""
        self._start_app()

    def dead_child(self) -> str | None:
        for child in self.children:
            if child.proc.poll() is not None:
                return child.name
        return None

    def logs(self, name: str) -> list[str]:
        for child in self.children:
            if child.name == name:
                return list(child.lines)
        return []

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every child (SIGTERM, SIGINT for Azurite, to its process group; SIGKILL after `timeout`).

        The app goes first, alone: on its way out it releases its calls' leases in the turns table and closes its
        clients, which needs Azurite and the emulator still up. Then the others together."""
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + timeout
        apps = [child for child in self.children if child.name == "app"]
        others = [child for child in reversed(self.children) if child.name != "app"]
        for group in (apps, others):
            for child in group:
                if child.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(child.proc.pid, child.stop_signal)
            for child in group:
                self._reap(child, deadline, timeout)

    def _reap(self, child: _Child, deadline: float, timeout: float) -> None:
        # Azurite waits for idle keep-alive connections to close before it exits; don't wait for that long.
        grace = min(3.0, timeout) if child.name == "azurite" else max(0.1, deadline - time.monotonic())
        try:
            if child.name == "azurite":
                _wait_azurite_closed(child, grace)
            child.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait(timeout=5)
        # Leftovers in the group (e.g. node workers) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.proc.pid, signal.SIGKILL)
        child.thread.join(timeout=2)
        if child.logfile is not None:
            child.logfile.close()

    # -- display ---------------------------------------------------------------------------------------------
    def banner(self) -> str:
        c = self.config
        lines = [
            "",
            "Switchboard local stack is up.",
            f"  App ({self.app_runtime}): {self.app_url}/api",
            f"    webhook (anonymous, signed):  POST {self.webhook_url}",
            f"    operator API (function key):  GET  {self.app_url}/api/calls",
            f"                                  GET  {self.app_url}/api/calls/{{call_id}}",
            f"                                  POST {self.app_url}/api/calls/{{call_id}}/hangup",
            f"                                  POST {self.app_url}/api/calls/{{call_id}}/transfer  "
            '{"target": "sales"}',
            f"    function key:                 {self.function_key}",
            f"      e.g. curl -H 'x-functions-key: {self.function_key}' {self.app_url}/api/calls",
            f"  Operator console:               {self.app_url}/console",
            "    sign in with the function key above (kept in that browser tab only; docs/console.md)",
            f"  Emulator (Azure OpenAI Realtime over SIP): {self.emulator_url}",
            f"    SIP front door (UDP+TCP):     {self.sip_uri}",
            f"      e.g. sipp -sf emulator/sipp/uac_accept_bye_recv.xml -s {DEFAULT_DIALED} "
            f"-key caller +14255551212 -key scenario demo {c.host}:{self.sip_port} -m 1",
            f"    control API:                  {self.emulator_url}/_emulator/calls "
            f"(POST {{\"scenario\": \"demo\"}} places a call)",
            "    webhook secret / API key:     generated for this run, shared with the app",
        ]
        if self.app_runtime.startswith("local runner"):  # func start keeps its task hub in Azurite
            state = (f"{self.task_hub_dir} (a restarted app resumes live calls)" if self.task_hub_dir else
                     "in memory (a restart forgets live calls; SWITCHBOARD_TASK_HUB_DIR=<folder> keeps them)")
            lines.insert(lines.index(f"    function key:                 {self.function_key}") + 2,
                         f"    orchestration state:          {state}")
        if c.start_azurite:
            b, q, t = self.azurite_ports
            lines.append(f"  Azurite: blob {c.host}:{b}, queue {c.host}:{q}, table {c.host}:{t} "
                         f"(data in {self.azurite_location})")
        else:
            lines.append("  Storage: the given connection string")
        queue = self.config.app_env.get("CALL_RECORDS_QUEUE") or os.environ.get("CALL_RECORDS_QUEUE") or "call-records"
        lines.append(f"    call records queue:           {queue}")
        if self.moved_ports:
            lines.append("  Ports moved (--free-ports): " + "; ".join(self.moved_ports))
        lines.append("Press Ctrl-C to stop everything.")
        return "\n".join(lines)


def _wait_azurite_closed(child: _Child, grace: float) -> None:
    """Return once Azurite has exited, or has closed (and saved) its three services; the node process itself
    then lingers for many seconds, so the caller's SIGKILL after this loses nothing.
    Raises TimeoutExpired after `grace` seconds, like Popen.wait."""
    deadline = time.monotonic() + grace
    while child.proc.poll() is None:
        if sum("successfully closed" in line for line in list(child.lines)) >= 3:
            raise subprocess.TimeoutExpired(child.proc.args, 0)
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(child.proc.args, grace)
        time.sleep(0.05)


def _http_ok(url: str, any_status: bool = False) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return 200 <= resp.status < 300
    except urllib.error.HTTPError:
        return any_status
    except (urllib.error.URLError, OSError, ValueError):
        return False


def http_json(method: str, url: str, body: object = None, headers: dict[str, str] | None = None,
              timeout: float = 10.0) -> tuple[int, object]:
    """A tiny JSON HTTP client for the demo and the tests (stdlib only)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        status = exc.code
    try:
        return status, json.loads(raw) if raw.strip() else None
    except ValueError:
        return status, raw.decode(errors="replace")


# -- CLI -----------------------------------------------------------------------------------------------------

def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isascii() or not raw.isdigit():
        raise SystemExit(f"python -m localrun.stack: error: ${name} must be a port number, got {raw!r}")
    return int(raw)


def _ports_arg(text: str) -> tuple[int, int, int]:
    try:
        return parse_ports(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m localrun.stack",
        description="Run Azurite, the emulator and the app in the foreground (`make up`; give flags as "
                    "make up ARGS=\"...\"). Ctrl-C stops everything. Each default comes from the environment "
                    "variable named in its help, else the value shown.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address every part listens on")
    p.add_argument("--app-port", type=int, default=_env_int("SWITCHBOARD_APP_PORT", 7071),
                   help="the app's HTTP port ($SWITCHBOARD_APP_PORT)")
    p.add_argument("--emulator-port", type=int, default=_env_int("SWITCHBOARD_EMULATOR_PORT", 8765),
                   help="the emulator's HTTP port ($SWITCHBOARD_EMULATOR_PORT)")
    p.add_argument("--sip-port", type=int, default=_env_int("SWITCHBOARD_SIP_PORT", 5060),
                   help="the emulator's SIP port, UDP and TCP ($SWITCHBOARD_SIP_PORT)")
    p.add_argument("--azurite-ports", type=_ports_arg, metavar="BLOB,QUEUE,TABLE",
                   default=os.environ.get("SWITCHBOARD_AZURITE_PORTS") or "10000,10001,10002",
                   help="Azurite's three ports ($SWITCHBOARD_AZURITE_PORTS); on other than the default ports its "
                        "data goes to .azurite/BLOB-QUEUE-TABLE/")
    p.add_argument("--free-ports", action="store_true",
                   default=os.environ.get("SWITCHBOARD_FREE_PORTS", "").lower() in ("1", "true", "yes"),
                   help="replace any port that is taken by the next free one above it, and say so, instead of "
                        "stopping ($SWITCHBOARD_FREE_PORTS=1)")
    p.add_argument("--no-azurite", action="store_true",
                   help="do not start Azurite; use $CALL_STORAGE_CONNECTION_STRING")
    p.add_argument("--runner", action="store_true", help="use the local runner even when `func` is installed")
    p.add_argument("--task-hub-dir", type=Path, default=os.environ.get("SWITCHBOARD_TASK_HUB_DIR") or None,
                   help="keep the local runner's orchestration state in this folder, so that a restarted app "
                        "resumes live calls ($SWITCHBOARD_TASK_HUB_DIR; None: in memory)")
    p.add_argument("--debug", action="store_true",
                   help="the app prints the traceback of a bad setting or bad routing rules, not only the message")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    conn = os.environ.get("CALL_STORAGE_CONNECTION_STRING") if args.no_azurite else None
    if args.no_azurite and not conn:
        print("--no-azurite needs CALL_STORAGE_CONNECTION_STRING in the environment", file=sys.stderr)
        return 2
    stack = Stack(StackConfig(host=args.host, app_port=args.app_port, emulator_http_port=args.emulator_port,
                              sip_port=args.sip_port, azurite_ports=args.azurite_ports, free_ports=args.free_ports,
                              start_azurite=not args.no_azurite, storage_connection_string=conn,
                              use_func=False if args.runner else None, task_hub_dir=args.task_hub_dir,
                              debug=args.debug))
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print("Starting the Switchboard local stack (Azurite, emulator, app)...", flush=True)
    try:
        stack.start()
    except StackError as exc:
        print(f"\n{exc}", file=sys.stderr, flush=True)
        return 1
    print(stack.banner(), flush=True)
    code = 0
    while not stop.wait(0.5):
        dead = stack.dead_child()
        if dead:
            print(f"\n{dead} stopped unexpectedly (see its lines above); stopping the stack.", file=sys.stderr,
                  flush=True)
            code = 1
            break
    print("\nStopping the local stack...", flush=True)
    stack.stop()
    print("Stopped.", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
