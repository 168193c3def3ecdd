"""Fused RMSNorm: the same loss and gradients as transformers' own norm, on a real tiny Llama."""

import pytest
import torch

from llm_assets.core.fused_ops import fuse_rms_norms
from tests.core.tiny_bases import small_base


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return small_base(tmp_path_factory, 16, seed=3)


def batch(model_dir, rows):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    enc = tok([r["prompt"] + r["completion"] for r in rows], padding=True, return_tensors="pt")
    return {**enc, "labels": enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)}


def loss_and_grads(model, inputs, autocast: bool):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(**inputs).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_fused_norms_train_as_transformers_own(base, autocast):
    from transformers import AutoModelForCausalLM

    model_dir, rows = base
    inputs = batch(model_dir, rows[:8])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    plain_loss, plain_grads = loss_and_grads(model, inputs, autocast)
    # One layer: its two norms and the final one.
    assert fuse_rms_norms(model) == 3 and fuse_rms_norms(model) == 0  # once per module
    fused_loss, fused_grads = loss_and_grads(model, inputs, autocast)
    assert plain_loss > 0
    torch.testing.assert_close(fused_loss, plain_loss, rtol=1e-6, atol=0)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_a_bf16_model_keeps_its_dtype(base):
    from transformers import AutoModelForCausalLM

    model_dir, rows = base
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    norm = model.model.norm
    hidden = torch.randn(2, 5, model.config.hidden_size, dtype=torch.bfloat16)
    expected = norm(hidden)
    fuse_rms_norms(model)
    out = norm(hidden)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=1e-2, atol=1e-2)


def test_norms_with_another_formula_are_left_alone():
    class GemmaRMSNorm(torch.nn.Module):  # weight applied as (1 + weight): not Llama's formula
        def __init__(self):
            super().__init__()
            self.weight, self.variance_epsilon = torch.nn.Parameter(torch.zeros(4)), 1e-6

    model = torch.nn.Sequential(GemmaRMSNorm())
    forward = model[0].forward
    assert fuse_rms_norms(model) == 0 and model[0].forward == forward
