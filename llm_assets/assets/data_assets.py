"""Data group: raw examples, the fixed benchmark, the validated training split and its blocking check.

Each asset runs its stage (llm_assets/stages/data.py) where its config's `compute` says.
"""

import dagster as dg

from llm_assets.assets.automation import fail_fast, stage_options
from llm_assets.compute.backends import ComputeBackends
from llm_assets.config import CONFIG_BY_ASSET
from resources.artifact_store import ArtifactStoreResource
from resources.model_catalog import MODEL_PARTITIONS, ModelCatalogResource


@dg.asset(group_name="data", kinds={"python", "jsonl"}, owners=["team:ml"], **stage_options("raw_dataset"))
@fail_fast
def raw_dataset(context: dg.AssetExecutionContext, config: CONFIG_BY_ASSET["raw_dataset"],
                artifact_store: ArtifactStoreResource, model_catalog: ModelCatalogResource,
                compute_backends: dg.ResourceParam[ComputeBackends]) -> dg.Output:
    """Examples as they arrived: the embedded bunny task's generated data, or JSONL files (a file, a folder or an
    s3:// prefix). Each row keeps `source` (file:line) so every later problem can be traced back."""
    return compute_backends.run(context, config, artifact_store, model_catalog)


@dg.asset(group_name="data", kinds={"python", "jsonl"}, owners=["team:ml"], **stage_options("eval_benchmark"))
@fail_fast
def eval_benchmark(context: dg.AssetExecutionContext, config: CONFIG_BY_ASSET["eval_benchmark"],
                   artifact_store: ArtifactStoreResource, model_catalog: ModelCatalogResource,
                   compute_backends: dg.ResourceParam[ComputeBackends], raw_dataset: dict) -> dg.Output:
    """What the model is scored on, as its model file says: the bunny's fixed benchmark, the user's own JSONL
    (versioned by content hash), or a hold-out carved from raw_dataset by hash and never trained on."""
    return compute_backends.run(context, config, artifact_store, model_catalog, raw_dataset=raw_dataset)


@dg.asset(group_name="data", kinds={"python", "jsonl"}, owners=["team:ml"], **stage_options("training_dataset"))
@fail_fast
def training_dataset(context: dg.AssetExecutionContext, config: CONFIG_BY_ASSET["training_dataset"],
                     artifact_store: ArtifactStoreResource, model_catalog: ModelCatalogResource,
                     compute_backends: dg.ResourceParam[ComputeBackends],
                     raw_dataset: dict, base_model: dict, eval_benchmark: dict) -> dg.Output:
    """Normalized to the base model's chat frame, validated, deduplicated, split into train/validation.

    The blocking check `training_data_valid` reads the validation report kept here.
    """
    return compute_backends.run(
        context, config, artifact_store, model_catalog, raw_dataset=raw_dataset, base_model=base_model,
        eval_benchmark=eval_benchmark)


@dg.asset_check(asset=training_dataset, blocking=True, partitions_def=MODEL_PARTITIONS,
                description="Rows are well-formed and non-empty, duplicates under the threshold, none over-length, "
                            "none overlapping the benchmark.")
def training_data_valid(training_dataset: dict) -> dg.AssetCheckResult:
    report = training_dataset["validation_report"]
    problems = report["problems"]
    return dg.AssetCheckResult(
        passed=bool(report["passed"]),
        description=("; ".join(problems[:5]) + (" ..." if len(problems) > 5 else "")) if problems else "all rows valid",
        metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none"),
                  "warnings": dg.MetadataValue.md("\n".join(f"- {w}" for w in report["warnings"]) or "none"),
                  "counts": dg.MetadataValue.json(report["counts"])},
    )
