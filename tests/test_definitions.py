"""The code location loads with the expected graph, checks and jobs, and every preset is valid config."""

import runpy
from pathlib import Path

import dagster as dg
import pytest

from llm_assets.presets import CONFIGS_DIR, load_preset, preset_names
from llm_assets.assets import PIPELINE_CHECKS
from llm_assets.config import CONFIG_BY_ASSET, validate_run_config
from llm_assets.core.errors import ConfigError
from llm_assets.definitions import defs

EDGES = {
    "training_dataset": {"raw_dataset", "base_model", "eval_benchmark"},
    "lora_adapter": {"training_dataset", "base_model"},
    "gguf_model": {"lora_adapter", "base_model", "training_dataset"},
    "eval_report": {"gguf_model", "eval_benchmark", "base_model", "lora_adapter", "training_dataset"},
    "registered_model": {"eval_report", "gguf_model", "lora_adapter", "training_dataset", "base_model",
                         "eval_benchmark"},
    "production_model": {"registered_model"},
}


def test_graph_shape_checks_and_groups():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"raw_dataset", "eval_benchmark", "base_model", "training_dataset", "lora_adapter",
                    "gguf_model", "eval_report", "registered_model", "production_model"}
    for asset, parents in EDGES.items():
        assert {p.to_user_string() for p in graph.get(dg.AssetKey(asset)).parent_keys} == parents
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert checks == {("training_dataset", "training_data_valid"), ("eval_report", "accuracy_gate")}
    for spec in defs.resolve_all_asset_specs():
        assert spec.group_name in {"data", "training", "export", "evaluation", "registry"}
        assert spec.description


def test_every_asset_reads_well_in_the_ui():
    """The catalog shows each asset's description, owner and kinds (its tools); checks show a description."""
    for spec in defs.resolve_all_asset_specs():
        name = spec.key.to_user_string()
        assert spec.description and len(spec.description) > 20, f"{name} has no real description"
        assert spec.owners, f"{name} has no owner"
        assert spec.kinds, f"{name} has no kinds"
    for checks in PIPELINE_CHECKS:
        for check in checks.check_specs:
            assert check.description, f"check {check.name} has no description"


def test_data_check_blocks_and_the_gate_check_only_reports():
    """Bad data stops training; the gate must not stop registered_model, which registers rejections too."""
    blocking = {spec.name: spec.blocking for checks in PIPELINE_CHECKS for spec in checks.check_specs}
    assert blocking == {"training_data_valid": True, "accuracy_gate": False}


def test_compute_heavy_steps_share_one_concurrency_pool():
    from llm_assets.assets.automation import COMPUTE_POOL

    job = defs.resolve_job_def("train_cpu_tiny_job")
    pools = {node.name: node.definition.pool for node in job.graph.nodes}
    assert {name for name, pool in pools.items() if pool} == {"base_model", "lora_adapter", "gguf_model",
                                                              "eval_report"}
    assert set(pools.values()) == {COMPUTE_POOL, None}


PRODUCTION_JOBS = {"train_cpu_tiny_job", "train_gpu_small_job", "train_gpu_medium_job", "train_gpu_large_job",
                   "promote_job", "retrain_job", "retraining_alert_job"}


def job_names(definitions: dg.Definitions) -> set[str]:
    return {job.name for job in definitions.resolve_all_job_defs() if not job.name.startswith("__")}


def test_jobs_one_per_preset_and_promotion_sensor():
    """One job per production preset and no two doing the same thing; test fixtures are not presets."""
    assert preset_names() == ["cpu_tiny", "gpu_large", "gpu_medium", "gpu_small"]
    assert job_names(defs) == PRODUCTION_JOBS
    assert [s.name for s in defs.sensors] == ["model_files_sensor", "promotion_sensor", "new_data_sensor",
                                              "gate_failure_sensor", "stage_automation_sensor",
                                              "orphan_sweeper_sensor"]
    training = defs.resolve_job_def("train_cpu_tiny_job").asset_layer.selected_asset_keys
    assert dg.AssetKey("registered_model") in training and dg.AssetKey("production_model") not in training
    for preset in preset_names():
        description = defs.resolve_job_def(f"train_{preset}_job").description
        assert f"{preset} preset: " in description and len(description) > 80, description


def test_cpu_tiny_is_every_assets_default_config():
    """train_cpu_tiny_job is also the graph with no config at all (make demo, the benchmarks, retraining's default
    preset): configs/cpu_tiny.yaml writes out exactly the defaults, or the two have drifted apart."""
    config = load_preset("cpu_tiny")
    assert set(config) == {"ops"}
    for asset, section in config["ops"].items():
        cls = CONFIG_BY_ASSET[asset]
        assert cls(**section["config"]) == cls(), f"configs/cpu_tiny.yaml's {asset} differs from its defaults"


def test_every_preset_starts_with_the_command_that_runs_it():
    for preset in preset_names():
        first = (CONFIGS_DIR / f"{preset}.yaml").read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# ") and f"-j train_{preset}_job" in first, f"configs/{preset}.yaml: {first}"


def test_the_ui_smoke_fixture_job_lives_only_in_the_browser_tests_location():
    location = runpy.run_path(str(Path(__file__).parent / "browser" / "definitions.py"))
    browser = location["defs"]
    assert job_names(browser) == PRODUCTION_JOBS | {"train_ui_smoke_job"}
    smoke = browser.resolve_job_def("train_ui_smoke_job")
    assert smoke.run_config_schema.config_type is not None
    assert smoke.asset_layer.selected_asset_keys == defs.resolve_job_def(
        "train_cpu_tiny_job").asset_layer.selected_asset_keys
    validate_run_config(load_preset(location["UI_SMOKE"]))


@pytest.mark.parametrize("preset, job", [("cpu_tiny", "train_cpu_tiny_job"), ("gpu_small", "train_gpu_small_job"),
                                         ("tests/fixtures/ui_smoke.yaml", "train_cpu_tiny_job")])
def test_the_demo_runs_a_named_preset_as_its_job_and_a_file_as_the_defaults_job(preset, job):
    from llm_assets.demo import job_name

    assert job_name(preset, job_names(defs)) == job


@pytest.mark.parametrize("preset", preset_names())
def test_presets_are_valid_config(preset):
    config = load_preset(preset)
    validate_run_config(config)
    assert set(config["ops"]) <= set(CONFIG_BY_ASSET)
    job = defs.resolve_job_def(f"train_{preset}_job")
    assert job.run_config_schema.config_type is not None


def test_every_config_field_has_a_description():
    for cls in CONFIG_BY_ASSET.values():
        for name, field in cls.model_fields.items():
            assert field.description, f"{cls.__name__}.{name} has no description"


@pytest.mark.parametrize("asset, field, value", [
    ("lora_adapter", "learning_rate", -0.1),
    ("lora_adapter", "epochs", 0),
    ("eval_report", "threshold", 1.5),
    ("training_dataset", "validation_fraction", 0.0),
])
def test_bad_values_are_rejected_naming_the_field(asset, field, value):
    with pytest.raises(ConfigError, match=rf"ops\.{asset}\.config\.{field}"):
        validate_run_config({"ops": {asset: {"config": {field: value}}}})


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match="cpu_tiny"):
        load_preset("no_such_preset")
