"""ROUGE-1, ROUGE-2 and ROUGE-L F-measures as a local `evaluate` metric module.

Loaded with `evaluate.load(<this folder>)` (see llm_assets.core.scorers.modules), never from the Hub, so it
works offline. The counting is rouge-score's (Google's reference implementation): n-gram overlap with
clipped counts for ROUGE-N, longest common subsequence for ROUGE-L, F = 2PR / (P + R), no stemming. Only
the tokenizer differs (llm_assets.core.scorers.tokens.RougeTokenizer): identical on ASCII, and it keeps
non-ASCII letters, which rouge-score's default tokenizer drops. An empty prediction or reference scores 0.
"""

import datasets
import evaluate
from rouge_score import rouge_scorer

from llm_assets.core.scorers.tokens import RougeTokenizer

_DESCRIPTION = "ROUGE-1/2/L F-measure of each prediction against its one reference (rouge-score, Unicode tokens)."
_KWARGS = """
Args:
    predictions: list of strings, the model's answers.
    references: list of strings, one expected answer each.
    use_aggregator: True (default) gives the mean over examples; False one value per example.
Returns:
    rouge1, rouge2, rougeL: F-measures in 0..1 (floats, or lists with use_aggregator=False).
"""
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="Lin, ROUGE: a package for automatic evaluation of summaries (2004)",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}))

    def _compute(self, predictions, references, use_aggregator=True):
        scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False, tokenizer=RougeTokenizer())
        rows = [scorer.score(ref, pred) for pred, ref in zip(predictions, references)]
        per_example = {t: [row[t].fmeasure for row in rows] for t in ROUGE_TYPES}
        if not use_aggregator:
            return per_example
        return {t: sum(values) / len(values) if values else 0.0 for t, values in per_example.items()}
