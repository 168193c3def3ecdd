"""Real SFT runs on a tiny model: checkpoints, resume, health guards."""

import json

import pytest
from tests.core.tiny_bases import small_base

from llm_assets.core import training
from llm_assets.core.errors import TrainingHealthError
from llm_assets.core.hyperparameters import TrainingParams


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return small_base(tmp_path_factory, 64, seed=3)


def params(**kw):
    return TrainingParams(**({"method": "lora", "batch_size": 8, "logging_steps": 1, "save_steps": 2, "lora_r": 4,
                              "lora_alpha": 8}
                             | kw))


def test_lora_training_writes_adapter_history_and_checkpoints(base, tmp_path):
    model_dir, rows = base
    seen = []
    result = training.train_sft(model_dir, rows[:56], rows[56:], tmp_path / "out", tmp_path / "ckpt",
                                params(max_steps=4), on_progress=seen.append)
    assert result["global_steps"] == 4 and result["resumed_from"] is None
    assert result["eval_loss"] is not None
    assert (tmp_path / "out" / "adapter_config.json").exists()
    history = json.loads((tmp_path / "out" / "training_history.json").read_text())
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4]
    assert all("eta_seconds" in e and "total_steps" in e for e in seen)
    assert training.latest_complete_checkpoint(tmp_path / "ckpt").name == "checkpoint-4"


def test_resume_from_latest_complete_checkpoint_ignores_half_written_ones(base, tmp_path):
    model_dir, rows = base
    training.train_sft(model_dir, rows, [], tmp_path / "first", tmp_path / "ckpt", params(max_steps=2))
    (tmp_path / "ckpt" / "checkpoint-3").mkdir()  # a crash mid-save: no completion marker
    assert training.latest_complete_checkpoint(tmp_path / "ckpt").name == "checkpoint-2"
    result = training.train_sft(model_dir, rows, [], tmp_path / "second", tmp_path / "ckpt", params(max_steps=4))
    assert result["resumed_from"] == "checkpoint-2"
    assert result["global_steps"] == 4


def test_exploding_learning_rate_stops_with_a_clear_message(base, tmp_path):
    model_dir, rows = base
    with pytest.raises(TrainingHealthError, match="step"):
        training.train_sft(model_dir, rows, [], tmp_path / "out", tmp_path / "ckpt",
                           params(max_steps=30, learning_rate=0.9, max_grad_norm_alert=50.0,
                                  method="full", warmup_ratio=0.0))
    assert not (tmp_path / "out").exists()  # nothing half-made is left where a later step would trust it


def test_divergence_means_a_real_climb_not_a_wobble_near_zero():
    # The healthy demo run that the plain ratio test stopped: best 0.0017, a logged 0.0078, first 1.42.
    assert not training.diverged(0.0078, 0.0017, 1.42, 4.0)
    assert training.diverged(1.5, 0.3, 2.0, 4.0)       # back most of the way up: diverged
    assert not training.diverged(1.1, 0.3, 2.0, 4.0)   # under 4x the best: still learning
    assert training.diverged(0.2, 0.01, 1.42, 4.0)     # 20x the best and 0.19 up: diverged
