"""Shared pieces of the retraining tests: a tiny preset on disk, a Definitions with test resources, moto's S3."""


import dagster as dg
import pytest
import yaml
from dagster_aws.s3 import S3Resource

from jobs import promote_job, retrain_job, retraining_alert_job
from llm_assets.assets import PIPELINE_ASSETS, PIPELINE_CHECKS
from llm_assets.core import dataset_io, pet_task
from resources.model_catalog import register_models
from resources.retraining import RetrainingResource
from sensors import gate_failure_sensor, new_data_sensor, promotion_sensor
from tests.pipeline_configs import MODEL, resources_for, tiny_run_config


def write_preset(path, **eval_config) -> str:
    """The tiny run config as a preset file, with the eval_report settings a test needs; the data comes from
    the model file or the watched source, not the preset."""
    config = tiny_run_config()
    del config["ops"]["raw_dataset"]["config"]["source"]
    config["ops"]["eval_report"]["config"].update(eval_config)
    path.write_text(yaml.safe_dump(config))
    return str(path)


def write_rows(path, n: int = 200, seed: int = 7):
    dataset_io.write_jsonl(pet_task.generate_training_rows(n, seed), path)
    return path


def retraining_defs(root, retraining: RetrainingResource, watched_s3: S3Resource | None = None) -> dg.Definitions:
    resources = {**resources_for(root), "retraining": retraining, "watched_s3": watched_s3 or S3Resource()}
    return dg.Definitions(assets=PIPELINE_ASSETS, asset_checks=PIPELINE_CHECKS,
                          jobs=[retrain_job, promote_job, retraining_alert_job],
                          sensors=[new_data_sensor, gate_failure_sensor, promotion_sensor], resources=resources)


def evaluate(sensor, defs: dg.Definitions, instance, cursor=None):
    """One sensor tick, with the resources the definitions bind."""
    # Only the resources the sensor asks for: the IO manager is a generator resource it never opens.
    keys = sensor.required_resource_keys
    with dg.build_sensor_context(instance=instance, cursor=cursor,
                                 resources={k: v for k, v in defs.resources.items() if k in keys}) as context:
        return sensor(context)


def execute(defs: dg.Definitions, request: dg.RunRequest, instance, raise_on_error=True):
    """Run what a sensor requested, as the daemon would: its job, run config, tags and model partition (the
    tests' model when a hand-made request names none; the alert job has no partitions)."""
    job = defs.resolve_job_def(request.job_name or retrain_job.name)
    partition = request.partition_key or (MODEL if job.partitions_def is not None else None)
    if partition is not None:
        register_models(instance, [partition])
    return job.execute_in_process(run_config=request.run_config, instance=instance, tags=request.tags,
                                  raise_on_error=raise_on_error, partition_key=partition)


@pytest.fixture(scope="session")
def s3_endpoint():
    pytest.importorskip("moto.server", reason="moto[server] is a dev dependency")
    from tests.moto_server import moto_server

    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_ASSETS_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
