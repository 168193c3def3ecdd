"""Bad data and bad config stop the graph before training, with errors naming the file, line or field."""

import json

import dagster as dg
import pytest

from llm_assets.assets import PIPELINE_ASSETS, PIPELINE_CHECKS
from tests.pipeline_configs import materialize, resources_for, tiny_run_config


TRAINING = [a for a in PIPELINE_ASSETS if a.key.to_user_string() != "production_model"]


def _materialize(tmp_path, run_config):
    return materialize(TRAINING + PIPELINE_CHECKS, resources=resources_for(tmp_path / "store"),
                          run_config=run_config, raise_on_error=False)


def _materialized(result) -> set[str]:
    return {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}


def _failure_messages(result) -> str:
    return "\n".join(str(e.event_specific_data.error) for e in result.all_events
                     if e.event_type_value == "STEP_FAILURE")


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = [{"prompt": f"hunger {i}, energy 50", "completion": '{"action":"explore"}'} for i in range(30)]


def test_invalid_rows_fail_the_blocking_check_and_training_never_runs(tmp_path):
    data = _write(tmp_path / "pets.jsonl", GOOD + [
        {"prompt": "", "completion": "x"},                      # line 31: empty prompt
        {"question": "wrong schema"},                          # line 32
        GOOD[0],                                               # line 33: duplicate of line 1
        {"prompt": "hunger 1 " * 400, "completion": "long"},   # line 34: over-length
    ])
    config = tiny_run_config(source=str(data))
    config["ops"]["training_dataset"] = {"config": {"max_duplicate_fraction": 0.0}}
    result = _materialize(tmp_path, config)
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    check = checks["training_data_valid"]
    assert not check.passed
    problems = check.metadata["problems"].value
    for line in (31, 32, 33, 34):
        assert f"pets.jsonl:{line}" in problems, (line, problems)
    assert "lora_adapter" not in _materialized(result)
    assert "gguf_model" not in _materialized(result)


def test_benchmark_overlap_fails_the_check(tmp_path):
    from llm_assets.core.pet_benchmark import generate_benchmark

    leaked = generate_benchmark(4)[0]
    data = _write(tmp_path / "leak.jsonl", GOOD + [{"prompt": leaked["prompt"], "completion": leaked["completion"]}])
    result = _materialize(tmp_path, tiny_run_config(source=str(data)))
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert not checks["training_data_valid"].passed
    assert "leak.jsonl:31: benchmark overlap" in checks["training_data_valid"].metadata["problems"].value


@pytest.mark.parametrize("content, expected", [
    (b'{"prompt": "a", "completion": "b"}\n{"prompt": "a", \n', "bad.jsonl:2: not valid JSON"),
    (b"", "bad.jsonl: empty file"),
    (b'{"prompt": "a", "completion": "b"}\n{"prompt": "\xff\xfe", "completion": "b"}\n', "bad.jsonl:2: bytes that are not valid UTF-8"),
])
def test_unreadable_files_fail_raw_dataset_naming_file_and_line(tmp_path, content, expected):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    result = _materialize(tmp_path, tiny_run_config(source=str(bad)))
    assert expected in _failure_messages(result)
    assert "raw_dataset" not in _materialized(result)


def test_bad_config_fails_before_any_compute(tmp_path):
    result = _materialize(tmp_path, tiny_run_config(learning_rate=-1.0))
    assert not result.success
    assert "ops.lora_adapter.config.learning_rate" in _failure_messages(result)
    assert _materialized(result) == set()


def test_an_unknown_compute_backend_fails_the_first_step_naming_the_field_and_the_known_ones(tmp_path):
    config = tiny_run_config()
    config["ops"]["lora_adapter"]["config"]["compute"] = "runpd"  # a typo of runpod
    result = _materialize(tmp_path, config)
    assert not result.success
    message = _failure_messages(result)
    assert "ops.lora_adapter.config.compute='runpd'" in message and "no such compute backend" in message
    assert "in_process" in message  # the known names are listed
    assert _materialized(result) == set()
