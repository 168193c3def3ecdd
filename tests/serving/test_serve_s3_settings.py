"""The server reaches s3:// GGUF URIs with the same S3 variables as the pipeline and its workers."""

from llm_assets.core.s3_settings import S3Settings
from llm_assets.serving.config import ServeConfig


def test_unset_endpoint_and_region_come_from_the_pipelines_variables_when_used(monkeypatch):
    monkeypatch.setenv("LLM_ASSETS_S3_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIASERVE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "serve-secret")
    config = ServeConfig()
    assert config.s3_settings() == S3Settings("http://minio:9000", "eu-central-1", "AKIASERVE", "serve-secret")
    monkeypatch.setenv("LLM_ASSETS_S3_ENDPOINT_URL", "http://other:9000")  # read at use, not at construction
    assert config.s3_settings().endpoint_url == "http://other:9000"
    explicit = ServeConfig(s3_endpoint_url="http://given:1", s3_region="us-west-2").s3_settings()
    assert explicit.public() == {"endpoint_url": "http://given:1", "region": "us-west-2"}
    assert "serve-secret" not in repr(config) + repr(config.s3_settings())
