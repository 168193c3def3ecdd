"""`json`: answers that are one JSON object, scored field by field against the expected object.

What counts as the answer's object (parse_object):
- the whole answer, stripped, when it is valid JSON;
- with `lenient` (the default), otherwise: the content of a ``` or ```json fenced block, or else the one
  JSON object found in surrounding text ("Sure! {...} Hope this helps"). Two objects in one answer are
  ambiguous and count as invalid, as does any answer whose JSON is not an object (a list, a number).
A served model whose callers need bare JSON should be scored with lenient=False.

How fields compare (values_equal): numbers within `abs_tolerance` (0: equal, so 3 == 3.0), booleans
only with booleans (true is not 1), strings exactly, null with null, lists element by element and
objects key by key with the same rules. Only the reference's fields are scored: per-field accuracy is
over the rows whose reference has that field, a missing field is wrong, and `strict_accuracy` needs every
field of the reference right (and, with allow_extra_fields=False, no other field). An invalid answer gets
every field wrong. Each reference must itself be a JSON object (else DataFormatError naming its row).
"""

from __future__ import annotations

import json
import re

from pydantic import Field

from llm_assets.core.errors import DataFormatError
from llm_assets.core.scorers.base import RowMetrics, Scorer, ScorerOptions, mean

_FENCE = re.compile(r"```(?:json)?[ \t]*\n?(.*?)```", re.DOTALL | re.IGNORECASE)
_DECODER = json.JSONDecoder()


class JsonOptions(ScorerOptions):
    lenient: bool = Field(
        default=True, description="Accept the object inside a ```json fence or surrounded by other text; False: "
        "the whole answer must be the JSON object.")
    abs_tolerance: float = Field(
        default=0.0, ge=0, allow_inf_nan=False,
        description="A number field is right when |predicted - expected| <= this (0: equal numbers).")
    allow_extra_fields: bool = Field(
        default=True, description="Fields the reference does not have leave strict accuracy alone; False: any "
        "extra field makes the row wrong.")


def _objects_in(text: str):
    """Every JSON object that starts at a '{' in text and is not inside an earlier one."""
    pos = 0
    while (start := text.find("{", pos)) >= 0:
        try:
            obj, end = _DECODER.raw_decode(text, start)
        except ValueError:
            pos = start + 1
            continue
        yield obj
        pos = end


def parse_object(text: str, lenient: bool = True) -> dict | None:
    """The answer's JSON object, or None when there is none (see the module docstring)."""
    text = text.strip()
    try:
        obj = json.loads(text)
    except ValueError:
        if not lenient:
            return None
        fence = _FENCE.search(text)
        if fence:
            try:
                obj = json.loads(fence.group(1).strip())
            except ValueError:
                return None
        else:
            found = list(_objects_in(text))
            if len(found) != 1:
                return None
            obj = found[0]
    return obj if isinstance(obj, dict) else None


def values_equal(predicted, expected, tolerance: float = 0.0) -> bool:
    if isinstance(predicted, bool) or isinstance(expected, bool):
        return type(predicted) is type(expected) and predicted == expected
    if isinstance(predicted, (int, float)) and isinstance(expected, (int, float)):
        return predicted == expected or abs(predicted - expected) <= tolerance
    if isinstance(predicted, dict) and isinstance(expected, dict):
        return predicted.keys() == expected.keys() and all(
            values_equal(predicted[k], expected[k], tolerance) for k in expected)
    if isinstance(predicted, list) and isinstance(expected, list):
        return len(predicted) == len(expected) and all(
            values_equal(p, e, tolerance) for p, e in zip(predicted, expected))
    return type(predicted) is type(expected) and predicted == expected


def parse_references(references: list[str]) -> list[dict]:
    """Each expected answer as a JSON object; a reference that is not one is a data error, named by row."""
    parsed = []
    for i, ref in enumerate(references):
        try:
            obj = json.loads(ref)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            raise DataFormatError("references", i + 1, f"expected answer is not a JSON object: {ref[:200]!r}")
        parsed.append(obj)
    return parsed


def field_report(parsed: list[dict | None], expected: list[dict], tolerance: float = 0.0,
                 allow_extra_fields: bool = True) -> RowMetrics:
    """strict_accuracy, per_field_accuracy and invalid_rate of parsed answers (None: invalid)."""
    fields = list(dict.fromkeys(f for e in expected for f in e))  # first appearance order, as written
    right = [{f: p is not None and f in p and values_equal(p[f], e[f], tolerance) for f in e}
             for p, e in zip(parsed, expected)]
    strict = [p is not None and all(r.values()) and (allow_extra_fields or set(p) <= set(e))
              for p, e, r in zip(parsed, expected, right)]
    per_field = {f: mean(r[f] for r in right if f in r) for f in fields}
    row_scores = [1.0 if ok else mean(r.values()) for ok, r in zip(strict, right)]
    values = {"strict_accuracy": mean(strict), "per_field_accuracy": per_field,
              "invalid_rate": mean(p is None for p in parsed)}
    return RowMetrics(values, row_scores, strict)


class JsonScorer(Scorer):
    name = "json"
    description = "JSON object answers: per-field and strict accuracy, invalid-JSON rate, numeric tolerance"
    Options = JsonOptions
    primary_metric = "strict_accuracy"
    category_metrics = ("strict_accuracy", "invalid_rate")

    def metrics(self, predictions, references, options: JsonOptions) -> RowMetrics:
        expected = parse_references(references)
        parsed = [parse_object(p, options.lenient) for p in predictions]
        return field_report(parsed, expected, options.abs_tolerance, options.allow_extra_fields)
