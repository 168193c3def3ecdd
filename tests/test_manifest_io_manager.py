"""ManifestIOManager on a two-asset toy graph: every run writes its own manifests, and a step reads exactly the
upstream output it was given (this run's, a re-executed run's parent's, or the materialization Dagster loads)."""

import os

import dagster as dg
import pytest
from pydantic import Field

from llm_assets.core.artifacts import LocalArtifactStore
from resources.artifact_store import ArtifactStoreResource
from resources.manifest_io_manager import ManifestIOManager, manifest_key, read_manifest


class SourceConfig(dg.Config):
    value: int = Field(default=0, description="What the source asset records.")


@dg.asset
def source(config: SourceConfig) -> dict:
    return {"value": config.value}


@dg.asset
def derived(source: dict) -> dict:
    return {"from": source["value"]}


PARTITIONS = dg.StaticPartitionsDefinition(["pet/brain", "cat"])


@dg.asset(partitions_def=PARTITIONS)
def per_model(context: dg.AssetExecutionContext) -> dict:
    return {"model": context.partition_key}


@dg.asset(partitions_def=PARTITIONS)
def per_model_child(per_model: dict) -> dict:
    return {"from": per_model["model"]}


def resources(root) -> dict:
    return {"io_manager": ManifestIOManager(artifact_store=ArtifactStoreResource(root=str(root)))}


def run(root, instance, value=0, selection=None, **kwargs):
    config = {"ops": {"source": {"config": {"value": value}}}} if selection != ["derived"] else None
    return dg.materialize([source, derived], selection=selection, instance=instance, resources=resources(root),
                          run_config=config, **kwargs)


def toy_job():
    """The toy graph as a job a re-execution can reconstruct; the store's root comes from the environment."""
    job = dg.define_asset_job("toy_job", executor_def=dg.in_process_executor)
    defs = dg.Definitions(assets=[source, derived], jobs=[job], resources=resources(os.environ["TOY_STORE"]))
    return defs.resolve_job_def("toy_job")


def test_each_run_writes_its_own_manifest_and_its_steps_read_them(tmp_path):
    with dg.instance_for_test() as instance:
        first, second = run(tmp_path, instance, value=1), run(tmp_path, instance, value=2)
    store = LocalArtifactStore(tmp_path)
    for result, value in ((first, 1), (second, 2)):
        assert read_manifest(store, manifest_key("derived", result.run_id)) == {"from": value}
        [event] = result.asset_materializations_for_node("source")
        assert event.metadata["manifest_key"].value == manifest_key("source", result.run_id)
    assert not (tmp_path / "manifests" / "source.json").exists()  # no global "latest" manifest


def test_an_upstream_outside_the_run_is_the_materialization_dagster_loads_not_the_newest_file(tmp_path):
    with dg.instance_for_test() as instance:
        materialized = run(tmp_path, instance, selection=["source"], value=7)
        # A newer file that no materialization names (e.g. a run that crashed before recording it) is ignored.
        stray = tmp_path / manifest_key("source", "zzzz-not-a-run")
        stray.write_text('{"value": 99}')
        alone = run(tmp_path, instance, selection=["derived"])
    assert read_manifest(LocalArtifactStore(tmp_path), manifest_key("derived", alone.run_id)) == {"from": 7}
    assert materialized.run_id != alone.run_id


def test_an_upstream_never_materialized_fails_naming_it(tmp_path):
    with dg.instance_for_test() as instance:
        result = run(tmp_path, instance, selection=["derived"], raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "source has no materialization in this Dagster instance" in str(failure.step_failure_data.error)


def test_a_re_executed_step_reads_the_parent_runs_output(tmp_path, monkeypatch):
    monkeypatch.setenv("TOY_STORE", str(tmp_path))
    config = {"ops": {"source": {"config": {"value": 3}}}}
    with dg.instance_for_test() as instance:
        parent = dg.execute_job(dg.reconstructable(toy_job), instance, run_config=config)
        run(tmp_path, instance, value=4)  # a newer source: the re-execution must not see it
        again = dg.execute_job(dg.reconstructable(toy_job), instance, run_config=config,
                               reexecution_options=dg.ReexecutionOptions(parent.run_id, step_selection=["derived"]))
        assert parent.success and again.success
        assert again.dagster_run.root_run_id == parent.run_id
        run_id = again.run_id
    assert read_manifest(LocalArtifactStore(tmp_path), manifest_key("derived", run_id)) == {"from": 3}


@pytest.mark.parametrize("partition", ["pet/brain", "cat"])
def test_partitions_have_their_own_manifests(tmp_path, partition):
    with dg.instance_for_test() as instance:
        result = dg.materialize([per_model, per_model_child], partition_key=partition, instance=instance,
                                resources=resources(tmp_path))
    key = manifest_key("per_model_child", result.run_id, partition)
    assert key.startswith("manifests/per_model_child/partition=") and "pet/brain" not in key
    assert read_manifest(LocalArtifactStore(tmp_path), key) == {"from": partition}
