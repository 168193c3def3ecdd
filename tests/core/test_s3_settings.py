"""S3Settings: one value for endpoint, region and credentials, against a real S3-compatible server (moto)."""

from __future__ import annotations


import pytest

from llm_assets.core import data_sources, dataset_io, pet_task
from llm_assets.core.artifacts import store_from_uri
from llm_assets.core.artifacts_s3 import S3ArtifactStore
from llm_assets.core.s3_settings import ENV_NAMES, S3Settings

KEY, SECRET, TOKEN = "AKIATESTING", "wJalrXUtnFEMI-never-shown", "session-token-never-shown"
FULL = S3Settings(endpoint_url="http://127.0.0.1:9", region="eu-west-1", access_key_id=KEY,
                  secret_access_key=SECRET, session_token=TOKEN)


@pytest.fixture
def moto_settings(s3_endpoint, request) -> S3Settings:
    """Settings for the moto server, and a fresh bucket named after the test."""
    settings = S3Settings(endpoint_url=s3_endpoint, region="us-east-1", access_key_id=KEY, secret_access_key=SECRET)
    settings.client().create_bucket(Bucket=bucket_of(request))
    return settings


def bucket_of(request) -> str:
    return request.node.name.replace("_", "-")[:40].strip("-")


def test_to_env_and_from_env_round_trip():
    env = FULL.to_env()
    assert env == {"LLM_ASSETS_S3_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_REGION": "eu-west-1",
                   "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
                   "AWS_SESSION_TOKEN": TOKEN}
    assert S3Settings.from_env(env) == FULL
    assert set(ENV_NAMES.values()) <= set(env)
    # Only what is set travels; what is read back from nothing is nothing.
    assert S3Settings(region="us-east-1").to_env() == {"AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}
    assert S3Settings().to_env() == {} and S3Settings.from_env({}) == S3Settings()


def test_from_env_reads_boto3s_region_and_treats_empty_as_unset():
    assert S3Settings.from_env({"AWS_DEFAULT_REGION": "ap-south-1"}).region == "ap-south-1"
    assert S3Settings.from_env({"AWS_REGION": "a", "AWS_DEFAULT_REGION": "b"}).region == "a"
    # Production on AWS sets LLM_ASSETS_S3_ENDPOINT_URL to "": AWS's own endpoint, not an empty URL.
    assert S3Settings.from_env({"LLM_ASSETS_S3_ENDPOINT_URL": ""}).endpoint_url is None
    assert S3Settings(endpoint_url="", access_key_id="") == S3Settings()


def test_from_env_reads_the_process_environment_when_called(monkeypatch):
    monkeypatch.setenv("LLM_ASSETS_S3_ENDPOINT_URL", "http://first")
    assert S3Settings.from_env().endpoint_url == "http://first"
    monkeypatch.setenv("LLM_ASSETS_S3_ENDPOINT_URL", "http://second")
    assert S3Settings.from_env().endpoint_url == "http://second"


def test_repr_and_public_hide_the_secrets():
    shown = repr(FULL) + str(FULL) + repr(FULL.public())
    for secret in (KEY, SECRET, TOKEN):
        assert secret not in shown
    assert FULL.public() == {"endpoint_url": "http://127.0.0.1:9", "region": "eu-west-1"}
    assert S3Settings(**FULL.public()) == S3Settings(endpoint_url="http://127.0.0.1:9", region="eu-west-1")
    assert FULL.has_credentials and not S3Settings(access_key_id=KEY).has_credentials


def test_or_else_takes_credentials_as_a_set():
    env = S3Settings(endpoint_url="http://env", region="env-region", access_key_id="ENVKEY",
                     secret_access_key="env-secret", session_token="env-token")
    configured = S3Settings(endpoint_url="http://configured")
    assert configured.or_else(env) == S3Settings("http://configured", "env-region", "ENVKEY", "env-secret",
                                                 "env-token")
    # Explicit keys are never signed with the environment's token, unless they are the environment's own keys.
    explicit = S3Settings(access_key_id="OTHER", secret_access_key="other-secret").or_else(env)
    assert (explicit.access_key_id, explicit.secret_access_key, explicit.session_token) == (
        "OTHER", "other-secret", None)
    same = S3Settings(access_key_id="ENVKEY", secret_access_key="env-secret").or_else(env)
    assert same.session_token == "env-token"


def test_client_reaches_the_server(moto_settings, request):
    client = moto_settings.client()
    client.put_object(Bucket=bucket_of(request), Key="a.txt", Body=b"hi")
    assert client.get_object(Bucket=bucket_of(request), Key="a.txt")["Body"].read() == b"hi"
    # The endpoint names an S3 server: another service keeps its own endpoint.
    assert moto_settings.client("sts").meta.endpoint_url.startswith("https://sts")


def test_with_resolved_credentials_fills_in_boto3s_chain(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-token")
    resolved = S3Settings(endpoint_url="http://127.0.0.1:9").with_resolved_credentials()
    assert (resolved.endpoint_url, resolved.access_key_id, resolved.secret_access_key, resolved.session_token) == (
        "http://127.0.0.1:9", "ASIAENV", "env-secret", "env-token")
    assert S3Settings(access_key_id="AKIA", secret_access_key="given").with_resolved_credentials().session_token \
        is None


def test_the_store_and_the_data_loader_take_the_settings(moto_settings, request, tmp_path):
    bucket = bucket_of(request)
    store = store_from_uri(f"s3://{bucket}/data", s3=moto_settings)
    assert isinstance(store, S3ArtifactStore) and store.s3 == moto_settings
    assert store.s3.endpoint_url == moto_settings.endpoint_url and store.s3.region == "us-east-1"
    assert SECRET not in repr(store) and KEY not in repr(store)
    dataset_io.write_jsonl(pet_task.generate_training_rows(5, 0), tmp_path / "batch.jsonl")
    store.put_file(tmp_path / "batch.jsonl", "batch.jsonl")
    rows = data_sources.load_source_rows(f"s3://{bucket}/data/", s3=moto_settings)
    assert len(rows) == 5 and rows[0]["source"].startswith(f"s3://{bucket}/data/batch.jsonl:")
    assert store.resolved_s3_settings().public() == moto_settings.public()
    resolved = store.resolved_s3_settings()
    assert (resolved.access_key_id, resolved.secret_access_key, resolved.session_token) == (KEY, SECRET, None)
