"""The environment table: local and production both build, production holds only dg.EnvVar, an unknown
LLM_ASSETS_ENV fails naming the variable, and nothing but LLM_ASSETS_ENV is read when the module is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from llm_assets.core.s3_settings import ENV_NAMES
from llm_assets.definitions import ENVIRONMENTS, resources_for
from resources.artifact_store import ArtifactStoreResource

REPO = Path(__file__).resolve().parents[1]
SECRET = "wJalrXUtnFEMI-production-never-shown"


def configured_fields(resource: dg.ConfigurableResource) -> dict:
    """The fields a resource was given (the rest keep their defaults)."""
    return {name: getattr(resource, name) for name in resource.model_fields_set}


def test_both_environments_build_the_same_resource_keys():
    local, production = resources_for("local"), resources_for("production")
    assert set(local) == set(production) == {"artifact_store", "io_manager", "model_registry", "retraining",
                                             "watched_s3", "compute_backends", "model_catalog"}
    assert set(ENVIRONMENTS) == {"local", "production"}
    for env in ENVIRONMENTS:  # the IO manager writes manifests into the same store the assets use
        resources = resources_for(env)
        assert resources["io_manager"].artifact_store is resources["artifact_store"]
        dg.Definitions.validate_loadable(dg.Definitions(resources=resources))


def test_local_leaves_every_setting_to_be_read_when_used():
    for key, resource in ENVIRONMENTS["local"].items():
        assert configured_fields(resource) == {}, key


def test_production_holds_environment_variables_never_values():
    names = {}
    for key, resource in ENVIRONMENTS["production"].items():
        fields = configured_fields(resource)
        assert fields, key
        for field, value in fields.items():
            assert isinstance(value, dg.EnvVar), f"{key}.{field} holds a value, not a dg.EnvVar"
        names[key] = {field: value.env_var_name for field, value in fields.items()}
    assert names["artifact_store"]["root"] == "LLM_ASSETS_ARTIFACT_ROOT"
    assert names["model_registry"] == {"url": "LLM_ASSETS_REGISTRY_URL"}
    # The store and the watched prefix read one set of S3 variables, the ones a worker gets (S3Settings.to_env).
    store_s3 = {v for f, v in names["artifact_store"].items() if f != "root"}
    assert store_s3 == set(names["watched_s3"].values()) <= set(ENV_NAMES.values())


def test_an_unknown_environment_fails_naming_the_variable_and_the_known_names():
    with pytest.raises(ValueError, match=r"LLM_ASSETS_ENV='staging'.*local, production"):
        resources_for("staging")


def _import_definitions(script: str, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_ASSETS_", "AWS_"))}
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**environ, **env}, capture_output=True,
                          text=True, timeout=120)


def test_importing_with_an_unknown_environment_fails_clearly():
    result = _import_definitions("import llm_assets.definitions", LLM_ASSETS_ENV="staging")
    assert result.returncode != 0
    assert "LLM_ASSETS_ENV='staging' is not a known environment; expected one of: local, production" in result.stderr


@pytest.mark.parametrize("env", ["local", "production"])
def test_the_artifact_root_is_read_when_the_store_is_used_not_at_import(env, tmp_path):
    """Import with one root set, change it, and the store follows: nothing was captured at import."""
    script = f"""
import json, os
os.environ["LLM_ASSETS_ARTIFACT_ROOT"] = {str(tmp_path / "at-import")!r}
from llm_assets.definitions import defs
os.environ["LLM_ASSETS_ARTIFACT_ROOT"] = {str(tmp_path / "at-use")!r}
os.environ["LLM_ASSETS_WATCH_DIR"] = {str(tmp_path / "watched")!r}
resources = defs.resources
print(json.dumps({{"root": str(resources["artifact_store"].store().root),
                  "sources": resources["retraining"].sources()}}))
"""
    result = _import_definitions(script, LLM_ASSETS_ENV=env)
    assert result.returncode == 0, result.stderr[-2000:]
    shown = json.loads(result.stdout.strip().splitlines()[-1])
    assert shown == {"root": str(tmp_path / "at-use"), "sources": [str(tmp_path / "watched")]}


def test_production_reads_its_variables_when_a_run_starts(s3_endpoint, tmp_path, monkeypatch):
    """Production's store and watched prefix on a real S3 server, configured only through the environment."""
    import boto3

    for name, value in {"LLM_ASSETS_ARTIFACT_ROOT": "s3://prod-artifacts/llm", "LLM_ASSETS_S3_ENDPOINT_URL": s3_endpoint,
                        "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "AKIAPROD",
                        "AWS_SECRET_ACCESS_KEY": SECRET}.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="AKIAPROD",
                 aws_secret_access_key=SECRET).create_bucket(Bucket="prod-artifacts")
    production = ENVIRONMENTS["production"]

    @dg.asset
    def report(artifact_store: ArtifactStoreResource, watched_s3: S3Resource) -> dict:
        (tmp_path / "report.txt").write_text("ok")
        artifact = artifact_store.store().put_file(tmp_path / "report.txt", "runs/r1/report.txt")
        listed = watched_s3.get_client().list_objects_v2(Bucket="prod-artifacts", Prefix="llm/")["Contents"]
        return {"uri": artifact.uri, "listed": [o["Key"] for o in listed]}

    result = dg.materialize([report], resources={"artifact_store": production["artifact_store"],
                                                  "watched_s3": production["watched_s3"]})
    assert result.output_for_node("report") == {"uri": "s3://prod-artifacts/llm/runs/r1/report.txt",
                                                "listed": ["llm/runs/r1/report.txt"]}
    assert SECRET not in repr(production) + repr(result.dagster_run)


def test_production_without_its_variables_fails_naming_one(tmp_path, monkeypatch):
    monkeypatch.delenv("LLM_ASSETS_ARTIFACT_ROOT", raising=False)

    @dg.asset
    def nothing(artifact_store: ArtifactStoreResource) -> None:
        artifact_store.store()

    with pytest.raises(dg.DagsterInvalidConfigError, match="LLM_ASSETS_ARTIFACT_ROOT"):
        dg.materialize([nothing], resources={"artifact_store": ENVIRONMENTS["production"]["artifact_store"]})


def test_production_on_aws_itself_sets_the_endpoint_empty(monkeypatch):
    """deploy/k8s/values.yaml sets LLM_ASSETS_S3_ENDPOINT_URL to "" for AWS: that means AWS's endpoint."""
    monkeypatch.setenv("LLM_ASSETS_S3_ENDPOINT_URL", "")
    production = ENVIRONMENTS["production"]
    assert production["artifact_store"].s3_settings().endpoint_url is None
    assert production["watched_s3"].s3_settings().endpoint_url is None
