"""Every scorer on hand-written answers whose numbers are worked out by hand in the comments."""

import json
import math
import socket
from pathlib import Path

import pytest

from llm_assets.core.errors import ConfigError, DataFormatError
from llm_assets.core.metrics import improvement as pet_improvement
from llm_assets.core.scorers import SCORERS, get_scorer, improvement, modules, score
from llm_assets.core.scorers.base import EXAMPLE_CHARS
from llm_assets.core.scorers.exact import normalize
from llm_assets.core.scorers.json_fields import parse_object, values_equal

FRAME = {"scorer", "n", "primary_metric", "primary", "per_category", "worst_examples", "options"}


# --- the registry and the common frame ---------------------------------------------------------------

def test_registry_names_and_unknown_scorer():
    assert set(SCORERS) == {"exact", "json", "label", "text", "pet"}
    assert get_scorer("json") is SCORERS["json"]
    with pytest.raises(ConfigError, match=r"scorer='rouge'.*known: exact, json, label, text, pet"):
        get_scorer("rouge")
    with pytest.raises(ConfigError, match="unknown scorer"):
        score("nope", ["a"], ["a"])


@pytest.mark.parametrize("name, reference", [("exact", "Paris"), ("json", '{"a": 1}'), ("label", "yes"),
                                             ("text", "the cat sat"), ("pet", None)])
def test_every_scorer_returns_the_same_json_frame(name, reference):
    if reference is None:
        reference = '{"action":"eat","target":"hay","hunger":1,"energy":2,"happiness":3,"hygiene":4}'
    result = score(name, [reference, ""], [reference, reference], ["c", None])
    assert FRAME <= set(result)
    assert result["scorer"] == name and result["n"] == 2
    assert result["primary"] == result[result["primary_metric"]] == 0.5
    assert result["per_category"] == {"c": {"n": 1, "correct": 1,
                                            **{m: result["per_category"]["c"][m]
                                               for m in SCORERS[name].category_metrics}}}
    assert [w["index"] for w in result["worst_examples"]] == [1]
    json.dumps(result, allow_nan=False)  # plain JSON, as the report stores it


def test_bad_inputs_are_named():
    with pytest.raises(ConfigError, match="empty"):
        score("exact", [], [])
    with pytest.raises(ConfigError, match="predictions"):
        score("exact", ["a"], ["a", "b"])
    with pytest.raises(ConfigError, match="categories"):
        score("exact", ["a"], ["a"], ["x", "y"])
    with pytest.raises(ConfigError, match=r"predictions\[1\]"):
        score("exact", ["a", None], ["a", "b"])
    with pytest.raises(ConfigError, match=r"scorer json options.abs_tolerance.*-1"):
        score("json", ["{}"], ["{}"], options={"abs_tolerance": -1})
    with pytest.raises(ConfigError, match=r"options.tolerance.*options of json: worst_examples, lenient"):
        score("json", ["{}"], ["{}"], options={"tolerance": 1})
    with pytest.raises(ConfigError, match="mapping"):
        score("exact", ["a"], ["a"], options=["casefold"])


def test_worst_examples_are_the_lowest_wrong_rows_clipped():
    long = "x" * 1000
    result = score("text", ["a b c", long, "a b", "a"], ["a b c", "a b c", "a b c", "a b c"],
                   options={"worst_examples": 2})
    # ROUGE-L per row: 1 (right, never listed), 0, 0.8, 0.5: the two lowest are rows 1 and 3.
    assert [w["index"] for w in result["worst_examples"]] == [1, 3]
    assert result["worst_examples"][0]["prediction"] == "x" * EXAMPLE_CHARS + "…"
    assert result["worst_examples"][1] == {"index": 3, "category": None, "score": 0.5, "prediction": "a",
                                           "reference": "a b c"}
    assert score("exact", ["a"], ["b"], options={"worst_examples": 0})["worst_examples"] == []


# --- exact --------------------------------------------------------------------------------------------

def test_exact_normalization():
    assert normalize("  Paris \n") == "paris"
    assert normalize("new\t\tyork  city") == "new york city"
    assert normalize("cafe\u0301") == normalize("café")  # NFC: combining accent == composed letter
    assert normalize("Straße") == normalize("STRASSE")  # case-folding, not just lower()
    assert normalize(" A  B ", casefold=False, collapse_whitespace=False) == "A  B"


