"""Kaggle's kernels API as kagglesdk (the `kaggle` package) calls it: POST /v1/kernels.KernelsApiService/<Method>.

Understood: SaveKernel (push: the script starts at once as a GPU session), GetKernelSessionStatus,
and ListKernelSessionOutput (output files under /_files/ plus the session log).
The session runs the pushed script with Kaggle's batch environment: the working directory is the
output folder, and `kaggle_secrets.UserSecretsClient` serves the secrets the user attached to the
notebook in Kaggle's UI (`user_secrets`). Faults: `no_capacity` answers Kaggle's GPU session limit
error, `server_errors` answers HTTP 500, `bootstrap_failure` ends the session with a Kaggle-side
error before the script runs, `preempt_when` kills the session ("kernel died"), `lose_create_response` starts
the session and drops the connection. Kaggle has no call that stops a session, so there is no terminate here.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from pathlib import Path

from standins.common import LOST, StandinCloud

GPU_LIMIT = "Maximum batch GPU session count of 2 reached."
_STATUS = {"starting": "QUEUED", "running": "RUNNING", "exited": "COMPLETE", "failed": "ERROR",
           "preempted": "ERROR", "terminated": "CANCEL_ACKNOWLEDGED"}

_SECRETS_MODULE = '''"""Kaggle's user-secrets client, as the stand-in's kernel image provides it."""
import json, os


class UserSecretsClient:
    def get_secret(self, label):
        secrets = json.load(open(os.environ["STANDIN_KAGGLE_SECRETS_FILE"]))
        if label not in secrets:
            raise ValueError(f"Secret '{label}' is not attached to this notebook")
        return secrets[label]
'''


class KaggleStandin(StandinCloud):
    provider = "kaggle"

    def __init__(self, workdir, *, username, key, user_secrets=None):
        super().__init__(workdir, api_key=key, price_per_hour=0.0)
        self.username = username
        self.user_secrets = dict(user_secrets or {})
        self.pushes: list[dict] = []   # every SaveKernel request body, as sent
        self._sessions: dict[str, str] = {}  # kernel ref -> latest session (machine) id
        self._next = 0

    def authorized(self, headers, query):
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.api_key}".encode()).decode()
        return (headers.get("Authorization") or headers.get("authorization")) == expected

    def route(self, method, path, query, body, headers):
        files = re.fullmatch(r"/_files/(\d+)/(.+)", path)
        if files and method == "GET":  # output downloads are signed URLs: no auth header
            machine = self.machines.get(files.group(1))
            target = machine.workdir / "working" / files.group(2) if machine else None
            if target is None or not target.is_file():
                return 404, {"code": 404, "message": "no such file"}
            return 200, target.read_bytes()
        if not self.authorized(headers, query):
            return 401, {"code": 401, "message": "Unauthenticated"}
        rpc = re.fullmatch(r"/v1/kernels\.KernelsApiService/(\w+)", path)
        if not rpc or method != "POST":
            return 404, {"code": 404, "message": f"no route {method} {path}"}
        name = rpc.group(1)
        if name == "SaveKernel":
            return self._save(body)
        ref = f"{body.get('userName')}/{body.get('kernelSlug')}"
        session = self._sessions.get(ref)
        machine = self.machines.get(session) if session else None
        if name == "GetKernelSessionStatus":
            if machine is None:
                return 404, {"code": 404, "message": f"kernel {ref} not found"}
            failure = machine.status_message if machine.status in ("failed", "preempted") else None
            return 200, {"status": _STATUS[machine.status], "failureMessage": failure}
        if name == "ListKernelSessionOutput":
            if machine is None:
                return 404, {"code": 404, "message": f"kernel {ref} not found"}
            out = machine.workdir / "working"
            names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
            return 200, {"files": [{"fileName": n, "url": f"{self.url}/_files/{machine.id}/{n}"} for n in names],
                         "log": self.log_text(machine.id)}
        return 404, {"code": 404, "message": f"no method {name}"}

    def _save(self, body: dict):
        self.pushes.append(body)
        if self.faults.take("no_capacity"):
            return 200, {"error": GPU_LIMIT}
        self._next += 1
        session_id = str(self._next)
        ref = body.get("slug") or ""
        if not re.fullmatch(r"[a-z0-9-]+/[a-z0-9-]+", ref):  # Kaggle slugs: URL-safe, lowercase, hyphenated
            return 400, {"code": 400, "message": f"invalid kernel slug {ref!r}"}
        workdir = self.workdir / self.provider / session_id
        (workdir / "src").mkdir(parents=True, exist_ok=True)
        (workdir / "working").mkdir(exist_ok=True)
        (workdir / "src" / "kaggle_secrets.py").write_text(_SECRETS_MODULE)
        (workdir / "secrets.json").write_text(json.dumps(self.user_secrets))
        (workdir / "src" / "script.py").write_text(body.get("text") or "")
        env = {"KAGGLE_KERNEL_RUN_TYPE": "Batch", "KAGGLE_URL_BASE": "https://www.kaggle.com",
               "STANDIN_KAGGLE_SECRETS_FILE": str(workdir / "secrets.json")}
        if body.get("enableGpu"):
            env["KAGGLE_GPU_ENABLED"] = "1"  # the stand-in has no GPU; the flag records the request
        command = f"cd {shlex.quote(str(workdir / 'working'))} && python {shlex.quote(str(workdir / 'src' / 'script.py'))}"
        bootstrap = ""
        if self.faults.bootstrap_failure:
            reason, self.faults.bootstrap_failure = self.faults.bootstrap_failure, None
            bootstrap = f"echo {shlex.quote('Kaggle: ' + reason)} >&2; exit 1"
        timeout = body.get("sessionTimeoutSeconds")
        if timeout:
            command = f"timeout {int(timeout)} bash -c {shlex.quote(command)}"
        self.launch(session_id, command, env, bootstrap=bootstrap, name=ref)
        self._sessions[ref] = session_id
        if self.faults.take("lose_create_response"):
            return 200, LOST
        return 200, {"ref": f"/code/{ref}", "url": f"{self.url}/code/{ref}", "versionNumber": self._next,
                     "kernelId": 90000 + self._next}

    def leaked(self) -> list[str]:
        """Kaggle spends GPU quota while a session runs: a session still running is a leak."""
        return self.running_processes()

    def session_of(self, ref: str) -> str | None:
        return self._sessions.get(ref)

    def working_dir(self, session_id: str) -> Path:
        return self.workdir / self.provider / session_id / "working"
