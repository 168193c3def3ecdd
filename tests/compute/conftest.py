"""Shared by the compute tests: a real S3-compatible server (moto's server mode) on loopback, and a
store with the tiny pipeline's upstream assets (data, base model) already materialized in it."""

from __future__ import annotations


import dagster as dg
import pytest

from tests.pipeline_configs import MODEL, MODELS_DIR, TINY_BASE, materialize

UPSTREAM = ["raw_dataset", "eval_benchmark", "training_dataset", "base_model"]
TRAINING_CONFIG = {"epochs": 1.0, "max_steps": 4, "batch_size": 16, "save_steps": 2, "logging_steps": 1,
                   "learning_rate": 1e-3, "lora_r": 4, "lora_alpha": 8, "threads": 1}


@pytest.fixture(scope="session")
def s3_endpoint():
    from tests.moto_server import moto_server

    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server for the module, with a store whose upstream manifests (data, base model) are in it."""
    from standins.pipeline import moto_s3, store_resource, upstream_manifests

    with moto_s3() as endpoint:
        store = store_resource(endpoint)
        yield store, upstream_manifests(store)


@pytest.fixture
def runpod(tmp_path, monkeypatch, request):
    """The RunPod stand-in, keyed with the test module's API_KEY (each module checks its own key never leaks)."""
    from standins.runpod_api import RunPodStandin

    api_key = request.module.API_KEY
    with RunPodStandin(tmp_path, api_key=api_key) as cloud:
        monkeypatch.setenv("RUNPOD_API_BASE_URL", cloud.url)  # read by the SDK at every call
        monkeypatch.setenv("TEST_RUNPOD_API_KEY", api_key)
        yield cloud


def s3_store_resource(endpoint: str, bucket: str):
    import boto3

    from resources.artifact_store import ArtifactStoreResource

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="AKIATESTING",
                 aws_secret_access_key="compute-test-secret").create_bucket(Bucket=bucket)
    return ArtifactStoreResource(root=f"s3://{bucket}/pipeline", s3_endpoint_url=endpoint, aws_region="us-east-1",
                                 aws_access_key_id="AKIATESTING", aws_secret_access_key="compute-test-secret")


def pipeline_resources(store, backends: dict) -> dict:
    from llm_assets.compute.backends import ComputeBackends
    from resources.manifest_io_manager import ManifestIOManager

    from resources.model_catalog import ModelCatalogResource

    return {"artifact_store": store, "io_manager": ManifestIOManager(artifact_store=store),
            "compute_backends": ComputeBackends(backends), "model_catalog": ModelCatalogResource(folder=MODELS_DIR)}


def materialize_upstream(store, instance: dg.DagsterInstance) -> None:
    """The tiny data and base model, materialized in `instance`: a later run there loads them as its inputs."""
    from llm_assets.assets import PIPELINE_ASSETS

    config = {"ops": {"raw_dataset": {"config": {"source": "embedded:pet", "num_examples": 120}},
                      "eval_benchmark": {"config": {"examples_per_category": 4}},
                      "base_model": {"config": TINY_BASE}}}
    result = materialize([a for a in PIPELINE_ASSETS if a.key.to_user_string() in UPSTREAM],
                            resources=pipeline_resources(store, {}), run_config=config, instance=instance)
    assert result.success


def materialize_stage(store, backends: dict, asset: str = "lora_adapter", *, instance: dg.DagsterInstance,
                      **config):
    """Materialize one stage whose upstream assets `instance` has materialized (materialize_upstream)."""
    from llm_assets.assets import PIPELINE_ASSETS

    needed = [a for a in PIPELINE_ASSETS if a.key.to_user_string() in UPSTREAM + ["lora_adapter", asset]]
    return materialize(needed, selection=[asset], resources=pipeline_resources(store, backends),
                          run_config={"ops": {asset: {"config": config}}}, instance=instance,
                          raise_on_error=False)


def upstream_manifest(store, instance: dg.DagsterInstance, asset: str) -> dict:
    """The manifest a stage run in `instance` loads for `asset`: its latest materialization's."""
    from resources.manifest_io_manager import materialized_manifest_key, read_manifest

    return read_manifest(store.store(), materialized_manifest_key(instance, dg.AssetKey(asset), MODEL))


def log_lines(instance, run_id: str) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id)]
