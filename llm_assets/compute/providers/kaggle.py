"""Kaggle through the official `kaggle` package: push a GPU kernel that installs the project and runs the
stage, poll its session status, fetch its output.

A Kaggle kernel gets no custom environment variables. What the worker needs is split in two:
non-secret values (Pipes context and message locations, the store's endpoint, the stage) are
written into the private kernel's source; secrets (the artifact store's credentials) are read on
the kernel from Kaggle Secrets (`kaggle_secrets.UserSecretsClient`), which the user attaches to the
notebook once in Kaggle's UI under the same names. So no secret is ever uploaded with the code.

`import kaggle` authenticates at import time and exits without credentials; we import
`kaggle.api.kaggle_api_extended` lazily and hand it the credentials explicitly.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Optional

from llm_assets.core.failures import (
    ProviderQueueFullError, ProviderUnavailableError, TransientNetworkError,
)
from llm_assets.compute.providers.machine import (
    ENDED, FAILED, PENDING, RUNNING, MachineState, ProviderConfigError, scrub,
)

_QUEUE_FULL = re.compile(r"session count|maximum .* sessions|queue (is )?full|too many (running|concurrent)|"
                         r"try again later|accelerator.*(not available|unavailable)", re.I)
_QUOTA = re.compile(r"quota", re.I)
RUNNER_TEMPLATE = '''"""llm-assets stage runner, pushed by the Kaggle compute backend. Secrets come from Kaggle Secrets."""
import json, os, subprocess, sys, threading, time

PLAN = json.loads({plan!r})


def secret(label):
    from kaggle_secrets import UserSecretsClient
    return UserSecretsClient().get_secret(label)


def watch_for_cancel(worker, env):
    # Kaggle's API cannot stop a pushed session: the orchestrator cancels by writing this object.
    import boto3
    s3 = boto3.client("s3", endpoint_url=env.get("LLM_ASSETS_S3_ENDPOINT_URL") or None,
                      region_name=env.get("AWS_REGION") or None, aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
                      aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"))
    while worker.poll() is None:
        try:
            s3.head_object(Bucket=PLAN["cancel"]["bucket"], Key=PLAN["cancel"]["key"])
            print("llm-assets: cancelled by the orchestrator", flush=True)
            worker.kill()
            return
        except Exception:
            time.sleep(PLAN["cancel"]["poll_seconds"])


env = dict(os.environ, **PLAN["env"])
env.update({{name: secret(label) for name, label in PLAN["secret_env"].items()}})
install = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PLAN["install"]]
if PLAN["install"] and subprocess.run(install).returncode != 0:
    sys.exit("llm-assets bootstrap: pip install failed")
worker = subprocess.Popen(PLAN["command"], env=env)
if PLAN.get("cancel"):
    threading.Thread(target=watch_for_cancel, args=(worker, env), daemon=True).start()
sys.exit(worker.wait())
'''


def kernel_slug(stage: str, key: str) -> str:
    """A kernel slug Kaggle accepts: lowercase letters, digits and hyphens (a stage's `_` becomes `-`)."""
    return re.sub(r"[^a-z0-9-]+", "-", f"llm-assets-{stage}-{key[:12]}".lower())


def runner_script(*, command: list[str], env: dict[str, str], secret_env: dict[str, str],
                  install: list[str], cancel: Optional[dict] = None) -> str:
    """The kernel's source. `env` must hold no secret; `secret_env` maps variable -> Kaggle Secret label;
    `cancel` ({bucket, key, poll_seconds}) is the S3 object whose appearance stops the worker."""
    plan = json.dumps({"command": command, "env": env, "secret_env": secret_env, "install": install,
                       "cancel": cancel}, sort_keys=True)
    return RUNNER_TEMPLATE.format(plan=plan)


class KaggleClient:
    name = "kaggle"

    def __init__(self, username: str, key: str, *, api_endpoint: Optional[str] = None,
                 secrets: tuple[str, ...] = ()):
        if not username or not key:
            raise ProviderConfigError("Kaggle needs credentials: set KAGGLE_USERNAME and KAGGLE_KEY")
        self.username = username
        self._key = key
        self._secrets = (key, *secrets)
        self.api_endpoint = api_endpoint.rstrip("/") if api_endpoint else None

    def __repr__(self) -> str:
        return f"KaggleClient(username={self.username!r}, key=***)"

    def _api(self):
        from kaggle.api.kaggle_api_extended import KaggleApi

        client = self
        # Credentials go to the SDK directly (never through os.environ or ~/.kaggle); api_endpoint
        # points its HTTP client somewhere else than api.kaggle.com (a proxy, or the tests' stand-in).

        class ConfiguredKaggleApi(KaggleApi):
            def build_kaggle_client(self):
                built = KaggleApi.build_kaggle_client_with_params(args=[], username=client.username,
                                                                  password=client._key)
                if client.api_endpoint:
                    built._http_client._endpoint = client.api_endpoint
                return built

        api = ConfiguredKaggleApi()
        api.config_values = {"username": self.username, "key": self._key}
        return api

    def _call(self, what: str, fn):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - mapped onto retryable / fatal below, secrets scrubbed
            status = getattr(getattr(exc, "response", None), "status_code", None)
            text = scrub(f"{type(exc).__name__}: {exc}", self._secrets)
            names = {cls.__name__ for cls in type(exc).__mro__}
            if status in (401, 403):
                raise ProviderConfigError(f"Kaggle refused the credentials while trying to {what} (HTTP {status}): "
                                  f"check KAGGLE_USERNAME / KAGGLE_KEY") from None
            if status == 429 or (status or 0) >= 500:
                raise ProviderUnavailableError(f"Kaggle answered HTTP {status} while trying to {what}") from None
            if names & {"ConnectionError", "Timeout", "ConnectTimeout", "ReadTimeout"}:
                raise TransientNetworkError(f"Kaggle unreachable while trying to {what}: {text}") from None
            raise ProviderConfigError(f"Kaggle: cannot {what}: {text}") from None

    def push(self, *, slug: str, script: str, enable_gpu: bool, machine_shape: Optional[str],
             timeout_seconds: Optional[int], enable_internet: bool = True) -> str:
        """Push (and so start) a private script kernel; returns its ref `owner/slug`."""
        ref = f"{self.username}/{slug}"
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "runner.py").write_text(script, encoding="utf-8")
            Path(folder, "kernel-metadata.json").write_text(json.dumps({
                "id": ref, "title": slug, "code_file": "runner.py", "language": "python",
                "kernel_type": "script", "is_private": True, "enable_gpu": enable_gpu,
                "enable_internet": enable_internet, "machine_shape": machine_shape,
                "dataset_sources": [], "competition_sources": [], "kernel_sources": [], "model_sources": [],
            }), encoding="utf-8")
            api = self._api()
            response = self._call(f"push kernel {ref}", lambda: api.kernels_push(
                folder, timeout=str(timeout_seconds) if timeout_seconds else None))
        error = scrub(str(getattr(response, "error", None) or ""), self._secrets)
        if error:
            if _QUOTA.search(error):
                raise ProviderConfigError(f"Kaggle refused kernel {ref}: {error} (GPU quota: wait for the weekly reset)")
            if _QUEUE_FULL.search(error):
                raise ProviderQueueFullError(f"Kaggle cannot start kernel {ref} now: {error}")
            raise ProviderConfigError(f"Kaggle refused kernel {ref}: {error}")
        return ref

    def state(self, ref: str) -> MachineState:
        api = self._api()
        answer = self._call(f"read the status of kernel {ref}", lambda: api.kernels_status(ref))
        status = getattr(answer.status, "name", str(answer.status)).upper()
        message = scrub(str(answer.failure_message or ""), self._secrets)
        if status.endswith("COMPLETE"):
            return MachineState(ENDED, "complete")
        if status.endswith("ERROR"):
            return MachineState(FAILED, message or "kernel session failed")
        if "CANCEL" in status:
            return MachineState(ENDED, "cancelled")
        if status.endswith("RUNNING"):
            return MachineState(RUNNING, message)
        return MachineState(PENDING, status.lower())

    def output(self, ref: str, dest: Path) -> list[Path]:
        """Download the session's output files and log (kernels_output) into `dest`."""
        api = self._api()
        files, _ = self._call(f"fetch the output of kernel {ref}",
                              lambda: api.kernels_output(ref, str(dest), force=True, quiet=True))
        return [Path(f) for f in files]