def test_exact_scorer():
    preds = ["  Paris\n", "paris.", "", "NEW   York", "Zürich"]
    refs = ["Paris", "Paris", "Berlin", "new york", "zürich"]
    result = score("exact", preds, refs)
    # right: rows 0, 3, 4; "paris." keeps its full stop; the empty answer is wrong.
    assert result["exact_match"] == result["primary"] == 0.6
    assert result["empty_rate"] == 0.2
    strict = score("exact", preds, refs, options={"casefold": False})
    assert strict["exact_match"] == 0.2  # only row 0 is right when case counts


# --- json ---------------------------------------------------------------------------------------------

R1 = '{"name": "Ada", "age": 36, "admin": true}'
R2 = '{"name": "Bob", "age": 41, "tags": ["x", "y"]}'
JSON_REFS = [R1, R1, R1, R2, R2, R1, R2, R2, R2, R2]
JSON_PREDS = [
    R1,                                                              # 0 right
    '```json\n{"name": "Ada", "age": 36.0, "admin": true}\n```',     # 1 right: fenced, 36.0 == 36
    'Here you go: {"name":"Ada","age":37,"admin":1} thanks',         # 2 name only (1 is not true)
    '{"name": "Bob", "age": 41}',                                    # 3 tags missing
    "not json {",                                                    # 4 invalid
    "",                                                              # 5 invalid (empty)
    '{"a": 1} {"b": 2}',                                             # 6 invalid: two objects
    "[1, 2]",                                                        # 7 invalid: not an object
    '{"name": "Bob", "age": 41, "tags": ["x", "y"], "extra": 1}',    # 8 right (extra field allowed)
    '{"name": "bob", "age": 41, "tags": ["y", "x"]}',                # 9 age only
]


def test_json_scorer():
    result = score("json", JSON_PREDS, JSON_REFS, ["a"] * 5 + ["b"] * 5)
    assert result["strict_accuracy"] == result["primary"] == 0.3  # rows 0, 1, 8
    assert result["invalid_rate"] == 0.4  # rows 4-7
    # name: right in 0,1,2,3,8 of 10; age: 0,1,3,8,9 of 10; admin: 0,1 of the 4 R1 rows; tags: 8 of the 6 R2 rows.
    assert result["per_field_accuracy"] == {"name": 0.5, "age": 0.5, "admin": 0.5, "tags": pytest.approx(1 / 6)}
    assert result["per_category"] == {"a": {"n": 5, "correct": 2, "strict_accuracy": 0.4, "invalid_rate": 0.2},
                                      "b": {"n": 5, "correct": 1, "strict_accuracy": 0.2, "invalid_rate": 0.6}}
    # Row scores (share of fields right): 4-7 score 0, then 2 and 9 (1/3), then 3 (2/3).
    assert [w["index"] for w in result["worst_examples"]] == [4, 5, 6, 7, 2]


def test_json_options():
    no_extra = score("json", JSON_PREDS, JSON_REFS, options={"allow_extra_fields": False})
    assert no_extra["strict_accuracy"] == 0.2  # row 8 loses
    tolerant = score("json", JSON_PREDS, JSON_REFS, options={"abs_tolerance": 1})
    assert tolerant["per_field_accuracy"]["age"] == 0.6  # 37 is within 1 of 36
    assert tolerant["strict_accuracy"] == 0.3  # row 2's admin is still wrong
    bare = score("json", JSON_PREDS, JSON_REFS, options={"lenient": False})
    assert bare["invalid_rate"] == 0.6 and bare["strict_accuracy"] == 0.2  # fenced and chatty rows rejected


def test_json_parsing_and_comparison_rules():
    assert parse_object('```\n{"a": 1}\n```') == {"a": 1}
    assert parse_object('Sure {not json} then {"a": {"b": 2}} done') == {"a": {"b": 2}}
    assert parse_object('{"a": 1} or {"a": 2}') is None
    assert parse_object('```json\n{"a": 1\n```') is None
    assert parse_object('{"ключ": "значение ✓"}') == {"ключ": "значение ✓"}
    assert parse_object('x {"a": 1}', lenient=False) is None
    assert values_equal(1, 1.0) and not values_equal(True, 1) and not values_equal(1, True)
    assert not values_equal("1", 1) and values_equal(None, None) and not values_equal(None, 0)
    assert values_equal({"x": [1.1, 2]}, {"x": [1, 2]}, tolerance=0.2)
    assert not values_equal({"x": 1}, {"x": 1, "y": 2})


def test_json_reference_must_be_an_object():
    with pytest.raises(DataFormatError, match="references:2"):
        score("json", ["{}", "{}"], ['{"a": 1}', "[1]"])


# --- label --------------------------------------------------------------------------------------------

LABEL_REFS = ["positive", "negative", "neutral", "positive", "negative", "positive"]
LABEL_PREDS = ["Positive", " negative\n", "positive", "I think positive", "", "POSITIVE"]


