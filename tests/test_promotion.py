"""Promotion: the sensor's champion / challenger decisions, and the whole registry flow end to end."""

import json

import dagster as dg
import pytest

from llm_assets.assets import PIPELINE_ASSETS, PIPELINE_CHECKS, production_model
from llm_assets.cli import main as cli
from llm_assets.core.registry import ModelRegistry
from resources.registry import ModelRegistryResource
from sensors.promotion import promotion_sensor
from resources.model_catalog import ModelCatalogResource
from tests.pipeline_configs import MODEL, MODELS_DIR, REPO_MODELS_DIR, materialize, resources_for, tiny_run_config

TRAINING = [a for a in PIPELINE_ASSETS if a.key.to_user_string() != "production_model"]


def _register(registry, acc, gate=True, bench="b1", status="candidate"):
    return registry.register("pet-brain", status=status, gate_passed=gate, benchmark_version=bench,
                             metrics={"strict_accuracy": acc}, gguf_uri="file:///x.gguf", gguf_sha256="0" * 64)


def _evaluate(resource, cursor=None, models_dir=REPO_MODELS_DIR):
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={
            "model_registry": resource, "model_catalog": ModelCatalogResource(folder=models_dir)})
        result = promotion_sensor(ctx)
    return result


@pytest.fixture
def resource(tmp_path):
    return ModelRegistryResource(url=f"sqlite:///{tmp_path}/registry.db")


def test_sensor_skips_an_empty_registry(resource):
    result = _evaluate(resource)
    assert not result.run_requests and "no pet-brain version registered yet" in result.skip_reason.skip_message


def test_sensor_requests_promotion_of_a_passing_candidate_once(resource):
    with resource.registry() as registry:
        _register(registry, 0.5, gate=False, status="rejected")
        _register(registry, 0.97)
    result = _evaluate(resource)
    [request] = result.run_requests
    assert request.run_key == "promote-pet-brain-v2"
    assert request.run_config["ops"]["production_model"]["config"]["version"] == 2
    assert request.partition_key == "pet-brain"
    again = _evaluate(resource, cursor=result.cursor)  # the next tick: nothing new, nothing requested
    assert not again.run_requests


@pytest.mark.parametrize("challenger, bench, min_improvement, promoted", [
    (0.99, "b1", 0.0, True), (0.95, "b1", 0.0, False), (0.975, "b1", 0.01, False), (0.99, "b2", 0.0, False),
])
def test_challenger_must_beat_champion_on_the_same_benchmark(tmp_path, challenger, bench, min_improvement, promoted):
    resource = ModelRegistryResource(url=f"sqlite:///{tmp_path}/r.db", min_improvement=min_improvement)
    with resource.registry() as registry:
        _register(registry, 0.97)
        registry.promote("pet-brain", 1, actor="test")
        _register(registry, challenger, bench=bench)
    result = _evaluate(resource, cursor='{"pet-brain": 1}')
    assert bool(getattr(result, "run_requests", None)) is promoted


def test_manual_mode_reports_without_promoting(tmp_path):
    resource = ModelRegistryResource(url=f"sqlite:///{tmp_path}/r.db", promotion_mode="manual")
    with resource.registry() as registry:
        _register(registry, 0.97)
    result = _evaluate(resource)
    assert not result.run_requests and "llm-assets registry promote pet-brain 1" in result.skip_reason.skip_message


def _train(root, seed):
    config = tiny_run_config()
    config["ops"]["raw_dataset"]["config"]["seed"] = seed
    # An honest gate for a 4-step model: no threshold and no baseline, so it passes and registers.
    config["ops"]["eval_report"]["config"].update({"threshold": 0.0, "evaluate_baseline": False})
    result = materialize(TRAINING + PIPELINE_CHECKS, resources=resources_for(root), run_config=config)
    assert result.success
    return result.asset_materializations_for_node("training_dataset")[0].metadata["sha256"].value[:16]


def _promote_by_sensor(root, cursor):
    resources = resources_for(root)
    result = _evaluate(resources["model_registry"], cursor=cursor, models_dir=MODELS_DIR)
    [request] = result.run_requests
    run = materialize([production_model], resources=resources, run_config=request.run_config,
                      partition_key=request.partition_key)
    assert run.success
    return result.cursor, run


def test_two_trainings_promotion_lineage_and_rollback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLM_ASSETS_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    first_data = _train(tmp_path, seed=1)
    cursor, _ = _promote_by_sensor(tmp_path, None)
    second_data = _train(tmp_path, seed=2)
    assert second_data != first_data
    cursor, run = _promote_by_sensor(tmp_path, cursor)
    meta = run.get_asset_materialization_events()[0].materialization.metadata
    assert meta["version"].value == 2 and meta["dataset_version"].value == second_data
    rows = {r.data["step"]: r.data["detail"] for r in meta["lineage"].value.records}
    assert second_data in rows["dataset"]

    db = f"sqlite:///{tmp_path}/registry.db"
    capsys.readouterr()
    assert cli(["registry", "lineage", f"{MODEL}@production", "--db", db, "--json"]) == 0
    lineage = json.loads(capsys.readouterr().out)
    dataset = next(step for step in lineage["chain"] if step["kind"] == "dataset")
    assert lineage["version"] == 2 and dataset["version"] == second_data
    assert cli(["registry", "rollback", MODEL, "--db", db]) == 0
    with ModelRegistry(db) as registry:
        production = registry.resolve(MODEL, "production")
        history = registry.history(MODEL)
    assert production.version == 1 and production.dataset_version == first_data
    with ModelRegistry(db) as registry:
        assert registry.resolve(MODEL, "staging").version == 2  # the last candidate that passed
    assert [e.event for e in history].count("promote") >= 2 and history[-1].event == "rollback"
    assert [e.to_version for e in history if e.event == "stage"] == [1, 2]
