"""The code location: one Definitions object, assembled here and nowhere else.

LLM_ASSETS_ENV picks the resources: "local" (default) keeps artifacts in
./artifacts; "production" reads the artifact root and S3 credentials from
environment variables at run time (never at import time).
"""

import os

import dagster as dg

from jobs import all_jobs
from llm_assets.assets import PIPELINE_ASSETS, PIPELINE_CHECKS
from resources.artifact_store import ArtifactStoreResource
from resources.manifest_io_manager import ManifestIOManager
from resources.registry import ModelRegistryResource
from resources.retraining import RetrainingResource
from sensors import all_sensors




def _resources(env: str) -> dict:
    if env == "local":
        store = ArtifactStoreResource(root=os.environ.get("LLM_ASSETS_ARTIFACT_ROOT", "./artifacts"))
    elif env == "production":
        store = ArtifactStoreResource(
            root=dg.EnvVar("LLM_ASSETS_ARTIFACT_ROOT"),
            s3_endpoint_url=dg.EnvVar("LLM_ASSETS_S3_ENDPOINT_URL"),
            aws_region=dg.EnvVar("AWS_REGION"),
            aws_access_key_id=dg.EnvVar("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=dg.EnvVar("AWS_SECRET_ACCESS_KEY"),
        )
        registry = ModelRegistryResource(url=dg.EnvVar("LLM_ASSETS_REGISTRY_URL"))
    else:
        raise ValueError(f"LLM_ASSETS_ENV={env!r}: expected 'local' or 'production'")
    if env == "local":  # url unset: LLM_ASSETS_REGISTRY_URL or $DAGSTER_HOME/registry.db, read at use time
        registry = ModelRegistryResource()
    return {"artifact_store": store, "io_manager": ManifestIOManager(artifact_store=store),
            "model_registry": registry, **_retraining_resources(env), **_compute_resources(env)}


def _compute_resources(env: str) -> dict:
    """Where stages may run, by the name a stage's `compute` config picks (default: in process).

    Plain objects, not Dagster-initialised resources: a backend's secrets (dg.EnvVar) are read only
    when a stage launches on it, so an unset provider key fails only the runs that pick that provider.
    """
    from resources.compute import ComputeBackends, LocalProcessBackend
    from resources.compute_k8s import K8sBackend
    from resources.compute_remote import DetachedProcessBackend
    from resources.compute_kaggle import KaggleBackend
    from resources.compute_runpod import RunPodBackend
    from resources.compute_vastai import VastAIBackend

    return {"compute_backends": ComputeBackends({
        "local": LocalProcessBackend(),
        "detached": DetachedProcessBackend(),
        "kubernetes": K8sBackend(image=dg.EnvVar("LLM_ASSETS_WORKER_IMAGE"),
                                 namespace=os.environ.get("LLM_ASSETS_K8S_NAMESPACE") or None),
        "runpod": RunPodBackend(api_key=dg.EnvVar("RUNPOD_API_KEY")),
        "vastai": VastAIBackend(api_key=dg.EnvVar("VAST_API_KEY")),
        "kaggle": KaggleBackend(username=dg.EnvVar("KAGGLE_USERNAME"), key=dg.EnvVar("KAGGLE_KEY")),
    })}


def _retraining_resources(env: str) -> dict:
    """What new_data_sensor watches (unset: nothing) and the S3 client it lists with (dagster-aws).

    Locally boto3's own chain applies (AWS_* variables, AWS_ENDPOINT_URL for MinIO or moto); in production the
    same variables as the artifact store.
    """
    from dagster_aws.s3 import S3Resource

    retraining = RetrainingResource(watch_dir=os.environ.get("LLM_ASSETS_WATCH_DIR") or None,
                                    watch_s3_uri=os.environ.get("LLM_ASSETS_WATCH_S3_URI") or None)
    if env == "production":
        watched_s3 = S3Resource(endpoint_url=dg.EnvVar("LLM_ASSETS_S3_ENDPOINT_URL"),
                                region_name=dg.EnvVar("AWS_REGION"), aws_access_key_id=dg.EnvVar("AWS_ACCESS_KEY_ID"),
                                aws_secret_access_key=dg.EnvVar("AWS_SECRET_ACCESS_KEY"))
    else:
        watched_s3 = S3Resource()
    return {"retraining": retraining, "watched_s3": watched_s3}


defs = dg.Definitions(
    assets=PIPELINE_ASSETS,
    asset_checks=PIPELINE_CHECKS,
    jobs=all_jobs,
    sensors=all_sensors,
    resources=_resources(os.environ.get("LLM_ASSETS_ENV", "local")),
)
