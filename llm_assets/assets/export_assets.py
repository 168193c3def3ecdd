"""Export group: the merged model as GGUF files; the stage is llm_assets/stages/export.py."""

import dagster as dg

from llm_assets.assets.automation import fail_fast, stage_options
from llm_assets.compute.backends import ComputeBackends
from llm_assets.config import CONFIG_BY_ASSET
from resources.artifact_store import ArtifactStoreResource
from resources.model_catalog import ModelCatalogResource


@dg.asset(group_name="export", kinds={"gguf", "llamacpp"}, owners=["team:ml"], **stage_options("gguf_model"))
@fail_fast
def gguf_model(context: dg.AssetExecutionContext, config: CONFIG_BY_ASSET["gguf_model"],
               artifact_store: ArtifactStoreResource, model_catalog: ModelCatalogResource,
               compute_backends: dg.ResourceParam[ComputeBackends],
               lora_adapter: dict, base_model: dict, training_dataset: dict) -> dg.Output:
    """The merged model as GGUF: a float file and its llama.cpp quantizations, each with a Modelfile and a card."""
    return compute_backends.run(
        context, config, artifact_store, model_catalog, lora_adapter=lora_adapter, base_model=base_model,
        training_dataset=training_dataset)
