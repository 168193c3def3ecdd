"""Compute backends: where the training, export and evaluation stages run.

The contract every backend implements (PART B's RunPod / Vast.ai / Kaggle plug in here):

* A backend is a `ComputeBackend` (a `dg.ConfigurableResource`) with
  `run_stage(context, request: StageRequest) -> StageResult`. The asset passes the stage name
  ("training" | "export" | "evaluation"), the upstream manifests, the stage's config and the artifact
  store; it gets back the manifest the worker reported (the asset's value) and the metadata, cost
  figures included (`compute_backend`, `compute_seconds`, `hourly_price_usd`, `cost_usd`,
  `cost_per_training_example_usd`, `max_cost_usd`).
* Backends are handed to the assets as one resource, `compute_backends` (a `ComputeBackends`
  mapping name -> backend instance); each stage's config field `compute` picks one by name
  ("in_process", the default, runs the stage in the step's own process). The instances are used as
  plain objects, not initialised by Dagster, so a backend that holds `dg.EnvVar("RUNPOD_API_KEY")`
  does not make every run fail where that variable is unset: resolve secrets when launching, with
  `resolve_secret(self.api_key, "api_key")`, never at import or construction, and never log them.
* Remote backends subclass `RemoteComputeBackend` (resources/compute_remote.py) and implement
  only the provider calls:
  `launch(context, spec: LaunchSpec) -> LaunchedJob`, `poll(job_id) -> JobStatus`,
  `terminate(job_id)` (idempotent). `run_stage` does the rest, the same for every provider:
  - Dagster Pipes over the artifact store's S3 bucket: `PipesS3ContextInjector`-style context at
    `<prefix>/compute/pipes/<job key>/<launch id>/context.json` and a `PipesS3MessageReader` on a
    fixed key prefix (so a restarted orchestrator can re-read a running job's messages). The
    worker picks the S3 loader / writer itself when it sees an S3 context. `spec.env` is exactly
    the environment the machine must get: DAGSTER_PIPES_CONTEXT, DAGSTER_PIPES_MESSAGES, the
    store's endpoint (LLM_ASSETS_S3_ENDPOINT_URL), region and credentials (secrets: pass them
    through the provider's env/secret mechanism, never into logs); `spec.command` the worker's
    command line (`python -m llm_assets.worker STAGE`, torchrun when `gpus` > 1).
  - Job identity: a `JobRecord` at `compute/jobs/<job key>.json` in the store while the job runs;
    a retried or restarted step whose job is still running re-attaches instead of launching again.
  - Cost: `LaunchedJob.hourly_price_usd` (from the provider's API; None falls back to the
    backend's `hourly_price_usd`); the budget cap `max_cost_usd` terminates the job and fails fatally.
  - Termination: `terminate(job_id)` runs in a `finally` on success, failure, budget stop and
    cancellation (Dagster's interrupt is a BaseException); only an orchestrator that dies without
    unwinding leaves the job running, recorded, for the next attempt to re-attach to.
  - Errors: raise (or let `poll` return in `JobStatus.error`) the classes of
    `llm_assets.core.failures`: `PreemptedError`, `ProviderQueueFullError`, `BootstrapError`,
    `ProviderUnavailableError` ... are retryable; anything else classifies there. `run_stage`
    re-raises a retryable verdict as a `RetryableError` (the asset's `COMPUTE_RETRY_POLICY` retries
    it, and training resumes from its checkpoint) and turns a fatal one into
    `dg.Failure(allow_retries=False)` whose description starts with the verdict's headline.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import dagster as dg
from pydantic import Field

from llm_assets.compute.cost import CostMeter
from llm_assets.compute.launch import STAGES, check_stage, worker_command
from llm_assets.core.failures import BootstrapError, RetryableError, classify, error_from_exit
from resources.artifact_store import ArtifactStoreResource, _resolved

IN_PROCESS = "in_process"


@dataclass
class StageRequest:
    """What a stage needs: its upstream manifests, its config and where artifacts live."""

    stage: str
    inputs: dict[str, dict]
    config: dict
    artifact_store: ArtifactStoreResource
    training_examples: Optional[int] = None  # rows trained on, for cost per training example

    def __post_init__(self):
        check_stage(self.stage)

    @property
    def asset_name(self) -> str:
        return STAGES[self.stage]

    def extras(self, run_id: str, job_key: str = "") -> dict:
        """The Pipes extras the worker reads: nothing secret goes here (it is stored with the context)."""
        store = self.artifact_store
        return {"stage": self.stage, "inputs": self.inputs, "config": self.config, "run_id": run_id,
                "job_key": job_key, "artifact_root": str(store.store().uri_for("x"))[: -len("/x")],
                "s3_endpoint_url": _resolved(store.s3_endpoint_url), "aws_region": _resolved(store.aws_region)}


@dataclass
class StageResult:
    """The worker's report: the asset's value (its manifest) and metadata for the materialization."""

    value: dict
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class LaunchSpec:
    """Everything a provider needs to start the worker: run `command` with exactly `env`."""

    stage: str
    command: list[str]
    env: dict[str, str] = field(repr=False)  # holds secrets: never log or record it
    job_key: str
    run_id: str
    gpus: int = 0


@dataclass
class LaunchedJob:
    job_id: str
    hourly_price_usd: Optional[float] = None  # the provider's reported price; None: use the config
    details: dict = field(default_factory=dict)  # shown in logs and recorded: no secrets


@dataclass
class JobStatus:
    """`phase`: pending | running | succeeded | failed | gone. `error`: why it failed (a failures class)."""

    phase: str
    error: Optional[BaseException] = None

    @property
    def done(self) -> bool:
        return self.phase in ("succeeded", "failed", "gone")


def resolve_secret(value: Optional[str], field_name: str) -> str:
    """A secret field's value at launch time (a dg.EnvVar is read now); the error names the variable only."""
    if isinstance(value, dg.EnvVar):
        resolved = value.get_value()
        if not resolved:
            raise dg.Failure(description=f"FATAL (config): environment variable {value.env_var_name} for {field_name} "
                             "is not set", allow_retries=False)
        return resolved
    if not value:
        raise dg.Failure(description=f"FATAL (config): {field_name} is not set", allow_retries=False)
    return value


