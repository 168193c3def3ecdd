"""Remote compute: the run loop every provider shares.

A provider backend subclasses `RemoteComputeBackend` and implements `launch`, `poll`, `terminate` and `find`
(see the contract in llm_assets/compute/backends/__init__.py). Everything else is here: Dagster Pipes over
the artifact store's S3 bucket, the machine's life (llm_assets.compute.lifecycle: intent record before the
launch, adoption after a lost response or a crash, terminate until confirmed), deadlines (start-up, worker
heartbeat, max_runtime), the run's budget across all its launches (llm_assets.compute.run_budget), and the
mapping of failures to retry or stop.

`DetachedProcessBackend` (backends/detached.py) runs the worker as a detached local process through this
same loop.
"""

from __future__ import annotations

import time
from typing import Optional

import dagster as dg
from pydantic import Field

from llm_assets.compute.backends import (
    ComputeBackend, JobStatus, LaunchedJob, LaunchSpec, StageRequest, as_classifiable,
    failure_reported, raise_with_verdict, result_from_pipes,
)
from llm_assets.compute.backends.pipes_s3 import FixedKeyS3ContextInjector, FixedPrefixS3MessageReader, MessageClock
from llm_assets.compute.cost import BudgetExceededError, CostMeter
from llm_assets.compute.launch import (
    ENV_HEARTBEAT_SECONDS, LIVE_STATES, JobRecord, checkpoint_prefix, job_key, machine_name, new_messages_prefix, worker_environment,
)
from llm_assets.compute.lifecycle import Lifecycle
from llm_assets.compute.limits import run_limits
from llm_assets.compute.run_budget import WARN_FRACTION, RunBudget
from llm_assets.compute.verify import verified_checkpoint, verify_published
from llm_assets.stages import get_stage
from llm_assets.core.errors import ConfigError
from llm_assets.core.failures import BootstrapError, ComputeTimeoutError, MaxRuntimeExceededError, PreemptedError

RUN_COST_TAG = "llm_assets/run_cost_usd"          # the run's compute cost so far, all launches
RUN_MAX_COST_TAG = "llm_assets/max_cost_usd"      # a run may set its own cap with this tag
DAGSTER_MAX_RUNTIME_TAG = "dagster/max_runtime"   # Dagster's own run limit (seconds): a stage never outlives it


