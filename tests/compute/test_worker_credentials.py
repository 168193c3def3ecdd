"""A rented worker never holds the orchestrator's S3 key, can write only its own job's prefixes, and what it
publishes is re-hashed by the orchestrator before anything downstream trusts it (checkpoints included).

The confinement is checked on moto's S3 with IAM enforcement on: the job's policy attached to a role, its
temporary credentials refused outside the job's prefixes. (moto enforces a role's own policies but not an
AssumeRole session policy, so the end-to-end run checks that STS received exactly that policy instead.)"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import boto3
import dagster as dg
import pytest
from botocore.exceptions import ClientError

from llm_assets.compute.credentials import scoped_policy, write_prefixes
from llm_assets.compute.launch import checkpoint_prefix, job_key
from llm_assets.compute.verify import verified_checkpoint, verify_published
from llm_assets.core.artifacts_s3 import S3ArtifactStore
from llm_assets.core.errors import ArtifactIntegrityError, ConfigError
from llm_assets.core.s3_settings import S3Settings
from standins.pipeline import ACCESS_KEY, SECRET_KEY, run_stage_asset, training_config

API_KEY = "rpa_STANDIN_credentials-never-in-logs"
ROLE = "arn:aws:iam::123456789012:role/llm-assets-worker"
FAST = {"poll_interval_seconds": 0.3, "message_poll_seconds": 0.3, "message_flush_seconds": 0.3,
        "heartbeat_seconds": 0.5}


def backend(**fields):
    from llm_assets.compute.backends.runpod import RunPodBackend

    return RunPodBackend(api_key=dg.EnvVar("TEST_RUNPOD_API_KEY"), image="w:test", **{**FAST, **fields})


def test_the_worker_gets_job_scoped_sts_credentials_never_the_orchestrators_key(s3, runpod):
    from moto.sts.models import sts_backends

    store, inputs = s3
    config = training_config(seed=61)
    result = run_stage_asset(backend(worker_role_arn=ROLE), store, inputs, config, max_retries=0)
    assert result.success, result.logged_text[-3000:]
    (launch,) = runpod.launches
    env = launch["env"]
    assert SECRET_KEY not in env.values() and ACCESS_KEY not in env.values()
    assert env["AWS_SESSION_TOKEN"] and env["AWS_ACCESS_KEY_ID"] != ACCESS_KEY  # temporary, token passed through
    [assumed] = [r for r in sts_backends["123456789012"]["aws"].assumed_roles if r.role_arn == ROLE][-1:]
    policy = json.loads(assumed.policy)
    [write] = [s for s in policy["Statement"] if s["Sid"] == "WriteOnlyThisJob"]
    key = job_key("lora_adapter", inputs, config)
    assert f"arn:aws:s3:::artifacts/pipeline/runs/{result.run_id}/lora_adapter/*" in write["Resource"]
    assert f"arn:aws:s3:::artifacts/pipeline/checkpoints/{key}/*" in write["Resource"]
    assert len(write["Resource"]) == 3 and SECRET_KEY not in result.logged_text


def test_a_remote_backend_without_a_worker_credential_refuses_to_launch(s3, runpod):
    store, inputs = s3
    result = run_stage_asset(backend(), store, inputs, training_config(seed=62), max_retries=0)
    assert not result.success and "FATAL (config)" in result.logged_text
    assert "never gets the orchestrator's S3 key" in result.logged_text and runpod.launches == []
    with pytest.raises(ConfigError, match="orchestrator's own key"):
        from llm_assets.compute.credentials import provisioned_worker

        provisioned_worker(S3Settings(access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY), ACCESS_KEY, "x", None)


@pytest.fixture
def enforcing_s3():
    """moto with IAM enforcement: an orchestrator user allowed everything, a worker role with the job's policy."""
    from moto import settings

    from tests.moto_server import moto_server

    previous = settings.INITIAL_NO_AUTH_ACTION_COUNT
    with moto_server() as endpoint:
        try:
            yield endpoint, settings
        finally:
            settings.INITIAL_NO_AUTH_ACTION_COUNT = previous


