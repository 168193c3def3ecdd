"""Compute backends: where a stage runs, picked by its config's `compute` field.

`ComputeBackends` (the one Dagster resource `compute_backends`) maps a name to a backend; `run` is the only
routing there is: the asset calls it with the stage's asset name, its upstream manifests and its config,
and gets the Dagster Output back. `in_process` (the default) runs the stage function in the step itself;
`local` runs the worker (`python -m llm_assets.compute.worker ASSET`) as a subprocess through Dagster
Pipes; the remote backends (llm_assets/compute/backends/{remote,kubernetes,runpod,vastai,kaggle}.py) start
that same worker on another machine.

The contract a backend implements: `run_stage(context, request: StageRequest) -> dg.Output`: the
stage's manifest as the asset's value, its content hash as data version, and metadata, cost figures included (`compute_backend`,
`compute_seconds`, `hourly_price_usd`, `cost_usd`, `cost_per_training_example_usd`, `max_cost_usd`).
Remote backends subclass `RemoteComputeBackend` and implement `launch` (create a machine named `spec.name`),
`poll`, `terminate` (an unknown machine may raise: termination counts once `is_gone` confirms it), `find(name)`
(live machines carrying that name, for adopting one after a lost create response or a crash) and, for the
orphan sweeper, `list_machines()`; llm_assets/compute/lifecycle.py and backends/remote.py have the rest
(intent records, adoption, deadlines, the run's budget, termination confirmed in every path).

Backends are plain objects inside that resource, not initialised by Dagster, so a backend holding
`dg.EnvVar("RUNPOD_API_KEY")` does not fail every run where that variable is unset: secrets are resolved
when launching (`resolve_secret`), never at import or construction, and never logged.
Failures get their verdict in one place: `raise_with_verdict` (llm_assets.core.failures decides).
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from typing import Mapping, Optional

import dagster as dg
from pydantic import Field

from llm_assets.compute.cost import CostMeter
from llm_assets.compute.launch import worker_command
from llm_assets.config import validate_run_config
from llm_assets.core.failures import BootstrapError, RetryableError, classify, error_from_exit
from llm_assets.stages import StageContext, get_stage
from llm_assets.core.model_spec import ModelSpec
from llm_assets.presets import stage_config
from resources.artifact_store import ArtifactStoreResource
from resources.model_catalog import ModelCatalogResource

IN_PROCESS = "in_process"


@dataclass
class StageRequest:
    """What a stage needs: its upstream manifests, its config and where artifacts live."""

    stage: str                               # the asset the stage materializes (llm_assets.stages.STAGES)
    inputs: dict[str, dict]
    config: dict
    artifact_store: ArtifactStoreResource
    model: dict                              # the model's spec (ModelSpec as JSON): it travels with the stage
    training_examples: Optional[int] = None  # rows trained on, for cost per training example

    def __post_init__(self):
        get_stage(self.stage)

    def extras(self, run_id: str, job_key: str = "") -> dict:
        """The Pipes extras the worker reads: nothing secret goes here (it is stored with the context)."""
        store = self.artifact_store
        return {"stage": self.stage, "inputs": self.inputs, "config": self.config, "model": self.model,
                "run_id": run_id,
                "job_key": job_key, "artifact_root": str(store.store().uri_for("x"))[: -len("/x")],
                "s3": store.s3_settings().public()}


@dataclass
class LaunchSpec:
    """Everything a provider needs to start the worker: run `command` with exactly `env`."""

    stage: str
    command: list[str]
    env: dict[str, str] = field(repr=False)  # holds secrets: never log or record it
    job_key: str
    run_id: str
    gpus: int = 0
    name: str = ""  # the deterministic machine name (launch.machine_name): pod name, instance label, kernel slug


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
    message: str = ""  # the provider's own words about the state (status_msg, lastStatusChange)

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

    def run_stage(self, context: dg.AssetExecutionContext, request: StageRequest) -> dg.Output:
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


_METADATA_TYPES = {"md": dg.MetadataValue.md, "json": dg.MetadataValue.json, "text": dg.MetadataValue.text,
                   "float": dg.MetadataValue.float, "int": dg.MetadataValue.int, "bool": dg.MetadataValue.bool,
                   "path": dg.MetadataValue.path, "url": dg.MetadataValue.url}


def metadata_values(external: dict) -> dict:
    """Pipes' external metadata ({"raw_value", "type"}) as Dagster MetadataValues."""
    return {name: _METADATA_TYPES[entry["type"]](entry["raw_value"]) if entry.get("type") in _METADATA_TYPES
            else entry["raw_value"] for name, entry in external.items()}


