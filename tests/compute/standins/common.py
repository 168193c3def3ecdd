"""What every provider stand-in shares: the loopback HTTP server, the 'machines' (local worker
processes), the ledger of launches and terminations, and fault injection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import parse_qs, urlsplit

# The "image": what a container of the worker image has before the provider adds its env.
# PATH leads to this venv's python, as the image's PATH leads to the image's python.
IMAGE_ENV = {
    "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONUNBUFFERED": "1",
    "HF_HUB_OFFLINE": "1",  # the tests' tiny model needs no hub; a real image would allow it
    "TOKENIZERS_PARALLELISM": "false",
}


@dataclass
class Machine:
    """One pod / instance / kernel session: a local process started as the provider would."""

    id: str
    command: str
    env: dict[str, str]
    workdir: Path
    price_per_hour: float
    name: str = ""                    # the pod name / instance label / kernel slug the client chose
    created_at: float = field(default_factory=time.time)
    process: Optional[subprocess.Popen] = None
    status: str = "starting"          # provider-neutral: starting, running, exited, preempted, failed, terminated
    status_message: str = ""
    terminated: bool = False
    terminated_at: Optional[float] = None

    def billed_seconds(self, now: Optional[float] = None) -> float:
        """Create to confirmed terminate: what the provider bills (now, for one still running)."""
        end = self.terminated_at if self.terminated_at is not None else (now or time.time())
        return max(0.0, end - self.created_at)

    @property
    def log_path(self) -> Path:
        return self.workdir / "machine.log"

    def exit_code(self) -> Optional[int]:
        return None if self.process is None else self.process.poll()


# A route returns this to drop the connection without an answer: the provider did the work (a machine was
# created) but the client never hears of it, as when a load balancer times out a slow create.
LOST = object()


class Faults:
    """Faults the next calls meet; a test sets them before running a stage."""

    def __init__(self):
        self.no_capacity = 0                      # this many create calls answer "no capacity"
        self.server_errors = 0                    # this many calls answer HTTP 500
        self.bootstrap_failure: Optional[str] = None  # provider-specific kind, consumed by the next create
        self.preempt_when: Optional[Callable[[Machine], bool]] = None  # polled; True reclaims the machine once
        self.lose_create_response = 0             # this many creates make the machine, then drop the connection
        self.terminate_failures = 0               # this many terminate calls answer HTTP 5xx, doing nothing
        self.terminate_never_confirms = False     # terminate answers OK but the machine keeps running (billing)
        self.stuck_starting = 0                   # this many machines never leave "starting" (no host found)
        self.freeze_when: Optional[Callable[[Machine], bool]] = None  # polled; True freezes the host (SIGSTOP)
        self.preempt_repeat = False               # preempt_when stays armed for every later machine

    def take(self, name: str) -> bool:
        value = getattr(self, name)
        if value:
            setattr(self, name, value - 1)
            return True
        return False


class StandinCloud:
    """Base of the three stand-ins: subclasses implement `route(method, path, query, body, headers)`."""

    provider = "cloud"

    def __init__(self, workdir: Path, *, api_key: str, price_per_hour: float = 0.5):
        self.workdir = Path(workdir)
        self.api_key = api_key
        self.price_per_hour = price_per_hour
        self.machines: dict[str, Machine] = {}
        self.launches: list[dict] = []       # every machine started: id, command, env
        self.terminations: list[str] = []    # every machine the client terminated / destroyed / cancelled
        self.terminate_requests: list[str] = []  # acknowledged but not carried out (terminate_never_confirms)
        self.duplicates: list[str] = []      # names created while a machine of that name was still live
        self.requests: list[tuple[str, str]] = []  # (method, path) without the query: never the key
        self.faults = Faults()
        self._lock = threading.RLock()
        self._server: Optional[ThreadingHTTPServer] = None
        self._stop = threading.Event()

    # ---- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "StandinCloud":
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                with cloud._lock:
                    cloud.requests.append((method, parts.path))
                if cloud.faults.take("server_errors"):
                    status, payload = 500, {"error": "internal server error", "code": 500}
                else:
                    try:
                        body = json.loads(raw) if raw else {}
                    except ValueError:
                        body = {"_raw": raw.decode(errors="replace")}
                    status, payload = cloud.route(method, parts.path, parse_qs(parts.query), body,
                                                  dict(self.headers))
                if payload is LOST:  # the work is done, the answer never arrives
                    self.close_connection = True
                    return
                raw_file = isinstance(payload, bytes)  # a file download, served as is
                data = payload if raw_file else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream" if raw_file else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except BrokenPipeError:  # a machine killed mid-request (runpodctl inside a stopped pod)
                    pass

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def do_PUT(self):
                self._serve("PUT")

            def do_DELETE(self):
                self._serve("DELETE")

            def log_message(self, *args):  # the default logs the URL, which may carry an API key
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        threading.Thread(target=self._monitor, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for machine in list(self.machines.values()):
            self._kill(machine)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None, "use the stand-in as a context manager"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def route(self, method, path, query, body, headers) -> tuple[int, dict]:
        raise NotImplementedError

    # ---- machines --------------------------------------------------------------------------
    def launch(self, machine_id: str, command: str, env: dict[str, str], *, bootstrap: str = "",
               name: str = "") -> Machine:
        """Start the machine's command as a local process with exactly the image env plus `env`.

        `bootstrap` is what the machine runs before the command (a failing one simulates a bad host).
        """
        workdir = self.workdir / self.provider / machine_id
        workdir.mkdir(parents=True, exist_ok=True)
        if name and self.live_names().get(name):  # a second live machine for the same work: paid twice
            self.duplicates.append(name)
        machine = Machine(machine_id, command, dict(env), workdir, self.price_per_hour, name=name)
        if self.faults.take("stuck_starting"):  # billed from create, but the provider never starts it
            with self._lock:
                self.machines[machine_id] = machine
                self.launches.append({"id": machine_id, "command": command, "env": dict(env)})
            return machine
        full_env = {**IMAGE_ENV, "HOME": str(workdir), **env}
        script = f"{bootstrap}\n{command}" if bootstrap else command
        with open(machine.log_path, "wb") as log:
            machine.process = subprocess.Popen(["bash", "-c", script], cwd=workdir, env=full_env, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True)
        machine.status = "running"
        with self._lock:
            self.machines[machine_id] = machine
            self.launches.append({"id": machine_id, "command": command, "env": dict(env)})
        return machine

    def terminate(self, machine_id: str) -> bool:
        """False for a machine that does not exist (or no longer does): each provider answers that with an
        error, never a quiet success. `terminate_never_confirms` acknowledges and leaves it running."""
        with self._lock:
            machine = self.machines.get(machine_id)
            if machine is None or machine.terminated:
                return False
            if self.faults.terminate_never_confirms:
                self.terminate_requests.append(machine_id)
                return True
            machine.terminated = True
            machine.terminated_at = time.time()
            machine.status = "terminated"
            self.terminations.append(machine_id)
        self._kill(machine)
        return True

    def preempt(self, machine_id: str) -> None:
        """Reclaim one running machine now, as a spot host does (the bench picks which)."""
        machine = self.machines.get(machine_id)
        if machine is not None and machine.status == "running":
            machine.status = "preempted"  # before the kill, so the monitor does not call it a plain exit
            machine.status_message = "host reclaimed the machine (spot/interruptible)"
            self._kill(machine)

    def leaked(self) -> list[str]:
        """Machines still billing: created and never terminated by the client."""
        with self._lock:
            return [m.id for m in self.machines.values() if not m.terminated]

    def billed_usd(self) -> float:
        with self._lock:
            return sum(m.billed_seconds() * m.price_per_hour / 3600.0 for m in self.machines.values())

    def live_names(self) -> dict[str, list[str]]:
        """name/label -> machines not terminated: more than one under a name is a duplicate."""
        with self._lock:
            names: dict[str, list[str]] = {}
            for machine in self.machines.values():
                if not machine.terminated:
                    names.setdefault(machine.name, []).append(machine.id)
            return names

    def running_processes(self) -> list[str]:
        return [m.id for m in self.machines.values() if m.exit_code() is None and m.process is not None]

    def wait_all_exited(self, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while self.running_processes() and time.time() < deadline:
            time.sleep(0.1)

    def _kill(self, machine: Machine) -> None:
        if machine.process is not None and machine.process.poll() is None:
            try:
                os.killpg(machine.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            machine.process.wait(timeout=30)

    def _monitor(self) -> None:
        while not self._stop.wait(0.2):
            for machine in list(self.machines.values()):
                if machine.status == "running" and machine.exit_code() is not None:
                    machine.status = "exited" if machine.exit_code() == 0 else "failed"
                    machine.status_message = f"container exited with code {machine.exit_code()}"
                freeze = self.faults.freeze_when
                if machine.status == "running" and freeze is not None and machine.process is not None and freeze(machine):
                    self.faults.freeze_when = None  # a hung host: alive and billing, silent
                    try:
                        os.killpg(machine.process.pid, signal.SIGSTOP)
                    except ProcessLookupError:
                        pass
                preempt = self.faults.preempt_when
                if machine.status == "running" and preempt is not None and preempt(machine):
                    if not self.faults.preempt_repeat:
                        self.faults.preempt_when = None  # once: the retry must be allowed to finish
                    self._kill(machine)
                    machine.status = "preempted"
                    machine.status_message = "host reclaimed the machine (spot/interruptible)"

    # ---- helpers for routes ----------------------------------------------------------------
    def authorized(self, headers: dict, query: dict) -> bool:
        bearer = headers.get("Authorization") or headers.get("authorization") or ""
        return bearer == f"Bearer {self.api_key}" or query.get("api_key", [None])[0] == self.api_key

    def log_text(self, machine_id: str) -> str:
        machine = self.machines.get(machine_id)
        return machine.log_path.read_text(errors="replace") if machine and machine.log_path.exists() else ""
