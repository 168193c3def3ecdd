"""Many models side by side: model files, per-model partitions, a user's own JSONL task with its own scorer,
benchmark and gate, and gates a run cannot lower. Real materializations on the tiny model."""

from __future__ import annotations

import json

import dagster as dg
import pytest
import yaml

from llm_assets.assets import PIPELINE_ASSETS, PIPELINE_CHECKS
from llm_assets.core.errors import ConfigError
from llm_assets.core.model_spec import GateSpec, load_model_spec, load_model_specs, tightened_gate
from llm_assets.core.registry import ModelRegistry
from tests.pipeline_configs import REPO_MODELS_DIR, TINY_BASE, materialize, resources_for

TRAINING = [a for a in PIPELINE_ASSETS if a.key.to_user_string() != "production_model"]
COLORS = {"apple": "red", "banana": "yellow", "grass": "green", "sky": "blue"}


def write_model(folder, file_name: str, **fields) -> None:
    spec = {"name": file_name, "purpose": f"test model {file_name}", "scorer": "label",
            "gate": {"metric": "accuracy", "threshold": 0.5, "beats_base_by": None}, "quantizations": ["q8_0"],
            **fields}
    (folder / f"{file_name}.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")


def color_rows(n: int, offset: int = 0) -> list[dict]:
    """A task a tiny model learns in a few dozen steps: the colour of a named thing, among four labels."""
    things = list(COLORS)
    return [{"prompt": f"colour of the {things[i % 4]} number {i + offset}?", "completion": COLORS[things[i % 4]],
             "category": things[i % 4]} for i in range(n)]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def run_config(steps: int = 4, base: dict | None = None, **eval_config) -> dict:
    return {"ops": {
        "base_model": {"config": TINY_BASE if base is None else base},
        "lora_adapter": {"config": {"method": "full", "epochs": 1.0, "max_steps": steps, "batch_size": 16,
                                    "learning_rate": 3e-3, "save_steps": 1000, "logging_steps": 10}},
        "gguf_model": {"config": {"float_type": "f32"}},
        "eval_report": {"config": {"max_new_tokens": 8, **eval_config}},
    }}


def test_the_repositorys_model_files_are_valid():
    specs = load_model_specs(REPO_MODELS_DIR)
    assert "pet-brain" in specs and specs["pet-brain"].gate.threshold == 0.95 and specs["pet-brain"].scorer == "pet"


@pytest.mark.parametrize("change, field", [
    ({"gate": {"threshold": 1.5}}, "gate.threshold"),
    ({"scorer": "rouge"}, "scorer"),
    ({"colour": "red"}, "colour"),
    ({"name": "Other Name"}, "name"),
])
def test_a_bad_model_file_is_refused_naming_the_file_and_the_field(tmp_path, change, field):
    write_model(tmp_path, "my-task", data={"source": "rows.jsonl"}, **change)
    with pytest.raises(ConfigError) as err:
        load_model_spec(tmp_path / "my-task.yaml")
    assert err.value.field == f"{tmp_path / 'my-task.yaml'}: {field}"


def test_a_run_may_tighten_a_gate_never_loosen_it():
    gate = GateSpec(threshold=0.9)
    assert tightened_gate(gate, None, "t").threshold == 0.9 and tightened_gate(gate, 0.95, "t").threshold == 0.95
    with pytest.raises(ConfigError, match="never loosen"):
        tightened_gate(gate, 0.5, "ops.eval_report.config.threshold")


def test_a_run_config_below_the_models_gate_fails_before_any_compute(tmp_path):
    result = materialize(TRAINING + PIPELINE_CHECKS, resources=resources_for(tmp_path, models_dir=REPO_MODELS_DIR),
                         run_config=run_config(threshold=0.0), partition_key="pet-brain", raise_on_error=False)
    assert not result.success and not result.get_asset_materialization_events()
    failures = "\n".join(str(e.event_specific_data.error) for e in result.all_events
                          if e.event_type_value == "STEP_FAILURE")
    assert "ops.eval_report.config.threshold" in failures and "never loosen" in failures


