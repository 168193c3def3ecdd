"""Token-set Jaccard similarity as a local `evaluate` metric module.

|A ∩ B| / |A ∪ B| over the word tokens (`\\w+`, as written; see llm_assets.core.scorers.tokens.words) of a
prediction and its reference, so JSON punctuation and spacing are ignored and word order is not. Two answers
without any word token (both empty) are identical: 1.0. Loaded with `evaluate.load(<this folder>)`.
"""

import datasets
import evaluate

from llm_assets.core.scorers.tokens import words

_DESCRIPTION = "Jaccard similarity of the word-token sets of each prediction and its reference."
_KWARGS = """
Args:
    predictions: list of strings, the model's answers.
    references: list of strings, one expected answer each.
    use_aggregator: True (default) gives the mean over examples; False one value per example.
Returns:
    jaccard: in 0..1 (a float, or a list with use_aggregator=False).
"""


def _pair(prediction: str, reference: str) -> float:
    a, b = set(words(prediction)), set(words(reference))
    return len(a & b) / len(a | b) if a or b else 1.0


class Jaccard(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}))

    def _compute(self, predictions, references, use_aggregator=True):
        values = [_pair(p, r) for p, r in zip(predictions, references)]
        if not use_aggregator:
            return {"jaccard": values}
        return {"jaccard": sum(values) / len(values) if values else 0.0}
