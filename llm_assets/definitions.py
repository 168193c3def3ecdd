"""The code location: one Definitions object, assembled here and nowhere else.

LLM_ASSETS_ENV picks a column of ENVIRONMENTS: "local" (default) or "production". It is the variable read
at import (Dagster's pattern for choosing resources per deployment); every other setting is a dg.EnvVar or a resource field read when
the resource is used, so a changed variable takes effect without re-importing this module, and a secret
is never part of the code location's snapshot.
"""

import os

import dagster as dg

from jobs import all_jobs
from llm_assets.assets import PIPELINE_ASSETS, PIPELINE_CHECKS
from resources.artifact_store import ArtifactStoreResource
from resources.manifest_io_manager import ManifestIOManager
from resources.model_catalog import ModelCatalogResource
from resources.registry import ModelRegistryResource
from resources.retraining import RetrainingResource
from resources.watched_s3 import WatchedS3Resource
from sensors import all_sensors
from sensors.orphan_sweeper import orphan_sweeper_sensor

ENV_VAR = "LLM_ASSETS_ENV"

# What differs between environments. Locally every field is left unset, so each is read from its variable
# when used (LLM_ASSETS_ARTIFACT_ROOT else ./artifacts; LLM_ASSETS_REGISTRY_URL else $DAGSTER_HOME/registry.db;
# the S3 variables else boto3's chain). Production names the same variables as dg.EnvVar: required there, so an
# unset one fails the run at its start, naming the variable. The store and the watched prefix read one set of
# S3 variables (S3Settings.to_env's, which the workers get too). Production's AWS_SESSION_TOKEN stays a
# use-time read: a required EnvVar would fail every deployment with long-lived keys.
ENVIRONMENTS: dict[str, dict[str, dg.ConfigurableResource]] = {
    "local": {
        "artifact_store": ArtifactStoreResource(),
        "model_registry": ModelRegistryResource(),
        "watched_s3": WatchedS3Resource(),
    },
    "production": {
        "artifact_store": ArtifactStoreResource(
            root=dg.EnvVar("LLM_ASSETS_ARTIFACT_ROOT"), s3_endpoint_url=dg.EnvVar("LLM_ASSETS_S3_ENDPOINT_URL"),
            aws_region=dg.EnvVar("AWS_REGION"), aws_access_key_id=dg.EnvVar("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=dg.EnvVar("AWS_SECRET_ACCESS_KEY")),
        "model_registry": ModelRegistryResource(url=dg.EnvVar("LLM_ASSETS_REGISTRY_URL")),
        "watched_s3": WatchedS3Resource(
            endpoint_url=dg.EnvVar("LLM_ASSETS_S3_ENDPOINT_URL"), region_name=dg.EnvVar("AWS_REGION"),
            aws_access_key_id=dg.EnvVar("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=dg.EnvVar("AWS_SECRET_ACCESS_KEY")),
    },
}


def resources_for(env: str) -> dict:
    """One environment's resources: its column of ENVIRONMENTS plus the entries every environment shares."""
    if env not in ENVIRONMENTS:
        raise ValueError(f"{ENV_VAR}={env!r} is not a known environment; expected one of: {', '.join(ENVIRONMENTS)}")
    chosen = ENVIRONMENTS[env]
    return {**chosen, "io_manager": ManifestIOManager(artifact_store=chosen["artifact_store"]),
            "retraining": RetrainingResource(),  # watch_dir / watch_s3_uri: read at each sensor tick
            "model_catalog": ModelCatalogResource(),  # LLM_ASSETS_MODELS_DIR else models/: read when used
            **_compute_resources()}


def _compute_resources() -> dict:
    """Where stages may run, by the name a stage's `compute` config picks (default: in process).

    Plain objects, not Dagster-initialised resources: a backend's secrets (dg.EnvVar) are read only
    when a stage launches on it, so an unset provider key fails only the runs that pick that provider.
    """
    from llm_assets.compute.backends import ComputeBackends, LocalProcessBackend
    from llm_assets.compute.backends.kubernetes import K8sBackend
    from llm_assets.compute.backends.remote import DetachedProcessBackend
    from llm_assets.compute.backends.kaggle import KaggleBackend
    from llm_assets.compute.backends.runpod import RunPodBackend
    from llm_assets.compute.backends.vastai import VastAIBackend

    return {"compute_backends": ComputeBackends({
        "local": LocalProcessBackend(),
        "detached": DetachedProcessBackend(),
        "kubernetes": K8sBackend(image=dg.EnvVar("LLM_ASSETS_WORKER_IMAGE"),
                                 namespace=dg.EnvVar("LLM_ASSETS_K8S_NAMESPACE")),
        "runpod": RunPodBackend(api_key=dg.EnvVar("RUNPOD_API_KEY")),
        "vastai": VastAIBackend(api_key=dg.EnvVar("VAST_API_KEY")),
        "kaggle": KaggleBackend(username=dg.EnvVar("KAGGLE_USERNAME"), key=dg.EnvVar("KAGGLE_KEY")),
    })}


defs = dg.Definitions(
    assets=PIPELINE_ASSETS,
    asset_checks=PIPELINE_CHECKS,
    jobs=all_jobs,
    sensors=[*all_sensors, orphan_sweeper_sensor],
    resources=resources_for(os.environ.get(ENV_VAR, "local")),
)