class RemoteComputeBackend(ComputeBackend):
    """A machine elsewhere: Pipes over S3, a recorded job identity, deadlines, terminate on every way out."""

    max_cost_usd: Optional[float] = Field(
        default=25.0, gt=0, description="Budget cap per run in USD, over every launch of the run (retries and "
        "other stages included): a warning in the run's log at 80%, the machine stopped and the step failed "
        "fatally at 100%. A run's tag llm_assets/max_cost_usd overrides it.")
    poll_interval_seconds: float = Field(default=10.0, gt=0, description="Seconds between job status polls.")
    message_poll_seconds: float = Field(default=5.0, gt=0, description="Seconds between reads of the "
                                        "worker's message chunks in S3 (how live the logs are).")
    message_flush_seconds: float = Field(default=5.0, gt=0, description="Seconds between the worker's "
                                         "uploads of message and log chunks.")
    worker_env: dict[str, str] = Field(default_factory=dict, description="Extra, non-secret environment for "
                                       "the worker (e.g. HF_HUB_OFFLINE); secrets go in provider secret fields.")
    startup_timeout_seconds: float = Field(default=1200.0, ge=0, description="A machine not running (nor its "
                                           "worker talking) this long after launch is terminated; retryable. 0: none.")
    heartbeat_seconds: float = Field(default=30.0, gt=0, description="How often the worker sends a heartbeat "
                                     "through Pipes.")
    heartbeat_timeout_seconds: float = Field(default=600.0, ge=0, description="No message from a running worker "
                                             "for this long: the machine is terminated; retryable. 0: none.")
    max_runtime_seconds: float = Field(default=12 * 3600.0, ge=0, description="Longest a stage may run on one "
                                       "machine; past it the machine is terminated and the step fails fatally. "
                                       "The run's dagster/max_runtime tag lowers it. 0: none.")
    terminate_attempts: int = Field(default=6, ge=1, description="Terminate calls (with backoff) before a machine "
                                    "that is not confirmed gone fails the run, naming it.")
    terminate_retry_seconds: float = Field(default=5.0, ge=0, description="First backoff between terminate "
                                           "attempts; it doubles per attempt (at most 60 s).")
    terminate_confirm_seconds: float = Field(default=30.0, ge=0, description="How long one terminate attempt "
                                             "waits for the provider to report the machine gone.")
    stale_record_seconds: float = Field(default=180.0, gt=0, description="A job record another live run has not "
                                        "refreshed for this long is taken over (its orchestrator died); a fresher "
                                        "one refuses the duplicate work.")
    worker_role_arn: Optional[str] = Field(default=None, description="IAM role the orchestrator assumes per job "
                                           "(STS, with a session policy: read the store, write only the job's "
                                           "prefixes); the worker gets those temporary credentials, never the "
                                           "orchestrator's key. E.g. dg.EnvVar('LLM_ASSETS_WORKER_ROLE_ARN').")
    sts_endpoint_url: Optional[str] = Field(default=None, description="STS endpoint for worker_role_arn (unset: "
                                            "the store's S3 endpoint when it has one, as MinIO serves STS there; "
                                            "else AWS's).")
    worker_aws_access_key_id: Optional[str] = Field(default=None, repr=False, description="Instead of "
                                                    "worker_role_arn: a separate, prefix-scoped worker key the "
                                                    "operator provisioned (see llm_assets/compute/credentials.py).")
    worker_aws_secret_access_key: Optional[str] = Field(default=None, repr=False, description="Its secret.")
    worker_aws_session_token: Optional[str] = Field(default=None, repr=False, description="Its session token, "
                                                    "passed through when the worker key is temporary.")
    share_orchestrator_credentials: bool = Field(default=False, description="Give the worker the orchestrator's "
                                                 "own S3 credentials. Only for a worker on a machine you trust as "
                                                 "much as the orchestrator's (the detached local process).")

    # -- what a provider implements ------------------------------------------------------------
    def launch(self, context, spec: LaunchSpec) -> LaunchedJob:
        raise NotImplementedError

    def poll(self, job_id: str) -> JobStatus:
        raise NotImplementedError

    def terminate(self, job_id: str) -> None:
        raise NotImplementedError

    def find(self, name: str) -> list[str]:
        """Machines not yet terminated that carry `name` (pod name / instance label / kernel slug)."""
        raise NotImplementedError

    def is_gone(self, job_id: str) -> bool:
        """True once the provider confirms the machine terminated (no longer exists, no longer billing)."""
        return self.poll(job_id).phase == "gone"

    def list_machines(self) -> list[tuple[str, str]]:
        """(id, name) of every machine not yet terminated whose name starts with the project's prefix."""
        return []

    def configured(self) -> bool:
        """Whether this backend's credentials are set (the orphan sweeper skips the others)."""
        return True

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

    def lifecycle(self, context, store) -> Lifecycle:
        return Lifecycle(self, store, log=context.log.info, warn=context.log.warning,
                         run_is_live=lambda run_id: _run_is_live(context.instance, run_id),
                         terminate_attempts=self.terminate_attempts,
                         terminate_retry_seconds=self.terminate_retry_seconds,
                         terminate_confirm_seconds=self.terminate_confirm_seconds,
                         stale_seconds=self.stale_record_seconds)

    def _run(self, context, request: StageRequest) -> dg.Output:
        limits = self.limits(context, request.stage)
        self._check_deadlines_config(limits["heartbeat_timeout_seconds"])
        store = s3_store_of(request)
        run_id = context.run.run_id
        key = job_key(request.stage, request.inputs, request.config)
        budget = RunBudget(store, run_id, run_cap(context, limits["max_cost_usd"]))
        spent = budget.spent()
        if budget.cap_usd is not None and spent >= budget.cap_usd:  # never launch once the run is out of money
            raise BudgetExceededError(spent, budget.cap_usd, self.backend_name)
        lifecycle = self.lifecycle(context, store)
        previous = JobRecord.load(store, key)
        record = None
        if previous is not None and previous.state in LIVE_STATES and previous.backend == self.backend_name:
            record = lifecycle.reclaim(previous, run_id)
        prefix = record.messages_key_prefix if record else new_messages_prefix(store.prefix, key)
        injector = FixedKeyS3ContextInjector(bucket=store.bucket, client=store.client, key=f"{prefix}/context.json")
        reader = FixedPrefixS3MessageReader(bucket=store.bucket, client=store.client, key_prefix=prefix,
                                            interval=self.message_poll_seconds, include_stdio_in_messages=True)
        extras = request.extras(run_id, key)
        if record is None and get_stage(request.stage).resumable:  # resume only from a checkpoint that verifies
            extras["checkpoint"] = verified_checkpoint(store, checkpoint_prefix(key), log=context.log.warning)
        with dg.open_pipes_session(context, injector, reader, extras=extras) as session:
            messages = MessageClock(session.message_handler)
            if record is None:
                name = machine_name(request.stage, key)
                record = lifecycle.launch(
                    key=key, name=name, run_id=run_id, stage=request.stage, messages_prefix=prefix,
                    launch=lambda: self.launch(context, self._spec(context, request, key, name, session,
                                                                   prefix, limits)),
                    default_price=self.hourly_price_usd)
                context.log.info(f"{self.backend_name}: launched job {record.job_id} ({name}) for {request.stage} "
                                 f"(${record.hourly_price_usd:.4f}/h) {record.details or ''}".rstrip())
            meter = self.meter(record.hourly_price_usd, record.started_at)
            try:
                budget.open(record.job_id, self.backend_name, record.started_at, record.hourly_price_usd)
                meter.prior_cost_usd = budget.spent(exclude=record.job_id)
                meter.max_cost_usd = budget.cap_usd
                status = self._wait(context, record, meter, budget, messages, store, limits)
            finally:
                try:
                    lifecycle.release(record)
                finally:
                    _close_cost(context, budget, record.job_id)
        failure = failure_reported(session)
        if failure is not None:
            raise failure
        # A job this process did not start (re-attached) ends as "gone": its Pipes messages tell how it ended.
        reported = status.phase == "gone" and session.message_handler.received_closed_message
        if status.phase != "succeeded" and not reported and status.error is not None:
            raise status.error
        if not session.message_handler.received_opened_message:  # the container never ran the worker
            raise BootstrapError(f"{self.backend_name}: job {record.job_id} ended ({status.phase}) "
                                 f"before the worker started{': ' + status.message if status.message else ''}")
        if status.phase != "succeeded" and not reported:
            raise PreemptedError(f"{self.backend_name}: job {record.job_id} was lost ({status.phase}) mid-stage")
        output = result_from_pipes(session.get_results(implicit_materializations=False), context, meter,
                                   request.training_examples)
        verify_published(store, output.value, what=f"{request.stage} from {self.backend_name} job {record.job_id}")
        return output

    def _spec(self, context, request: StageRequest, key: str, name: str, session, prefix: str,
              limits: dict) -> LaunchSpec:
        s3 = request.artifact_store.s3_settings()
        if not s3.has_credentials:  # boto3's chain here (a profile, an instance role) means nothing over there
            s3 = s3.with_resolved_credentials()
        s3 = self.worker_s3(s3, request, key, run_id=context.run.run_id, messages_prefix=prefix,
                            seconds=(limits["max_runtime_seconds"] or MAX_WORKER_SESSION) + limits["startup_timeout_seconds"])
        env = {**session.get_bootstrap_env_vars(),
               **worker_environment(s3, flush_seconds=self.message_flush_seconds,
                                    extra={ENV_HEARTBEAT_SECONDS: self.heartbeat_seconds, **self.worker_env})}
        return LaunchSpec(stage=request.stage, command=self.command(request.stage, self.python_executable()),
                          env=env, job_key=key, run_id=context.run.run_id, gpus=self.gpus, name=name)

    def limits(self, context, stage: str) -> dict:
        """This stage's deadlines and the run's budget: the run config's limits (a preset's) over these fields,
        max_runtime lowered by the run's dagster/max_runtime tag (llm_assets.compute.limits)."""
        chosen = {"max_cost_usd": self.max_cost_usd, "startup_timeout_seconds": self.startup_timeout_seconds,
                  "heartbeat_timeout_seconds": self.heartbeat_timeout_seconds,
                  "max_runtime_seconds": self.max_runtime_seconds, **run_limits(context.run.run_config, stage)}
        chosen["max_runtime_seconds"] = stage_max_runtime(context, chosen["max_runtime_seconds"])
        return chosen

    def worker_s3(self, orchestrator, request: StageRequest, key: str, *, run_id: str, messages_prefix: str,
                  seconds: float):
        """The S3 settings the worker gets: job-scoped, never the orchestrator's key (llm_assets.compute.credentials)."""
        from llm_assets.compute.credentials import (
            assume_worker_role, provisioned_worker, scoped_policy, write_prefixes,
        )

        if self.share_orchestrator_credentials:
            return orchestrator
        role = _value(self.worker_role_arn)
        if role:
            store = s3_store_of(request)
            policy = scoped_policy(store.bucket, store.prefix, write_prefixes(
                store.prefix, run_id, request.stage, key, messages_prefix))
            return assume_worker_role(orchestrator, role_arn=role, session_name=f"llm-assets-{key[:12]}",
                                      policy=policy, seconds=seconds, sts_endpoint_url=_value(self.sts_endpoint_url))
        if self.worker_aws_access_key_id or self.worker_aws_secret_access_key:
            return provisioned_worker(orchestrator, _value(self.worker_aws_access_key_id),
                                      _value(self.worker_aws_secret_access_key), _value(self.worker_aws_session_token))
        raise ConfigError("worker_role_arn", None, f"{self.backend_name}: a remote worker never gets the "
                          "orchestrator's S3 key; set worker_role_arn (STS, scoped per job) or "
                          "worker_aws_access_key_id / worker_aws_secret_access_key (a prefix-scoped worker key)")

    def _check_deadlines_config(self, heartbeat_timeout: Optional[float] = None) -> None:
        heartbeat_timeout = self.heartbeat_timeout_seconds if heartbeat_timeout is None else heartbeat_timeout
        floor = 2 * (self.heartbeat_seconds + self.message_flush_seconds + self.message_poll_seconds)
        if heartbeat_timeout and heartbeat_timeout <= floor:
            raise ConfigError("heartbeat_timeout_seconds", heartbeat_timeout,
                              f"must exceed 2 x (heartbeat_seconds + message_flush_seconds + message_poll_seconds)"
                              f" = {floor:g}, or a healthy worker would be stopped")

    def _wait(self, context, record: JobRecord, meter: CostMeter, budget: RunBudget, messages: MessageClock,
              store, limits: dict) -> JobStatus:
        """Poll until the machine is done, enforcing start-up, heartbeat, max_runtime and the run's budget."""
        max_runtime = limits["max_runtime_seconds"]
        startup, heartbeat = limits["startup_timeout_seconds"], limits["heartbeat_timeout_seconds"]
        launched_at, running_since, refreshed = time.time(), None, time.time()
        while True:
            status = self.poll(record.job_id)
            if status.done:
                return status
            now = time.time()
            if running_since is None and (status.phase == "running" or messages.opened):
                running_since = now
            job = f"{self.backend_name}: machine {record.job_id}"
            if running_since is None and startup and now - launched_at > startup:
                raise ComputeTimeoutError(f"{job} was not running within startup_timeout_seconds={startup:g}; "
                                          "terminated")
            last_word = max(messages.last_at or 0.0, running_since or now)
            if running_since is not None and heartbeat and now - last_word > heartbeat:
                raise ComputeTimeoutError(f"{job}: no heartbeat or message from the worker for {now - last_word:.0f}s "
                                          f"(heartbeat_timeout_seconds={heartbeat:g}); terminated")
            if max_runtime and now - meter.started_at > max_runtime:
                raise MaxRuntimeExceededError(f"{job} ran {now - meter.started_at:.0f}s, past max_runtime="
                                              f"{max_runtime:g}s; terminated")
            self._check_budget(context, meter, budget)
            if now - refreshed > self.stale_record_seconds / 4:  # tells other runs this orchestrator is alive
                record.heartbeat_at, refreshed = now, now
                record.save(store)
            left = meter.seconds_until_cap()
            time.sleep(self.poll_interval_seconds if left is None else min(self.poll_interval_seconds, left + 0.05))

    def _check_budget(self, context, meter: CostMeter, budget: RunBudget) -> None:
        fraction = meter.fraction_used()
        if fraction is not None and fraction >= WARN_FRACTION and not budget.warned():
            budget.mark_warned()
            context.log.warning(f"{self.backend_name}: this run's compute cost ${meter.run_cost():.4f} is "
                                f"{fraction:.0%} of its budget max_cost_usd=${meter.max_cost_usd:.4f}; it stops at 100%")
            _tag_cost(context, meter.run_cost())
        meter.check_budget()