def asset_output(value: dict, metadata: Optional[dict] = None) -> dg.Output:
    """The asset's value (a stage's manifest) with its content hash as data version and its location first."""
    return dg.Output(value, data_version=dg.DataVersion(value["sha256"][:16]), metadata={
        "uri": dg.MetadataValue.path(value["uri"]), "sha256": value["sha256"],
        "size_bytes": dg.MetadataValue.int(value["size"]), **(metadata or {})})


class InProcessBackend(ComputeBackend):
    """The stage function called in the step's own process: no new interpreter, nothing to launch."""

    def run_stage(self, context: dg.AssetExecutionContext, request: StageRequest) -> dg.Output:
        stage = get_stage(request.stage)
        result = stage.run(request.inputs, stage.params_from(request.config), StageContext(
            store=request.artifact_store.store(), run_id=context.run.run_id, model=ModelSpec(**request.model),
            log=context.log.info, s3=request.artifact_store.s3_settings()))
        return asset_output(result.value, metadata_values(result.metadata))


class ComputeBackends:
    """The backends the stages may pick from, by name (one Dagster resource: `compute_backends`)."""

    def __init__(self, backends: Optional[Mapping[str, ComputeBackend]] = None):
        self._backends = {IN_PROCESS: InProcessBackend(), **(backends or {})}

    def names(self) -> list[str]:
        return [IN_PROCESS, *sorted(n for n in self._backends if n != IN_PROCESS)]

    def run(self, context: dg.AssetExecutionContext, config: dg.Config, artifact_store: ArtifactStoreResource,
            model_catalog: ModelCatalogResource, **inputs: dict) -> dg.Output:
        """Run the stage of the asset being materialized, for the model its partition names, where
        `config.compute` says, and return its Output.

        The whole run's config is checked first (every stage's `compute` against these names, the gate against
        the model file's), so a bad value anywhere fails the first step instead of a late one.
        """
        model = model_catalog.get(context.partition_key)
        validate_run_config(context.run.run_config, self.names(), model)
        asset = context.asset_key.to_user_string()
        stage = get_stage(asset)
        backend = self.get(config.compute)
        if config.compute != IN_PROCESS:
            context.log.info(f"{asset}: running on {config.compute} ({backend.backend_name})")
        # The fields the run's config sets over the model's preset, not Dagster's filled-in defaults: a stage lets
        # them override the model file field by field (params.model_fields_set), and the worker rebuilds the same
        # set from the JSON.
        explicit = stage_config(model.preset, asset, context.run.run_config)
        if explicit:
            context.log.info(f"{asset}: {model.name}'s preset {model.preset} and the run's config set "
                             f"{', '.join(f'{k}={v}' for k, v in sorted(explicit.items()))}")
        request = StageRequest(
            stage=asset, inputs={name: inputs[name] for name in stage.upstream},
            config=stage.params_from(explicit).model_dump(mode="json", exclude_unset=True),
            artifact_store=artifact_store,
            model=model.model_dump(mode="json"),
            training_examples=inputs["training_dataset"].get("train_rows") if stage.cost_per_example else None)
        return backend.run_stage(context, request)

    def remote_backends(self) -> dict[str, "ComputeBackend"]:
        """The backends that rent machines (RemoteComputeBackend), by name: what the orphan sweeper watches."""
        return {name: b for name, b in self._backends.items() if callable(getattr(b, "list_machines", None))}

    def get(self, name: str) -> ComputeBackend:
        if name not in self._backends:
            from llm_assets.core.errors import ConfigError

            raise ConfigError("compute", name, f"no such compute backend here; expected one of {self.names()}")
        return self._backends[name]

    def __repr__(self) -> str:
        return f"ComputeBackends({self.names()})"


def result_from_pipes(results, context, meter: CostMeter, training_examples: Optional[int]) -> dg.Output:
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
    return asset_output(value, metadata)


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

    def run_stage(self, context: dg.AssetExecutionContext, request: StageRequest) -> dg.Output:
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


