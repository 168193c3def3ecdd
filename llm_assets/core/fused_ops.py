"""Fused kernels in place of a model's layers written as chains of small tensor operations, for training.

transformers writes Llama's RMSNorm as seven tensor operations (cast, square, mean, add, rsqrt, multiply,
multiply) and autograd records as many again backwards; on a small model each costs more in dispatch than in
arithmetic. PyTorch's own `rms_norm` is one kernel each way, on a CPU and on a GPU. Only norms known to compute
exactly Llama's formula are swapped, and only on the instance being trained: saved weights are untouched.
"""

from __future__ import annotations

# weight * x / sqrt(mean(x^2) + eps), the norm in fp32, with a `variance_epsilon` attribute. Gemma's
# (1 + weight) norm and others are not here, so they keep their own forward.
LLAMA_STYLE_RMS_NORMS = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"})


def fuse_rms_norms(model) -> int:
    """Give every Llama-style RMSNorm of `model` PyTorch's fused rms_norm; returns how many were swapped."""
    swapped = 0
    for module in model.modules():
        if type(module).__name__ in LLAMA_STYLE_RMS_NORMS and not getattr(module, "fused", False):
            module.forward = _fused_forward(module)
            module.fused = True
            swapped += 1
    return swapped


def _fused_forward(module):
    import torch

    def forward(hidden):
        # transformers normalizes in fp32, casts back to the input's dtype, then multiplies by the weight:
        # the result has the two dtypes' promotion, which this keeps (identical values in fp32).
        out = torch.nn.functional.rms_norm(hidden.float(), module.weight.shape, module.weight.float(),
                                           module.variance_epsilon)
        return out.to(torch.promote_types(module.weight.dtype, hidden.dtype))

    return forward