class ComputeBackend(dg.ConfigurableResource):
    """Runs one pipeline stage somewhere and reports its result back through Dagster Pipes."""

    hourly_price_usd: float = Field(
        default=0.0, ge=0, description="Price of the machine per hour in USD, used when the provider reports none.")
    max_cost_usd: Optional[float] = Field(
        default=None, gt=0, description="Budget cap per run in USD: the job is stopped and the step fails "
        "fatally once its cost passes this. Unset: no cap.")
    gpus: int = Field(default=0, ge=0, description="GPUs the machine gives the worker; more than 1 launches "
                      "the worker through torchrun (one process per GPU, DDP).")
    @property
    def backend_name(self) -> str:
        return type(self).__name__

    def run_stage(self, context: dg.AssetExecutionContext, request: StageRequest) -> StageResult:
        raise NotImplementedError(f"{self.backend_name} does not implement run_stage")

    def command(self, stage: str, python: str = "python") -> list[str]:
        return worker_command(stage, self.gpus, python)

    def meter(self, hourly_price_usd: Optional[float] = None, started_at: Optional[float] = None) -> CostMeter:
        price = self.hourly_price_usd if hourly_price_usd is None else hourly_price_usd
        return CostMeter(self.backend_name, price, self.max_cost_usd, started_at or time.time())



def raise_with_verdict(exc: BaseException, log=None, source: str = "") -> None:
    """The one place a failure becomes Dagster's verdict (llm_assets.core.failures.classify decides).

    Retryable: logged and raised as it is, for the step's RetryPolicy. Fatal: dg.Failure that Dagster will
    not retry, its description the verdict's headline, with the class and reason as metadata.
    """
    verdict = classify(exc)
    prefix = f"{source}: " if source else ""
    if verdict.retryable:
        if log is not None:
            log.warning(f"{prefix}{verdict.headline}; retrying per the step's RetryPolicy")
        raise exc
    if log is not None:
        log.error(prefix + verdict.headline)
    raise dg.Failure(description=verdict.headline, allow_retries=False,
                     metadata={"failure_class": verdict.kind.value, "failure_reason": verdict.reason}) from exc


