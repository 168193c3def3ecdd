"""Scores for the pet task: model answers against the expected decisions.

The decisive number is strict accuracy (every field of the parsed decision
right); the per-field, per-action and per-category breakdowns say where a model
is wrong, and the text metrics (exact match, Jaccard, ROUGE-L, BLEU) give a
graded signal where strict accuracy is still 0, as for an untuned model.

Pure Python apart from rouge-score and sacrebleu, imported when scoring so that
importing this module stays cheap. All rates are fractions in 0..1 (BLEU too).
"""

from __future__ import annotations

import re
from collections import Counter

from llm_assets.core.errors import ConfigError, DataFormatError
from llm_assets.core.pet_task import ACTIONS, DECISION_FIELDS, parse_decision

INVALID = "invalid"
CONFUSION_LABELS = (*ACTIONS, INVALID)
# The metrics compared with the baseline; invalid_rate is better when lower.
KEY_METRICS = ("strict_accuracy", "exact_match", "jaccard", "rouge_l", "bleu", "invalid_rate")
_WORD = re.compile(r"\w+")


def _parse_references(references: list[str]) -> list[dict]:
    parsed = []
    for i, ref in enumerate(references):
        decision = parse_decision(ref)
        if decision is None:
            raise DataFormatError("references", i + 1, f"expected completion is not a valid decision: {ref!r}")
        parsed.append(decision)
    return parsed


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def token_jaccard(prediction: str, reference: str) -> float:
    """Jaccard similarity of the word-token sets (JSON punctuation ignored)."""
    a, b = set(_WORD.findall(prediction)), set(_WORD.findall(reference))
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F-measure; rouge-score's tokenizer splits JSON on punctuation."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return _mean(scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references))


def corpus_bleu(predictions: list[str], references: list[str]) -> float:
    """sacrebleu's corpus BLEU, scaled to 0..1 like every other metric here."""
    import sacrebleu

    if not predictions:
        return 0.0
    return sacrebleu.corpus_bleu(predictions, [references]).score / 100.0


def score_predictions(predictions: list[str], references: list[str],
                      categories: list[str] | None = None) -> dict:
    """Every metric of one model's answers; `references` are the expected JSON completions."""
    if len(predictions) != len(references):
        raise ConfigError("predictions", len(predictions), f"must match the {len(references)} references")
    if categories is not None and len(categories) != len(references):
        raise ConfigError("categories", len(categories), f"must match the {len(references)} references")
    expected = _parse_references(references)
    parsed = [parse_decision(p) for p in predictions]
    n = len(references)

    strict = [p is not None and all(p[f] == e[f] for f in DECISION_FIELDS) for p, e in zip(parsed, expected)]
    per_field = {f: _mean(p is not None and p[f] == e[f] for p, e in zip(parsed, expected))
                 for f in DECISION_FIELDS}
    predicted_actions = [p["action"] if p is not None else INVALID for p in parsed]
    expected_actions = [e["action"] for e in expected]
    confusion = {e: {p: 0 for p in CONFUSION_LABELS} for e in ACTIONS}
    for e, p in zip(expected_actions, predicted_actions):
        confusion[e][p] += 1

    per_category: dict[str, dict] = {}
    for category, ok in zip(categories or [], strict):
        entry = per_category.setdefault(category, {"n": 0, "correct": 0})
        entry["n"] += 1
        entry["correct"] += int(ok)
    for entry in per_category.values():
        entry["strict_accuracy"] = entry["correct"] / entry["n"]

    return {
        "n": n,
        "strict_accuracy": _mean(strict),
        "per_field_accuracy": per_field,
        "invalid_rate": _mean(p is None for p in parsed),
        "exact_match": _mean(p.strip() == r.strip() for p, r in zip(predictions, references)),
        "jaccard": _mean(token_jaccard(p, r) for p, r in zip(predictions, references)),
        "rouge_l": rouge_l(predictions, references),
        "bleu": corpus_bleu(predictions, references),
        "action_distribution": {"predicted": dict(Counter(predicted_actions)),
                                "expected": dict(Counter(expected_actions))},
        "confusion": confusion,
        "confusion_labels": list(CONFUSION_LABELS),
        "per_category": per_category,
    }


def improvement(model: dict, baseline: dict) -> dict:
    """model minus baseline for the key metrics and each field (negative invalid_rate is good)."""
    deltas = {m: model[m] - baseline[m] for m in KEY_METRICS}
    for field, value in model["per_field_accuracy"].items():
        deltas[f"field_{field}"] = value - baseline["per_field_accuracy"].get(field, 0.0)
    return deltas
