"""Evaluation stage: the shipped GGUF files and the untuned baseline on the benchmark, and the accuracy gate."""

import dagster as dg

from llm_assets.assets.automation import COMPUTE_RETRY_POLICY, fail_fast, follows
from llm_assets.assets.compute_routing import run_stage_asset
from llm_assets.assets.registry_assets import record_rejection
from llm_assets.config import EvalConfig
from llm_assets.core.gate import evaluate_gate
from resources.artifact_store import ArtifactStoreResource
from resources.compute import ComputeBackends
from resources.registry import ModelRegistryResource


@dg.asset(group_name="evaluation", kinds={"llamacpp", "json"}, owners=["team:ml"],
          retry_policy=COMPUTE_RETRY_POLICY, automation_condition=follows("gguf_model"))
@fail_fast
def eval_report(context: dg.AssetExecutionContext, config: EvalConfig, artifact_store: ArtifactStoreResource,
                compute_backends: dg.ResourceParam[ComputeBackends], gguf_model: dict, eval_benchmark: dict,
                base_model: dict, lora_adapter: dict, training_dataset: dict) -> dg.Output:
    """Every GGUF variant, and the untuned base model as baseline, answering the benchmark through llama.cpp.

    Runs where `config.compute` says; the stage body is llm_assets.compute.evaluation_stage.evaluate.
    """
    return run_stage_asset(context, "evaluation", {
        "gguf_model": gguf_model, "eval_benchmark": eval_benchmark, "base_model": base_model,
        "lora_adapter": lora_adapter, "training_dataset": training_dataset}, config, artifact_store, compute_backends)


@dg.asset_check(asset=eval_report, blocking=True,
                description="The deployable variant reaches the strict-accuracy threshold and beats the baseline.")
def accuracy_gate(context: dg.AssetCheckExecutionContext, eval_report: dict,
                  model_registry: ModelRegistryResource) -> dg.AssetCheckResult:
    gate = evaluate_gate({"variants": {n: {"scores": {"strict_accuracy": v["strict_accuracy"]},
                                           "file_size_bytes": v["file_size_bytes"]}
                                       for n, v in eval_report["variants"].items()},
                          "baseline": ({"scores": {"strict_accuracy": eval_report["baseline_strict_accuracy"]}}
                                       if eval_report.get("baseline_strict_accuracy") is not None else None)},
                         eval_report["threshold"], eval_report["deployable"])
    metadata = {}
    if not gate.passed:  # the audit trail keeps rejected candidates too, with their report
        rejected = record_rejection(context, model_registry, eval_report)
        metadata["registered_as"] = f"{rejected.model} v{rejected.version} (rejected)"
    return dg.AssetCheckResult(
        passed=gate.passed, description=gate.reason,
        metadata={**metadata, "variant": str(gate.variant), "strict_accuracy": float(gate.strict_accuracy or 0.0),
                  "threshold": gate.threshold,
                  "baseline_strict_accuracy": float(gate.baseline_strict_accuracy or 0.0)},
    )
