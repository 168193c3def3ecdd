"""What every scorer shares: options, input checks, the per-category breakdown, the worst examples.

A scorer only says how to score a list of rows (`Scorer.metrics`); `Scorer.score` wraps that into the
result every caller reads, the same for every task:

    {"scorer": name, "n": rows, "primary_metric": name of the gate's default metric,
     "primary": its value, <every metric by name>, "per_category": {category: {"n", "correct", ...}},
     "worst_examples": [{"index", "category", "score", "prediction", "reference"}], "options": {...}}

Every rate is a fraction in 0..1. The result is plain JSON (str keys, floats, ints, lists).
An empty benchmark (n = 0) raises ConfigError: there is no accuracy of nothing, and a 0 or a 1 there would
let a gate fail or pass on no evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llm_assets.core.errors import ConfigError

EXAMPLE_CHARS = 300  # a worst example's texts are cut here: the report shows what went wrong, not whole essays


class ScorerOptions(BaseModel):
    """Options every scorer takes; each scorer adds its own fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    worst_examples: int = Field(
        default=5, ge=0, le=100, description="How many of the lowest-scoring wrong rows the result lists "
        "(prediction, reference, score), for a person reading the report.")


@dataclass
class RowMetrics:
    """What a scorer computes on a list of rows."""

    values: dict  # every metric by name; scalars and breakdowns (per field, confusion, ...)
    row_scores: list[float]  # one score per row in 0..1: orders the worst examples
    row_correct: list[bool]  # the row is fully right: counts "correct" per category


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _clip(text: str) -> str:
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "…"


class Scorer:
    """A task's scoring rule. Subclasses set the class attributes and implement `metrics`."""

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[ScorerOptions]] = ScorerOptions
    primary_metric: ClassVar[str]
    # The metrics worth a per-category breakdown (besides n and correct); short, so reports stay readable.
    category_metrics: ClassVar[tuple[str, ...]]

    def metrics(self, predictions: list[str], references: list[str], options) -> RowMetrics:
        raise NotImplementedError

    def prepare(self, references: list[str], options):
        """Options completed from the whole benchmark before any row is scored (default: as given)."""
        return options

    def options(self, options=None) -> ScorerOptions:
        """options as this scorer's Options: None gives the defaults, a dict is validated field by field."""
        if options is None:
            return self.Options()
        if isinstance(options, self.Options):
            return options
        if isinstance(options, BaseModel):
            options = options.model_dump()
        if not isinstance(options, dict):
            raise ConfigError(f"scorer {self.name} options", options, "must be a mapping of option names to values")
        try:
            return self.Options.model_validate(options)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"]) or "options"
            known = ", ".join(self.Options.model_fields)
            raise ConfigError(f"scorer {self.name} options.{field}", error.get("input"),
                              f"{error['msg']} (options of {self.name}: {known})") from None

    def score(self, predictions: list[str], references: list[str], categories: list[str | None] | None = None,
              options=None) -> dict:
        """Score the model's answers against the expected ones; see the module docstring for the result."""
        options = self.options(options)
        _check_rows(predictions, references, categories)
        options = self.prepare(list(references), options)
        rows = self.metrics(list(predictions), list(references), options)
        primary = rows.values[self.primary_metric]
        result = {"scorer": self.name, "n": len(references), "primary_metric": self.primary_metric,
                  "primary": primary, **rows.values,
                  "per_category": self._per_category(predictions, references, categories, rows, options),
                  "worst_examples": _worst(predictions, references, categories, rows, options.worst_examples),
                  "options": options.model_dump(mode="json")}
        return result

    def _per_category(self, predictions, references, categories, rows: RowMetrics, options) -> dict:
        """The category metrics on each category's rows alone (rows without a category are left out)."""
        groups: dict[str, list[int]] = {}
        for i, category in enumerate(categories or []):
            if category is not None:
                groups.setdefault(category, []).append(i)
        out = {}
        for category, idx in groups.items():
            part = self.metrics([predictions[i] for i in idx], [references[i] for i in idx], options)
            out[category] = {"n": len(idx), "correct": sum(rows.row_correct[i] for i in idx),
                             **{m: part.values[m] for m in self.category_metrics}}
        return out


def _check_rows(predictions, references, categories) -> None:
    if len(predictions) != len(references):
        raise ConfigError("predictions", len(predictions), f"must match the {len(references)} references")
    if categories is not None and len(categories) != len(references):
        raise ConfigError("categories", len(categories), f"must match the {len(references)} references")
    if not references:
        raise ConfigError("references", 0, "nothing to score: the benchmark is empty")
    for field, texts in (("predictions", predictions), ("references", references)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ConfigError(f"{field}[{i}]", text, "must be a string (an empty answer is '')")
    for i, category in enumerate(categories or []):
        if category is not None and not isinstance(category, str):
            raise ConfigError(f"categories[{i}]", category, "must be a string or None")


def _worst(predictions, references, categories, rows: RowMetrics, k: int) -> list[dict]:
    """The k wrong rows with the lowest scores, first rows first among equals."""
    wrong = [i for i, ok in enumerate(rows.row_correct) if not ok]
    wrong.sort(key=lambda i: (rows.row_scores[i], i))
    return [{"index": i, "category": categories[i] if categories else None, "score": rows.row_scores[i],
             "prediction": _clip(predictions[i]), "reference": _clip(references[i])} for i in wrong[:k]]
