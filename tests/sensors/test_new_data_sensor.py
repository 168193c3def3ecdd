"""new_data_sensor on a real folder and on a real S3-compatible server (moto, loopback), and end to end."""

import os
import shutil
import time

import boto3
import dagster as dg
from dagster_aws.s3 import S3Resource

from jobs import promote_job
from llm_assets.assets import raw_dataset
from llm_assets.core.registry import ModelRegistry
from llm_assets.compute.backends import ComputeBackends
from resources.artifact_store import ArtifactStoreResource
from resources.model_catalog import ModelCatalogResource
from resources.retraining import RetrainingResource
from sensors import new_data_sensor, promotion_sensor
from tests.pipeline_configs import MODELS_DIR, materialize
from tests.sensors.conftest import evaluate, execute, retraining_defs, write_preset, write_rows

KEY, SECRET = "AKIATESTING", "wJalrXUtnFEMI-never-printed"


def _age(path, seconds=600):
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_nothing_watched_says_how_to_switch_it_on(tmp_path):
    defs = retraining_defs(tmp_path, RetrainingResource())
    with dg.instance_for_test() as instance:
        result = evaluate(new_data_sensor, defs, instance)
    assert isinstance(result, dg.SkipReason) and "LLM_ASSETS_WATCH_DIR" in result.skip_message


def test_the_same_file_seen_twice_starts_one_run(tmp_path):
    watch = tmp_path / "incoming"
    watch.mkdir()
    defs = retraining_defs(tmp_path, RetrainingResource(model="pet-smoke", watch_dir=str(watch), debounce_s=30,
                                                        preset=write_preset(tmp_path / "tiny.yaml")))
    with dg.instance_for_test() as instance:
        write_rows(watch / "batch1.jsonl")
        early = evaluate(new_data_sensor, defs, instance)  # just written: waits for the debounce
        assert not early.run_requests and "waiting for batch1.jsonl" in early.skip_reason.skip_message
        _age(watch / "batch1.jsonl")
        first = evaluate(new_data_sensor, defs, instance, early.cursor)
        [request] = first.run_requests
        assert request.job_name is None and request.run_key.startswith("new-data-pet-smoke-")
        assert request.run_config["ops"]["raw_dataset"]["config"]["source"] == str(watch)
        assert request.run_config["ops"]["lora_adapter"]["config"]["max_steps"] == 4  # the preset's
        assert request.tags["llm_assets/trigger"] == "new_data_sensor"

        again = evaluate(new_data_sensor, defs, instance, first.cursor)
        assert not again.run_requests
        shutil.copy(watch / "batch1.jsonl", watch / "batch1-copy.jsonl")  # the same data once more
        _age(watch / "batch1-copy.jsonl")
        copy = evaluate(new_data_sensor, defs, instance, again.cursor)
        assert not copy.run_requests and "already started a run" in copy.skip_reason.skip_message

        (watch / "batch1-copy.jsonl").unlink()
        (watch / "batch1.jsonl").unlink()
        write_rows(watch / "batch2.jsonl", seed=8)
        _age(watch / "batch2.jsonl")
        second = evaluate(new_data_sensor, defs, instance, copy.cursor)
        [request2] = second.run_requests
        assert request2.run_key != request.run_key
        third = evaluate(new_data_sensor, defs, instance, second.cursor)
        assert not third.run_requests