def _run_is_live(instance, run_id: str) -> bool:
    """A run not known here counts as live: only its silence (a stale record) lets another take its machine."""
    run = instance.get_run_by_id(run_id) if run_id else None
    return run is None or not run.is_finished


def run_cap(context, default: Optional[float]) -> Optional[float]:
    tag = (context.run.tags or {}).get(RUN_MAX_COST_TAG)
    if tag is None:
        return default
    try:
        value = float(tag)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(f"tags.{RUN_MAX_COST_TAG}", tag, "a positive number of USD")
    return value


def stage_max_runtime(context, seconds: float) -> float:
    """The stage's max_runtime, lowered by the run's dagster/max_runtime tag (0: none)."""
    tag = (context.run.tags or {}).get(DAGSTER_MAX_RUNTIME_TAG)
    if tag is None:
        return seconds
    try:
        run_limit = float(tag)
    except ValueError:
        raise ConfigError(f"tags.{DAGSTER_MAX_RUNTIME_TAG}", tag, "a number of seconds") from None
    return min(seconds, run_limit) if seconds else run_limit


def _tag_cost(context, cost: float) -> None:
    try:
        context.instance.add_run_tags(context.run.run_id, {RUN_COST_TAG: f"{cost:.6f}"})
    except Exception:  # noqa: BLE001 - a figure for people; the budget itself lives in the store
        context.log.warning(f"could not tag the run with its cost ${cost:.6f}")


