"""ArtifactStoreResource: builds the right store from config, in and out of Dagster, and hides secrets."""

from __future__ import annotations


import dagster as dg
import pytest

from llm_assets.core.artifacts import ArtifactNotFoundError, LocalArtifactStore, S3ArtifactStore
from llm_assets.core.errors import ConfigError
from llm_assets.core.s3_settings import S3Settings
from resources import ArtifactStoreResource

SECRET = "wJalrXUtnFEMI-K7MDENG-never-printed"


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """A bucket on the moto server, and credentials in the environment as production sets them."""
    import boto3

    monkeypatch.setenv("TEST_AWS_ACCESS_KEY_ID", "AKIATESTING")
    monkeypatch.setenv("TEST_AWS_SECRET_ACCESS_KEY", SECRET)
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="AKIATESTING",
                 aws_secret_access_key=SECRET).create_bucket(Bucket="artifacts")
    return s3_endpoint


def s3_resource(endpoint: str) -> ArtifactStoreResource:
    return ArtifactStoreResource(
        root="s3://artifacts/pipeline", s3_endpoint_url=endpoint, aws_region="us-east-1",
        aws_access_key_id=dg.EnvVar("TEST_AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=dg.EnvVar("TEST_AWS_SECRET_ACCESS_KEY"),
    )


def test_every_field_is_described():
    for name, field in ArtifactStoreResource.model_fields.items():
        assert field.description, name


def test_default_root_resolves_against_cwd_at_use_time(tmp_path, monkeypatch):
    monkeypatch.delenv("LLM_ASSETS_ARTIFACT_ROOT", raising=False)
    resource = ArtifactStoreResource()
    for cwd in (tmp_path / "a", tmp_path / "b"):
        cwd.mkdir()
        monkeypatch.chdir(cwd)
        store = resource.store()
        assert isinstance(store, LocalArtifactStore) and store.root == cwd / "artifacts"
    assert ArtifactStoreResource(root=(tmp_path / "x").as_uri()).store().root == tmp_path / "x"
    with pytest.raises(ConfigError, match="ftp://"):
        ArtifactStoreResource(root="ftp://host/x").store()


def test_unset_root_is_the_variable_read_when_the_store_is_used(tmp_path, monkeypatch):
    resource = ArtifactStoreResource()
    for name in ("first", "second"):
        monkeypatch.setenv("LLM_ASSETS_ARTIFACT_ROOT", str(tmp_path / name))
        assert resource.root_uri() == str(tmp_path / name) and resource.store().root == tmp_path / name
    assert ArtifactStoreResource(root=str(tmp_path / "given")).store().root == tmp_path / "given"


def test_s3_settings_are_the_configured_fields_else_the_variables_when_used(monkeypatch):
    for name, value in {"LLM_ASSETS_S3_ENDPOINT_URL": "http://env:9000", "AWS_REGION": "eu-west-1",
                        "AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": SECRET,
                        "AWS_SESSION_TOKEN": "env-token", "TEST_AWS_SECRET_ACCESS_KEY": "configured-secret",
                        "TEST_AWS_ACCESS_KEY_ID": "AKIACONFIGURED"}.items():
        monkeypatch.setenv(name, value)
    unset = ArtifactStoreResource()
    assert unset.s3_settings() == S3Settings("http://env:9000", "eu-west-1", "AKIAENV", SECRET, "env-token")
    monkeypatch.setenv("AWS_REGION", "ap-south-1")  # read now, not when the resource was made
    assert unset.s3_settings().region == "ap-south-1"
    configured = ArtifactStoreResource(s3_endpoint_url="http://given:1",
                                       aws_access_key_id=dg.EnvVar("TEST_AWS_ACCESS_KEY_ID"),
                                       aws_secret_access_key=dg.EnvVar("TEST_AWS_SECRET_ACCESS_KEY"))
    settings = configured.s3_settings()
    assert (settings.endpoint_url, settings.region, settings.access_key_id, settings.secret_access_key) == (
        "http://given:1", "ap-south-1", "AKIACONFIGURED", "configured-secret")
    assert settings.session_token is None  # the environment's token belongs to the environment's key
    assert settings.public() == {"endpoint_url": "http://given:1", "region": "ap-south-1"}
    assert SECRET not in repr(unset.s3_settings()) and "configured-secret" not in repr(settings)


def test_local_resource_in_a_dagster_run(tmp_path):
    @dg.asset
    def report(artifact_store: ArtifactStoreResource) -> dg.MaterializeResult:
        src = tmp_path / "report.json"
        src.write_text('{"ok": true}')
        art = artifact_store.store().put_file(src, "runs/r1/report/report.json")
        return dg.MaterializeResult(metadata={"uri": art.uri, "sha256": art.sha256, "size": art.size})

    result = dg.materialize([report], resources={"artifact_store": ArtifactStoreResource(
        root=str(tmp_path / "store"))})
    assert result.success
    metadata = result.asset_materializations_for_node("report")[0].metadata
    assert metadata["uri"].value == (tmp_path / "store/runs/r1/report/report.json").as_uri()
    assert (tmp_path / "store/runs/r1/report/report.json").read_text() == '{"ok": true}'


def test_s3_resource_outside_dagster_resolves_env_vars(s3_env, tmp_path):
    resource = s3_resource(s3_env)
    store = resource.store()
    assert isinstance(store, S3ArtifactStore)
    assert (store.bucket, store.prefix, store.s3.endpoint_url) == ("artifacts", "pipeline", s3_env)
    (tmp_path / "a.txt").write_text("hello")
    assert store.s3.secret_access_key == SECRET  # the value, not the variable's name
    art = store.put_file(tmp_path / "a.txt", "runs/r1/a.txt")
    assert art.uri == "s3://artifacts/pipeline/runs/r1/a.txt"
    assert store.get_file(art.uri, tmp_path / "b.txt", expected_sha256=art.sha256).read_text() == "hello"
    literal = ArtifactStoreResource(root="s3://artifacts/p", aws_access_key_id="AKIATESTING",
                                    aws_secret_access_key=SECRET)
    for shown in (resource, store, literal, literal.store()):
        assert SECRET not in repr(shown) + str(shown) and "AKIATESTING" not in repr(shown) + str(shown)


def test_s3_resource_in_dagster_never_leaks_the_secret(s3_env, tmp_path):
    from dagster._serdes import serialize_value

    src = tmp_path / "model"
    src.mkdir()
    (src / "weights.bin").write_bytes(b"\x01\x02")

    shown = []

    @dg.asset
    def adapter(artifact_store: ArtifactStoreResource) -> dg.MaterializeResult:
        assert artifact_store.aws_secret_access_key == SECRET  # Dagster resolved the EnvVar
        shown.append(repr(artifact_store) + str(artifact_store) + repr(artifact_store.store()))
        art = artifact_store.store().put_dir(src, "runs/r1/adapter")
        return dg.MaterializeResult(metadata=art.to_dict())

    @dg.asset(deps=[adapter])
    def broken(artifact_store: ArtifactStoreResource) -> None:
        store = artifact_store.store()
        store.get_file(store.uri_for("runs/r1/does-not-exist.gguf"), tmp_path / "x.gguf")

    result = dg.materialize([adapter, broken], resources={"artifact_store": s3_resource(s3_env)},
                            raise_on_error=False)
    assert not result.success
    uri = result.asset_materializations_for_node("adapter")[0].metadata["uri"].value
    assert uri == "s3://artifacts/pipeline/runs/r1/adapter"
    assert s3_resource(s3_env).store().exists(uri)
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "s3://artifacts/pipeline/runs/r1/does-not-exist.gguf" in str(failure.step_failure_data.error)
    assert ArtifactNotFoundError.__name__ in str(failure.step_failure_data.error)
    everything = serialize_value(result.all_events) + serialize_value(result.dagster_run)
    assert shown and SECRET not in everything + shown[0]
