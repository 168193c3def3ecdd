"""`text`: free-text answers, by overlap with the expected text.

Metrics (all means over rows unless said otherwise, each in 0..1):
- exact_match: exact's normalized match (options casefold, collapse_whitespace);
- rouge_1, rouge_2, rouge_l: ROUGE F-measures (metric_modules/rouge; Unicode-aware tokens, see tokens.py);
- bleu: corpus BLEU, not a mean of sentence BLEUs (metric_modules/bleu; sacrebleu, exp smoothing);
- jaccard: word-token set overlap (metric_modules/jaccard);
- empty_rate: share of empty (or whitespace-only) answers;
- mean_prediction_tokens, mean_reference_tokens: answer lengths in whitespace tokens, so a model that
  answers too long or too short shows it even when the overlap metrics look alike.
ROUGE, BLEU and Jaccard go through the `evaluate` library's API on modules shipped in this package
(modules.py), never fetched from the Hub. The primary metric is rouge_l: it credits partly right answers
in order, where exact match is all-or-nothing. A row counts as correct when it matches exactly.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llm_assets.core.scorers import modules
from llm_assets.core.scorers.base import RowMetrics, Scorer, mean
from llm_assets.core.scorers.exact import ExactOptions, exact_matches
from llm_assets.core.scorers.tokens import length


class TextOptions(ExactOptions):
    bleu_tokenize: Literal["13a", "intl", "zh", "char", "none"] = Field(
        default="13a", description="sacrebleu tokenizer for BLEU: 13a (standard, for space-separated languages), "
        "intl (Unicode punctuation), zh (Chinese), char (per character, for other scripts without spaces), none.")


def text_metrics(predictions: list[str], references: list[str], options: ExactOptions,
                 bleu_tokenize: str = "13a") -> RowMetrics:
    """The text metrics of rows; row scores are ROUGE-L, a row is correct when it matches exactly."""
    matches = exact_matches(predictions, references, options)
    rouge = modules.compute("rouge", predictions, references, use_aggregator=False)
    jaccard = modules.compute("jaccard", predictions, references, use_aggregator=False)["jaccard"]
    bleu = modules.compute("bleu", predictions, references, tokenize=bleu_tokenize)["bleu"]
    rouge_l = [float(v) for v in rouge["rougeL"]]
    values = {"exact_match": mean(matches), "rouge_1": mean(rouge["rouge1"]), "rouge_2": mean(rouge["rouge2"]),
              "rouge_l": mean(rouge_l), "bleu": bleu, "jaccard": mean(jaccard),
              "empty_rate": mean(not p.strip() for p in predictions),
              "mean_prediction_tokens": mean(map(length, predictions)),
              "mean_reference_tokens": mean(map(length, references))}
    return RowMetrics(values, rouge_l, matches)


class TextScorer(Scorer):
    name = "text"
    description = "free text: exact match, ROUGE-1/2/L, BLEU, Jaccard, answer lengths (evaluate modules)"
    Options = TextOptions
    primary_metric = "rouge_l"
    category_metrics = ("exact_match", "rouge_1", "rouge_l", "bleu")

    def metrics(self, predictions, references, options: TextOptions) -> RowMetrics:
        return text_metrics(predictions, references, options, options.bleu_tokenize)
