"""Evaluation group: every GGUF variant and the untuned baseline on the benchmark, and the accuracy gate.

eval_report runs its stage (llm_assets/stages/evaluation.py, which decides the gate once) where its config's
`compute` says; accuracy_gate only reports that decision.
"""

import dagster as dg

from llm_assets.assets.automation import fail_fast, stage_options
from llm_assets.compute.backends import ComputeBackends
from llm_assets.config import CONFIG_BY_ASSET
from resources.artifact_store import ArtifactStoreResource
from resources.model_catalog import MODEL_PARTITIONS, ModelCatalogResource


@dg.asset(group_name="evaluation", kinds={"llamacpp", "json"}, owners=["team:ml"], **stage_options("eval_report"))
@fail_fast
def eval_report(context: dg.AssetExecutionContext, config: CONFIG_BY_ASSET["eval_report"],
                artifact_store: ArtifactStoreResource, model_catalog: ModelCatalogResource,
                compute_backends: dg.ResourceParam[ComputeBackends],
                gguf_model: dict, eval_benchmark: dict, base_model: dict, lora_adapter: dict,
                training_dataset: dict) -> dg.Output:
    """Every GGUF variant, and the untuned base model as baseline, answering the benchmark through llama.cpp."""
    return compute_backends.run(
        context, config, artifact_store, model_catalog, gguf_model=gguf_model, eval_benchmark=eval_benchmark,
        base_model=base_model, lora_adapter=lora_adapter, training_dataset=training_dataset)


@dg.asset_check(asset=eval_report, partitions_def=MODEL_PARTITIONS,
                description="The deployable variant reaches the strict-accuracy threshold and beats the baseline "
                            "(the gate eval_report computed; registered_model registers the candidate or the "
                            "rejection).")
def accuracy_gate(eval_report: dict) -> dg.AssetCheckResult:
    """Reports eval_report's own gate and writes nothing, so re-executing it changes nothing.

    Not blocking: registered_model must run when the gate fails too, to record the rejected version that
    gate_failure_sensor retrains from; it refuses to register a candidate (and fails) on its own.
    """
    gate = eval_report["gate"]
    return dg.AssetCheckResult(
        passed=bool(gate["passed"]), description=gate["reason"],
        metadata={"variant": str(gate["variant"]), "metric": gate["metric"], gate["metric"]: float(gate["value"] or 0.0),
                  "threshold": float(gate["threshold"]),
                  "baseline": float(gate["baseline_value"] or 0.0)},
    )
