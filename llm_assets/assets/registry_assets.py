"""Registry stage: every evaluated GGUF becomes a registered version (candidate or rejected); production_model is
what is deployed."""

import dagster as dg
from pydantic import Field

from llm_assets.assets.automation import follows
from llm_assets.stages.io import code_version
from llm_assets.core.artifacts import ArtifactStore
from llm_assets.core.registry import (
    PRODUCTION, STAGING, ModelRegistry, RegistryError, RegistryNotFoundError, VersionRecord,
)
from resources.artifact_store import ArtifactStoreResource
from resources.model_catalog import MODEL_PARTITIONS
from resources.registry import ModelRegistryResource


# Each manifest names the sha256 of the manifest it was made from: (made, field, from).
LINKS = (("eval_report", "gguf_model_sha256", "gguf_model"), ("gguf_model", "lora_adapter_sha256", "lora_adapter"),
         ("lora_adapter", "training_dataset_sha256", "training_dataset"),
         ("lora_adapter", "base_model_sha256", "base_model"))


def lineage_conflicts(parents: dict[str, dict]) -> list[str]:
    """Where the parents are not one chain, e.g. an eval report of another run's GGUF.

    In one run the IO manager hands each step this run's outputs, so this is empty; a registration that
    loads its parents from separate materializations (registered_model alone, while another run trains)
    could otherwise record one run's report with another run's files.
    """
    conflicts = []
    for made, field, source in LINKS:
        recorded, actual = parents[made].get(field), parents[source]["sha256"]
        if recorded and recorded != actual:
            conflicts.append(f"{made} was made from {source} {recorded[:12]}, but the {source} input is {actual[:12]}")
    evaluated, benchmark = parents["eval_report"].get("benchmark_version"), parents["eval_benchmark"].get("version")
    if evaluated and benchmark and evaluated != benchmark:
        conflicts.append(f"eval_report used benchmark {evaluated}, but the eval_benchmark input is {benchmark}")
    return conflicts


def version_fields(run_id: str, parents: dict[str, dict]) -> dict:
    """The registry record of an evaluated GGUF, from the manifests of the assets that made it."""
    report, gguf, adapter = parents["eval_report"], parents["gguf_model"], parents["lora_adapter"]
    dataset, base, gate = parents["training_dataset"], parents["base_model"], parents["eval_report"]["gate"]
    variant = gate["variant"] or next(iter(gguf["variants"]))
    file = gguf["variants"][variant]
    return {
        "status": "candidate" if gate["passed"] else "rejected",
        "gguf_uri": f"{gguf['uri']}/{file['file']}", "gguf_sha256": file["sha256"], "gguf_bytes": file["bytes"],
        "quantization": variant, "adapter_uri": adapter["uri"],
        "base_model_id": base.get("model_id"), "base_model_revision": base.get("revision"),
        "dataset_version": dataset["sha256"][:16],
        "dataset_uris": [dataset["uri"]] + [s for s in [dataset.get("raw_source")] if s],
        "dataset_rows": dataset["train_rows"], "benchmark_version": report["benchmark_version"],
        # The gate's metric under its own name (strict_accuracy for the bunny), and which one it is, so promotion
        # compares a challenger with production on what the model's gate reads.
        "metrics": {gate["metric"]: gate["value"], "gate_metric": gate["metric"], "variants": report["variants"],
                    "baseline": report["baseline_value"], "scorer": report.get("scorer")},
        "gate_passed": bool(gate["passed"]), "gate_reason": gate["reason"], "config": adapter.get("config"),
        "dagster_run_id": run_id, "code_version": code_version(),
        # What the model file said to serve with when this version was evaluated: the server reads it from here,
        # on machines that have no models/ folder.
        "serving": report.get("serving"),
    }


def register_once(registry: ModelRegistry, model: str, fields: dict) -> tuple[VersionRecord, bool]:
    """The version `fields` describe, registered only if this run has not registered this GGUF yet.

    A re-executed step (or a retry) finds the version it registered before, by run id and GGUF sha256,
    instead of adding a second one. Returns the record and whether it is new.
    """
    try:
        versions = registry.list_versions(model)
    except RegistryNotFoundError:
        versions = []
    for version in versions:
        if version.dagster_run_id == fields["dagster_run_id"] and version.gguf_sha256 == fields["gguf_sha256"]:
            return version, False
    return registry.register(model, **fields), True


def stage_if_newest(registry: ModelRegistry, record: VersionRecord, run_id: str) -> VersionRecord:
    """Point `staging` at a passing candidate, unless it is there already or a newer version is (re-executing
    an older run must not pull the challenger back)."""
    if record.status != "candidate" or not record.gate_passed or STAGING in record.aliases:
        return record
    try:
        staged = registry.resolve(record.model, STAGING).version
    except RegistryNotFoundError:
        staged = 0
    if staged > record.version:
        return record
    # The challenger awaits the promotion sensor under the `staging` alias.
    return registry.stage(record.model, record.version, actor="asset:registered_model",
                          reason=f"passed the gate in run {run_id}")


