"""What the provider tests share: a moto S3 server on loopback, the tiny upstream assets in it, and a
Dagster asset that runs one stage through a compute backend."""

from __future__ import annotations

import contextlib

import dagster as dg

from pipeline_configs import MODEL, MODELS_DIR, TINY_BASE, materialize, tiny_run_config

ACCESS_KEY = "AKIASTANDINTEST0001"
SECRET_KEY = "s3-secret-Zq8Lw2-never-in-logs"
# A worker's own credential (what an operator provisions with a prefix-scoped policy): never the orchestrator's.
WORKER_CREDENTIALS = {"worker_aws_access_key_id": "AKIASTANDINWORKER01", "worker_aws_secret_access_key":
                      "s3-worker-secret-8fQ2-never-in-logs"}


@contextlib.contextmanager
def moto_s3():
    """A real S3-compatible server (moto's server mode) on 127.0.0.1 with an `artifacts` bucket."""
    import boto3

    from tests.moto_server import moto_server

    with moto_server() as endpoint:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
                     aws_secret_access_key=SECRET_KEY).create_bucket(Bucket="artifacts")
        yield endpoint


def store_resource(endpoint: str):
    from resources.artifact_store import ArtifactStoreResource

    return ArtifactStoreResource(root="s3://artifacts/pipeline", s3_endpoint_url=endpoint, aws_region="us-east-1",
                                 aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)


def upstream_manifests(store) -> dict:
    """raw_dataset -> training_dataset and base_model, materialized for real (tiny) into the S3 store."""
    from llm_assets.assets import PIPELINE_ASSETS
    from llm_assets.compute.backends import ComputeBackends
    from resources.manifest_io_manager import ManifestIOManager
    from resources.model_catalog import ModelCatalogResource

    wanted = {"raw_dataset", "eval_benchmark", "base_model", "training_dataset"}
    assets = [a for a in PIPELINE_ASSETS if isinstance(a, dg.AssetsDefinition) and a.key.path[-1] in wanted]
    config = {"ops": {k: v for k, v in tiny_run_config(num_examples=60)["ops"].items() if k in wanted}}
    result = materialize(assets, run_config=config, selection=sorted(wanted), resources={
        "artifact_store": store, "io_manager": ManifestIOManager(artifact_store=store),
        "compute_backends": ComputeBackends(), "model_catalog": ModelCatalogResource(folder=MODELS_DIR)})
    assert result.success
    return {name: result.output_for_node(name) for name in ("training_dataset", "base_model")}


def training_config(**overrides) -> dict:
    return {**tiny_run_config()["ops"]["lora_adapter"]["config"], **overrides}


def run_stage_asset(backend, store, inputs: dict, config: dict, *, stage: str = "lora_adapter",
                    raise_on_error: bool = False, tags: dict | None = None, max_retries: int = 2):
    """Materialize one asset whose body is `backend.run_stage(...)`, with a RetryPolicy as the stage assets have."""
    from llm_assets.compute.backends import StageRequest

    @dg.asset(name="stage_under_test", retry_policy=dg.RetryPolicy(max_retries=max_retries))
    def stage_under_test(context):
        from llm_assets.core.model_spec import load_model_spec

        model = load_model_spec(f"{MODELS_DIR}/{MODEL}.yaml").model_dump(mode="json")
        result = backend.run_stage(context, StageRequest(stage=stage, inputs=inputs, config=config, model=model,
                                                         artifact_store=store, training_examples=48))
        return dg.MaterializeResult(metadata={**result.metadata, "uri": result.value["uri"]})

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([stage_under_test], raise_on_error=raise_on_error, tags=tags or {}, instance=instance)
    result.logged_text = "\n".join(entry.user_message or "" for entry in instance.all_logs(result.run_id))
    result.instance = instance
    return result


__all__ = ["WORKER_CREDENTIALS", "TINY_BASE", "moto_s3", "store_resource", "upstream_manifests", "training_config", "run_stage_asset"]
