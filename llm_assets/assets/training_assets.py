"""Training stage: the base model and the fine-tuned adapter."""

import dagster as dg

from llm_assets.assets.automation import COMPUTE_POOL, COMPUTE_RETRY_POLICY, fail_fast
from llm_assets.assets.common import manifest, output, publish, scratch
from llm_assets.assets.compute_routing import run_stage_asset
from llm_assets.config import BaseModelConfig, TrainingConfig
from llm_assets.core.base_models import prepare_base_model
from resources.artifact_store import ArtifactStoreResource
from resources.compute import ComputeBackends


@dg.asset(group_name="training", kinds={"pytorch", "huggingface"}, owners=["team:ml"],
          retry_policy=COMPUTE_RETRY_POLICY, pool=COMPUTE_POOL)
@fail_fast
def base_model(context: dg.AssetExecutionContext, config: BaseModelConfig,
               artifact_store: ArtifactStoreResource, compute_backends: dg.ResourceParam[ComputeBackends]) -> dg.Output:
    """The causal LM to fine-tune: a hub id or local folder (revision recorded), or the embedded tiny Llama."""
    def on_step(step: int, total: int, loss: float) -> None:
        if step % 25 == 0 or step == total:
            context.log.info(f"base_model pretraining step {step}/{total} loss {loss:.4f}")

    with scratch(context, compute_backends) as tmp:
        out = tmp / "base_model"
        info = prepare_base_model(config, out, on_step)
        artifact = publish(context, artifact_store.store(), out)
        value = manifest(artifact, out, **{k: v for k, v in info.items() if k != "spec"})
    return output(value, {"model_id": info["model_id"], "revision": str(info.get("revision")),
                          "parameters": info["parameters"]})


@dg.asset(group_name="training", kinds={"pytorch", "peft"}, owners=["team:ml"],
          retry_policy=COMPUTE_RETRY_POLICY, pool=COMPUTE_POOL)
@fail_fast
def lora_adapter(context: dg.AssetExecutionContext, config: TrainingConfig,
                 artifact_store: ArtifactStoreResource, compute_backends: dg.ResourceParam[ComputeBackends],
                 training_dataset: dict, base_model: dict) -> dg.Output:
    """LoRA (or full) fine-tune with TRL's SFTTrainer: completion-only loss, resumable checkpoints, loss curve.

    Runs where `config.compute` says: in the step's process (default) or on a compute backend
    (llm_assets/assets/compute_routing.py); the stage body is llm_assets.compute.stages.train.
    """
    return run_stage_asset(context, "training", {"training_dataset": training_dataset, "base_model": base_model},
                           config, artifact_store, compute_backends,
                           training_examples=training_dataset.get("train_rows"))
