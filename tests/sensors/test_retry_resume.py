"""A real outage mid-run: the S3 store goes away while lora_adapter trains; the RetryPolicy retries the step and
training resumes from its latest complete checkpoint instead of starting over."""

import socket
import threading
import time
import uuid

import boto3
import dagster as dg
import pytest

from llm_assets.assets import PIPELINE_ASSETS, PIPELINE_CHECKS, lora_adapter
from resources.artifact_store import ArtifactStoreResource
from resources.manifest_io_manager import ManifestIOManager
from tests.pipeline_configs import MODEL, materialize, resources_for, tiny_run_config

KEY, SECRET = "AKIATESTING", "wJalrXUtnFEMI-never-printed"
UPSTREAM = ["raw_dataset", "eval_benchmark", "base_model", "training_dataset"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Outage(threading.Thread):
    """Stops the S3 server once training wrote checkpoint-2, and brings it back once Dagster scheduled a retry."""

    def __init__(self, server, port, checkpoints, instance, run_id):
        super().__init__(daemon=True)
        self.server, self.port, self.checkpoints = server, port, checkpoints
        self.instance, self.run_id, self.events = instance, run_id, []

    def _wait(self, done, timeout_s=600):
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError("outage thread timed out")
            time.sleep(0.05)

    def run(self):
        from moto.server import ThreadedMotoServer

        self._wait(lambda: any(self.checkpoints.glob("*/checkpoint-2/CHECKPOINT_COMPLETE")))
        self.server.stop()
        self.events.append("stopped")
        self._wait(lambda: any(e.dagster_event and e.dagster_event.event_type_value == "STEP_UP_FOR_RETRY"
                               for e in self.instance.all_logs(self.run_id)))
        # moto keeps its buckets in process-wide state, so the server comes back with the same objects.
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.events.append("restarted")


@pytest.mark.slow
def test_a_network_outage_during_training_retries_and_resumes_from_the_checkpoint(tmp_path, checkpoints):
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY,
                 aws_secret_access_key=SECRET).create_bucket(Bucket="artifacts")
    store = ArtifactStoreResource(root="s3://artifacts/pipeline", s3_endpoint_url=endpoint, aws_region="us-east-1",
                                  aws_access_key_id=KEY, aws_secret_access_key=SECRET)
    resources = {**resources_for(tmp_path), "artifact_store": store,
                 "io_manager": ManifestIOManager(artifact_store=store)}
    assets = [a for a in PIPELINE_ASSETS if a.key.to_user_string() not in ("registered_model", "production_model")]
    config = tiny_run_config()
    outage = None
    try:
        with dg.instance_for_test() as instance:
            upstream = materialize(assets + PIPELINE_CHECKS[:1], selection=UPSTREAM, instance=instance,
                                      resources=resources, run_config={"ops": {
                                          k: v for k, v in config["ops"].items() if k in UPSTREAM}})
            assert upstream.success
            run_id = str(uuid.uuid4())
            outage = Outage(server, port, tmp_path / "checkpoints", instance, run_id)
            outage.start()
            job = dg.Definitions(assets=assets, resources=resources, jobs=[dg.define_asset_job(
                "train_only", selection=[lora_adapter])]).resolve_job_def("train_only")
            result = job.execute_in_process(run_config={"ops": {"lora_adapter": config["ops"]["lora_adapter"]}},
                                            instance=instance, run_id=run_id, partition_key=MODEL)
            outage.join(timeout=60)
            logs = [e.user_message for e in instance.all_logs(run_id)]
        assert result.success and outage.events == ["stopped", "restarted"]
        assert [e.event_type_value for e in result.all_events].count("STEP_UP_FOR_RETRY") >= 1
        assert any(m.startswith("RETRYABLE (network): EndpointConnectionError") for m in logs)
        meta = result.asset_materializations_for_node("lora_adapter")[0].metadata
        assert meta["resumed_from"].value == "checkpoint-4"  # the finished training was not redone
    finally:
        (outage.server if outage else server).stop()
