"""Eager attention in the autocast dtype: transformers' eager values, on a real tiny Llama with padded rows."""

import pytest
import torch

from llm_assets.core.attention import EAGER_AUTOCAST, attention_implementation, eager_autocast_attention
from tests.core.tiny_bases import small_base


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return small_base(tmp_path_factory, 16, seed=3)


@pytest.fixture(scope="module")
def inputs(base):
    from transformers import AutoTokenizer

    model_dir, rows = base
    enc = AutoTokenizer.from_pretrained(model_dir)([r["prompt"] + r["completion"] for r in rows[:8]], padding=True,
                                                   return_tensors="pt")
    assert enc["attention_mask"].sum(1).unique().numel() > 1  # rows of different lengths: the mask matters
    return {**enc, "labels": enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)}


def run(model_dir, inputs, attention: str, autocast: bool):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attention)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(**inputs, output_attentions=True)
    out.loss.backward()
    return out, {n: p.grad for n, p in model.named_parameters()}


def test_auto_picks_it_on_a_cpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU keeps the model's own attention")
    assert attention_implementation("auto") == eager_autocast_attention() == EAGER_AUTOCAST
    assert attention_implementation("eager") == "eager"


def test_under_autocast_the_mask_is_built_in_the_autocast_dtype():
    from transformers.masking_utils import AttentionMaskInterface

    make_mask = AttentionMaskInterface._global_mapping[eager_autocast_attention()]
    padding = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mask = make_mask(batch_size=2, q_length=4, kv_length=4, attention_mask=padding, dtype=torch.float32)
    assert mask.dtype == torch.bfloat16 and mask.shape == (2, 1, 4, 4)
    assert mask[0, 0, 3, 3] == torch.finfo(torch.bfloat16).min and mask[0, 0, 3, 2] == 0  # padding, causal
    assert mask[1, 0, 0, 1] == torch.finfo(torch.bfloat16).min and mask[1, 0, 3, 3] == 0
    assert make_mask(batch_size=2, q_length=4, kv_length=4, attention_mask=padding).dtype == torch.float32


def test_under_autocast_it_computes_transformers_eager_values(base, inputs):
    model_dir, _ = base
    theirs, their_grads = run(model_dir, inputs, "eager", autocast=True)
    ours, our_grads = run(model_dir, inputs, eager_autocast_attention(), autocast=True)
    reference, reference_grads = run(model_dir, inputs, "eager", autocast=False)
    # transformers keeps the weights in float32 and the next product rounds them to bf16: the same numbers.
    for a, b in zip(theirs.attentions, ours.attentions):
        assert b.dtype == torch.bfloat16 and torch.equal(a.to(torch.bfloat16), b)
    assert torch.equal(theirs.logits, ours.logits) and theirs.loss == ours.loss
    # Backwards the softmax rounds its gradient in bf16: no farther from float32 training than theirs.
    for name, grad in reference_grads.items():
        their_error = (their_grads[name] - grad).norm() / grad.norm()
        our_error = (our_grads[name] - grad).norm() / grad.norm()
        assert our_error <= 1.25 * their_error + 1e-6, (name, float(our_error), float(their_error))


def test_without_autocast_it_is_transformers_eager(base, inputs):
    model_dir, _ = base
    theirs, their_grads = run(model_dir, inputs, "eager", autocast=False)
    ours, our_grads = run(model_dir, inputs, eager_autocast_attention(), autocast=False)
    assert all(torch.equal(a, b) for a, b in zip(theirs.attentions, ours.attentions))
    assert torch.equal(theirs.logits, ours.logits)
    for name, grad in their_grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-6, atol=1e-8, msg=name)


def test_a_saved_model_loads_without_the_kernel(base, tmp_path):
    """The kernel is a training choice: the saved config names none, so any process loads the model."""
    from transformers import AutoModelForCausalLM

    model_dir, _ = base
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=eager_autocast_attention())
    model.save_pretrained(tmp_path)
    assert EAGER_AUTOCAST not in (tmp_path / "config.json").read_text()
