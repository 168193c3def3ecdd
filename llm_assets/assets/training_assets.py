"""Training group: the base model and the fine-tuned adapter.

Each asset runs its stage (llm_assets/stages/base_model.py, training.py) where its config's `compute` says.
"""

import dagster as dg

from llm_assets.assets.automation import fail_fast, stage_options
from llm_assets.compute.backends import ComputeBackends
from llm_assets.config import CONFIG_BY_ASSET
from resources.artifact_store import ArtifactStoreResource
from resources.model_catalog import ModelCatalogResource


@dg.asset(group_name="training", kinds={"pytorch", "huggingface"}, owners=["team:ml"], **stage_options("base_model"))
@fail_fast
def base_model(context: dg.AssetExecutionContext, config: CONFIG_BY_ASSET["base_model"],
               artifact_store: ArtifactStoreResource, model_catalog: ModelCatalogResource,
               compute_backends: dg.ResourceParam[ComputeBackends]) -> dg.Output:
    """The causal LM to fine-tune: a hub id or local folder (revision recorded), or the embedded tiny Llama."""
    return compute_backends.run(context, config, artifact_store, model_catalog)


@dg.asset(group_name="training", kinds={"pytorch", "peft"}, owners=["team:ml"], **stage_options("lora_adapter"))
@fail_fast
def lora_adapter(context: dg.AssetExecutionContext, config: CONFIG_BY_ASSET["lora_adapter"],
                 artifact_store: ArtifactStoreResource, model_catalog: ModelCatalogResource,
                 compute_backends: dg.ResourceParam[ComputeBackends],
                 training_dataset: dict, base_model: dict) -> dg.Output:
    """LoRA (or full) fine-tune with TRL's SFTTrainer: completion-only loss, resumable checkpoints, loss curve."""
    return compute_backends.run(
        context, config, artifact_store, model_catalog, training_dataset=training_dataset,
        base_model=base_model)
