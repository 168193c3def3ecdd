"""Locally new_data_sensor is configured by the environment alone: LLM_ASSETS_WATCH_S3_URI and the S3 variables
the artifact store and the workers read, each read at the tick (a real S3-compatible server: moto)."""

import boto3
import dagster as dg

from resources.retraining import RetrainingResource
from resources.watched_s3 import WatchedS3Resource
from sensors import new_data_sensor
from tests.sensors.conftest import evaluate, retraining_defs, write_preset, write_rows

KEY, SECRET = "AKIAWATCHED", "wJalrXUtnFEMI-watched-never-printed"


def test_the_watched_prefix_and_its_server_come_from_the_environment_at_each_tick(tmp_path, s3_endpoint,
                                                                                  monkeypatch):
    for name in ("LLM_ASSETS_WATCH_DIR", "LLM_ASSETS_WATCH_S3_URI", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    defs = retraining_defs(tmp_path, RetrainingResource(debounce_s=0, preset=write_preset(tmp_path / "tiny.yaml")),
                           WatchedS3Resource())
    with dg.instance_for_test() as instance:
        idle = evaluate(new_data_sensor, defs, instance)
        assert isinstance(idle, dg.SkipReason) and "LLM_ASSETS_WATCH_S3_URI" in idle.skip_message

        for name, value in {"LLM_ASSETS_WATCH_S3_URI": "s3://watched/pet", "LLM_ASSETS_S3_ENDPOINT_URL": s3_endpoint,
                            "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": KEY,
                            "AWS_SECRET_ACCESS_KEY": SECRET}.items():
            monkeypatch.setenv(name, value)
        s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id=KEY,
                          aws_secret_access_key=SECRET)
        s3.create_bucket(Bucket="watched")
        s3.put_object(Bucket="watched", Key="pet/a.jsonl", Body=write_rows(tmp_path / "a.jsonl", n=20).read_bytes())
        tick = evaluate(new_data_sensor, defs, instance)
        [request] = tick.run_requests
        assert request.run_config["ops"]["raw_dataset"]["config"]["source"] == "s3://watched/pet"
        assert SECRET not in str(request.run_config) + str(request.tags) + tick.cursor