def test_label_scorer():
    result = score("label", LABEL_PREDS, LABEL_REFS, ["x", "x", "x", "y", "y", "y"])
    # Normalized: positive, negative, positive, <invalid>, <invalid>, positive; right: rows 0, 1, 5.
    assert result["accuracy"] == result["primary"] == 0.5
    assert result["invalid_rate"] == pytest.approx(2 / 6)
    assert result["confusion_labels"] == ["negative", "neutral", "positive", "<invalid>"]
    assert result["confusion"] == {"negative": {"negative": 1, "neutral": 0, "positive": 0, "<invalid>": 1},
                                   "neutral": {"negative": 0, "neutral": 0, "positive": 1, "<invalid>": 0},
                                   "positive": {"negative": 0, "neutral": 0, "positive": 2, "<invalid>": 1}}
    # positive: 2 right of 3 predicted, of 3 expected; negative: 1 of 1, of 2; neutral: never right.
    per = result["per_label"]
    assert per["positive"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert per["negative"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert per["neutral"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert result["macro_f1"] == pytest.approx(4 / 9)
    assert result["unknown_predictions"] == {"i think positive": 1, "": 1}
    # y: rows 3-5, one right; F1 positive 2/3, negative 0 (neutral absent) -> macro 1/3.
    assert result["per_category"]["y"] == pytest.approx({"n": 3, "correct": 1, "accuracy": 1 / 3,
                                                        "macro_f1": 1 / 3, "invalid_rate": 2 / 3})


def test_label_set_from_options_and_across_categories():
    result = score("label", LABEL_PREDS, LABEL_REFS, options={"labels": ["positive", "negative", "neutral", "mixed"]})
    assert result["confusion"]["mixed"] == {"positive": 0, "negative": 0, "neutral": 0, "mixed": 0, "<invalid>": 0}
    assert result["macro_f1"] == pytest.approx(4 / 9)  # "mixed" neither expected nor predicted: not averaged
    with pytest.raises(DataFormatError, match="references:3.*neutral"):
        score("label", LABEL_PREDS, LABEL_REFS, options={"labels": ["positive", "negative"]})
    with pytest.raises(ConfigError, match="options.labels"):
        score("label", ["a"], ["a"], options={"labels": ["a", "<invalid>"]})
    with pytest.raises(DataFormatError, match="references:2.*empty"):
        score("label", ["a", "b"], ["a", " "])
    # One label set for the benchmark: "b" is a real label in category c1 even though only c2 expects it.
    split = score("label", ["b", "a"], ["a", "b"], ["c1", "c2"])
    assert split["per_category"]["c1"]["invalid_rate"] == 0.0


# --- text ---------------------------------------------------------------------------------------------

TEXT_PREDS = ["the cat sat on the mat", "cat on mat", "  The Cat\tsat ", ""]
TEXT_REFS = ["the cat sat on a mat", "the cat sat on the mat", "the cat sat", "a b c d"]


def test_rouge_by_hand():
    result = score("text", TEXT_PREDS, TEXT_REFS)
    # Row 0: 5 of 6 unigrams shared both ways (F 5/6), 3 of 5 bigrams, LCS 5 -> 5/6.
    # Row 1: P 3/3, R 3/6 -> F 2/3; no shared bigram; LCS 3 -> 2/3.
    # Row 2: ROUGE lower-cases: 1, 1, 1. Row 3: empty answer: 0.
    assert result["rouge_1"] == pytest.approx((5 / 6 + 2 / 3 + 1 + 0) / 4)
    assert result["rouge_2"] == pytest.approx((3 / 5 + 0 + 1 + 0) / 4)
    assert result["rouge_l"] == result["primary"] == pytest.approx((5 / 6 + 2 / 3 + 1 + 0) / 4)


def test_bleu_by_hand():
    # One sentence, equal lengths: precisions 5/6, 3/5, 2/4, 1/3 -> (1/12)^(1/4).
    assert score("text", ["the cat sat on the mat"], ["the cat sat on a mat"])["bleu"] == pytest.approx(
        (1 / 12) ** 0.25)
    # Every n-gram right but 4 tokens of 6: brevity penalty exp(1 - 6/4).
    assert score("text", ["the cat sat on"], ["the cat sat on the mat"])["bleu"] == pytest.approx(math.exp(-0.5))
    # No 3- or 4-gram match: exp smoothing counts them as 1/(2*4) and 1/(4*3); 1-grams 4/6, 2-grams 1/5.
    assert score("text", ["the dog sat on a mat"], ["the cat sat on the mat"])["bleu"] == pytest.approx(
        (4 / 6 * 1 / 5 * 1 / 8 * 1 / 12) ** 0.25)
    # Corpus BLEU sums counts over rows (case-sensitive): 1-grams 9/12, 2-grams 3/9, 3-grams 2/6, 4-grams 1/3;
    # 12 predicted tokens against 19 expected -> BP exp(1 - 19/12).
    result = score("text", TEXT_PREDS, TEXT_REFS, ["a", "a", "b", "b"])
    assert result["bleu"] == pytest.approx(math.exp(1 - 19 / 12) * (9 / 12 * 3 / 9 * 2 / 6 * 1 / 3) ** 0.25)
    # A category's BLEU is the corpus BLEU of its rows: 8/9, 3/7, 2/5, 1/3, 9 tokens against 12.
    assert result["per_category"]["a"]["bleu"] == pytest.approx(
        math.exp(1 - 12 / 9) * (8 / 9 * 3 / 7 * 2 / 5 * 1 / 3) ** 0.25)


def test_text_scorer_other_metrics():
    result = score("text", TEXT_PREDS, TEXT_REFS)
    assert result["exact_match"] == 0.25  # row 2, after normalization
    # Jaccard on word tokens as written: 5/6, 3/5, 1/5 (The, Cat differ in case), 0.
    assert result["jaccard"] == pytest.approx((5 / 6 + 3 / 5 + 1 / 5 + 0) / 4)
    assert result["empty_rate"] == 0.25
    assert result["mean_prediction_tokens"] == 3.0 and result["mean_reference_tokens"] == 4.75


def test_text_handles_unicode():
    # rouge-score's own tokenizer keeps only [a-z0-9] and would score these 0.
    result = score("text", ["Привет мир", "日本語 テスト", "très bien"],
                   ["привет мир", "日本語 テスト", "Très bien"])
    assert result["rouge_1"] == result["rouge_l"] == 1.0
    assert score("text", ["日本語です"], ["日本語です"])["bleu"] == 0.0  # one 13a token: no 4-gram
    by_char = score("text", ["日本語です"], ["日本語です"], options={"bleu_tokenize": "char"})
    assert by_char["bleu"] == pytest.approx(1.0)


def test_jaccard_edge_cases():
    # No word on either side: identical (1); disjoint: 0; JSON punctuation ignored: 1.
    result = score("text", ["", "a b", '{"a":1}'], ["", "c", "a 1"])
    assert result["jaccard"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)


def test_metric_modules_load_through_evaluate_without_network(monkeypatch):
    import evaluate

    def refuse(*args, **kwargs):
        raise OSError("a metric module tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    modules.load_metric.cache_clear()
    for name in modules.METRIC_MODULES:
        assert isinstance(modules.load_metric(name), evaluate.EvaluationModule)
    assert modules.compute("rouge", ["a b"], ["a b"])["rouge1"] == 1.0
    with pytest.raises(ConfigError, match="known: rouge, bleu, jaccard"):
        modules.load_metric("sacrebleu")


# --- pet: the bunny's report --------------------------------------------------------------------------

GOLDEN = json.loads((Path(__file__).parents[1] / "fixtures" / "pet_scores_before_scorers.json").read_text())


@pytest.mark.parametrize("key, categories", [("scores", GOLDEN["categories"]), ("uncategorized", None)])
def test_pet_scorer_reproduces_the_report_before_scorers(key, categories):
    """The fixture holds 20 benchmark answers (right, off by a stat, fenced, chatty, truncated, empty,
    non-ASCII, extra or missing fields, float and bool stats, ...) and the scores that
    llm_assets.core.metrics.score_predictions gave them at commit 17844c9, before it became the pet scorer."""
    result = score("pet", GOLDEN["predictions"], GOLDEN["references"], categories)
    for name, before in GOLDEN[key].items():
        assert result[name] == before, name
    assert result["primary"] == result["strict_accuracy"]


def test_improvement():
    model = score("text", ["a b c"], ["a b c"])
    baseline = score("text", [""], ["a b c"])
    deltas = improvement(model, baseline)
    assert deltas["rouge_l"] == 1.0 and deltas["exact_match"] == 1.0 and deltas["empty_rate"] == -1.0
    assert "n" not in deltas and "primary" not in deltas
    pet = GOLDEN["predictions"], GOLDEN["references"]
    bunny = pet_improvement(score("pet", *pet), score("pet", [""] * len(pet[1]), pet[1]))
    assert set(bunny) == {"strict_accuracy", "exact_match", "jaccard", "rouge_l", "bleu", "invalid_rate",
                          "field_action", "field_target", "field_hunger", "field_energy", "field_happiness",
                          "field_hygiene"}
