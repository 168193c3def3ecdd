"""Metrics on hand-made answers whose every number is worked out by hand."""

import pytest

from llm_assets.core.errors import ConfigError, DataFormatError
from llm_assets.core.metrics import improvement, score_predictions
from llm_assets.core.pet_task import format_decision


def _decision(action, target, hunger, energy, happiness, hygiene):
    return {"action": action, "target": target, "hunger": hunger, "energy": energy,
            "happiness": happiness, "hygiene": hygiene}


REFS = [
    format_decision(_decision("eat", "carrot", 30, 80, 60, 50)),
    format_decision(_decision("sleep", "none", 40, 100, 70, 60)),
    format_decision(_decision("explore", "none", 20, 70, 80, 90)),
    format_decision(_decision("hide", "none", 10, 50, 30, 40)),
]
PREDS = [
    REFS[0],                                                      # correct
    format_decision(_decision("sleep", "none", 40, 90, 70, 60)),  # one stat wrong
    "not json {",                                                 # invalid
    format_decision(_decision("play", "none", 10, 50, 30, 40)),   # wrong action
]
CATEGORIES = ["a", "a", "b", "b"]


@pytest.fixture(scope="module")
def scores():
    return score_predictions(PREDS, REFS, CATEGORIES)


def test_decision_metrics(scores):
    assert scores["n"] == 4
    assert scores["strict_accuracy"] == 0.25
    assert scores["invalid_rate"] == 0.25
    assert scores["exact_match"] == 0.25
    assert scores["per_field_accuracy"] == {"action": 0.5, "target": 0.75, "hunger": 0.75, "energy": 0.5,
                                           "happiness": 0.75, "hygiene": 0.75}
    assert scores["per_category"]["a"]["strict_accuracy"] == 0.5
    assert scores["per_category"]["b"] == {"n": 2, "correct": 0, "strict_accuracy": 0.0}


def test_action_distribution_and_confusion(scores):
    assert scores["action_distribution"] == {
        "predicted": {"eat": 1, "sleep": 1, "invalid": 1, "play": 1},
        "expected": {"eat": 1, "sleep": 1, "explore": 1, "hide": 1},
    }
    confusion = scores["confusion"]
    assert confusion["eat"]["eat"] == 1 and confusion["sleep"]["sleep"] == 1
    assert confusion["explore"]["invalid"] == 1 and confusion["hide"]["play"] == 1
    assert sum(sum(row.values()) for row in confusion.values()) == 4
    assert scores["confusion_labels"][-1] == "invalid"
    assert set(confusion) == set(scores["confusion_labels"]) - {"invalid"}


def test_text_metrics(scores):
    # Word tokens: 12 per decision; one changed value leaves 11 shared of 13 (Jaccard), LCS 11 of 12 (ROUGE-L).
    assert scores["jaccard"] == pytest.approx((1 + 11 / 13 + 0 + 11 / 13) / 4)
    assert scores["rouge_l"] == pytest.approx((1 + 11 / 12 + 0 + 11 / 12) / 4)
    assert 0 < scores["bleu"] < 1
    perfect = score_predictions(REFS, REFS)
    assert perfect["bleu"] == pytest.approx(1.0)
    assert perfect["rouge_l"] == pytest.approx(1.0)
    assert perfect["jaccard"] == perfect["exact_match"] == perfect["strict_accuracy"] == 1.0
    assert perfect["per_category"] == {}


def test_whitespace_around_answer_counts_as_exact():
    scores = score_predictions(["  " + REFS[0] + "\n"], [REFS[0]])
    assert scores["exact_match"] == 1.0 and scores["strict_accuracy"] == 1.0


def test_empty_answers_are_invalid():
    scores = score_predictions(["", ""], REFS[:2])
    assert scores["invalid_rate"] == 1.0
    assert scores["strict_accuracy"] == scores["bleu"] == scores["rouge_l"] == 0.0
    assert scores["confusion"]["eat"]["invalid"] == 1


def test_bad_inputs_are_named():
    with pytest.raises(ConfigError, match="predictions"):
        score_predictions(PREDS[:3], REFS)
    with pytest.raises(ConfigError, match="categories"):
        score_predictions(PREDS, REFS, ["a"])
    with pytest.raises(DataFormatError, match="references:2"):
        score_predictions(PREDS[:2], [REFS[0], "oops"])


def test_improvement(scores):
    baseline = score_predictions(["", "", "", ""], REFS)
    deltas = improvement(scores, baseline)
    assert deltas["strict_accuracy"] == 0.25
    assert deltas["invalid_rate"] == -0.75
    assert deltas["field_action"] == 0.5
    assert deltas["bleu"] == pytest.approx(scores["bleu"])
