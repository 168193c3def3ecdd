"""The accuracy gate on hand-made reports."""

import pytest

from llm_assets.core.errors import ConfigError
from llm_assets.core.gate import evaluate_gate


def _report(variants: dict[str, tuple[float, int]], baseline: float | None = 0.1) -> dict:
    return {
        "variants": {n: {"scores": {"strict_accuracy": a}, "file_size_bytes": s} for n, (a, s) in variants.items()},
        "baseline": {"scores": {"strict_accuracy": baseline}} if baseline is not None else None,
    }


VARIANTS = {"f16": (0.98, 3000), "q8_0": (0.97, 1600), "q4_k_m": (0.912, 900)}


def test_smallest_passing_variant_is_chosen():
    result = evaluate_gate(_report(VARIANTS), threshold=0.95)
    assert result.passed and result.variant == "q8_0"
    assert result.value == 0.97 and result.baseline_value == 0.1
    assert "q8_0 strict accuracy 0.970 >= 0.95 and beats baseline 0.100" in result.reason
    assert result.to_dict()["variant"] == "q8_0"


def test_all_pass_picks_smallest_file():
    result = evaluate_gate(_report(VARIANTS), threshold=0.9)
    assert result.passed and result.variant == "q4_k_m"


def test_named_variant_fails_threshold():
    result = evaluate_gate(_report(VARIANTS), threshold=0.95, deployable="q4_k_m")
    assert not result.passed and result.variant == "q4_k_m"
    assert result.reason == "q4_k_m strict accuracy 0.912 < 0.95"


def test_named_variant_passes_alone():
    result = evaluate_gate(_report(VARIANTS), threshold=0.95, deployable="f16")
    assert result.passed and result.variant == "f16" and result.value == 0.98


def test_fails_when_baseline_is_as_good():
    result = evaluate_gate(_report(VARIANTS, baseline=0.97), threshold=0.95, deployable="q8_0")
    assert not result.passed
    assert result.reason == "q8_0 strict accuracy 0.970 does not beat baseline 0.970"


def test_no_variant_passes_lists_all():
    result = evaluate_gate(_report({"f16": (0.80, 3), "q8_0": (0.79, 2)}, baseline=0.5), threshold=0.95)
    assert not result.passed and result.variant == "f16"
    assert result.reason == "no variant passes (threshold 0.95, baseline 0.500): f16 0.800, q8_0 0.790"


def test_baseline_beating_everything_fails_smallest_passing():
    result = evaluate_gate(_report(VARIANTS, baseline=0.99), threshold=0.5)
    assert not result.passed and "baseline 0.990" in result.reason


def test_without_baseline_threshold_alone_decides():
    result = evaluate_gate(_report({"f16": (0.96, 3)}, baseline=None), threshold=0.95)
    assert result.passed and result.baseline_value is None
    assert "no baseline" in result.reason


def test_no_variants_fails():
    result = evaluate_gate({"variants": {}, "baseline": None})
    assert not result.passed and result.reason == "no variant was evaluated"


@pytest.mark.parametrize("threshold", [-0.1, 1.5, "0.9", None, True])
def test_bad_threshold_is_a_config_error(threshold):
    with pytest.raises(ConfigError, match="threshold"):
        evaluate_gate(_report(VARIANTS), threshold=threshold)


@pytest.mark.parametrize("deployable", ["q2_k", "", None])
def test_unknown_deployable_is_a_config_error(deployable):
    with pytest.raises(ConfigError, match="deployable"):
        evaluate_gate(_report(VARIANTS), deployable=deployable)
