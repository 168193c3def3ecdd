"""`exact`: the answer must be the expected text, after a documented normalization.

normalize(text): Unicode NFC (a composed "é" equals "e" + combining accent), strip leading and trailing
whitespace, collapse every run of whitespace (spaces, tabs, newlines) to one space, then case-fold
(str.casefold: "Straße" equals "STRASSE"). The last two can be switched off. Punctuation is kept: "Paris."
is not "Paris"; a task where that should count writes its references accordingly or uses `label`.
"""

from __future__ import annotations

import unicodedata

from pydantic import Field

from llm_assets.core.scorers.base import RowMetrics, Scorer, ScorerOptions, mean


class ExactOptions(ScorerOptions):
    casefold: bool = Field(default=True, description="Compare case-insensitively (str.casefold on both texts).")
    collapse_whitespace: bool = Field(
        default=True, description="Treat every run of whitespace inside the text as one space (leading and "
        "trailing whitespace is always ignored).")


def normalize(text: str, casefold: bool = True, collapse_whitespace: bool = True) -> str:
    text = unicodedata.normalize("NFC", text).strip()
    if collapse_whitespace:
        text = " ".join(text.split())
    return text.casefold() if casefold else text


def exact_matches(predictions: list[str], references: list[str], options: ExactOptions) -> list[bool]:
    """Row by row: does the normalized prediction equal the normalized reference?"""
    def norm(text: str) -> str:
        return normalize(text, options.casefold, options.collapse_whitespace)

    return [norm(p) == norm(r) for p, r in zip(predictions, references)]


class ExactScorer(Scorer):
    name = "exact"
    description = "normalized exact match (NFC, trimmed, whitespace collapsed, case-folded)"
    Options = ExactOptions
    primary_metric = "exact_match"
    category_metrics = ("exact_match",)

    def metrics(self, predictions, references, options: ExactOptions) -> RowMetrics:
        matches = exact_matches(predictions, references, options)
        values = {"exact_match": mean(matches), "empty_rate": mean(not p.strip() for p in predictions)}
        return RowMetrics(values, [float(m) for m in matches], matches)
