"""KaggleBackend: a stage in a Kaggle GPU kernel, through the official `kaggle` package.

launch = push a private script kernel (GPU on) that pip-installs the project and runs the worker;
the kernel's source carries only non-secret values, the artifact store's credentials are read on
Kaggle from Kaggle Secrets (attach secrets named like the variables, e.g. AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, to the notebook once in Kaggle's UI). poll = the kernel session's status;
terminate = Kaggle's API cannot stop a pushed session, so the kernel watches an S3 object next to its
Pipes messages and stops the worker when it appears, and `session_timeout_seconds` bounds it anyway;
after the session ends its output and log are fetched and the log's tail is logged. Kaggle's GPUs
are free within the weekly quota: `hourly_price_usd` (config) prices them, default 0.
Errors: HTTP 5xx / 429 -> ProviderUnavailableError, GPU session limit / queue full ->
ProviderQueueFullError (retryable); refused credentials, exhausted quota -> fatal.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from llm_assets.compute.providers.kaggle import KaggleClient, kernel_slug, runner_script
from llm_assets.compute.providers.machine import PENDING, RUNNING, ProviderConfigError, scrub
from llm_assets.core.s3_settings import S3Settings
from llm_assets.compute.backends import JobStatus, LaunchedJob, LaunchSpec, resolve_secret
from llm_assets.compute.backends.remote import RemoteComputeBackend, _is_set

# Variables of LaunchSpec.env that are secrets: read on the kernel from Kaggle Secrets, never pushed.
SECRET_ENV_NAMES = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})
# job id -> (S3 client settings, bucket, key) of the cancel object; kept only in this process.
_CANCEL: dict[str, tuple[dict, str, str]] = {}
_CANCEL_LOCK = threading.Lock()


class KaggleBackend(RemoteComputeBackend):
    """Runs the worker in a Kaggle GPU kernel; credentials from dg.EnvVar("KAGGLE_USERNAME"/"KAGGLE_KEY")."""

    username: Optional[str] = Field(default=None, description="Kaggle user name; set with "
                                    "dg.EnvVar('KAGGLE_USERNAME'), read at launch.")
    key: Optional[str] = Field(default=None, repr=False,
                               description="Kaggle API key; set with dg.EnvVar('KAGGLE_KEY'), read at launch.")
    api_endpoint: Optional[str] = Field(default=None, description="Kaggle API endpoint; unset: api.kaggle.com.")
    install: list[str] = Field(default_factory=lambda: ["llm-assets"], description="pip install arguments that "
                               "install this project on the kernel, e.g. 'git+https://github.com/you/llm-assets@<sha>'.")
    enable_gpu: bool = Field(default=True, description="Run the kernel with Kaggle's GPU accelerator.")
    machine_shape: Optional[str] = Field(default=None, description="Kaggle accelerator, e.g. 'NvidiaTeslaT4' "
                                         "(unset: Kaggle's default GPU).")
    session_timeout_seconds: int = Field(default=6 * 3600, ge=60, description="Kaggle stops the session after "
                                         "this many seconds, whatever happens to the orchestrator.")
    secret_labels: dict[str, str] = Field(default_factory=dict, description="Kaggle Secret label per secret "
                                          "variable when it differs from the variable's name.")
    cancel_poll_seconds: float = Field(default=10.0, gt=0, description="How often the kernel looks for the "
                                       "orchestrator's cancel object.")

    @property
    def backend_name(self) -> str:
        return "kaggle"

    def client(self, secrets: tuple[str, ...] = ()) -> KaggleClient:
        return KaggleClient(resolve_secret(self.username, "kaggle username"), resolve_secret(self.key, "kaggle key"),
                            api_endpoint=self.api_endpoint, secrets=secrets)

    def launch(self, context: dg.AssetExecutionContext, spec: LaunchSpec) -> LaunchedJob:
        client = self.client(tuple(spec.env.values()))
        public = {k: v for k, v in spec.env.items() if k not in SECRET_ENV_NAMES}
        secret_env = {k: self.secret_labels.get(k, k) for k in spec.env if k in SECRET_ENV_NAMES}
        slug = spec.name or kernel_slug(spec.stage, spec.job_key)
        cancel = _cancel_target(spec.env)
        script = runner_script(command=spec.command, env=public, secret_env=secret_env, install=list(self.install),
                               cancel=None if cancel is None else {"bucket": cancel[1], "key": cancel[2],
                                                                   "poll_seconds": self.cancel_poll_seconds})
        ref = client.push(slug=slug, script=script, enable_gpu=self.enable_gpu, machine_shape=self.machine_shape,
                          timeout_seconds=self.session_timeout_seconds)
        if cancel is not None:
            with _CANCEL_LOCK:
                _CANCEL[ref] = cancel
        return LaunchedJob(job_id=ref, hourly_price_usd=None, details={
            "provider": "kaggle", "kernel": ref, "enable_gpu": self.enable_gpu,
            "machine_shape": self.machine_shape or "default", "secrets_from_kaggle": sorted(secret_env.values())})

    def worker_s3(self, orchestrator, *args, **kwargs):
        """The kernel's credentials come from the Kaggle Secrets the user attached (a prefix-scoped worker key, see
        llm_assets/compute/credentials.py); the values here never leave this process (SECRET_ENV_NAMES)."""
        return orchestrator

    def poll(self, job_id: str) -> JobStatus:
        state = self.client().state(job_id)
        return JobStatus(phase=state.phase, error=state.error, message=state.message)

    def find(self, name: str) -> list[str]:
        """The kernel pushed under this slug, while its session still runs (Kaggle keys kernels by slug)."""
        client = self.client()
        ref = f"{client.username}/{name}"
        try:
            state = client.state(ref)
        except ProviderConfigError:  # never pushed: Kaggle answers 404
            return []
        return [ref] if state.status in (PENDING, RUNNING) else []

    def is_gone(self, job_id: str) -> bool:
        """A session no longer queued or running spends no quota: that is Kaggle's "terminated"."""
        return self.client().state(job_id).status not in (PENDING, RUNNING)

    def configured(self) -> bool:
        return _is_set(self.username) and _is_set(self.key)

    def terminate(self, job_id: str) -> None:
        client = self.client()
        state = client.state(job_id)
        if state.status in (PENDING, RUNNING):
            self._request_cancel(job_id)
            return
        self._log_output(client, job_id)

    def _request_cancel(self, job_id: str) -> None:
        with _CANCEL_LOCK:  # kept, not popped: terminate is retried until the session is confirmed over
            target = _CANCEL.get(job_id)
        log = dg.get_dagster_logger()
        if target is None:
            log.warning(f"kaggle: kernel {job_id} is still running and this process holds no cancel handle for it; "
                        f"it stops within session_timeout_seconds={self.session_timeout_seconds}")
            return
        settings, bucket, key = target
        settings.client().put_object(Bucket=bucket, Key=key, Body=b"cancel")
        log.info(f"kaggle: asked kernel {job_id} to stop (s3://{bucket}/{key})")

    def _log_output(self, client: KaggleClient, job_id: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            files = client.output(job_id, Path(tmp))
            logs = [f for f in files if f.suffix == ".log" and f.is_file()]
            tail = logs[0].read_text(errors="replace")[-2000:] if logs else ""
        names = sorted(f.name for f in files)
        dg.get_dagster_logger().info(f"kaggle: kernel {job_id} output: {names}; log tail:\n"
                                     f"{scrub(tail, client._secrets)}")


def _cancel_target(env: dict[str, str]) -> Optional[tuple[S3Settings, str, str]]:
    """The S3 object next to the worker's Pipes messages that tells the kernel to stop."""
    from dagster_pipes import decode_param

    encoded = env.get("DAGSTER_PIPES_MESSAGES")
    if not encoded:
        return None
    params = decode_param(encoded)
    if "bucket" not in params:
        return None
    return S3Settings.from_env(env), params["bucket"], f"{params.get('key_prefix', '').rstrip('/')}/cancel"
