"""`label`: classification, one label per answer, with a confusion matrix and macro-F1.

Labels compare after exact's normalization (exact.normalize: NFC, trimmed, whitespace collapsed,
case-folded unless switched off), so "Positive\\n" is "positive". The label set is `labels` when the
options give it (each reference must be one of them), else the labels the references use. A prediction
outside the label set (an unknown label, a sentence, an empty answer) is invalid: it is wrong, counted
in `invalid_rate`, in the confusion matrix's INVALID column, and the most frequent such answers are listed
in `unknown_predictions`. The matrix's rows are the label set, its columns the label set then INVALID, so
a model that rambles cannot add a column per distinct answer.

Per label: precision (right / predicted as it), recall (right / expected as it), F1; a division by zero
gives 0. macro_f1 averages F1 over the labels that occur in the references or the valid predictions, as
scikit-learn does by default.
"""

from __future__ import annotations

from collections import Counter

from pydantic import Field, field_validator

from llm_assets.core.errors import DataFormatError
from llm_assets.core.scorers.base import RowMetrics, Scorer, mean
from llm_assets.core.scorers.exact import ExactOptions, normalize

INVALID = "<invalid>"  # angle brackets: a label a user's task is unlikely to have; refused if it does
UNKNOWN_LISTED, UNKNOWN_CHARS = 10, 100  # the most frequent invalid answers, cut short


class LabelOptions(ExactOptions):
    labels: list[str] | None = Field(
        default=None, description="The task's labels (null: those the references use). Listing them keeps "
        "labels the benchmark lacks in the confusion matrix and makes a reference outside them a data error.")

    @field_validator("labels")
    @classmethod
    def _not_reserved(cls, labels):
        for label in labels or ():
            if label.strip().casefold() in ("", INVALID):
                raise ValueError(f"{label!r}: the empty label and {INVALID!r} stand for answers outside the set")
        return labels


def confusion_matrix(expected: list[str], predicted: list[str], labels, invalid: str) -> dict:
    """{expected label: {predicted label or `invalid`: count}}, every row and column present."""
    matrix = {e: {p: 0 for p in (*labels, invalid)} for e in labels}
    for e, p in zip(expected, predicted):
        matrix[e][p if p in matrix[e] else invalid] += 1
    return matrix


def per_label_scores(expected: list[str], predicted: list[str], labels) -> dict:
    out = {}
    for label in labels:
        tp = sum(e == label and p == label for e, p in zip(expected, predicted))
        n_pred, support = predicted.count(label), expected.count(label)
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return out


class LabelScorer(Scorer):
    name = "label"
    description = "classification: accuracy, macro-F1, per-label precision/recall/F1, confusion matrix"
    Options = LabelOptions
    primary_metric = "accuracy"
    category_metrics = ("accuracy", "macro_f1", "invalid_rate")

    def prepare(self, references, options: LabelOptions) -> LabelOptions:
        # One label set for the whole benchmark, so a category's rows are judged against the same labels.
        if options.labels is None:
            found = {normalize(r, options.casefold, options.collapse_whitespace) for r in references}
            labels = sorted(found - {"", INVALID})  # such a reference is named as a data error below
            options = options.model_copy(update={"labels": labels})
        return options

    def metrics(self, predictions, references, options: LabelOptions) -> RowMetrics:
        def norm(text: str) -> str:
            return normalize(text, options.casefold, options.collapse_whitespace)

        labels = list(dict.fromkeys(norm(label) for label in options.labels or ()))
        expected = [norm(r) for r in references]
        for i, e in enumerate(expected):
            if e not in labels:
                why = (f"the expected label {references[i]!r} is empty or reserved" if e in ("", INVALID) else
                       f"label {references[i]!r} is not one of the options' labels: {', '.join(labels)}")
                raise DataFormatError("references", i + 1, why)
        answers = [norm(p) for p in predictions]
        predicted = [a if a in labels else INVALID for a in answers]
        correct = [e == p for e, p in zip(expected, predicted)]
        present = [label for label in labels if label in expected or label in predicted]
        per_label = per_label_scores(expected, predicted, labels)
        unknown = Counter(a[:UNKNOWN_CHARS] for a, p in zip(answers, predicted) if p == INVALID)
        values = {"accuracy": mean(correct), "macro_f1": mean(per_label[label]["f1"] for label in present),
                  "invalid_rate": mean(p == INVALID for p in predicted), "per_label": per_label,
                  "confusion": confusion_matrix(expected, predicted, labels, INVALID),
                  "confusion_labels": [*labels, INVALID],
                  "unknown_predictions": dict(unknown.most_common(UNKNOWN_LISTED))}
        return RowMetrics(values, [float(c) for c in correct], correct)
