"""Corpus BLEU as a local `evaluate` metric module, scaled to 0..1.

Loaded with `evaluate.load(<this folder>)` (see llm_assets.core.scorers.modules), never from the Hub. The
numbers are sacrebleu's corpus BLEU (one reference per prediction): clipped n-gram precisions up to 4-grams
summed over the whole corpus, geometric mean, brevity penalty exp(1 - r/c) when the predictions are shorter
than the references in total. Smoothing is sacrebleu's default "exp" (mteval-v13a's): the k-th n-gram order
with no match counts as 1 / (2^k * total) instead of 0, so one missing order does not zero the score; with
no match at all, or a corpus shorter than 4 tokens, BLEU is 0. Case-sensitive, like sacrebleu.
"""

import datasets
import evaluate
import sacrebleu

_DESCRIPTION = "sacrebleu corpus BLEU in 0..1 (exp smoothing), one reference per prediction."
_KWARGS = """
Args:
    predictions: list of strings, the model's answers.
    references: list of strings, one expected answer each.
    tokenize: sacrebleu tokenizer: "13a" (default, mteval's), "intl", "zh", "char" or "none".
Returns:
    bleu (0..1), precisions (four n-gram precisions, 0..1), brevity_penalty, length_ratio,
    prediction_length and reference_length (tokens, whole corpus).
"""
TOKENIZERS = ("13a", "intl", "zh", "char", "none")


class Bleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="Post, A Call for Clarity in Reporting BLEU Scores (2018)",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}))

    def _compute(self, predictions, references, tokenize="13a"):
        if tokenize not in TOKENIZERS:
            raise ValueError(f"tokenize={tokenize!r}: must be one of {', '.join(TOKENIZERS)}")
        if not predictions:
            return {"bleu": 0.0, "precisions": [0.0] * 4, "brevity_penalty": 0.0, "length_ratio": 0.0,
                    "prediction_length": 0, "reference_length": 0}
        result = sacrebleu.corpus_bleu(list(predictions), [list(references)], tokenize=tokenize)
        ratio = result.sys_len / result.ref_len if result.ref_len else 0.0
        return {"bleu": result.score / 100.0, "precisions": [p / 100.0 for p in result.precisions],
                "brevity_penalty": result.bp, "length_ratio": ratio,
                "prediction_length": result.sys_len, "reference_length": result.ref_len}
