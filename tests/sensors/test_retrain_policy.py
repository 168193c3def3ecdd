"""The hyperparameter ladder: rungs, their validation, and when the policy stops."""

import json

import pytest

from llm_assets.core.errors import ConfigError
from llm_assets.core.retrain_policy import (
    DEFAULT_LADDER, Attempt, RetrainPolicy, Rung, apply_rung, ladder_from_json, ladder_to_json,
)


def test_rungs_are_cumulative_and_epochs_stretch_a_step_cap():
    first = {"epochs": 1.0, "max_steps": 4, "learning_rate": 1e-3, "lora_r": 4, "lora_alpha": 8}
    second = apply_rung(first, DEFAULT_LADDER[0])
    assert second == {**first, "epochs": 2.0, "max_steps": 8}
    third = apply_rung(second, DEFAULT_LADDER[1])
    assert third == {**second, "learning_rate": 5e-4}
    fourth = apply_rung(third, DEFAULT_LADDER[2])
    assert (fourth["lora_r"], fourth["lora_alpha"]) == (8, 16) and isinstance(fourth["lora_r"], int)


def test_a_rung_scales_the_default_when_the_run_left_the_field_out():
    assert apply_rung({}, Rung("more", scale={"epochs": 3.0})) == {"epochs": 3.0}  # default 1 epoch


def test_ladder_json_round_trips_and_bad_rungs_name_the_field():
    assert ladder_from_json(ladder_to_json(DEFAULT_LADDER)) == DEFAULT_LADDER
    with pytest.raises(ConfigError, match=r"ladder\[0\]\.scale\.epoch"):
        ladder_from_json(json.dumps([{"name": "typo", "scale": {"epoch": 2}}]))
    with pytest.raises(ConfigError, match=r"ladder\[1\]\.scale\.learning_rate.*positive"):
        ladder_from_json(json.dumps([{"name": "a", "set": {"seed": 1}}, {"name": "b", "scale": {"learning_rate": 0}}]))
    with pytest.raises(ConfigError, match=r"only numeric"):
        ladder_from_json(json.dumps([{"name": "m", "scale": {"method": 2}}]))
    with pytest.raises(ConfigError, match="not JSON"):
        ladder_from_json("[{")


def test_a_rung_that_makes_an_invalid_config_is_refused():
    with pytest.raises(ConfigError, match="rung too_hot"):
        apply_rung({"learning_rate": 0.6}, Rung("too_hot", scale={"learning_rate": 2.0}))


def test_max_attempts_needs_enough_rungs():
    with pytest.raises(ConfigError, match="max_attempts"):
        RetrainPolicy(DEFAULT_LADDER[:1], max_attempts=3)


def test_policy_retrains_until_the_last_attempt_then_says_what_was_tried():
    policy = RetrainPolicy(DEFAULT_LADDER, max_attempts=2)
    go = policy.decide(1, {"epochs": 1.0}, [], "pet-brain", "abc")
    assert go.retrain and go.next_attempt == 2 and go.rung.name == "more_epochs"
    assert go.training_config == {"epochs": 2.0}
    tried = [Attempt(1, 3, None, 0.1, "q8_0 strict accuracy 0.100 < 0.5"),
             Attempt(2, 4, "more_epochs (epochs x2)", 0.2, "q8_0 strict accuracy 0.200 < 0.5")]
    stop = policy.decide(2, {"epochs": 2.0}, tried, "pet-brain", "abc")
    assert not stop.retrain and stop.training_config is None
    assert "data version abc missed the accuracy gate in all 2 attempts" in stop.message
    assert "attempt 1: as launched -> v3 rejected, strict accuracy 0.100" in stop.message
    assert "attempt 2: more_epochs (epochs x2) -> v4 rejected" in stop.message
