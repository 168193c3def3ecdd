"""Export stage: merge the adapter and write GGUF files with a Modelfile and a model card beside each."""


import dagster as dg

from llm_assets.assets.automation import COMPUTE_POOL, COMPUTE_RETRY_POLICY, fail_fast, follows
from llm_assets.assets.compute_routing import run_stage_asset
from llm_assets.config import ExportConfig
from resources.artifact_store import ArtifactStoreResource
from resources.compute import ComputeBackends


@dg.asset(group_name="export", kinds={"gguf", "llamacpp"}, owners=["team:ml"],
          retry_policy=COMPUTE_RETRY_POLICY, pool=COMPUTE_POOL, automation_condition=follows("lora_adapter"))
@fail_fast
def gguf_model(context: dg.AssetExecutionContext, config: ExportConfig, artifact_store: ArtifactStoreResource,
               compute_backends: dg.ResourceParam[ComputeBackends],
               lora_adapter: dict, base_model: dict, training_dataset: dict) -> dg.Output:
    """The merged model as GGUF: a float file and its llama.cpp quantizations, each with a Modelfile and a card.

    Runs where `config.compute` says; the stage body is llm_assets.compute.stages.export.
    """
    return run_stage_asset(context, "export", {"lora_adapter": lora_adapter, "base_model": base_model,
                                               "training_dataset": training_dataset},
                           config, artifact_store, compute_backends)