@dg.asset(group_name="registry", kinds={"sqlite", "postgres"}, owners=["team:ml"], partitions_def=MODEL_PARTITIONS,
          automation_condition=follows("eval_report"))
def registered_model(context: dg.AssetExecutionContext, model_registry: ModelRegistryResource, eval_report: dict,
                     gguf_model: dict, lora_adapter: dict, training_dataset: dict, base_model: dict,
                     eval_benchmark: dict) -> dg.Output:
    """Every evaluated GGUF as a registry version with its lineage: the staged candidate when eval_report's gate
    passed; else a rejected version, kept for the audit trail and gate_failure_sensor, and this step fails.

    Idempotent: re-executing the step (or its run) returns the version registered before.
    """
    parents = {"eval_report": eval_report, "gguf_model": gguf_model, "lora_adapter": lora_adapter,
               "training_dataset": training_dataset, "base_model": base_model, "eval_benchmark": eval_benchmark}
    conflicts = lineage_conflicts(parents)
    if conflicts:
        raise dg.Failure(description="registered_model: the inputs are not one lineage, nothing registered: "
                                     + "; ".join(conflicts), allow_retries=False)
    # A re-execution is a new run; the version belongs to the run it re-executes.
    run_id = context.run.root_run_id or context.run.run_id
    with model_registry.registry() as registry:
        record, new = register_once(registry, context.partition_key, version_fields(run_id, parents))
        record = stage_if_newest(registry, record, run_id)
    metric = record.metrics.get("gate_metric", "strict_accuracy")
    described = f"{record.model} v{record.version} ({record.quantization}, {metric.replace('_', ' ')} " \
                f"{record.metrics.get(metric)}, {record.status})"
    context.log.info(f"{'registered' if new else 'already registered'} {described}")
    if not record.gate_passed:
        # No materialization: registered_model stays the last candidate that passed, the run fails like a gate
        # should, and nothing downstream (promotion) sees this version as deployable.
        raise dg.Failure(description=f"accuracy gate failed: {record.gate_reason}; recorded as {described}",
                         allow_retries=False, metadata={"model": record.model, "version": record.version,
                                                        "status": record.status})
    value = {"model": record.model, "version": record.version, "gguf_uri": record.gguf_uri,
             "sha256": record.gguf_sha256, "benchmark_version": record.benchmark_version}
    return dg.Output(value, data_version=dg.DataVersion(f"{record.model}-v{record.version}"),
                     metadata={"model": record.model, "version": record.version,
                               "gguf": dg.MetadataValue.path(record.gguf_uri), "sha256": record.gguf_sha256})


class ProductionModelConfig(dg.Config):
    """Which registered version to deploy."""

    version: int = Field(default=0, ge=0, description="Registered version to promote first (0: keep production).")
    reason: str = Field(default="passed the gate and beats production", description="Why, for the history.")
    actor: str = Field(default="sensor:promotion_sensor", description="Who moves the alias, for the history.")


def artifact_verifier(store: ArtifactStore):
    """verify(uri, sha256): the artifact still exists and its bytes match (never promote a changed file)."""

    def verify(uri: str, sha256: str) -> bool:
        try:
            path = store.local_path(uri, expected_sha256=sha256)
            if path is None:
                return store.exists(uri)  # S3 objects carry their sha256; a fetch re-checks it
            return path.exists()
        except Exception:  # an integrity error or a missing file both mean "do not promote"
            return False

    return verify


@dg.asset(group_name="registry", kinds={"gguf"}, owners=["team:ml"], deps=[registered_model],
          partitions_def=MODEL_PARTITIONS)
def production_model(context: dg.AssetExecutionContext, config: ProductionModelConfig,
                     model_registry: ModelRegistryResource, artifact_store: ArtifactStoreResource) -> dg.Output:
    """The deployed model: the registry's `production` alias of this partition's model, with its lineage back to
    that model's dataset."""
    name = context.partition_key
    with model_registry.registry() as registry:
        if config.version:
            registry.promote(name, config.version, actor=config.actor, reason=config.reason,
                             verify=artifact_verifier(artifact_store.store()))
        try:
            record = registry.resolve(name, PRODUCTION)
        except RegistryError as exc:
            raise RegistryError(f"{name} has no production version yet; promote one first ({exc})") from None
        lineage = registry.lineage(name, PRODUCTION)
    rows = [dg.TableRecord({"step": step["kind"], "detail": ", ".join(
        f"{k}={v}" for k, v in step.items() if k not in ("kind", "metrics") and v not in (None, [], {}))})
        for step in lineage["chain"]]
    return dg.Output(
        {"model": name, "version": record.version, "gguf_uri": record.gguf_uri, "sha256": record.gguf_sha256},
        data_version=dg.DataVersion(record.gguf_sha256[:16]),
        metadata={"version": record.version, "gguf": dg.MetadataValue.path(record.gguf_uri),
                  "sha256": record.gguf_sha256, "dataset_version": str(record.dataset_version),
                  "lineage": dg.MetadataValue.table(rows, schema=dg.TableSchema(
                      columns=[dg.TableColumn("step", "string"), dg.TableColumn("detail", "string")]))})
