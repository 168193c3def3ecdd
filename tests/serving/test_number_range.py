"""Bounded numbers and integers in response_format: the grammar allows exactly the plain decimals (or integers)
inside the bounds (checked as a regular expression against every number near the bounds), llama.cpp parses it,
an empty range is refused, and a real model decoding with it answers inside the bounds."""

import itertools
import json
import random
import re
from decimal import Decimal

import jsonschema
import pytest

from llm_assets.serving.grammar import compile_in_process, parse_error
from llm_assets.serving.number_range import EmptyRange, integer_range, number_range
from llm_assets.serving.schemas import ApiError
from tests.serving.test_grammar import as_format, in_model_process

BOUNDS = [Decimal(x) for x in ("0", "1", "-1", "0.5", "-0.5", "0.25", "1.75", "10", "-10", "99.99", "100",
                               "0.001", "-0.001", "3.14159", "-2.5", "0.1", "0.9", "0.05", "123.456", "1000")]
STEPS = [Decimal(x) for x in ("0", "0.0001", "0.001", "0.01", "0.09", "0.1", "0.11", "0.5", "1", "2", "10")]


def as_regex(gbnf: str) -> re.Pattern:
    """The GBNF this module writes (literals, classes, groups, | and repetition) as a Python regular expression."""
    out, i = [], 0
    while i < len(gbnf):
        c = gbnf[i]
        if c == '"':
            end = gbnf.index('"', i + 1)
            out.append(re.escape(gbnf[i + 1:end]))
            i = end + 1
        elif c in "[{":
            end = gbnf.index("]" if c == "[" else "}", i)
            out.append(gbnf[i:end + 1])
            i = end + 1
        elif c in "()|*+?":
            out.append(c)
            i += 1
        else:
            assert c == " ", gbnf[i:i + 20]
            i += 1
    return re.compile("".join(out))


def near(bounds) -> set[str]:
    """Plain decimals at, just inside and just outside each bound, at several precisions."""
    values = {b + sign * step for b in bounds for step in STEPS for sign in (1, -1)}
    values |= {v.quantize(Decimal(q)) for v in values for q in ("1", "0.1", "0.01", "0.001")}
    texts = {format(v, "f") for v in values} | {format(v, "f") + "0" for v in values if "." in format(v, "f")}
    return {t for t in texts if not re.match(r"-?0\d", t) and not (t.startswith("-") and Decimal(t) == 0)}


def inside(text: str, low, high, low_exclusive, high_exclusive) -> bool:
    x = Decimal(text)
    return ((low is None or (x > low if low_exclusive else x >= low))
            and (high is None or (x < high if high_exclusive else x <= high)))


def test_the_grammar_is_exactly_the_range_near_every_bound():
    rng = random.Random(7)
    cases = [(rng.choice(BOUNDS + [None]), rng.choice(BOUNDS + [None]), rng.random() < 0.4, rng.random() < 0.4)
             for _ in range(300)]
    cases += [(Decimal(0), Decimal(1), False, False), (None, None, False, False), (Decimal(-1), Decimal(0), True, True)]
    checked = 0
    for low, high, low_exclusive, high_exclusive in cases:
        try:
            pattern = as_regex(number_range(low, high, low_exclusive, high_exclusive))
        except EmptyRange:
            assert low is not None and high is not None and (low > high or low == high), (low, high)
            continue
        for text in near([b for b in (low, high) if b is not None] + [Decimal(0), Decimal(7), Decimal(-3)]):
            want = inside(text, low, high, low_exclusive, high_exclusive)
            assert bool(pattern.fullmatch(text)) == want, (low, high, low_exclusive, high_exclusive, text)
            checked += 1
    assert checked > 20_000


def test_the_integer_grammar_is_exactly_the_range():
    ends = [None, -1234, -1000, -999, -101, -100, -10, -9, -1, 0, 1, 9, 10, 99, 100, 101, 999, 1000, 1234, 10**6]
    for low, high in itertools.product(ends, ends):
        if low is not None and high is not None and low > high:
            with pytest.raises(EmptyRange):
                integer_range(low, high)
            continue
        pattern = as_regex(integer_range(low, high))
        near_ends = {e + d for e in ends if e is not None for d in (-2, -1, 0, 1, 2)} | {0, 5, -5, 12345678}
        for x in near_ends:
            want = (low is None or x >= low) and (high is None or x <= high)
            assert bool(pattern.fullmatch(str(x))) == want, (low, high, x)
        assert not pattern.fullmatch("007") and not pattern.fullmatch("1.5")


def test_a_bounded_number_schema_compiles_parses_and_an_empty_range_is_refused():
    schema = {"type": "object", "properties": {"p": {"type": "number", "minimum": 0, "maximum": 1},
                                               "t": {"type": "number", "exclusiveMinimum": -2.5, "maximum": 0.1}},
              "required": ["p", "t"]}
    text = compile_in_process(as_format(schema))
    assert parse_error(text) is None and "__llm_assets_number_range" not in text
    with pytest.raises(ApiError, match="no number is > 1 and <= 1") as caught:
        compile_in_process(as_format({"type": "number", "exclusiveMinimum": 1, "maximum": 1}))
    assert caught.value.code == "invalid_schema"


def test_a_model_decoding_with_bounded_numbers_answers_inside_them(ggufs):
    schema = {"type": "object", "properties": {
        "p": {"type": "number", "minimum": 0, "maximum": 1},
        "t": {"type": "number", "exclusiveMinimum": 36.5, "exclusiveMaximum": 37.25},
        "n": {"type": "integer", "minimum": 200, "maximum": 1500},
        "d": {"type": "array", "items": {"type": "number", "minimum": -0.75, "maximum": -0.5}, "minItems": 2,
              "maxItems": 3}}, "required": ["p", "t", "n", "d"], "additionalProperties": False}
    text = compile_in_process(as_format(schema))
    jobs = [("chat", {"messages": [{"role": "user", "content": prompt}], "max_tokens": 256, "temperature": 1.0,
                      "seed": seed, "stream": False, "grammar": text})
            for prompt, seed in itertools.product(("a fox is near", "hunger 5"), (1, 2, 3))]
    answers = [r[1]["choices"][0] for r in in_model_process(ggufs["a"], jobs)]
    finished = [a for a in answers if a["finish_reason"] == "stop"]
    assert len(finished) >= 3, answers
    for answer in finished:
        jsonschema.validate(json.loads(answer["message"]["content"]), schema)
