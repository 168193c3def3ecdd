"""Training speed levers: bf16 only where the CPU has native bf16, eager attention on CPU, length grouping.

Real runs on a tiny model: a lever may make a step cheaper, never change what is learned beyond rounding.
"""

import pytest
from tests.core.tiny_bases import small_base

from llm_assets.core import training
from llm_assets.core.attention import attention_implementation
from llm_assets.core.hyperparameters import TrainingParams

CPUINFO = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 {extra}\n\nprocessor\t: 1\n"


@pytest.mark.parametrize("extra,native", [("avx512f avx512_bf16", True), ("amx_tile amx_bf16", True),
                                          ("avx512f", False), ("", False)])
def test_native_bf16_is_read_from_the_cpu_flags(extra, native):
    assert training.cpu_has_native_bf16(CPUINFO.format(extra=extra)) is native


def test_precision_and_attention_choices_on_this_machine():
    import torch

    assert training.use_bf16("fp32") is False and training.use_bf16("bf16") is True
    if not torch.cuda.is_available():
        assert training.use_bf16("auto") is training.cpu_has_native_bf16()
        assert attention_implementation("auto") == "eager_autocast"
    assert attention_implementation("sdpa") == "sdpa"
    # The speed levers leave the demo's recipe alone: full fine-tune, batch 16, 1 epoch, lr 1e-3.
    p = TrainingParams()
    assert (p.method, p.batch_size, p.epochs, p.learning_rate) == ("full", 16, 1.0, 1e-3)
    assert (p.precision, p.attention, p.group_by_length) == ("auto", "auto", False)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return small_base(tmp_path_factory, 48, seed=5)


def first_loss(base, tmp_path, **levers) -> float:
    model_dir, rows = base
    params = TrainingParams(batch_size=8, max_steps=1, logging_steps=1, warmup_ratio=0.0, **levers)
    result = training.train_sft(model_dir, rows, [], tmp_path / "out", tmp_path / "ckpt", params)
    return next(h["loss"] for h in result["history"] if "loss" in h)


def test_eager_attention_and_bf16_compute_the_same_loss(base, tmp_path):
    # The first logged loss is the untouched model on the same first batch, so the levers alone differ.
    sdpa = first_loss(base, tmp_path / "a", attention="sdpa", precision="fp32")
    eager = first_loss(base, tmp_path / "b", attention="eager", precision="fp32")
    bf16 = first_loss(base, tmp_path / "c", attention="eager", precision="bf16")
    assert eager == pytest.approx(sdpa, rel=1e-4)
    assert bf16 == pytest.approx(sdpa, rel=0.02)


def test_length_grouped_batches_train_every_row(base, tmp_path):
    model_dir, rows = base
    params = TrainingParams(batch_size=8, epochs=1.0, logging_steps=1, group_by_length=True, precision="fp32")
    result = training.train_sft(model_dir, rows, rows[:8], tmp_path / "out", tmp_path / "ckpt", params)
    assert result["global_steps"] == len(rows) // 8
    assert result["eval_loss"] is not None and result["eval_loss"] == result["eval_loss"]  # finite, not NaN
