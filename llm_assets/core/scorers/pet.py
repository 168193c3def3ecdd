"""`pet`: the bunny's report, built on `json`: the same numbers and keys as before the scorers existed.

A decision must parse as a complete, well-typed bunny decision (pet_task.parse_decision: exactly the six
fields, a known action, integer stats; trailing text after the object is tolerated, a fence or leading
text is not), which is stricter than `json`'s parsing; its fields are then scored by json.field_report.
On top: the action confusion matrix (label.confusion_matrix, an invalid answer in the "invalid" column),
the predicted and expected action counts, and the text metrics, with exact match ignoring only leading and
trailing whitespace, as the bunny's report always has (tests/core/test_scorers.py checks every number
against the report's values recorded before this module replaced llm_assets/core/metrics.py's own code).
"""

from __future__ import annotations

from collections import Counter

from llm_assets.core.errors import DataFormatError
from llm_assets.core.pet_task import ACTIONS, parse_decision
from llm_assets.core.scorers.base import RowMetrics, Scorer, ScorerOptions
from llm_assets.core.scorers.exact import ExactOptions
from llm_assets.core.scorers.json_fields import field_report
from llm_assets.core.scorers.label import confusion_matrix
from llm_assets.core.scorers.text import text_metrics

INVALID = "invalid"
CONFUSION_LABELS = (*ACTIONS, INVALID)
_STRIP_ONLY = ExactOptions(casefold=False, collapse_whitespace=False)


def parse_references(references: list[str]) -> list[dict]:
    parsed = []
    for i, ref in enumerate(references):
        decision = parse_decision(ref)
        if decision is None:
            raise DataFormatError("references", i + 1, f"expected completion is not a valid decision: {ref!r}")
        parsed.append(decision)
    return parsed


class PetScorer(Scorer):
    name = "pet"
    description = "the bunny's decisions: json fields plus the action confusion matrix and text metrics"
    Options = ScorerOptions
    primary_metric = "strict_accuracy"
    category_metrics = ("strict_accuracy",)

    def metrics(self, predictions, references, options: ScorerOptions) -> RowMetrics:
        expected = parse_references(references)
        parsed = [parse_decision(p) for p in predictions]
        fields = field_report(parsed, expected)
        text = text_metrics(predictions, references, _STRIP_ONLY)
        predicted_actions = [p["action"] if p is not None else INVALID for p in parsed]
        expected_actions = [e["action"] for e in expected]
        values = {**fields.values, **text.values,
                  "action_distribution": {"predicted": dict(Counter(predicted_actions)),
                                          "expected": dict(Counter(expected_actions))},
                  "confusion": confusion_matrix(expected_actions, predicted_actions, ACTIONS, INVALID),
                  "confusion_labels": list(CONFUSION_LABELS)}
        return RowMetrics(values, fields.row_scores, fields.row_correct)