class ComputeBackends:
    """The backends the stages may pick from, by name (one Dagster resource: `compute_backends`)."""

    def __init__(self, backends: Optional[Mapping[str, ComputeBackend]] = None):
        self._backends = dict(backends or {})

    def names(self) -> list[str]:
        return [IN_PROCESS, *sorted(self._backends)]

    def get(self, name: str) -> ComputeBackend:
        if name not in self._backends:
            from llm_assets.core.errors import ConfigError

            raise ConfigError("compute", name, f"no such compute backend here; expected one of {self.names()}")
        return self._backends[name]

    def __repr__(self) -> str:
        return f"ComputeBackends({self.names()})"


def result_from_pipes(results, context, meter: CostMeter, training_examples: Optional[int]) -> StageResult:
    """The asset's value and metadata from the worker's reported materialization, plus cost figures."""
    materializations = [r for r in results if isinstance(r, dg.MaterializeResult)]
    if not materializations:
        raise BootstrapError("the worker finished without reporting a materialization")
    metadata = dict(materializations[-1].metadata or {})
    manifest = metadata.pop("manifest", None)
    value = manifest.value if isinstance(manifest, dg.JsonMetadataValue) else manifest
    if not isinstance(value, dict) or "uri" not in value:
        raise BootstrapError("the worker's materialization carries no manifest")
    for name, figure in meter.report(training_examples).items():
        metadata[name] = figure
    context.log.info(f"{meter.backend}: {meter.seconds():.1f}s at ${meter.hourly_price_usd:.4f}/h = "
                     f"${meter.cost():.6f}")
    return StageResult(value=value, metadata=metadata)


def failure_reported(session) -> Optional[BaseException]:
    """The worker's own classified failure, sent as a Pipes custom message before it exits."""
    for message in session.get_custom_messages():
        if isinstance(message, dict) and message.get("kind") == "stage_failure":
            return WorkerFailure(message.get("error_class", "Exception"), message.get("message", ""),
                                 bool(message.get("retryable")), message.get("reason", "unclassified"))
    return None


class WorkerFailure(Exception):
    """A failure inside the worker, carrying the worker's own verdict (it saw the real exception)."""

    def __init__(self, error_class: str, message: str, retryable: bool, reason: str):
        self.error_class, self.retryable, self.reason = error_class, retryable, reason
        super().__init__(f"{error_class}: {message}")


def as_classifiable(exc: BaseException) -> BaseException:
    """WorkerFailure -> an exception llm_assets.core.failures classifies the way the worker did."""
    if isinstance(exc, WorkerFailure):
        if exc.retryable:
            err = RetryableError(str(exc))
            err.reason = exc.reason
            return err
        from llm_assets.core.errors import PipelineError

        return PipelineError(str(exc))
    return exc


class LocalProcessBackend(ComputeBackend):
    """The worker as a subprocess of the step on this machine, through dg.PipesSubprocessClient.

    The same worker a remote machine runs, with this machine's artifact store and checkpoints;
    `in_process` (the default) skips the new interpreter and runs the stage in the step itself.
    The worker's exit status carries its verdict: 75 retryable, other non-zero fatal, killed by a
    signal (OOM killer, a lost machine) retryable.
    """

    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the worker process.")
    cwd: Optional[str] = Field(default=None, description="Working directory of the worker (unset: the step's).")

    def run_stage(self, context: dg.AssetExecutionContext, request: StageRequest) -> StageResult:
        meter = self.meter()
        client = dg.PipesSubprocessClient(env={**self.env}, cwd=self.cwd)
        try:
            invocation = client.run(context=context, command=self.command(request.stage, sys.executable),
                                    extras=request.extras(context.run.run_id))
        except dg.DagsterPipesExecutionError as exc:
            raise_with_verdict(error_from_exit(exit_code_of(str(exc)), "the worker", f": {exc}"), context.log,
                               self.backend_name)
        return result_from_pipes(invocation.get_results(implicit_materializations=False), context, meter,
                                 request.training_examples)


def exit_code_of(message: str) -> Optional[int]:
    match = re.search(r"failed with code (-?\d+)", message)
    return int(match.group(1)) if match else None


