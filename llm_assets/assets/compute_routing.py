"""Run a stage where its config's `compute` says: in the step's own process, or on a compute backend.

`in_process` (the default) calls the stage function right here, as fast as before; any other name
is looked up in the `compute_backends` resource and runs the worker there through Dagster Pipes.
Either way the asset returns the same manifest as its value, with the content hash as data version.
"""

from __future__ import annotations

from typing import Optional

import dagster as dg

from llm_assets.assets.common import output
from llm_assets.compute import stages
from llm_assets.config import validate_run_config
from resources.artifact_store import ArtifactStoreResource
from resources.compute import IN_PROCESS, ComputeBackends, StageRequest

_METADATA_TYPES = {"md": dg.MetadataValue.md, "json": dg.MetadataValue.json, "text": dg.MetadataValue.text,
                   "float": dg.MetadataValue.float, "int": dg.MetadataValue.int, "bool": dg.MetadataValue.bool,
                   "path": dg.MetadataValue.path, "url": dg.MetadataValue.url}


def metadata_values(external: dict) -> dict:
    """Pipes' external metadata ({"raw_value", "type"}) as Dagster MetadataValues."""
    return {name: _METADATA_TYPES[entry["type"]](entry["raw_value"]) if entry.get("type") in _METADATA_TYPES
            else entry["raw_value"] for name, entry in external.items()}


def run_stage_asset(context: dg.AssetExecutionContext, stage: str, inputs: dict, config: dg.Config,
                    artifact_store: ArtifactStoreResource, compute_backends: ComputeBackends,
                    training_examples: Optional[int] = None) -> dg.Output:
    validate_run_config(context.run.run_config, compute_backends.names())  # a bad value anywhere fails here
    fn, params_cls, _ = stages.STAGE_FUNCTIONS[stage]
    params = params_cls(**config.model_dump(exclude={"compute"}))
    if config.compute == IN_PROCESS:
        result = fn(artifact_store.store(), inputs, params, context.run.run_id, context.log.info)
        return output(result.value, metadata_values(result.metadata))
    backend = compute_backends.get(config.compute)
    context.log.info(f"{stage}: running on {config.compute} ({backend.backend_name})")
    request = StageRequest(stage=stage, inputs=inputs, config=params.model_dump(mode="json"),
                           artifact_store=artifact_store, training_examples=training_examples)
    result = backend.run_stage(context, request)
    return output(result.value, result.metadata)