def _close_cost(context, budget: RunBudget, job_id: str) -> None:
    try:
        budget.close(job_id)
        _tag_cost(context, budget.spent())
    except Exception as exc:  # noqa: BLE001 - never hides the stage's own outcome
        context.log.warning(f"could not record the cost of machine {job_id}: {type(exc).__name__}")


def s3_store_of(request: StageRequest):
    from llm_assets.core.artifacts_s3 import S3ArtifactStore

    store = request.artifact_store.store()
    if not isinstance(store, S3ArtifactStore):
        raise ConfigError("artifact_store.root", request.artifact_store.root_uri(),
                          "a remote compute backend needs an s3:// artifact store the machine can reach")
    return store


from llm_assets.compute.backends.detached import DetachedProcessBackend, _alive  # noqa: E402 - re-exported

__all__ = ["RemoteComputeBackend", "DetachedProcessBackend", "_alive", "run_cap", "stage_max_runtime",
           "s3_store_of", "FixedKeyS3ContextInjector", "FixedPrefixS3MessageReader"]


MAX_WORKER_SESSION = 12 * 3600.0


def _value(value):
    """A field's value now: a dg.EnvVar is read when used, never at import."""
    return value.get_value() if isinstance(value, dg.EnvVar) else value


def _is_set(value) -> bool:
    """A credential field is set: a literal, or a dg.EnvVar whose variable has a value now."""
    if isinstance(value, dg.EnvVar):
        return bool(value.get_value())
    return bool(value)