def test_the_jobs_credentials_cannot_write_outside_its_prefixes(enforcing_s3):
    endpoint, settings = enforcing_s3
    where = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    iam = boto3.client("iam", aws_access_key_id="AKIASETUP", aws_secret_access_key="setup", **where)
    iam.create_user(UserName="orchestrator")
    iam.put_user_policy(UserName="orchestrator", PolicyName="all", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*", "sts:AssumeRole"],
                                                "Resource": "*"}]}))
    made = iam.create_access_key(UserName="orchestrator")["AccessKey"]
    orchestrator = S3Settings(endpoint_url=endpoint, region="us-east-1", access_key_id=made["AccessKeyId"],
                              secret_access_key=made["SecretAccessKey"])
    prefixes = write_prefixes("pipeline", "run-1", "lora_adapter", "key1", "pipeline/compute/pipes/key1/abc")
    iam.create_role(RoleName="llm-assets-worker", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"},
                                                "Action": "sts:AssumeRole"}]}))
    policy = scoped_policy("artifacts", "pipeline", prefixes)
    iam.put_role_policy(RoleName="llm-assets-worker", PolicyName="job", PolicyDocument=json.dumps(policy))
    orchestrator.client().create_bucket(Bucket="artifacts")
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # from here every request is signed and authorized
    orchestrator.client().put_object(Bucket="artifacts", Key="pipeline/models/manifest.json", Body=b"trusted")
    from llm_assets.compute.credentials import assume_worker_role

    worker = assume_worker_role(orchestrator, role_arn=ROLE, session_name="llm-assets-key1", policy=policy,
                                seconds=3600)
    assert worker.session_token and worker.access_key_id != orchestrator.access_key_id
    client = worker.client()
    for key in ("pipeline/runs/run-1/lora_adapter/adapter.safetensors", "pipeline/checkpoints/key1/LATEST.json",
                "pipeline/compute/pipes/key1/abc/1.json"):
        client.put_object(Bucket="artifacts", Key=key, Body=b"mine")
    for key in ("pipeline/models/manifest.json", "pipeline/runs/run-2/lora_adapter/adapter.safetensors",
                "pipeline/runs/run-1/gguf_model/model.gguf", "pipeline/checkpoints/key2/checkpoint-4/optimizer.pt",
                "pipeline/compute/jobs/key1.json"):
        with pytest.raises(ClientError, match="AccessDenied"):
            client.put_object(Bucket="artifacts", Key=key, Body=b"overwritten")
    assert client.get_object(Bucket="artifacts", Key="pipeline/models/manifest.json")["Body"].read() == b"trusted"


def test_published_bytes_are_rehashed_and_a_tampered_output_or_checkpoint_is_refused(s3):
    store_resource_, _ = s3
    store: S3ArtifactStore = store_resource_.store()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "adapter"
        folder.mkdir()
        (folder / "weights.bin").write_bytes(b"\x00" * 1000)
        (folder / "config.json").write_text("{}")
        artifact = store.put_dir(folder, "runs/r9/lora_adapter/adapter")
        single = Path(tmp) / "model.gguf"
        single.write_bytes(b"GGUF" * 100)
        gguf = store.put_file(single, "runs/r9/gguf_model/model.gguf")
    verify_published(store, artifact.to_dict())
    verify_published(store, gguf.to_dict())
    bucket, key = store._split(artifact.uri)
    store.client.put_object(Bucket=bucket, Key=f"{key}/weights.bin", Body=b"\x01" * 1000)  # a host overwrites
    with pytest.raises(ArtifactIntegrityError, match="weights.bin hashes to"):
        verify_published(store, artifact.to_dict())
    with pytest.raises(ArtifactIntegrityError, match="not the reported"):
        verify_published(store, {**gguf.to_dict(), "sha256": "0" * 64})
    # a checkpoint: LATEST.json names it with its hash; tampered bytes mean "start fresh", never a poisoned resume
    from llm_assets.compute.checkpoint_sync import _write_latest

    prefix = checkpoint_prefix("k" * 24)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "checkpoint-4"
        ckpt.mkdir()
        (ckpt / "adapter_model.safetensors").write_bytes(b"w" * 64)
        saved = store.put_dir(ckpt, f"{prefix}/checkpoint-4")
    _write_latest(store, prefix, "checkpoint-4", saved.sha256)
    assert verified_checkpoint(store, prefix) == {"name": "checkpoint-4", "sha256": saved.sha256}
    bucket, key = store._split(saved.uri)
    store.client.put_object(Bucket=bucket, Key=f"{key}/adapter_model.safetensors", Body=b"x" * 64)
    said = []
    assert verified_checkpoint(store, prefix, log=said.append) is None and "starting fresh" in said[0]
