"""Fused RMSNorm and rotary embedding: the same loss and gradients as transformers' own, on a real tiny Llama."""

import pytest
import torch

from llm_assets.core.fused_ops import fuse_rms_norms, fuse_rotary_embeddings
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


def relative_errors(grads: dict, reference: dict) -> dict:
    return {n: float((g - reference[n]).norm() / reference[n].norm()) for n, g in grads.items()}


def assert_no_farther_from_fp32(ours: dict, theirs: dict, fp32: dict):
    """Under bf16 autocast both sets of gradients differ from float32 training by rounding: ours no more."""
    their_errors, our_errors = relative_errors(theirs, fp32), relative_errors(ours, fp32)
    assert max(their_errors.values()) > 0  # autocast did round
    for name, their_error in their_errors.items():
        assert our_errors[name] <= 1.25 * their_error + 1e-6, (name, our_errors[name], their_error)


def assert_trains_as_before(base, fuse, bf16_loss_rtol: float):
    """Loss and gradients of a real tiny Llama before and after `fuse(model)`, in fp32 and under bf16 autocast."""
    from transformers import AutoModelForCausalLM

    model_dir, rows = base
    inputs = batch(model_dir, rows[:8])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    plain_loss, plain_grads = loss_and_grads(model, inputs, autocast=False)
    plain_bf16_loss, plain_bf16_grads = loss_and_grads(model, inputs, autocast=True)
    fuse(model)
    fused_loss, fused_grads = loss_and_grads(model, inputs, autocast=False)
    assert plain_loss > 0
    torch.testing.assert_close(fused_loss, plain_loss, rtol=1e-6, atol=0)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    fused_bf16_loss, fused_bf16_grads = loss_and_grads(model, inputs, autocast=True)
    torch.testing.assert_close(fused_bf16_loss, plain_bf16_loss, rtol=bf16_loss_rtol, atol=0)
    assert_no_farther_from_fp32(fused_bf16_grads, plain_bf16_grads, plain_grads)


def test_fused_norms_train_as_transformers_own(base):
    def fuse(model):
        # One layer: its two norms and the final one.
        assert fuse_rms_norms(model) == 3 and fuse_rms_norms(model) == 0  # once per module

    assert_trains_as_before(base, fuse, bf16_loss_rtol=1e-6)


def test_under_autocast_only_a_layers_norms_hand_over_in_bf16(base):
    from transformers import AutoModelForCausalLM

    model_dir, _ = base
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    fuse_rms_norms(model)
    hidden = torch.randn(2, 5, model.config.hidden_size)
    layer = model.model.layers[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # The projections would cast to bf16 anyway; the final norm feeds the float32 LM head.
        assert layer.input_layernorm(hidden).dtype == layer.post_attention_layernorm(hidden).dtype == torch.bfloat16
        assert model.model.norm(hidden).dtype == torch.float32
        norm = layer.input_layernorm
        expected = norm.weight * hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        torch.testing.assert_close(norm(hidden).float(), expected, rtol=2 ** -8, atol=1e-6)  # bf16 rounding
    assert layer.input_layernorm(hidden).dtype == torch.float32  # without autocast, transformers' dtype


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


@pytest.fixture
def unfused_llama(monkeypatch):
    """transformers' Llama modeling module with its own rotary embedding for this test, restored after."""
    from transformers.models.llama import modeling_llama

    current = modeling_llama.apply_rotary_pos_emb
    monkeypatch.setattr(modeling_llama, "apply_rotary_pos_emb", getattr(current, "original", current))
    return modeling_llama


def test_fused_rotary_trains_as_transformers_own(base, unfused_llama):
    def fuse(model):
        assert fuse_rotary_embeddings(model) == 1 and fuse_rotary_embeddings(model) == 0  # once per module
        assert unfused_llama.apply_rotary_pos_emb.fused

    assert_trains_as_before(base, fuse, bf16_loss_rtol=1e-5)


def test_fused_rotary_leaves_inference_to_the_bit(unfused_llama):
    original = unfused_llama.apply_rotary_pos_emb
    torch.manual_seed(0)
    q, k = torch.randn(2, 4, 7, 16, dtype=torch.bfloat16), torch.randn(2, 4, 7, 16, dtype=torch.bfloat16)
    angles = torch.arange(7.0)[None, :, None] * torch.rand(8)
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
    llama_layer = type("LlamaAttention", (torch.nn.Module,), {"__module__": unfused_llama.__name__})
    assert fuse_rotary_embeddings(torch.nn.Sequential(llama_layer())) == 1
    with torch.no_grad():
        for expected, got in zip(original(q, k, cos, sin), unfused_llama.apply_rotary_pos_emb(q, k, cos, sin)):
            assert got.dtype == expected.dtype == torch.float32 and torch.equal(got, expected)
    # With gradients it computes the same rotation (one fused multiply-add: float32 rounding apart).
    q.requires_grad_(True)
    for expected, got in zip(original(q, k, cos, sin), unfused_llama.apply_rotary_pos_emb(q, k, cos, sin)):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_models_without_llama_rotary_are_left_alone(unfused_llama):
    before = unfused_llama.apply_rotary_pos_emb
    assert fuse_rotary_embeddings(torch.nn.Sequential(torch.nn.Linear(2, 2))) == 0
    assert unfused_llama.apply_rotary_pos_emb is before
