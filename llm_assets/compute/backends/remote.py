"""Remote compute: the run loop every provider shares, and a detached local process that uses it.

A provider backend subclasses `RemoteComputeBackend` and implements `launch`, `poll` and
`terminate` (see the contract in llm_assets/compute/backends/__init__.py). Everything else is here: Dagster Pipes over
the artifact store's S3 bucket, the job record for re-attaching, cost and budget cap, termination
on every way out, and the mapping of failures to retry or stop.

`DetachedProcessBackend` runs the worker as a detached process on this machine that shares
nothing with the step but the S3 artifact store and the environment a remote machine would get:
a cheap way to try an image's environment, and the backend the remote path's tests run for real.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

import dagster as dg
from dagster_aws.pipes import PipesS3MessageReader
from pydantic import Field

from llm_assets.compute.cost import CostMeter
from llm_assets.compute.launch import JobRecord, job_key, new_messages_prefix, worker_environment
from llm_assets.core.errors import ConfigError
from llm_assets.core.failures import BootstrapError, PreemptedError, error_from_exit
from llm_assets.compute.backends import (
    ComputeBackend, JobStatus, LaunchedJob, LaunchSpec, StageRequest, as_classifiable,
    failure_reported, raise_with_verdict, result_from_pipes,
)


class FixedKeyS3ContextInjector(dg.PipesContextInjector):
    """Pipes context as one JSON object at a key chosen by the backend (dagster's picks a random one)."""

    def __init__(self, *, bucket: str, client, key: str):
        self.bucket, self.client, self.key = bucket, client, key

    @contextlib.contextmanager
    def inject_context(self, context_data) -> Iterator[dict]:
        self.client.put_object(Body=json.dumps(context_data).encode("utf-8"), Bucket=self.bucket, Key=self.key)
        try:
            yield {"bucket": self.bucket, "key": self.key}
        finally:
            self.client.delete_object(Bucket=self.bucket, Key=self.key)

    def no_messages_debug_text(self) -> str:
        return f"Pipes context at s3://{self.bucket}/{self.key}; the worker reads it with PipesS3ContextLoader."


class FixedPrefixS3MessageReader(PipesS3MessageReader):
    """PipesS3MessageReader on a recorded key prefix, so a restarted orchestrator reads the same job."""

    def __init__(self, *, key_prefix: str, **kwargs):
        super().__init__(**kwargs)
        self.key_prefix = key_prefix

    @contextlib.contextmanager
    def get_params(self) -> Iterator[dict]:
        with super().get_params() as params:
            yield {**params, "key_prefix": self.key_prefix}


class RemoteComputeBackend(ComputeBackend):
    """A machine elsewhere: Pipes over S3, a recorded job identity, terminate on every way out."""

    poll_interval_seconds: float = Field(default=10.0, gt=0, description="Seconds between job status polls.")
    message_poll_seconds: float = Field(default=5.0, gt=0, description="Seconds between reads of the "
                                        "worker's message chunks in S3 (how live the logs are).")
    message_flush_seconds: float = Field(default=5.0, gt=0, description="Seconds between the worker's "
                                         "uploads of message and log chunks.")
    worker_env: dict[str, str] = Field(default_factory=dict, description="Extra, non-secret environment for "
                                       "the worker (e.g. HF_HUB_OFFLINE); secrets go in provider secret fields.")

    # -- what a provider implements ------------------------------------------------------------
    def launch(self, context, spec: LaunchSpec) -> LaunchedJob:
        raise NotImplementedError

    def poll(self, job_id: str) -> JobStatus:
        raise NotImplementedError

    def terminate(self, job_id: str) -> None:
        raise NotImplementedError

    def python_executable(self) -> str:
        return "python"  # the image's interpreter

    # -- the shared run loop ----------------------------------------------------------------------
    def run_stage(self, context: dg.AssetExecutionContext, request: StageRequest) -> dg.Output:
        try:
            return self._run(context, request)
        except dg.Failure:
            raise
        except Exception as exc:  # BaseException (cancellation) passes through untouched
            raise_with_verdict(as_classifiable(exc), context.log, self.backend_name)

    def _run(self, context, request: StageRequest) -> dg.Output:
        store = s3_store_of(request)
        key = job_key(request.stage, request.inputs, request.config)
        record = self._live_record(context, store, key)
        prefix = record.messages_key_prefix if record else new_messages_prefix(store.prefix, key)
        injector = FixedKeyS3ContextInjector(bucket=store.bucket, client=store.client, key=f"{prefix}/context.json")
        reader = FixedPrefixS3MessageReader(bucket=store.bucket, client=store.client, key_prefix=prefix,
                                            interval=self.message_poll_seconds, include_stdio_in_messages=True)
        with dg.open_pipes_session(context, injector, reader,
                                   extras=request.extras(context.run.run_id, key)) as session:
            if record is None:
                record = self._launch(context, request, store, key, prefix, session)
            else:
                context.log.info(f"{self.backend_name}: re-attaching to job {record.job_id} (started by run "
                                 f"{record.run_id}) instead of launching a second one")
            meter = self.meter(record.hourly_price_usd, record.started_at)
            try:
                status = self._wait(record.job_id, meter)
            finally:
                self._terminate(context, record.job_id)
                record.finished(store)
        failure = failure_reported(session)
        if failure is not None:
            raise failure
        # A job this process did not start (re-attached) ends as "gone": its Pipes messages tell how it ended.
        reported = status.phase == "gone" and session.message_handler.received_closed_message
        if status.phase != "succeeded" and not reported:
            if status.error is not None:
                raise status.error
            if not session.message_handler.received_opened_message:
                raise BootstrapError(f"{self.backend_name}: job {record.job_id} ended ({status.phase}) "
                                     "before the worker started")
            raise PreemptedError(f"{self.backend_name}: job {record.job_id} was lost ({status.phase}) mid-stage")
        return result_from_pipes(session.get_results(implicit_materializations=False), context, meter,
                                 request.training_examples)

    def _live_record(self, context, store, key: str) -> Optional[JobRecord]:
        """The recorded job for this work if it is still running here; a dead one is cleaned up."""
        record = JobRecord.load(store, key)
        if record is None or record.state != "running" or record.backend != self.backend_name:
            return None
        if not self.poll(record.job_id).done:
            return record
        self._terminate(context, record.job_id)
        record.finished(store)
        return None

    def _launch(self, context, request: StageRequest, store, key: str, prefix: str, session) -> JobRecord:
        s3 = request.artifact_store.s3_settings()
        if not s3.has_credentials:  # boto3's chain here (a profile, an instance role) means nothing over there
            s3 = s3.with_resolved_credentials()
        env = {**session.get_bootstrap_env_vars(),
               **worker_environment(s3, flush_seconds=self.message_flush_seconds, extra=self.worker_env)}
        spec = LaunchSpec(stage=request.stage, command=self.command(request.stage, self.python_executable()),
                          env=env, job_key=key, run_id=context.run.run_id, gpus=self.gpus)
        job = self.launch(context, spec)
        price = self.hourly_price_usd if job.hourly_price_usd is None else job.hourly_price_usd
        record = JobRecord(backend=self.backend_name, job_id=job.job_id, job_key=key, stage=request.stage,
                           run_id=context.run.run_id, messages_key_prefix=prefix, hourly_price_usd=price,
                           details=job.details)
        record.save(store)
        context.log.info(f"{self.backend_name}: launched job {job.job_id} for {request.stage} "
                         f"(${price:.4f}/h) {job.details or ''}".rstrip())
        return record

    def _wait(self, job_id: str, meter: CostMeter) -> JobStatus:
        while True:
            status = self.poll(job_id)
            if status.done:
                return status
            meter.check_budget()
            left = meter.seconds_until_cap()
            time.sleep(self.poll_interval_seconds if left is None else min(self.poll_interval_seconds, left + 0.05))

    def _terminate(self, context, job_id: str) -> None:
        try:
            self.terminate(job_id)
        except Exception as exc:  # a failed terminate must be seen: it may be billing
            context.log.error(f"{self.backend_name}: terminating job {job_id} failed: {exc}; "
                              "check the provider's console for a machine still running")
            raise


def s3_store_of(request: StageRequest):
    from llm_assets.core.artifacts_s3 import S3ArtifactStore

    store = request.artifact_store.store()
    if not isinstance(store, S3ArtifactStore):
        raise ConfigError("artifact_store.root", request.artifact_store.root_uri(),
                          "a remote compute backend needs an s3:// artifact store the machine can reach")
    return store


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

    def python_executable(self) -> str:
        return self.python or sys.executable

    def launch(self, context, spec: LaunchSpec) -> LaunchedJob:
        workdir = Path(tempfile.mkdtemp(prefix=f"llm-assets-{spec.stage}-"))
        log = open(workdir / "worker.log", "ab")
        env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", str(workdir)), **spec.env}
        process = subprocess.Popen(spec.command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        log.close()
        _CHILDREN[str(process.pid)] = process
        return LaunchedJob(job_id=str(process.pid), details={"workdir": str(workdir)})

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
