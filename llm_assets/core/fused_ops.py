"""Fewer, larger tensor operations in place of a model's layers written as chains of small ones, for training.

On a small model each operation costs more in dispatch than in arithmetic, forwards and again backwards.
transformers writes Llama's RMSNorm as seven tensor operations (cast, square, mean, add, rsqrt, multiply,
multiply) and autograd records about fifteen backwards (PyTorch's `rms_norm` is a composite on a CPU, no
better); here the backward is written by hand in eight. Its rotary embedding is fourteen operations for q and
k and about twice that backwards through autograd's slice and cat; here it is six each way. Only layers known to compute exactly Llama's formulas are replaced; saved weights are untouched.
"""

from __future__ import annotations

import functools

# Modeling modules whose apply_rotary_pos_emb is Llama's: q * cos + rotate_half(q) * sin, with the last
# dimension's two halves swapped (not interleaved pairs), the same for k.
LLAMA_STYLE_ROTARY_MODULES = frozenset(f"transformers.models.{name}.modeling_{name}"
                                       for name in ("llama", "mistral", "qwen2", "qwen3"))

# weight * x / sqrt(mean(x^2) + eps), the norm in fp32, with a `variance_epsilon` attribute. Gemma's
# (1 + weight) norm and others are not here, so they keep their own forward.
LLAMA_STYLE_RMS_NORMS = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"})


def fuse_rms_norms(model) -> int:
    """Give every Llama-style RMSNorm of `model` a norm with a hand-written backward; returns how many.

    Under autocast, a decoder layer's two norms hand their output over in the autocast dtype: their only
    consumers are the layer's projections, which autocast would otherwise cast the same float32 tensor for
    one by one (three for q, k, v; two for the MLP), and back again for each gradient. Other norms (the
    final one before a float32 LM head, Qwen3's q and k norms before the rotary embedding) keep the float32
    output transformers gives them.
    """
    swapped = 0
    for name, module in model.named_modules():
        if type(module).__name__ in LLAMA_STYLE_RMS_NORMS and not getattr(module, "fused", False):
            projected = name.rsplit(".", 1)[-1] in ("input_layernorm", "post_attention_layernorm")
            module.forward = _fused_forward(module, autocast_output=projected)
            module.fused = True
            swapped += 1
    return swapped


def _fused_forward(module, autocast_output: bool):
    import torch

    rms_norm = _rms_norm_function()

    def forward(hidden):
        # transformers' norm returns the promotion of the weight's and the input's dtypes; so does this, or
        # under autocast, for a norm whose output only its layer's projections read, the autocast dtype.
        out_dtype = torch.promote_types(module.weight.dtype, hidden.dtype)
        device = hidden.device.type
        if autocast_output and torch.is_autocast_enabled(device):
            out_dtype = torch.get_autocast_dtype(device)
        return rms_norm.apply(hidden, module.weight, module.variance_epsilon, out_dtype)

    return forward


@functools.cache
def _rms_norm_function():
    import torch

    class RMSNorm(torch.autograd.Function):
        # y = w * n with n = x * r, r = 1 / sqrt(mean(x^2) + eps), in float32. Backwards, with g = dy * w:
        # dx = r * (g - n * mean(g * n)) and dw = sum(dy * n): eight operations where autograd records fifteen.
        @staticmethod
        def forward(ctx, hidden, weight, eps, out_dtype):
            x = hidden.float()
            r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
            n = x * r
            ctx.save_for_backward(n, r, weight)
            ctx.hidden_dtype = hidden.dtype
            return (n * weight.float()).to(out_dtype)

        @staticmethod
        def backward(ctx, grad):
            n, r, weight = ctx.saved_tensors
            grad = grad.float()
            g = grad * weight.float()
            grad_hidden = (g - n * (g * n).mean(-1, keepdim=True)) * r
            grad_weight = (grad * n).flatten(0, -2).sum(0) if ctx.needs_input_grad[1] else None
            return (grad_hidden.to(ctx.hidden_dtype),
                    None if grad_weight is None else grad_weight.to(weight.dtype), None, None)

    return RMSNorm


def fuse_rotary_embeddings(model) -> int:
    """Give the modeling modules of `model`'s Llama-style layers a rotary embedding with a fused backward.

    transformers calls `apply_rotary_pos_emb` as a global of the modeling module, so the replacement is the
    module's, for every model of that family in the process (as Liger-Kernel patches it). It takes the fused
    path only while autograd records a graph through q or k, and calls the original otherwise, so inference
    is unchanged to the bit. Returns how many modules were patched now.
    """
    import sys

    patched = 0
    for name in {type(m).__module__ for m in model.modules()} & LLAMA_STYLE_ROTARY_MODULES:
        modeling = sys.modules[name]
        if not getattr(modeling.apply_rotary_pos_emb, "fused", False):
            modeling.apply_rotary_pos_emb = _rotary_with_fused_backward(modeling.apply_rotary_pos_emb)
            patched += 1
    return patched


def _rotary_with_fused_backward(original):
    import torch

    class Rotary(torch.autograd.Function):
        # rotate_half(x) * sin == roll(x, half) * signed_sin, with signed_sin = [-sin_1, sin_2] by halves. The
        # gradient of x -> roll(x, half) * s is g -> roll(g * s, half) (a roll by half is its own inverse).
        @staticmethod
        def forward(ctx, q, k, cos, signed_sin, out_dtype):
            ctx.save_for_backward(cos, signed_sin)
            ctx.in_dtypes = (q.dtype, k.dtype)
            half = q.shape[-1] // 2
            return tuple(torch.addcmul(x * cos, x.roll(half, -1), signed_sin).to(out_dtype) for x in (q, k))

        @staticmethod
        def backward(ctx, grad_q, grad_k):
            cos, signed_sin = ctx.saved_tensors
            half = grad_q.shape[-1] // 2
            grads = (torch.addcmul((g * signed_sin).roll(half, -1), g, cos).to(dtype)
                     for g, dtype in zip((grad_q, grad_k), ctx.in_dtypes))
            return (*grads, None, None, None)

    def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
        if not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)) or cos.requires_grad \
                or sin.requires_grad or q.shape[-1] != cos.shape[-1] or q.shape[-1] % 2:
            return original(q, k, cos, sin, unsqueeze_dim)
        cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
        half = sin.shape[-1] // 2
        signed_sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
        out_dtype = torch.promote_types(q.dtype, cos.dtype)
        device = q.device.type
        # transformers' version returns float32 for bf16 q with float32 cos and sin; under autocast its only
        # use is a matrix product that casts it straight back to the autocast dtype. Return that directly.
        if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == q.dtype == k.dtype:
            out_dtype = q.dtype
        return Rotary.apply(q, k, cos, signed_sin, out_dtype)

    apply_rotary_pos_emb.fused = True
    apply_rotary_pos_emb.original = original
    return apply_rotary_pos_emb