def test_an_s3_prefix_on_a_real_server(tmp_path, s3_endpoint):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id=KEY,
                      aws_secret_access_key=SECRET)
    s3.create_bucket(Bucket="incoming")
    body = (write_rows(tmp_path / "rows.jsonl", n=40)).read_bytes()
    watched = S3Resource(endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id=KEY,
                         aws_secret_access_key=SECRET)
    defs = retraining_defs(tmp_path, RetrainingResource(model="pet-smoke", watch_s3_uri="s3://incoming/pet",
                                                        debounce_s=0, preset=write_preset(tmp_path / "tiny.yaml")),
                           watched)
    with dg.instance_for_test() as instance:
        s3.put_object(Bucket="incoming", Key="pet/a.jsonl", Body=body)
        s3.put_object(Bucket="incoming", Key="pet/archive/old.jsonl", Body=b"{}\n")  # deeper: not the source
        first = evaluate(new_data_sensor, defs, instance)
        [request] = first.run_requests
        assert request.run_config["ops"]["raw_dataset"]["config"]["source"] == "s3://incoming/pet"

        s3.put_object(Bucket="incoming", Key="pet/a.jsonl", Body=body)  # re-uploaded, same bytes
        assert not evaluate(new_data_sensor, defs, instance, first.cursor).run_requests
        s3.put_object(Bucket="incoming", Key="pet/b.jsonl", Body=body[: len(body) // 2])
        second = evaluate(new_data_sensor, defs, instance, first.cursor)
        assert len(second.run_requests) == 1 and second.run_requests[0].run_key != request.run_key
        s3.delete_object(Bucket="incoming", Key="pet/b.jsonl")
        gone = evaluate(new_data_sensor, defs, instance, second.cursor)
        assert not gone.run_requests and "deleted: b.jsonl" in gone.skip_reason.skip_message
        assert SECRET not in str(request.run_config) + str(request.tags) + gone.cursor

    # The run reads the prefix through the artifact store's S3 settings; rows name the objects.
    store = ArtifactStoreResource(root=str(tmp_path / "store"), s3_endpoint_url=s3_endpoint, aws_region="us-east-1",
                                  aws_access_key_id=KEY, aws_secret_access_key=SECRET)
    result = materialize([raw_dataset], resources={"artifact_store": store, "compute_backends": ComputeBackends(),
                                                   "model_catalog": ModelCatalogResource(folder=MODELS_DIR)},
                         run_config={"ops": {"raw_dataset": {"config": {"source": "s3://incoming/pet"}}}})
    meta = result.asset_materializations_for_node("raw_dataset")[0].metadata
    assert meta["rows"].value == 40 and meta["source"].value == "s3://incoming/pet"


def test_a_dropped_file_becomes_a_registered_and_promoted_version(tmp_path, checkpoints):
    watch = tmp_path / "incoming"
    watch.mkdir()
    # A 4-step model: no threshold and no baseline, so the honest gate passes and the version registers.
    preset = write_preset(tmp_path / "tiny.yaml", threshold=0.0, evaluate_baseline=False)
    defs = retraining_defs(tmp_path, RetrainingResource(model="pet-smoke", watch_dir=str(watch), debounce_s=0,
                                                        preset=preset))
    with dg.instance_for_test() as instance:
        assert not evaluate(new_data_sensor, defs, instance).run_requests  # empty folder
        _age(write_rows(watch / "batch1.jsonl"))
        tick = evaluate(new_data_sensor, defs, instance)
        [request] = tick.run_requests
        run = execute(defs, request, instance)
        assert run.success and run.dagster_run.tags["llm_assets/trigger"] == "new_data_sensor"
        assert not evaluate(new_data_sensor, defs, instance, tick.cursor).run_requests  # seen twice, one run

        promotion = evaluate(promotion_sensor, defs, instance)
        [promote] = promotion.run_requests
        assert execute(defs, dg.RunRequest(job_name=promote_job.name, run_config=promote.run_config,
                                           tags=promote.tags, partition_key=promote.partition_key), instance).success
    with ModelRegistry(f"sqlite:///{tmp_path}/registry.db") as registry:
        production = registry.resolve("pet-smoke", "production")
        lineage = registry.lineage("pet-smoke", "production")
    assert production.version == 1 and production.dagster_run_id == run.run_id
    assert str(watch) in production.dataset_uris
    assert any(step["kind"] == "dataset" for step in lineage["chain"])