def test_a_benchmark_row_found_in_the_training_data_fails_the_data_check_naming_the_file_and_line(tmp_path):
    rows = color_rows(40)
    data = write_jsonl(tmp_path / "colours.jsonl", rows)
    bench = write_jsonl(tmp_path / "bench.jsonl", [rows[6]] + color_rows(8, offset=1000))
    write_model(tmp_path, "colours", data={"source": data}, benchmark={"source": bench})
    assets = [a for a in PIPELINE_ASSETS if a.key.to_user_string() in
              ("raw_dataset", "eval_benchmark", "base_model", "training_dataset")]
    result = materialize(assets + PIPELINE_CHECKS[:1], resources=resources_for(tmp_path, models_dir=str(tmp_path)),
                         run_config={"ops": {"base_model": {"config": TINY_BASE}}}, partition_key="colours",
                         raise_on_error=False)
    [check] = [e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert not check.passed and f"{data}:7" in check.description and "benchmark" in check.description


def test_two_user_models_train_score_gate_and_promote_under_their_own_names(tmp_path, monkeypatch):
    """A user's own JSONL task (not the bunny), scored by `label` on a hold-out of its data, gated at accuracy
    0.5 (four labels: chance is 0.25, the untuned model scores 0); a second model beside it keeps its own
    lineage and production."""
    monkeypatch.setenv("LLM_ASSETS_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    first = write_jsonl(tmp_path / "colours.jsonl", color_rows(400))
    second = write_jsonl(tmp_path / "colours-b.jsonl", color_rows(400, offset=5000))
    write_model(tmp_path, "colours", data={"source": first}, benchmark={"source": "holdout", "holdout_fraction": 0.1})
    write_model(tmp_path, "colours-b", data={"source": second}, benchmark={"source": "holdout"},
                gate={"metric": "accuracy", "threshold": 0.0, "beats_base_by": None},
                serving={"system_prompt": "Name the colour.", "max_tokens": 8})
    resources = resources_for(tmp_path, models_dir=str(tmp_path))
    instance = dg.DagsterInstance.ephemeral()
    runs = {}
    # The first trains long enough on the embedded default base model to pass its real gate; the second, a few
    # steps on the smallest model, only has to be a separate model (gate 0).
    for name, steps, base in (("colours", 200, {}), ("colours-b", 4, None)):
        result = materialize(TRAINING + PIPELINE_CHECKS, resources=resources, run_config=run_config(steps, base),
                             partition_key=name, instance=instance, raise_on_error=False)
        assert result.success, [str(e.event_specific_data.error) for e in result.all_events
                                if e.event_type_value == "STEP_FAILURE"][:2]
        runs[name] = result
    report = runs["colours"].asset_materializations_for_node("eval_report")[0].metadata
    assert report["gate_passed"].value is True and report["accuracy"].value >= 0.5
    bench = runs["colours"].asset_materializations_for_node("eval_benchmark")[0].metadata
    data = runs["colours"].asset_materializations_for_node("training_dataset")[0].metadata
    assert bench["rows"].value + data["train_rows"].value + data["validation_rows"].value == 400  # held out
    with ModelRegistry(f"sqlite:///{tmp_path}/registry.db") as registry:
        assert {m.name for m in registry.list_models()} == {"colours", "colours-b"}
        for name, result in runs.items():
            [version] = registry.list_versions(name)
            dataset = result.asset_materializations_for_node("training_dataset")[0].metadata
            assert version.dagster_run_id == result.run_id and version.dataset_version == dataset["sha256"].value[:16]
            assert version.metrics["gate_metric"] == "accuracy" and version.gguf_uri.split("/")[-1].startswith(name)
            # The model file's serving defaults travel with the version, for a server with no models/ folder.
            assert version.serving["system_prompt"] == ("Name the colour." if name == "colours-b" else None)
            registry.promote(name, version.version, actor="test")
        lineage = {name: registry.lineage(name, "production") for name in runs}
    datasets = {name: next(s for s in lineage[name]["chain"] if s["kind"] == "dataset") for name in runs}
    assert datasets["colours"]["version"] != datasets["colours-b"]["version"]
    assert first in json.dumps(datasets["colours"]) and second not in json.dumps(datasets["colours"])


def test_a_bare_materialize_trains_with_the_models_preset_and_reads_paths_beside_the_model_file(tmp_path, monkeypatch):
    """What a user gets from the Launchpad with nothing typed: the model file's relative data path and preset are
    found beside it (whatever the working directory), the preset's lora_adapter config is the default, and a field
    the run's config sets wins over it."""
    monkeypatch.chdir(tmp_path.parent)
    (tmp_path / "data").mkdir()
    (tmp_path / "presets").mkdir()
    write_jsonl(tmp_path / "data" / "colours.jsonl", color_rows(64))
    (tmp_path / "presets" / "fast.yaml").write_text(yaml.safe_dump({"ops": {"lora_adapter": {"config": {
        "method": "full", "max_steps": 2, "learning_rate": 0.0123, "batch_size": 8}}}}), encoding="utf-8")
    write_model(tmp_path, "colours", data={"source": "data/colours.jsonl"}, preset="presets/fast.yaml",
                base_model=TINY_BASE)
    assets = [a for a in PIPELINE_ASSETS if a.key.to_user_string() in
              ("raw_dataset", "eval_benchmark", "base_model", "training_dataset", "lora_adapter")]
    resources = resources_for(tmp_path, models_dir=str(tmp_path))
    configs = []
    for run_config in ({}, {"ops": {"lora_adapter": {"config": {"learning_rate": 0.002}}}}):
        result = materialize(assets, resources=resources, run_config=run_config, partition_key="colours")
        configs.append(result.output_for_node("lora_adapter")["config"])
    assert [(c["learning_rate"], c["max_steps"], c["batch_size"]) for c in configs] == [(0.0123, 2, 8), (0.002, 2, 8)]


def test_a_model_file_naming_a_missing_preset_file_is_refused(tmp_path):
    write_model(tmp_path, "my-task", data={"source": "rows.jsonl"}, preset="presets/nope.yaml")
    with pytest.raises(ConfigError) as err:
        load_model_spec(tmp_path / "my-task.yaml")
    assert err.value.field == f"{tmp_path / 'my-task.yaml'}: preset"
