"""Task-generic scorers: a model's answers against the expected ones, chosen per model by name.

    from llm_assets.core.scorers import get_scorer, score
    result = score("json", predictions, references, categories, {"abs_tolerance": 0.5})
    result["primary"], result["strict_accuracy"], result["per_category"], result["worst_examples"]

Every scorer returns the same frame (base.py): scorer, n, primary_metric, primary (its value), every
metric by name, per_category, worst_examples, options. The scorers:

- exact: normalized exact match (exact.py);
- json: one JSON object per answer, per-field and strict accuracy, invalid rate (json_fields.py);
- label: classification accuracy, macro-F1, confusion matrix (label.py);
- text: exact match, ROUGE-1/2/L, BLEU, Jaccard, lengths through local `evaluate` modules (text.py);
- pet: the bunny's report built on json (pet.py).

Pure Python apart from pydantic; `evaluate`, rouge-score and sacrebleu load on the first text metric.
"""

from __future__ import annotations

from typing import Iterable

from llm_assets.core.errors import ConfigError
from llm_assets.core.scorers.base import RowMetrics, Scorer, ScorerOptions
from llm_assets.core.scorers.exact import ExactOptions, ExactScorer
from llm_assets.core.scorers.json_fields import JsonOptions, JsonScorer
from llm_assets.core.scorers.label import LabelOptions, LabelScorer
from llm_assets.core.scorers.pet import PetScorer
from llm_assets.core.scorers.text import TextOptions, TextScorer

SCORERS: dict[str, Scorer] = {s.name: s for s in (ExactScorer(), JsonScorer(), LabelScorer(), TextScorer(),
                                                  PetScorer())}
# Metrics where lower is better; improvement() reports them as they are (a negative delta is good).
LOWER_IS_BETTER = frozenset({"invalid_rate", "empty_rate"})


def get_scorer(name: str) -> Scorer:
    try:
        return SCORERS[name]
    except (KeyError, TypeError):
        raise ConfigError("scorer", name, f"unknown scorer; known: {', '.join(SCORERS)}") from None


def score(name: str, predictions: list[str], references: list[str], categories: list[str | None] | None = None,
          options=None) -> dict:
    """get_scorer(name).score(...): the result frame described in base.py."""
    return get_scorer(name).score(predictions, references, categories, options)


def improvement(model: dict, baseline: dict, metrics: Iterable[str] | None = None) -> dict:
    """model minus baseline for each metric (default: every number both results have, but n) and each field
    of per_field_accuracy (as field_<name>). Rates where lower is better (LOWER_IS_BETTER) are not flipped."""
    if metrics is None:
        metrics = [m for m, v in model.items() if m not in ("n", "primary") and _is_number(v)
                   and _is_number(baseline.get(m))]
    deltas = {m: model[m] - baseline[m] for m in metrics}
    for field, value in (model.get("per_field_accuracy") or {}).items():
        deltas[f"field_{field}"] = value - (baseline.get("per_field_accuracy") or {}).get(field, 0.0)
    return deltas


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


__all__ = ["SCORERS", "LOWER_IS_BETTER", "ExactOptions", "JsonOptions", "LabelOptions", "RowMetrics", "Scorer",
           "ScorerOptions", "TextOptions", "get_scorer", "improvement", "score"]
