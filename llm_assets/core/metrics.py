"""Scores for the pet task: the bunny's report, as computed by the `pet` scorer.

The decisive number is strict accuracy (every field of the parsed decision right); the per-field, per-action
and per-category breakdowns say where a model is wrong, and the text metrics (exact match, Jaccard, ROUGE-L,
BLEU) give a graded signal where strict accuracy is still 0, as for an untuned model. Every metric is
implemented once, in llm_assets.core.scorers; this module keeps the names the evaluation stage calls.
All rates are fractions in 0..1 (BLEU too).
"""

from __future__ import annotations

from llm_assets.core import scorers

# The metrics compared with the baseline; invalid_rate is better when lower.
KEY_METRICS = ("strict_accuracy", "exact_match", "jaccard", "rouge_l", "bleu", "invalid_rate")


def score_predictions(predictions: list[str], references: list[str],
                      categories: list[str] | None = None) -> dict:
    """Every metric of one model's answers; `references` are the expected JSON completions."""
    return scorers.score("pet", predictions, references, categories)


def improvement(model: dict, baseline: dict) -> dict:
    """model minus baseline for the key metrics and each field (negative invalid_rate is good)."""
    return scorers.improvement(model, baseline, KEY_METRICS)
