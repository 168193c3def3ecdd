"""Registry stage: every candidate becomes a registered version; production_model is what is deployed."""

import subprocess

import dagster as dg
from pydantic import Field

from llm_assets.assets.automation import follows
from llm_assets.core.artifacts import ArtifactStore
from llm_assets.core.registry import PRODUCTION, RegistryError, VersionRecord
from resources.artifact_store import ArtifactStoreResource
from resources.registry import ModelRegistryResource


def code_version() -> str | None:
    """The git commit of the code that produced a version, when the code is a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def version_fields(run_id: str, eval_report: dict) -> dict:
    """The registry record of a candidate, from the eval report's lineage snapshot."""
    lineage, gate = eval_report["lineage"], eval_report["gate"]
    variant = gate["variant"] or next(iter(lineage["gguf_variants"]))
    gguf = lineage["gguf_variants"][variant]
    return {
        "gguf_uri": f"{lineage['gguf_uri']}/{gguf['file']}", "gguf_sha256": gguf["sha256"],
        "gguf_bytes": gguf["bytes"], "quantization": variant, "adapter_uri": lineage["adapter_uri"],
        "base_model_id": lineage["base_model_id"], "base_model_revision": lineage["base_model_revision"],
        "dataset_version": lineage["dataset_version"], "dataset_uris": lineage["dataset_uris"],
        "dataset_rows": lineage["dataset_rows"], "benchmark_version": eval_report["benchmark_version"],
        "metrics": {"strict_accuracy": gate["strict_accuracy"], "variants": eval_report["variants"],
                    "baseline_strict_accuracy": eval_report["baseline_strict_accuracy"]},
        "gate_passed": bool(gate["passed"]), "gate_reason": gate["reason"], "config": lineage["config"],
        "dagster_run_id": run_id, "code_version": code_version(),
        "materialization_ids": lineage.get("materializations"),
    }


@dg.asset(group_name="registry", kinds={"sqlite", "postgres"}, owners=["team:ml"],
          automation_condition=follows("eval_report"))
def registered_model(context: dg.AssetExecutionContext, model_registry: ModelRegistryResource,
                     eval_report: dict) -> dg.Output:
    """The candidate that passed the accuracy gate, registered with its full lineage."""
    with model_registry.registry() as registry:
        record = registry.register(model_registry.model_name, status="candidate",
                                   **version_fields(context.run.run_id, eval_report))
        # The challenger awaits the promotion sensor under the `staging` alias.
        record = registry.stage(record.model, record.version, actor="asset:registered_model",
                                reason=f"passed the gate in run {context.run.run_id}")
    context.log.info(f"registered {record.model} v{record.version} ({record.quantization}, "
                     f"strict accuracy {record.metrics['strict_accuracy']})")
    value = {"model": record.model, "version": record.version, "gguf_uri": record.gguf_uri,
             "sha256": record.gguf_sha256, "benchmark_version": record.benchmark_version}
    return dg.Output(value, data_version=dg.DataVersion(f"{record.model}-v{record.version}"),
                     metadata={"model": record.model, "version": record.version,
                               "gguf": dg.MetadataValue.path(record.gguf_uri), "sha256": record.gguf_sha256})


def record_rejection(context, model_registry: ModelRegistryResource, eval_report: dict) -> VersionRecord:
    """A candidate that failed the gate stays in the audit trail as rejected, with its report."""
    with model_registry.registry() as registry:
        return registry.register(model_registry.model_name, status="rejected",
                                 **version_fields(context.run.run_id, eval_report))


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


@dg.asset(group_name="registry", kinds={"gguf"}, owners=["team:ml"], deps=[registered_model])
def production_model(context: dg.AssetExecutionContext, config: ProductionModelConfig,
                     model_registry: ModelRegistryResource, artifact_store: ArtifactStoreResource) -> dg.Output:
    """The deployed model: the registry's `production` alias, with its lineage back to the dataset."""
    name = model_registry.model_name
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
