"""The charts are real PNGs, built from real scores."""

import base64

import pytest

from llm_assets.core.metrics import score_predictions
from llm_assets.core.pet_benchmark import generate_benchmark
from llm_assets.core.plots import confusion_matrix_png, loss_curve_png, markdown_image, per_field_accuracy_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(data: bytes) -> bool:
    return data.startswith(PNG_MAGIC) and 1_000 < len(data) < 200_000


@pytest.fixture(scope="module")
def report():
    rows = generate_benchmark(n_per_category=4)
    refs = [r["completion"] for r in rows]
    cats = [r["category"] for r in rows]
    half_right = [ref if i % 2 else "{}" for i, ref in enumerate(refs)]
    entry = lambda preds, size: {"scores": score_predictions(preds, refs, cats), "file_size_bytes": size}
    return {"variants": {"f16": entry(refs, 2000), "q4_k_m": entry(half_right, 700)},
            "baseline": entry(["" for _ in refs], 2000)}


def test_loss_curve(report):
    history = [{"step": s, "loss": 3.0 / s} for s in range(1, 20)] + [{"step": 10, "eval_loss": 0.5}]
    assert _is_png(loss_curve_png(history))
    assert _is_png(loss_curve_png([]))


def test_per_field_accuracy(report):
    assert _is_png(per_field_accuracy_png(report))


def test_confusion_matrix(report):
    scores = report["variants"]["q4_k_m"]["scores"]
    assert _is_png(confusion_matrix_png(scores["confusion"], scores["confusion_labels"]))


def test_markdown_image_round_trips():
    png = loss_curve_png([{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}])
    md = markdown_image(png, "loss")
    prefix = "![loss](data:image/png;base64,"
    assert md.startswith(prefix) and md.endswith(")")
    assert base64.b64decode(md[len(prefix):-1]) == png
