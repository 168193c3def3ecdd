"""DetachedProcessBackend: the worker as a detached local process that shares only the S3 store with the step.

A cheap way to try an image's environment, and the backend the remote path's tests run for real: it goes
through the whole remote loop (intent record, adoption, deadlines, run budget, confirmed termination).
The machine's name is kept in a small file under the system's temp folder, so a restarted orchestrator (or
the orphan sweeper) finds a process by name as it would find a pod.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import Field

from llm_assets.compute.backends import JobStatus, LaunchedJob, LaunchSpec
from llm_assets.compute.backends.remote import RemoteComputeBackend
from llm_assets.core.failures import error_from_exit

NAMES_DIR = Path(tempfile.gettempdir()) / "llm-assets-detached"

_CHILDREN: dict[str, subprocess.Popen] = {}


class DetachedProcessBackend(RemoteComputeBackend):
    """The worker as a detached local process that shares only the S3 store with the step.

    It gets exactly the environment a remote machine gets (plus PATH and HOME), runs in its own
    empty folder and its own process group, and talks to Dagster only through S3.
    """

    python: str = Field(default="", description="Interpreter for the worker (empty: the step's own).")
    poll_interval_seconds: float = Field(default=1.0, gt=0, description="Seconds between process status polls.")
    message_poll_seconds: float = Field(default=1.0, gt=0, description="Seconds between reads of message chunks.")
    message_flush_seconds: float = Field(default=1.0, gt=0, description="Seconds between the worker's uploads.")
    share_orchestrator_credentials: bool = Field(default=True, description="The worker is a process on this "
                                                 "machine: it may use the orchestrator's own S3 credentials.")

    def python_executable(self) -> str:
        return self.python or sys.executable

    def launch(self, context, spec: LaunchSpec) -> LaunchedJob:
        workdir = Path(tempfile.mkdtemp(prefix=f"{spec.name or 'llm-assets'}-"))
        log = open(workdir / "worker.log", "ab")
        env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", str(workdir)), **spec.env}
        process = subprocess.Popen(spec.command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        log.close()
        _CHILDREN[str(process.pid)] = process
        if spec.name:
            NAMES_DIR.mkdir(parents=True, exist_ok=True)
            (NAMES_DIR / f"{spec.name}.{process.pid}").write_text(str(workdir), encoding="utf-8")
        return LaunchedJob(job_id=str(process.pid), details={"workdir": str(workdir)})

    def find(self, name: str) -> list[str]:
        return [pid for found, pid in self._named() if found == name and _alive(int(pid))]

    def list_machines(self) -> list[tuple[str, str]]:
        return [(pid, name) for name, pid in self._named() if _alive(int(pid))]

    @staticmethod
    def _named() -> list[tuple[str, str]]:
        if not NAMES_DIR.is_dir():
            return []
        return [tuple(path.name.rsplit(".", 1)) for path in NAMES_DIR.iterdir() if "." in path.name]

    def is_gone(self, job_id: str) -> bool:
        process = _CHILDREN.get(job_id)
        return process.poll() is not None if process is not None else not _alive(int(job_id))

    def poll(self, job_id: str) -> JobStatus:
        process = _CHILDREN.get(job_id)
        if process is None:  # started by an orchestrator that is gone: all we know is whether it lives
            return JobStatus("running" if _alive(int(job_id)) else "gone")
        code = process.poll()
        if code is None:
            return JobStatus("running")
        error = error_from_exit(code, f"worker process {job_id}")
        return JobStatus("failed", error) if error else JobStatus("succeeded")

    def terminate(self, job_id: str) -> None:
        pid = int(job_id)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        process = _CHILDREN.pop(job_id, None)
        deadline = time.time() + 10
        while (process.poll() is None if process else _alive(pid)) and time.time() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        if process is not None:
            process.wait()
        for path in NAMES_DIR.glob(f"*.{pid}") if NAMES_DIR.is_dir() else []:
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie has exited: not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    return True
